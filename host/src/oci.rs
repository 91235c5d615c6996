//! Plugins as OCI artifacts: `runbook plugin push DIR REF` stores a plugin
//! (component, manifest, signatures) in any OCI registry; `runbook plugin
//! pull REF@sha256:…` fetches it by digest, checks every byte against that
//! digest, and installs it in a local plugin store that `--plugins` reads.
//!
//! The layout follows the CNCF WebAssembly OCI artifact convention (used
//! by wasm-pkg-tools and wash): config `application/vnd.wasm.config.v0+json`,
//! the component as an `application/wasm` layer; the manifest and each
//! signature travel as layers of their own media types, each titled with
//! its file name.

use crate::error::hinted;
use crate::manifest::{self, LoadedManifest};
use crate::plugin::Plugin;
use anyhow::{Context, Result};
use oci_client::client::{Client, ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, errors::OciDistributionError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
pub const COMPONENT_MEDIA_TYPE: &str = "application/wasm";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.runbook.plugin.manifest.v1+toml";
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.runbook.plugin.signature.v1+minisig";
const TITLE: &str = "org.opencontainers.image.title";
/// Where a pulled plugin came from, beside its manifest.
pub const ORIGIN_FILE: &str = "origin.txt";

/// Each registry request: connecting, and silence while reading.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole push or pull, retries included.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(300);
const ATTEMPTS: u32 = 3;
const MAX_LAYERS: usize = 2 + 16;

/// A registry reference, with how to reach its registry.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

fn parse(reference: &str) -> Result<Reference> {
    reference.parse::<Reference>().map_err(|e| {
        hinted(
            format!("`{reference}` is not an OCI reference: {e}"),
            "write it as `REGISTRY/REPOSITORY:TAG` (push) or `REGISTRY/REPOSITORY@sha256:DIGEST` (pull), lowercase",
        )
    })
}

impl Registry {
    /// A client for `reference`'s registry: plain HTTP for loopback
    /// registries or when `plain_http` is set, else HTTPS. Credentials, if
    /// any, come from `RUNBOOK_REGISTRY_USER`/`RUNBOOK_REGISTRY_PASSWORD`.
    pub fn new(reference: &Reference, plain_http: bool) -> Result<Self> {
        let registry = reference.resolve_registry().to_string();
        let host = registry.rsplit_once(':').map_or(registry.as_str(), |h| h.0);
        let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
        let protocol = if plain_http || loopback {
            ClientProtocol::HttpsExcept(vec![registry.clone()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            platform_resolver: None,
            ..Default::default()
        };
        let client = Client::try_from(config).context("configuring the registry client")?;
        // Credentials go only to the registry they are for.
        let auth = match (
            std::env::var("RUNBOOK_REGISTRY_HOST"),
            std::env::var("RUNBOOK_REGISTRY_USER"),
            std::env::var("RUNBOOK_REGISTRY_PASSWORD"),
        ) {
            (Ok(h), Ok(u), Ok(p)) if h == registry => RegistryAuth::Basic(u, p),
            _ => RegistryAuth::Anonymous,
        };
        Ok(Self { client, auth })
    }
}

/// Transient: worth another attempt.
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => r.is_timeout() || r.is_connect() || r.is_request(),
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        _ => false,
    }
}

/// `op` with bounded retries on transient errors, all within
/// [`TOTAL_TIMEOUT`].
async fn retrying<T, F, Fut>(what: &str, op: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, OciDistributionError>>,
{
    let attempts = async {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if transient(&e) => last = Some(e),
                Err(e) => return Err(anyhow::Error::new(e).context(what.to_string())),
            }
        }
        Err(anyhow::Error::new(last.expect("at least one attempt"))
            .context(format!("{what} ({ATTEMPTS} attempts)")))
    };
    tokio::time::timeout(TOTAL_TIMEOUT, attempts)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {} s", TOTAL_TIMEOUT.as_secs()))?
}

pub struct Pushed {
    pub digest: String,
    pub reference: String,
    pub bytes: usize,
}

