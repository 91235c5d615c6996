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

use crate::plugin::Plugin;
use anyhow::{Context, Result};
use oci_client::client::{Client, ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, errors::OciDistributionError};
use runbook_core::error::hinted;
use runbook_core::manifest::{self, LoadedManifest};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod pull;
mod push;

pub use pull::{Pulled, pull};
pub use push::{Pushed, push};

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
            .strip_prefix(&format!("{}/", runbook_core::signing::DIR))
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
    let text = runbook_core::files::read_text_capped(&plugin_dir.join(ORIGIN_FILE), "origin", 1024)
        .ok()?;
    Some(text.trim().to_string())
}
