//! `runbook plugins`: what a run can use, from where, with digests.

use super::{component_dirs, emit, plugin_dirs, say};
use crate::cli::PluginsArgs;
use crate::engine::{Runtime, default_cache_dir};
use crate::exit::Exit;
use crate::manifest::LoadedManifest;
use crate::plugin::Plugin;
use anyhow::Result;

pub fn plugins(args: PluginsArgs) -> Result<Exit> {
    let mut out = String::new();
    let runtime = Runtime::new(default_cache_dir())?;
    let dirs = plugin_dirs(&args.plugins, args.runbook.as_deref());
    let components = component_dirs(&args.components);
    let mut seen = std::collections::BTreeSet::new();
    let mut problems = 0;
    say!(
        out,
        "{:<22} {:<9} {:<14} source",
        "plugin",
        "version",
        "sha256"
    );
    for dir in &dirs {
        for path in crate::manifest::list(dir)? {
            let listed = LoadedManifest::load(&path)
                .and_then(|m| Plugin::load(&runtime, m, &components, None));
            match listed {
                Ok(p) => {
                    let shadowed = !seen.insert(p.name().to_string());
                    say!(
                        out,
                        "{:<22} {:<9} {:<14} {}{}",
                        p.name(),
                        p.manifest.manifest.version,
                        format!("{}…", &p.digest[..12]),
                        p.source(),
                        if shadowed {
                            " (hidden by the one above)"
                        } else {
                            ""
                        }
                    );
                }
                Err(e) => {
                    problems += 1;
                    say!(
                        out,
                        "{:<22} {:<9} {:<14} {}: {e:#}",
                        "?",
                        "?",
                        "unusable",
                        path.display()
                    );
                }
            }
        }
    }
    for b in crate::builtin::all() {
        let m = b.manifest()?;
        let shadowed = !seen.insert(b.name.to_string());
        say!(
            out,
            "{:<22} {:<9} {:<14} built-in{}",
            b.name,
            m.manifest.version,
            format!("{}…", &b.sha256[..12]),
            if shadowed { " (overridden above)" } else { "" }
        );
    }
    emit(&out)?;
    Ok(if problems > 0 {
        Exit::Invalid
    } else {
        Exit::Ok
    })
}
