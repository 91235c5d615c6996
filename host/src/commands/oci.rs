//! `runbook plugin push` and `runbook plugin pull`.

use super::{emit, say};
use crate::cli::{PluginAction, PluginArgs};
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_core::manifest::{self, LoadedManifest};
use runbook_engine::plugin::Plugin;
use runbook_engine::runtime::{Runtime, default_cache_dir};
use runbook_engine::sources::component_dirs;

pub async fn plugin(args: PluginArgs) -> Result<Exit> {
    let mut out = String::new();
    match args.action {
        PluginAction::Push(a) => {
            let path = if a.plugin.is_dir() {
                a.plugin.join(manifest::FILE_NAME)
            } else {
                a.plugin.clone()
            };
            let runtime = Runtime::new(default_cache_dir())?;
            let plugin = Plugin::load(
                &runtime,
                LoadedManifest::load(&path)?,
                &component_dirs(&a.components),
                None,
            )?;
            let exports: Vec<String> = plugin
                .component(&runtime)?
                .component_type()
                .exports(&runtime.engine)
                .map(|(n, _)| n.to_string())
                .collect();
            let started = std::time::Instant::now();
            let pushing = crate::progress::spinner(format!("pushing to {}", a.reference));
            let pushed =
                runbook_engine::oci::push(&plugin, exports, &a.reference, a.plain_http).await;
            pushing.finish_and_clear();
            let pushed = pushed?;
            say!(
                out,
                "pushed plugin `{}` {} ({} bytes, component sha256 {}) in {} ms",
                plugin.name(),
                plugin.manifest.manifest.version,
                pushed.bytes,
                plugin.digest,
                started.elapsed().as_millis()
            );
            say!(out, "digest: {}", pushed.digest);
            say!(
                out,
                "pull it with: runbook plugin pull {}",
                pushed.reference
            );
        }
        PluginAction::Pull(a) => {
            let store = match a.store {
                Some(s) => s,
                None => runbook_engine::oci::default_store()?,
            };
            let trust = a
                .trust
                .as_deref()
                .map(runbook_core::signing::Trust::load)
                .transpose()?;
            let started = std::time::Instant::now();
            let pulling = crate::progress::spinner(format!("pulling {}", a.reference));
            let pulled =
                runbook_engine::oci::pull(&a.reference, &store, a.plain_http, trust.as_ref()).await;
            pulling.finish_and_clear();
            let pulled = pulled?;
            say!(
                out,
                "pulled plugin `{}` {} ({} bytes, component sha256 {}, {} signature{}{}) in {} ms into `{}`",
                pulled.name,
                pulled.version,
                pulled.bytes,
                pulled.component_sha256,
                pulled.signatures,
                if pulled.signatures == 1 { "" } else { "s" },
                if trust.is_some() { ", verified" } else { "" },
                started.elapsed().as_millis(),
                pulled.dir.display()
            );
            say!(out, "use it with: --plugins {}", store.display());
        }
    }
    emit(&out)?;
    Ok(Exit::Ok)
}
