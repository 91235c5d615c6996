//! `runbook review`: the capability diff a reviewer reads in a pull
//! request.

use super::emit;
use super::lock::{current, groups};
use crate::cli::ReviewArgs;
use anyhow::{Context, Result};
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_core::lock::{FILE_NAME, LockFile};
use runbook_core::review::{Change, Kind, diff, markdown};
use runbook_engine::runtime::{Runtime, default_cache_dir};
use std::path::Path;
use std::process::Command;

pub fn review(args: ReviewArgs) -> Result<Exit> {
    let runtime = Runtime::new(default_cache_dir())?;
    let mut all: Vec<Change> = Vec::new();
    let mut bases: Vec<String> = Vec::new();
    // The organisation's policies, asked over what the runbooks now run.
    // Checked against the trust file given, else the one beside the
    // first runbooks' directory (as `check` and `run` find it).
    let groups = groups(&args.paths)?;
    let trust = runbook_core::signing::Trust::find(
        args.search.trust.as_deref(),
        groups.first().map(|g| g.dir.as_path()),
    )?;
    let policies =
        runbook_engine::sources::policies(args.search.policies.as_deref(), trust.as_ref())?;
    let mut findings = Vec::new();
    for group in groups {
        let (base, shown) = match &args.base {
            None => {
                let path = group.dir.join(FILE_NAME);
                let shown = if path.is_file() {
                    format!("`{}`", path.display())
                } else {
                    format!("no lock (`{}` does not exist)", path.display())
                };
                (LockFile::load_or_empty(&group.dir)?, shown)
            }
            Some(rev) => at_revision(&group.dir, rev)?,
        };
        let now = current(&runtime, &group, &args.search, base.clone())?;
        all.extend(diff(&base, &now));
        if let Some(p) = &policies {
            findings.extend(super::guardrails::of_lock(p, &now, &group.dir));
        }
        bases.push(shown);
    }
    all.sort_by_key(|c| c.kind);
    let widened = all.iter().any(|c| c.kind == Kind::Widened);
    if args.json {
        let doc = serde_json::json!({
            "base": bases,
            "widened": all.iter().filter(|c| c.kind == Kind::Widened).count(),
            "changed": all.iter().filter(|c| c.kind == Kind::Changed).count(),
            "narrowed": all.iter().filter(|c| c.kind == Kind::Narrowed).count(),
            "changes": all,
            "guardrails": findings.iter().map(|f| serde_json::json!({
                "step": f.step,
                "action": f.action,
                "resource": f.resource,
                "kind": f.kind_name(),
                "rule": match &f.kind {
                    runbook_policy::review::Kind::NeedsApprovals(rule) => serde_json::to_value(rule).ok(),
                    _ => None,
                },
                "finding": f.describe_for_step(),
                "policies": f.policies,
            })).collect::<Vec<_>>(),
        });
        emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        let mut text = markdown(&bases.join(", "), &all);
        if let Some(p) = &policies {
            text.push_str(&format!("\n## Guardrails (`{}`)\n\n", p.dir.display()));
            if findings.is_empty() {
                text.push_str("No step's changes are forbidden or held by a policy.\n");
            }
            for f in &findings {
                text.push_str(&format!("- {}\n", f.describe()));
            }
        }
        emit(&text)?;
    }
    Ok(if widened { Exit::Widened } else { Exit::Ok })
}

/// The lock committed at git revision `rev` in `dir`'s repository (empty
/// when there was none then), and how to name it.
fn at_revision(dir: &Path, rev: &str) -> Result<(LockFile, String)> {
    if rev.starts_with('-') {
        return Err(hinted(
            format!("`--base {rev}` is not a git revision"),
            "name a branch, tag or commit, e.g. `--base main`",
        ));
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(dir)
            .args(args)
            .output()
            .context("running `git`; is it installed?")
    };
    let commit = git(&[
        "rev-parse",
        "--verify",
        "--quiet",
        &format!("{rev}^{{commit}}"),
    ])?;
    if !commit.status.success() {
        return Err(hinted(
            format!(
                "`--base {rev}`: no such git revision in the repository of `{}`",
                dir.display()
            ),
            "name a branch, tag or commit that exists here (in CI, fetch it first: `git fetch origin main`)",
        ));
    }
    let spec = format!("{rev}:./{FILE_NAME}");
    let shown = format!("`{spec}`");
    let file = git(&["show", &spec])?;
    if !file.status.success() {
        return Ok((
            LockFile::empty(),
            format!("`{rev}`, which has no `{FILE_NAME}`"),
        ));
    }
    let text = String::from_utf8(file.stdout).map_err(|_| {
        hinted(
            format!("{shown} is not UTF-8"),
            "`runbook lock` writes UTF-8; was it edited by hand?",
        )
    })?;
    Ok((LockFile::parse(&text, Path::new(&spec))?, shown))
}
