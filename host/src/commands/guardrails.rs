//! The organisation's guardrails where people read them: each step's
//! findings in `check` and `review`, and `runbook calendar`.

use crate::cli::{CalendarArgs, PoliciesArgs};
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_core::lock::LockFile;
use runbook_policy::review::Finding;
use runbook_policy::{Policies, StepFacts};
use std::path::Path;

/// The findings for every step of the runbooks in `lock` (found in
/// `dir`), from now on.
pub(super) fn of_lock(policies: &Policies, lock: &LockFile, dir: &Path) -> Vec<Finding> {
    let now = runbook_core::time::now_ms();
    let mut findings = Vec::new();
    for rb in &lock.runbooks {
        let front = runbook_core::runbook::Runbook::load(&dir.join(&rb.file)).ok();
        for step in &rb.steps {
            let plugin = lock.plugins.iter().find(|p| p.name == step.plugin);
            let facts = StepFacts {
                runbook_id: rb.id.clone(),
                title: front.as_ref().map(|f| f.title.clone()).unwrap_or_default(),
                service: front
                    .as_ref()
                    .map(|f| f.service.clone())
                    .unwrap_or_default(),
                step_id: step.id.clone(),
                plugin: step.plugin.to_string(),
                plugin_digest: plugin.map(|p| p.sha256.clone()).unwrap_or_default(),
                signers: Vec::new(),
                origin: plugin.map(|p| p.source.clone()).unwrap_or_default(),
            };
            findings.extend(policies.review(&facts, &step.grants, now));
        }
    }
    findings
}

/// `runbook policies`: the directory validated and listed, or the schema.
pub fn policies(args: PoliciesArgs) -> Result<Exit> {
    if args.schema {
        super::emit(&runbook_policy::schema::text())?;
        return Ok(Exit::Ok);
    }
    let policies = loaded(args.policies.as_deref(), args.trust.as_deref())?;
    let mut out = format!(
        "`{}`: {} policies, valid (sha256 {}…)\n",
        policies.dir.display(),
        policies.sources.len(),
        &policies.digest[..12]
    );
    for s in policies.sources.values() {
        out.push_str(&format!(
            "  {:<32} {} {}, line {}\n",
            s.id,
            s.effect,
            s.file.file_name().unwrap_or_default().to_string_lossy(),
            s.line
        ));
    }
    for c in &policies.calendars.calendars {
        out.push_str(&format!(
            "  calendar {} ({} closed windows)\n",
            c.name,
            c.closed.len()
        ));
    }
    super::emit(&out)?;
    Ok(Exit::Ok)
}

fn loaded(dir: Option<&Path>, trust: Option<&Path>) -> Result<std::sync::Arc<Policies>> {
    let trust = trust.map(runbook_core::signing::Trust::load).transpose()?;
    runbook_engine::sources::policies(dir, trust.as_ref())?.ok_or_else(|| {
        runbook_core::error::hinted(
            "no policy directory: give `--policies DIR` or set `RUNBOOK_POLICIES`",
            "a policy directory holds the `*.cedar` policies and `calendars.toml`",
        )
    })
}

/// `runbook calendar`: each calendar's state now (or at `--at`) and when
/// it next changes.
pub fn calendar(args: CalendarArgs) -> Result<Exit> {
    let policies = loaded(args.policies.as_deref(), None)?;
    let at = match &args.at {
        Some(t) => humantime::parse_rfc3339_weak(t)
            .map_err(|e| {
                runbook_core::error::hinted(
                    format!("`--at {t}` is not a time: {e}"),
                    "give an RFC 3339 time such as `2026-12-04T15:00:00Z`",
                )
            })?
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as u64,
        None => runbook_core::time::now_ms(),
    };
    let states = policies.calendars.at(at);
    let show = |ms: u64| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    };
    let mut out = String::new();
    if args.json {
        let doc: Vec<serde_json::Value> = states
            .iter()
            .map(|s| {
                serde_json::json!({
                    "calendar": s.name,
                    "state": if s.closed { "CLOSED" } else { "OPEN" },
                    "next_change": s.next_change_ms.map(show),
                })
            })
            .collect();
        out.push_str(&serde_json::to_string_pretty(
            &serde_json::json!({ "at": show(at), "calendars": doc }),
        )?);
        out.push('\n');
    } else if states.is_empty() {
        out.push_str(&format!(
            "no calendars in `{}` (add `{}`)\n",
            policies.dir.display(),
            runbook_policy::calendar::FILE
        ));
    } else {
        out.push_str(&format!("at {}\n", show(at)));
        for s in &states {
            let next = match s.next_change_ms {
                Some(t) => format!(
                    "{} at {}",
                    if s.closed { "opens" } else { "closes" },
                    show(t)
                ),
                None => "no change ahead".to_string(),
            };
            out.push_str(&format!(
                "  {:<24} {:<6} {next}\n",
                s.name,
                if s.closed { "CLOSED" } else { "OPEN" }
            ));
        }
    }
    super::emit(&out)?;
    Ok(Exit::Ok)
}