/// Pushes the plugin whose manifest is `manifest_path` to `reference`.
pub async fn push(
    plugin: &Plugin,
    exports: Vec<String>,
    reference: &str,
    plain_http: bool,
) -> Result<Pushed> {
    let r = parse(reference)?;
    let registry = Registry::new(&r, plain_http)?;
    let m = &plugin.manifest;
    let component = fs_err::read(&plugin.component_path)?;
    let manifest_text = fs_err::read(&m.path)?;
    // What is pushed is what was checked and loaded.
    if crate::engine::sha256_hex(&component) != plugin.digest
        || crate::engine::sha256_hex(&manifest_text) != m.text_sha256
    {
        return Err(hinted(
            format!(
                "plugin `{}` changed on disk while it was being pushed",
                m.manifest.name
            ),
            "push again once nothing is writing to it",
        ));
    }
    let titled = |data: Vec<u8>, media: &str, title: String| {
        ImageLayer::new(
            data,
            media.to_string(),
            Some(BTreeMap::from([(TITLE.to_string(), title)])),
        )
    };
    let mut layers = vec![
        titled(
            component,
            COMPONENT_MEDIA_TYPE,
            m.manifest.component.display().to_string(),
        ),
        titled(
            manifest_text,
            MANIFEST_MEDIA_TYPE,
            manifest::FILE_NAME.to_string(),
        ),
    ];
    for sig in crate::signing::signature_files(m.dir())? {
        let name = sig
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        layers.push(titled(
            fs_err::read(&sig)?,
            SIGNATURE_MEDIA_TYPE,
            format!("{}/{name}", crate::signing::DIR),
        ));
    }
    let bytes = layers.iter().map(|l| l.data.len()).sum();
    let config = serde_json::json!({
        // Fixed, so that pushing the same plugin twice gives one digest.
        "created": "1970-01-01T00:00:00Z",
        "author": null,
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": layers.iter().map(|l| l.sha256_digest()).collect::<Vec<_>>(),
        "component": { "exports": exports, "imports": plugin.imports, "target": null },
    });
    let config = Config::new(
        serde_json::to_vec(&config)?,
        CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    let annotations = BTreeMap::from([
        (TITLE.to_string(), m.manifest.name.to_string()),
        (
            "org.opencontainers.image.version".to_string(),
            m.manifest.version.clone(),
        ),
        (
            "dev.runbook.plugin.component-sha256".to_string(),
            plugin.digest.clone(),
        ),
    ]);
    let mut manifest = OciImageManifest::build(&layers, &config, Some(annotations));
    manifest.media_type = Some(OCI_IMAGE_MEDIA_TYPE.to_string());
    let what = format!("pushing plugin `{}` to `{reference}`", m.manifest.name);
    retrying(&what, || {
        registry.client.push(
            &r,
            &layers,
            config.clone(),
            &registry.auth,
            Some(manifest.clone()),
        )
    })
    .await?;
    let digest = retrying(&what, || {
        registry.client.fetch_manifest_digest(&r, &registry.auth)
    })
    .await?;
    Ok(Pushed {
        reference: format!("{}/{}@{digest}", r.resolve_registry(), r.repository()),
        digest,
        bytes,
    })
}

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
    trust: Option<&crate::signing::Trust>,
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
        crate::error::with_hint(
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
            crate::error::with_hint(
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
    let component_sha256 = crate::engine::sha256_hex(component_bytes);
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
        || crate::engine::sha256_hex(&fs_err::read(&staged_component)?) != component_sha256
    {
        return Err(not_a_plugin(
            reference,
            "what was written is not what was checked",
        ));
    }
    let signatures = files
        .iter()
        .filter(|(t, _)| t.starts_with(crate::signing::DIR))
        .count();
    if let Some(trust) = trust {
        // Errors name the artifact, not the staging directory.
        trust.verify(&crate::signing::Subject {
            manifest: &shown,
            ..crate::signing::Subject::of(&staged, &component_sha256)
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
                crate::files::MAX_COMPONENT
            }
            MANIFEST_MEDIA_TYPE => {
                manifests += 1;
                crate::files::MAX_TEXT
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

fn not_a_plugin(reference: &str, why: &str) -> anyhow::Error {
    hinted(
        format!("`{reference}` is not a runbook plugin artifact: {why}"),
        "pull what `runbook plugin push` pushed",
    )
}

/// A layer title that stays a plain file name (a signature: one level
/// under `signatures/`).
fn safe_name(title: &str, media_type: &str) -> bool {
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    };
    match media_type {
        SIGNATURE_MEDIA_TYPE => title
            .strip_prefix(&format!("{}/", crate::signing::DIR))
            .is_some_and(|f| plain(f) && f.ends_with(".minisig")),
        _ => plain(title) && title != ORIGIN_FILE && title != manifest::FILE_NAME,
    }
}

/// The plugin store: `RUNBOOK_PLUGIN_STORE`, else
/// `$XDG_DATA_HOME/runbook/plugins`, else `~/.local/share/runbook/plugins`.
pub fn default_store() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("RUNBOOK_PLUGIN_STORE") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return Ok(PathBuf::from(d).join("runbook/plugins"));
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".local/share/runbook/plugins")),
        None => Err(hinted(
            "no plugin store: neither `RUNBOOK_PLUGIN_STORE`, `XDG_DATA_HOME` nor `HOME` is set",
            "pass `--store DIR`",
        )),
    }
}

/// Where a pulled plugin came from (`REGISTRY/REPO@sha256:…`), if it was.
pub fn origin(plugin_dir: &Path) -> Option<String> {
    let text =
        crate::files::read_text_capped(&plugin_dir.join(ORIGIN_FILE), "origin", 1024).ok()?;
    Some(text.trim().to_string())
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
