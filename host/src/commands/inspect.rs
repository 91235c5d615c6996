//! `runbook inspect`: a plugin's imports, grants, limits and digest side
//! by side, for review.

use super::{emit, say};
use crate::cli::InspectArgs;
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_core::manifest::{FILE_NAME, LoadedManifest};
use runbook_engine::plugin::{ImportKind, Plugin, classify};
use runbook_engine::runtime::{Runtime, default_cache_dir};
use runbook_engine::sources::component_dirs;

pub fn inspect(args: InspectArgs) -> Result<Exit> {
    let mut out = String::new();
    let runtime = Runtime::new(default_cache_dir())?;
    let builtin = args
        .plugin
        .to_str()
        .filter(|_| !args.plugin.exists())
        .and_then(runbook_engine::builtin::find);
    let plugin = match builtin {
        Some(b) => Plugin::builtin(&runtime, b)?,
        None => {
            let path = if args.plugin.is_dir() {
                args.plugin.join(FILE_NAME)
            } else {
                args.plugin.clone()
            };
            let manifest = LoadedManifest::load(&path)?;
            // Read, not compiled (a Python or JavaScript component takes
            // seconds to compile), unless asked.
            let dirs = component_dirs(&args.components);
            let read = if args.compile {
                let compiling = crate::progress::spinner("compiling the component");
                let loaded = Plugin::load(&runtime, manifest.clone(), &dirs, None);
                compiling.finish_and_clear();
                loaded
            } else {
                Plugin::read(manifest.clone(), &dirs, None)
            };
            match read {
                Ok(p) => p,
                // Show what it imports and why that is refused.
                Err(e) => {
                    if let Some(shown) = unchecked(manifest, &dirs) {
                        emit(&shown)?;
                    }
                    return Err(e);
                }
            }
        }
    };
    let m = &plugin.manifest.manifest;
    let grants = &m.grants;
    say!(out, "plugin     {} {}", m.name, m.version);
    if let Some(d) = &m.description {
        say!(out, "           {d}");
    }
    say!(out, "manifest   {}", plugin.manifest.path.display());
    say!(
        out,
        "component  {} ({} bytes)",
        plugin.component_path.display(),
        plugin.size
    );
    let pinned = match &m.sha256 {
        Some(_) if plugin.builtin => "built in: pinned by this binary",
        Some(_) => "pinned in the manifest, matches",
        None => "not pinned by the manifest: `runbook.lock` pins it for `--locked`",
    };
    say!(out, "sha256     {} ({pinned})", plugin.digest);
    say!(
        out,
        "limits     memory {} MiB, deadline {} ms",
        m.limits.memory_mib,
        m.limits.timeout_ms
    );
    let mib = |b: u64| b.div_ceil(1 << 20);
    if plugin.memory_at_start > u64::from(m.limits.memory_mib) << 20 {
        say!(
            out,
            "memory     NEEDS {} MiB AT START, but `limits.memory_mib` is {}: it cannot start; raise the limit",
            mib(plugin.memory_at_start),
            m.limits.memory_mib
        );
    } else {
        say!(
            out,
            "memory     {} MiB at start, of {} MiB allowed",
            mib(plugin.memory_at_start),
            m.limits.memory_mib
        );
    }
    say!(out, "imports");
    let mut problems = 0;
    let mut used = Vec::new();
    for import in &plugin.imports {
        let verdict = match classify(import, grants) {
            ImportKind::Capability { interface, granted } => {
                used.push(interface);
                if granted {
                    "granted".to_string()
                } else {
                    problems += 1;
                    "NOT GRANTED: refused at load".to_string()
                }
            }
            ImportKind::Always => "always available".into(),
            ImportKind::Wasi => "WASI, sandboxed: nothing behind it".into(),
            ImportKind::UnsupportedWasi => {
                problems += 1;
                "NOT PROVIDED: no network; refused at load".into()
            }
            ImportKind::WrongVersion(v) => {
                problems += 1;
                format!("WRONG VERSION `{v}`: refused at load")
            }
            ImportKind::Unknown => {
                problems += 1;
                "UNKNOWN: refused at load".into()
            }
        };
        say!(out, "  {import:<40} {verdict}");
    }
    say!(out, "grants");
    if grants.interfaces().next().is_none() {
        say!(out, "  (none)");
    }
    for (interface, line) in grants.interfaces().zip(grants.describe()) {
        let note = if used.contains(&interface) {
            "used"
        } else {
            "NOT USED: imported by nothing, can be removed"
        };
        say!(out, "  {line:<60} {note}");
    }
    describe_contract(&mut out, m);
    emit(&out)?;
    Ok(if problems > 0 {
        Exit::Invalid
    } else {
        Exit::Ok
    })
}

/// The manifest's declared outcomes, inputs and the resources they name:
/// what a runbook step can give the plugin, and what its grant must cover.
fn describe_contract(out: &mut String, m: &runbook_core::manifest::Manifest) {
    match &m.outcomes {
        Some(o) => {
            let labels: Vec<String> = o.iter().map(|l| format!("`{l}`")).collect();
            say!(
                out,
                "outcomes   {} (and the host's `error`, `limit-exceeded`)",
                labels.join(", ")
            );
        }
        None => say!(out, "outcomes   not declared: `check` cannot prove routes"),
    }
    match &m.inputs {
        Some(inputs) => {
            say!(out, "inputs");
            for (name, spec) in inputs {
                let (need, kind) = (spec.need(), spec.kind_name());
                say!(
                    out,
                    "  {name:<24} {kind:<11} {need:<18} {}",
                    spec.description.as_deref().unwrap_or("")
                );
            }
        }
        None => say!(out, "inputs     not declared: `check` cannot prove them"),
    }
    if !m.resources.is_empty() {
        say!(
            out,
            "resources  named by inputs; a step's grant must cover them"
        );
        for r in &m.resources {
            say!(out, "  {} {} `{}`", r.interface, r.access, r.name);
        }
    }
}

/// The imports of a component whose plugin was refused, for the reader:
/// what it asks for, read without checking anything.
fn unchecked(manifest: LoadedManifest, dirs: &[std::path::PathBuf]) -> Option<String> {
    let path = manifest.component_path(dirs).ok()?;
    let bytes =
        runbook_core::files::read_bytes(&path, "component", runbook_core::files::MAX_COMPONENT)
            .ok()?;
    let facts = runbook_engine::plugin::read_facts(&bytes).ok()?;
    let mut out = String::new();
    say!(out, "imports of `{}`", path.display());
    for import in &facts.imports {
        let verdict = match classify(import, &manifest.manifest.grants) {
            ImportKind::Capability { granted: true, .. } => "granted",
            ImportKind::Capability { granted: false, .. } => "NOT GRANTED",
            ImportKind::Always => "always available",
            ImportKind::Wasi => "WASI, sandboxed: nothing behind it",
            ImportKind::UnsupportedWasi => "NOT PROVIDED: no network",
            ImportKind::WrongVersion(_) => "WRONG VERSION",
            ImportKind::Unknown => "UNKNOWN",
        };
        say!(out, "  {import:<40} {verdict}");
    }
    Some(out)
}
