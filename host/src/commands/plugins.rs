//! `runbook plugins`: what a run can use, from where, with digests.

use super::{emit, say};
use crate::cli::PluginsArgs;
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_core::manifest::LoadedManifest;
use runbook_engine::plugin::Plugin;
use runbook_engine::runtime::{Runtime, default_cache_dir};
use runbook_engine::sources::{component_dirs, plugin_dirs};

pub fn plugins(args: PluginsArgs) -> Result<Exit> {
    let mut out = String::new();
    let runtime = Runtime::new(default_cache_dir())?;
    let dirs = plugin_dirs(&args.plugins, args.runbook.as_deref());
    let components = component_dirs(&args.components);
    if args.markdown {
        return catalogue(&runtime, &dirs, &components);
    }
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
        for path in runbook_core::manifest::list(dir)? {
            let listed =
                LoadedManifest::load(&path).and_then(|m| Plugin::read(m, &components, None));
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
    for b in runbook_engine::builtin::all() {
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

/// The plugins as Markdown, from their manifests: what each does, its
/// outcomes, inputs, the resources they name, and its grant.
fn catalogue(
    runtime: &Runtime,
    dirs: &[std::path::PathBuf],
    components: &[std::path::PathBuf],
) -> Result<Exit> {
    let mut plugins: Vec<Plugin> = Vec::new();
    for dir in dirs {
        for path in runbook_core::manifest::list(dir)? {
            plugins.push(Plugin::read(
                LoadedManifest::load(&path)?,
                components,
                None,
            )?);
        }
    }
    for b in runbook_engine::builtin::all() {
        if !plugins.iter().any(|p| p.name() == b.name) {
            plugins.push(Plugin::builtin(runtime, b)?);
        }
    }
    let mut out = String::new();
    for p in &plugins {
        let m = &p.manifest.manifest;
        say!(
            out,
            "### `{}` {}
",
            m.name,
            m.version
        );
        if let Some(d) = &m.description {
            say!(
                out, "{d}.
"
            );
        }
        let labels = m
            .outcomes
            .as_ref()
            .map(|o| {
                o.iter()
                    .map(|l| format!("`{l}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "not declared".into());
        say!(out, "- outcomes: {labels}");
        let grants = m.grants.describe();
        say!(
            out,
            "- manifest grant: {}",
            if grants.is_empty() {
                "none".to_string()
            } else {
                grants.join("; ")
            }
        );
        for r in &m.resources {
            say!(
                out,
                "- its inputs name: {} `{}` for {}",
                r.interface,
                r.name,
                r.access
            );
        }
        if let Some(inputs) = &m.inputs {
            say!(out, "\n| input | type | | |\n|---|---|---|---|");
            for (name, spec) in inputs {
                let (need, kind) = (spec.need(), spec.kind_name());
                say!(
                    out,
                    "| `{name}` | {kind} | {need} | {} |",
                    spec.description
                        .as_deref()
                        .unwrap_or("")
                        .replace('|', "\\|")
                );
            }
        }
        say!(out, "");
    }
    say!(out, "### Capabilities\n");
    say!(
        out,
        "| interface | resources are written | mutates |\n|---|---|---|"
    );
    for i in runbook_core::interface::Interface::ALL {
        say!(
            out,
            "| `{i}` | {} | {} |",
            i.resource_form(),
            if i.can_mutate() { "yes" } else { "no" }
        );
    }
    emit(&out)?;
    Ok(Exit::Ok)
}
