//! `runbook new` and `runbook build`.

use super::{emit, say};
use crate::cli::{BuildArgs, NewArgs};
use anyhow::Result;
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_core::ids::Name;
use runbook_engine::plugin::{ImportKind, Plugin, classify};
use runbook_kit;
use std::path::PathBuf;

pub fn new(args: NewArgs) -> Result<Exit> {
    let name = Name::parse(&args.name).map_err(|why| {
        hinted(
            format!("`{}` is not a plugin name: {why}", args.name),
            "use lowercase words joined by `-`, e.g. `check-error-budget`",
        )
    })?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(name.as_str()));
    let files = runbook_kit::new(&name, args.lang, &dir)?;
    let mut out = String::new();
    say!(
        out,
        "wrote a {} step plugin `{name}` in `{}`:",
        match args.lang {
            runbook_kit::Lang::Rust => "Rust",
            runbook_kit::Lang::Python => "Python",
            runbook_kit::Lang::Js => "JavaScript",
        },
        dir.display()
    );
    for f in files.iter().filter(|f| !f.starts_with("vendor/")) {
        say!(out, "  {f}");
    }
    if files.iter().any(|f| f.starts_with("vendor/")) {
        say!(out, "  vendor/runbook-sdk/ (the guest SDK)");
    }
    say!(
        out,
        "next: cd {} and follow README.md (build, test)",
        dir.display()
    );
    emit(&out)?;
    Ok(Exit::Ok)
}

pub fn build(args: BuildArgs) -> Result<Exit> {
    let dirs = match args.dir {
        Some(d) => vec![d],
        None => default_dirs()?,
    };
    let mut out = String::new();
    for dir in dirs {
        let built = runbook_kit::build(&dir)?;
        // Read back as a run would, without compiling: digest, imports
        // against the grant, memory at start.
        let plugin = Plugin::read(built.manifest, &[], None)?;
        let m = &plugin.manifest.manifest;
        plugin.check_imports(&m.grants, None)?;
        say!(
            out,
            "built `{}` ({}, {:.1} MB, {:.1} s)",
            built.component.display(),
            match built.lang {
                runbook_kit::Lang::Rust => "Rust",
                runbook_kit::Lang::Python => "Python",
                runbook_kit::Lang::Js => "JavaScript",
            },
            plugin.size as f64 / 1e6,
            built.seconds
        );
        say!(out, "  sha256   {}", plugin.digest);
        let caps: Vec<String> = plugin
            .imports
            .iter()
            .filter_map(|i| match classify(i, &m.grants) {
                ImportKind::Capability { interface, .. } => Some(interface.to_string()),
                _ => None,
            })
            .collect();
        say!(
            out,
            "  imports  {} (all granted); WASI linked with nothing behind it",
            if caps.is_empty() {
                "no capability".to_string()
            } else {
                caps.join(", ")
            }
        );
        for line in m.grants.describe() {
            say!(out, "  grant    {line}");
        }
        let need = plugin.memory_at_start.div_ceil(1 << 20);
        say!(
            out,
            "  memory   {need} MiB at start, of {} MiB allowed{}",
            m.limits.memory_mib,
            if u64::from(m.limits.memory_mib) < need {
                ": RAISE `limits.memory_mib`, it cannot start"
            } else {
                ""
            }
        );
    }
    emit(&out)?;
    Ok(Exit::Ok)
}

/// `.` when it is a plugin, else every `plugins/*` that is.
fn default_dirs() -> Result<Vec<PathBuf>> {
    let here = PathBuf::from(".");
    if here.join(runbook_core::manifest::FILE_NAME).is_file() {
        return Ok(vec![here]);
    }
    let mut found = Vec::new();
    if let Ok(entries) = fs_err::read_dir("plugins") {
        for e in entries.flatten() {
            if e.path().join(runbook_core::manifest::FILE_NAME).is_file() {
                found.push(e.path());
            }
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(hinted(
            "no plugin here: no `plugin.toml` in `.` nor in `plugins/*/`",
            "name the plugin's directory: `runbook build plugins/NAME`",
        ));
    }
    Ok(found)
}
