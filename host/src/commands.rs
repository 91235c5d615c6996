//! What each subcommand does. Each returns the process exit status.

use crate::approval::{Approver, Policy};
use crate::cli::{CheckArgs, InspectArgs, PluginsArgs, RunArgs, Sources};
use crate::engine::{Runtime, default_cache_dir};
use crate::environment::Environment;
use crate::error::hinted;
use crate::manifest::{FILE_NAME, LoadedManifest};
use crate::plan::{self, Plan};
use crate::plugin::{ImportKind, Plugin, classify};
use crate::run::{RunConfig, execute};
use crate::runbook::Runbook;
use crate::scenario::Scenario;
use crate::sim::Sim;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `writeln!` into the command's output, which is printed in one go.
macro_rules! say {
    ($out:ident, $($fmt:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($fmt)*);
    }};
}

/// Prints a command's output; a reader that went away (`| head`) is fine.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Exit status for input that was refused before anything ran.
pub const EXIT_INVALID: u8 = 2;

pub fn run(args: RunArgs) -> Result<u8> {
    if args.sim.is_none() && args.env.is_none() {
        return Err(hinted(
            "no backend chosen for the run",
            "pass `--sim SCENARIO` to run against simulated backends (e.g. `runbooks/scenarios/session-store-outage.toml`), or `--env FILE` for real ones",
        ));
    }
    let runbook = Runbook::load(&args.runbook)?;
    for step in &args.approve {
        if runbook.step(step).is_none() {
            return Err(hinted(
                format!(
                    "`--approve {step}`: runbook `{}` has no step `{step}`",
                    args.runbook.display()
                ),
                "name a step id from the runbook's `steps`",
            ));
        }
    }
    let scenario = args.sim.as_deref().map(Scenario::load).transpose()?;
    let environment = args.env.as_deref().map(Environment::load).transpose()?;
    let incident_start = args
        .incident_start
        .as_deref()
        .map(|t| {
            humantime::parse_rfc3339(t)
                .map(|t| {
                    t.duration_since(std::time::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_millis() as u64
                })
                .map_err(|e| {
                    hinted(
                        format!("`--incident-start {t}`: {e}"),
                        "write it like `2026-11-26T02:52:00Z`",
                    )
                })
        })
        .transpose()?;
    // Compiled code from the cache is not covered by the digest pin, so a
    // locked run compiles from the pinned bytes itself.
    let cache = if args.no_cache || args.sources.locked {
        None
    } else {
        args.cache_dir.clone().or_else(default_cache_dir)
    };
    let runtime = Runtime::new(cache)?;
    let audit = match &args.audit_log {
        Some(path) => Some(Arc::new(crate::audit::AuditLog::open(path)?)),
        None => None,
    };
    let run_id = run_id();
    let loaded =
        Plan::load(&runtime, runbook, &sources(&args.sources, &args.runbook)).and_then(|plan| {
            if let Some(env) = &environment {
                env.check_plan(&plan)?;
            }
            if let (Some(scenario), Some(path)) = (&scenario, &args.sim) {
                scenario.check_plan(&plan, path)?;
            }
            Ok(plan)
        });
    let plan = match loaded {
        Ok(plan) => plan,
        Err(err) => {
            // A refusal before any step ran is a security decision too.
            if let Some(audit) = &audit {
                audit.event(
                    &run_id,
                    "refused",
                    serde_json::json!({
                        "runbook": args.runbook.display().to_string(),
                        "reason": format!("{err:#}"),
                    }),
                );
            }
            return Err(err);
        }
    };
    let policy = if args.dry_run {
        Policy::DryRun
    } else if args.yes {
        Policy::All
    } else {
        Policy::Steps(args.approve.iter().cloned().collect())
    };
    let expect = scenario.as_ref().and_then(|s| s.expect.clone());
    let (mode, backends) = match (scenario, &environment) {
        (Some(scenario), _) => {
            let name = args
                .sim
                .as_deref()
                .and_then(Path::file_stem)
                .map(|s| s.to_string_lossy().into_owned());
            (
                format!("simulation `{}`", name.unwrap_or_default()),
                Sim::new(scenario).backends(),
            )
        }
        (None, Some(env)) => (
            format!("live `{}`", env.path.display()),
            crate::live::backends(env, incident_start, &plan.interfaces())?,
        ),
        (None, None) => unreachable!("checked above"),
    };
    let mode = if args.dry_run {
        format!("{mode}, dry run")
    } else {
        mode
    };
    let cfg = RunConfig {
        run_id,
        mode,
        backends,
        audit,
        approver: Arc::new(Approver::new(
            policy,
            args.sim.is_some(),
            Approver::terminal(),
        )),
    };
    let report = execute(&plan, &runtime.engine, &cfg);
    let mut out = String::new();
    if args.json {
        say!(out, "{}", serde_json::to_string_pretty(&report)?);
    } else {
        out.push_str(&report.render());
        if let Some(e) = expect.filter(|_| !args.dry_run) {
            let path = report.path();
            let status = serde_json::to_value(report.status)?;
            if path == e.path && status == e.status.as_str() {
                say!(out, "scenario: took the expected path");
            } else {
                say!(
                    out,
                    "scenario: expected `{}` via {}, got this run",
                    e.status,
                    e.path.join(" → ")
                );
            }
        }
    }
    emit(&out)?;
    Ok(report.status.exit_code())
}

pub fn check(args: CheckArgs) -> Result<u8> {
    let mut out = String::new();
    let runbook = Runbook::load(&args.runbook)?;
    if !runbook.is_executable() {
        say!(
            out,
            "{} {}: not executable (no `steps`); front matter is valid",
            runbook.runbook_id,
            runbook.title
        );
        emit(&out)?;
        return Ok(0);
    }
    let runtime = Runtime::new(default_cache_dir())?;
    let plan = Plan::load(&runtime, runbook, &sources(&args.sources, &args.runbook))?;
    if let Some(env) = &args.env {
        Environment::load(env)?.check_plan(&plan)?;
    }
    say!(
        out,
        "{} {}: {} steps, all valid",
        plan.runbook.runbook_id,
        plan.runbook.title,
        plan.steps.len()
    );
    for s in &plan.steps {
        let limits = s.plugin.manifest.manifest.limits;
        say!(
            out,
            "  {} → {} (sha256 {}…, {} MiB, {} ms)",
            s.def.id,
            s.plugin.name(),
            &s.plugin.digest[..12],
            limits.memory_mib,
            limits.timeout_ms
        );
        for line in s.grants.describe() {
            say!(out, "      {line}");
        }
        let routes: Vec<String> = s.def.on.iter().map(|(k, v)| format!("{k} → {v}")).collect();
        say!(out, "      routes: {}", routes.join(", "));
    }
    emit(&out)?;
    Ok(0)
}

pub fn inspect(args: InspectArgs) -> Result<u8> {
    let mut out = String::new();
    let runtime = Runtime::new(default_cache_dir())?;
    let builtin = args
        .plugin
        .to_str()
        .filter(|_| !args.plugin.exists())
        .and_then(crate::builtin::find);
    let plugin = match builtin {
        Some(b) => Plugin::builtin(&runtime, b)?,
        None => {
            let path = if args.plugin.is_dir() {
                args.plugin.join(FILE_NAME)
            } else {
                args.plugin.clone()
            };
            let manifest = LoadedManifest::load(&path)?;
            Plugin::load(&runtime, manifest, &component_dirs(&args.components), false)?
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
        None => "not pinned: `--locked` refuses it until the manifest carries `sha256`",
    };
    say!(out, "sha256     {} ({pinned})", plugin.digest);
    say!(
        out,
        "limits     memory {} MiB, deadline {} ms",
        m.limits.memory_mib,
        m.limits.timeout_ms
    );
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
    emit(&out)?;
    Ok(if problems > 0 { EXIT_INVALID } else { 0 })
}

fn sources(s: &Sources, runbook: &Path) -> plan::Sources {
    plan::Sources {
        plugin_dirs: plugin_dirs(&s.plugins, Some(runbook)),
        component_dirs: component_dirs(&s.components),
        locked: s.locked,
    }
}

/// `--plugins`, else `plugins/` beside the runbook.
fn plugin_dirs(flags: &[PathBuf], runbook: Option<&Path>) -> Vec<PathBuf> {
    match (flags, runbook) {
        ([], Some(runbook)) => plan::default_plugin_dirs(runbook),
        _ => flags.to_vec(),
    }
}

/// `--components`, then `RUNBOOK_COMPONENTS`.
fn component_dirs(flags: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = flags.to_vec();
    if let Some(env) = std::env::var_os("RUNBOOK_COMPONENTS") {
        dirs.extend(std::env::split_paths(&env));
    }
    dirs
}

pub fn plugins(args: PluginsArgs) -> Result<u8> {
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
                .and_then(|m| Plugin::load(&runtime, m, &components, false));
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
    Ok(if problems > 0 { EXIT_INVALID } else { 0 })
}

fn run_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    let seed = RandomState::new().hash_one((std::process::id(), crate::scenario::now_ms()));
    format!("{:012x}", seed & 0xffff_ffff_ffff)
}
