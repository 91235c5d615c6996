//! `runbook plugin pull`: a plugin fetched by digest, every layer checked
//! before a byte of it is fetched and every byte against its digest, then
//! installed in the plugin store whole or not at all.

use super::*;

pub struct Pulled {
    pub dir: PathBuf,
    pub name: String,
    pub version: String,
    pub component_sha256: String,
    pub signatures: usize,
    pub bytes: usize,
}

/// Pulls `reference` (which must name a digest) and installs it as
/// `store/NAME/`, replacing what was there. Every blob is checked against
/// its digest and the manifest against the one asked for; with `trust`,
/// the signatures too, before anything is installed.
pub async fn pull(
    reference: &str,
    store: &Path,
    plain_http: bool,
    trust: Option<&runbook_core::signing::Trust>,
) -> Result<Pulled> {
    let r = parse(reference)?;
    let Some(wanted) = r.digest().map(str::to_string) else {
        return Err(hinted(
            format!("`{reference}` names no digest; plugins are pulled by digest only"),
            "append `@sha256:…`, the digest `runbook plugin push` printed",
        ));
    };
    let registry = Registry::new(&r, plain_http)?;
    let what = format!("pulling `{reference}`");
    let (manifest, digest) = retrying(&what, || {
        registry.client.pull_image_manifest(&r, &registry.auth)
    })
    .await
    .map_err(|e| {
        runbook_core::error::with_hint(
            e,
            "check the reference against what `runbook plugin push` printed; a digest that does not match what the registry holds is refused",
        )
    })?;
    if digest != wanted {
        return Err(hinted(
            format!("`{reference}`: the registry sent manifest `{digest}`, not `{wanted}`"),
            "the registry or something between is not serving what was pushed; do not use it",
        ));
    }
    if manifest.config.media_type != CONFIG_MEDIA_TYPE {
        return Err(not_a_plugin(
            reference,
            &format!("its config is `{}`", manifest.config.media_type),
        ));
    }
    // Everything about the layers is checked before one byte of them is
    // fetched: one component, one manifest named `plugin.toml`, a few
    // signatures, sizes within bounds, plain distinct file names.
    let titles = check_layers(reference, &manifest.layers)?;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut component, mut manifest_text) = (None, None);
    for (layer, title) in manifest.layers.iter().zip(titles) {
        let size = layer.size as usize;
        let data = retrying(&what, || async {
            let mut data = Capped::new(size);
            registry
                .client
                .pull_blob(&r, layer, &mut data)
                .await
                .map(|()| data.bytes)
        })
        .await
        .map_err(|e| {
            runbook_core::error::with_hint(
                e,
                "the registry served bytes that do not match the digest the manifest names; nothing was installed",
            )
        })?;
        if data.len() != size {
            return Err(not_a_plugin(
                reference,
                &format!(
                    "layer `{title}` is {} bytes, not the {size} its descriptor says",
                    data.len()
                ),
            ));
        }
        match layer.media_type.as_str() {
            COMPONENT_MEDIA_TYPE => component = Some(title.clone()),
            MANIFEST_MEDIA_TYPE => manifest_text = Some(data.clone()),
            _ => {}
        }
        files.push((title, data));
    }
    let (Some(component), Some(text)) = (component, manifest_text) else {
        return Err(not_a_plugin(
            reference,
            "it lacks a component or a manifest",
        ));
    };
    let text = String::from_utf8(text)
        .map_err(|_| not_a_plugin(reference, "its manifest is not UTF-8"))?;
    let shown = PathBuf::from(format!("{reference}/{}", manifest::FILE_NAME));
    let loaded = LoadedManifest::parse(&text, &shown)?;
    if loaded.manifest.component.display().to_string() != component {
        return Err(not_a_plugin(
            reference,
            &format!(
                "its manifest names component `{}`, but the component layer is `{component}`",
                loaded.manifest.component.display()
            ),
        ));
    }
    let name = loaded.manifest.name.to_string();
    let component_bytes = &files
        .iter()
        .find(|(t, _)| *t == component)
        .expect("found above")
        .1;
    let component_sha256 = runbook_core::hash::sha256_hex(component_bytes);
    if let Some(pin) = &loaded.manifest.sha256
        && *pin != component_sha256
    {
        return Err(hinted(
            format!(
                "`{reference}`: its manifest pins sha256 `{pin}`, but its component has `{component_sha256}`"
            ),
            "the artifact was assembled from mismatched files; push it again from the reviewed plugin",
        ));
    }
    // Assemble beside the store, check, then swap in.
    fs_err::create_dir_all(store)?;
    let staging = tempfile::Builder::new()
        .prefix(".pull-")
        .tempdir_in(store)
        .with_context(|| format!("writing to the plugin store `{}`", store.display()))?;
    for (title, data) in &files {
        let path = staging.path().join(title);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&path, data)?;
    }
    fs_err::write(
        staging.path().join(ORIGIN_FILE),
        format!("{}/{}@{digest}\n", r.resolve_registry(), r.repository()),
    )?;
    // What is installed is what was checked: read it back from the disk.
    let staged = LoadedManifest::load(&staging.path().join(manifest::FILE_NAME))?;
    let staged_component = staged.component_path(&[])?;
    if staged.text_sha256 != loaded.text_sha256
        || staged_component != staging.path().join(&component)
        || runbook_core::hash::sha256_hex(&fs_err::read(&staged_component)?) != component_sha256
    {
        return Err(not_a_plugin(
            reference,
            "what was written is not what was checked",
        ));
    }
    let signatures = files
        .iter()
        .filter(|(t, _)| t.starts_with(runbook_core::signing::DIR))
        .count();
    if let Some(trust) = trust {
        // Errors name the artifact, not the staging directory.
        trust.verify(&runbook_core::signing::Subject {
            manifest: &shown,
            ..runbook_core::signing::Subject::of(&staged, &component_sha256)
        })?;
    }
    let dest = install(store, &name, &digest, staging)?;
    Ok(Pulled {
        dir: dest,
        name,
        version: staged.manifest.version.clone(),
        component_sha256,
        signatures,
        bytes: files.iter().map(|(_, d)| d.len()).sum(),
    })
}

