//! `runbook plugin push`: a plugin's component, manifest and signatures
//! as one OCI artifact.

use super::*;

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
    if runbook_core::hash::sha256_hex(&component) != plugin.digest
        || runbook_core::hash::sha256_hex(&manifest_text) != m.text_sha256
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
    for sig in runbook_core::signing::signature_files(m.dir())? {
        let name = sig
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        layers.push(titled(
            fs_err::read(&sig)?,
            SIGNATURE_MEDIA_TYPE,
            format!("{}/{name}", runbook_core::signing::DIR),
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
