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
        let auth = match (
            std::env::var("RUNBOOK_REGISTRY_USER"),
            std::env::var("RUNBOOK_REGISTRY_PASSWORD"),
        ) {
            (Ok(u), Ok(p)) => RegistryAuth::Basic(u, p),
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
    if manifest.layers.len() > MAX_LAYERS {
        return Err(not_a_plugin(
            reference,
            &format!("it has {} layers", manifest.layers.len()),
        ));
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let (mut component, mut manifest_text) = (None, None);
    for layer in &manifest.layers {
        let cap = match layer.media_type.as_str() {
            COMPONENT_MEDIA_TYPE => crate::files::MAX_COMPONENT,
            MANIFEST_MEDIA_TYPE => crate::files::MAX_TEXT,
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
        if !safe_name(&title, &layer.media_type) {
            return Err(not_a_plugin(
                reference,
                &format!("a layer titled `{title}`"),
            ));
        }
        let data = retrying(&what, || async {
            let mut data: Vec<u8> = Vec::with_capacity(layer.size as usize);
            registry
                .client
                .pull_blob(&r, layer, &mut data)
                .await
                .map(|()| data)
        })
        .await
        .map_err(|e| {
            crate::error::with_hint(
                e,
                "the registry served bytes that do not match the digest the manifest names; nothing was installed",
            )
        })?;
        if data.len() as i64 != layer.size {
            return Err(not_a_plugin(
                reference,
                &format!(
                    "layer `{title}` is {} bytes, not the {} its descriptor says",
                    data.len(),
                    layer.size
                ),
            ));
        }
        match layer.media_type.as_str() {
            COMPONENT_MEDIA_TYPE if component.is_none() => component = Some(title.clone()),
            MANIFEST_MEDIA_TYPE if manifest_text.is_none() => manifest_text = Some(data.clone()),
            SIGNATURE_MEDIA_TYPE => {}
            _ => {
                return Err(not_a_plugin(
                    reference,
                    "it has two components or two manifests",
                ));
            }
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
    let signatures = files
        .iter()
        .filter(|(t, _)| t.starts_with(crate::signing::DIR))
        .count();
    if let Some(trust) = trust {
        let subject = crate::signing::Subject {
            name: &name,
            version: &loaded.manifest.version,
            component_sha256: &component_sha256,
            manifest_sha256: &loaded.text_sha256,
            mutates: loaded.mutates(),
            dir: staging.path(),
            manifest: &shown,
        };
        trust.verify(&subject)?;
    }
    let dest = store.join(&name);
    let old = store.join(format!(".old-{name}-{}", std::process::id()));
    if dest.exists() {
        fs_err::rename(&dest, &old)?;
    }
    let staged = staging.keep();
    fs_err::rename(&staged, &dest)?;
    if old.exists() {
        let _ = fs_err::remove_dir_all(&old);
    }
    Ok(Pulled {
        dir: dest,
        name,
        version: loaded.manifest.version.clone(),
        component_sha256,
        signatures,
        bytes: files.iter().map(|(_, d)| d.len()).sum(),
    })
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
        _ => plain(title) && title != ORIGIN_FILE,
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