/// `STORE/NAME` becomes a link to `STORE/.versions/NAME-DIGEST`, swapped
/// in one rename: a run sees the old plugin or the new one, never none.
fn install(store: &Path, name: &str, digest: &str, staging: tempfile::TempDir) -> Result<PathBuf> {
    let versions = store.join(".versions");
    fs_err::create_dir_all(&versions)?;
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let version = Path::new(".versions").join(format!("{name}-{hex}"));
    let target = store.join(&version);
    let dest = store.join(name);
    let previous = std::fs::read_link(&dest).ok();
    if previous.as_deref() == Some(version.as_path()) {
        // The same artifact again: it is there already, and in use.
        return Ok(dest);
    }
    if target.exists() {
        fs_err::remove_dir_all(&target)?;
    }
    fs_err::rename(staging.keep(), &target)?;
    if dest.is_dir() && previous.is_none() {
        // A plain directory, not one of ours: replaced, not swapped.
        fs_err::remove_dir_all(&dest)?;
    }
    let link = store.join(format!(".{name}.link-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&version, &link)
        .with_context(|| format!("linking `{}`", link.display()))?;
    fs_err::rename(&link, &dest)?;
    if let Some(p) = previous {
        let _ = fs_err::remove_dir_all(store.join(p));
    }
    Ok(dest)
}

/// The layers' file names, once every layer is known to be one a plugin
/// has, in the numbers and sizes it has them.
fn check_layers(
    reference: &str,
    layers: &[oci_client::manifest::OciDescriptor],
) -> Result<Vec<String>> {
    if layers.len() > MAX_LAYERS {
        return Err(not_a_plugin(
            reference,
            &format!("it has {} layers", layers.len()),
        ));
    }
    let mut titles: Vec<String> = Vec::new();
    let (mut components, mut manifests) = (0, 0);
    for layer in layers {
        let cap = match layer.media_type.as_str() {
            COMPONENT_MEDIA_TYPE => {
                components += 1;
                runbook_core::files::MAX_COMPONENT
            }
            MANIFEST_MEDIA_TYPE => {
                manifests += 1;
                runbook_core::files::MAX_TEXT
            }
            SIGNATURE_MEDIA_TYPE => 4096,
            other => {
                return Err(not_a_plugin(
                    reference,
                    &format!("it has a layer of type `{other}`"),
                ));
            }
        };
        if layer.size < 0 || layer.size as u64 > cap {
            return Err(not_a_plugin(
                reference,
                &format!("a `{}` layer of {} bytes", layer.media_type, layer.size),
            ));
        }
        let title = layer
            .annotations
            .as_ref()
            .and_then(|a| a.get(TITLE))
            .cloned()
            .unwrap_or_default();
        let fits = match layer.media_type.as_str() {
            MANIFEST_MEDIA_TYPE => title == manifest::FILE_NAME,
            _ => safe_name(&title, &layer.media_type),
        };
        if !fits || titles.contains(&title) {
            return Err(not_a_plugin(
                reference,
                &format!("a `{}` layer titled `{title}`", layer.media_type),
            ));
        }
        titles.push(title);
    }
    if components != 1 || manifests != 1 {
        return Err(not_a_plugin(
            reference,
            &format!("it has {components} components and {manifests} manifests, not one of each"),
        ));
    }
    Ok(titles)
}

/// An in-memory blob that refuses to grow past the size its descriptor
/// gave: a registry cannot make a pull hold more than that.
struct Capped {
    bytes: Vec<u8>,
    max: usize,
}

impl Capped {
    fn new(max: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(max.min(16 << 20)),
            max,
        }
    }
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.max {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes the manifest says",
                self.max
            ))));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::OciDescriptor;

    fn layer(media: &str, title: &str, size: i64) -> OciDescriptor {
        OciDescriptor {
            media_type: media.into(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size,
            annotations: Some(BTreeMap::from([(TITLE.to_string(), title.to_string())])),
            ..Default::default()
        }
    }

    fn plugin() -> Vec<OciDescriptor> {
        vec![
            layer(COMPONENT_MEDIA_TYPE, "set_flag.wasm", 100),
            layer(MANIFEST_MEDIA_TYPE, "plugin.toml", 10),
            layer(SIGNATURE_MEDIA_TYPE, "signatures/AB.minisig", 10),
        ]
    }

    fn refused(layers: Vec<OciDescriptor>, why: &str) {
        let err = check_layers("r", &layers).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }

    #[test]
    fn a_plugin_artifact_passes() {
        assert_eq!(
            check_layers("r", &plugin()).unwrap(),
            ["set_flag.wasm", "plugin.toml", "signatures/AB.minisig"]
        );
    }

    #[test]
    fn anything_else_is_refused_before_a_byte_is_fetched() {
        let mut l = plugin();
        l[1] = layer(MANIFEST_MEDIA_TYPE, "checked.toml", 10);
        refused(l, "titled `checked.toml`");
        let mut l = plugin();
        l[0] = layer(COMPONENT_MEDIA_TYPE, "plugin.toml", 10);
        refused(l, "titled `plugin.toml`");
        let mut l = plugin();
        l.push(layer(COMPONENT_MEDIA_TYPE, "other.wasm", 10));
        refused(l, "2 components and 1 manifests");
        let mut l = plugin();
        l.push(layer(SIGNATURE_MEDIA_TYPE, "signatures/AB.minisig", 10));
        refused(l, "titled `signatures/AB.minisig`");
        let mut l = plugin();
        l[2] = layer(SIGNATURE_MEDIA_TYPE, "../AB.minisig", 10);
        refused(l, "titled `../AB.minisig`");
        let mut l = plugin();
        l[1] = layer(MANIFEST_MEDIA_TYPE, "plugin.toml", 2 << 20);
        refused(l, "layer of 2097152 bytes");
        let mut l = plugin();
        l.push(layer("application/octet-stream", "x", 1));
        refused(l, "type `application/octet-stream`");
        refused(
            vec![layer(MANIFEST_MEDIA_TYPE, "plugin.toml", 1); 19],
            "19 layers",
        );
    }

    #[tokio::test]
    async fn a_blob_cannot_grow_past_its_size() {
        use tokio::io::AsyncWriteExt;
        let mut c = Capped::new(4);
        c.write_all(b"abcd").await.unwrap();
        let err = c.write_all(b"e").await.unwrap_err();
        assert!(err.to_string().contains("more than the 4 bytes"), "{err}");
        assert_eq!(c.bytes, b"abcd");
    }
}
