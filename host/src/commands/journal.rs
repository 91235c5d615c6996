//! `runbook show`, `runbook runs`, `runbook verify-log`: what the journals
//! say, also about runs that crashed.

use super::{emit, say};
use crate::cli::{RunsArgs, ShowArgs, VerifyLogArgs};
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_journal::replay::finished;
use serde_json::Value;

pub fn show(args: ShowArgs) -> Result<Exit> {
    let (store, fleet) = super::run::store_and_fleet(&args.state)?;
    let Some(report) = runbook_engine::rebuild::report_of(&*store, &args.run_id)? else {
        return Err(runbook_core::error::hinted(
            format!("no run `{}` here", args.run_id),
            "`runbook runs` lists the runs; pass `--state-dir` if it was started with another",
        ));
    };
    // An alert that started the run and has resolved since (fleet only).
    let read = store.read_run(&args.run_id);
    let lines: &[Value] = read.as_deref().unwrap_or_default();
    let incident = lines
        .iter()
        .find(|l| l["event"] == "run-start")
        .and_then(|l| l["incident"].as_str());
    let resolved = match (&fleet, incident) {
        (Some(fleet), Some(incident)) => runbook_fleet::alertmanager::resolved(fleet, incident)?,
        _ => None,
    };
    emit(&if args.json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(r) = &resolved {
            v["alert_resolved"] = r.clone();
        }
        serde_json::to_string_pretty(&v)? + "\n"
    } else if args.markdown {
        let lines = read
            .as_deref()
            .map_err(|e| anyhow::anyhow!("reading run `{}`: {e:#}", args.run_id))?;
        let start = lines
            .iter()
            .find(|l| l["event"] == "run-start")
            .cloned()
            .unwrap_or_default();
        let context = runbook_engine::postmortem::Context::from_run_start(
            &start,
            store.journal_location(&args.run_id),
        );
        runbook_engine::postmortem::markdown(&report, &context)
    } else {
        let mut text = report.render() + &pages(lines) + &decisions(lines);
        if let Some(r) = &resolved {
            say!(
                text,
                "the alert that started it resolved at {} (Alertmanager; noted {})",
                r["ends_at"].as_str().unwrap_or("?"),
                r["noted_at"].as_str().unwrap_or("?")
            );
        }
        text
    })?;
    Ok(Exit::Ok)
}

/// The decisions recorded on the run's parked changes and, when it
/// waits for one under an approval rule, the change (by its digest, which
/// `runbook approve --intent` takes) and where it stands.
fn decisions(lines: &[Value]) -> String {
    use runbook_core::approval::{Choice, Tally};
    use runbook_journal::approvals;
    let mut out = String::new();
    for v in approvals::votes(lines) {
        say!(
            out,
            "{} {} step `{}` at {} ({}, from {}; change {})",
            v.by,
            match v.decision {
                Choice::Approve => "approved",
                Choice::Deny => "denied",
            },
            v.step,
            runbook_core::time::rfc3339(v.at_ms),
            v.how,
            v.from,
            v.intent
        );
    }
    if let Some(p) = approvals::pending(lines)
        && let Some(rule) = approvals::rules(lines).get(&p.step)
    {
        say!(out, "waits for: {} ({})", p.change, p.intent);
        let standing = match approvals::standing(lines, rule, &p) {
            Tally::Waiting { have, need } if have.is_empty() => format!("0 of {need} approvals"),
            Tally::Waiting { have, need } => {
                format!("{} of {need} approvals ({})", have.len(), have.join(", "))
            }
            Tally::Approved(by) => format!("approved by {}: resume the run", by.join(", ")),
            Tally::Denied(by) => format!("denied by {by}: resume the run"),
        };
        say!(out, "approvals: {standing}; rule: {}", rule.describe());
    }
    out
}

/// The approvers' pages a fleet journaled for the run (parked, escalated,
/// continued): whether each reached its target.
fn pages(lines: &[Value]) -> String {
    let mut out = String::new();
    for l in lines.iter().filter(|l| l["event"] == "page") {
        let text = |k: &str| l[k].as_str().unwrap_or("?").to_string();
        let mut answer = match l["delivered"].as_bool() {
            Some(true) => format!("delivered ({})", text("status")),
            _ => format!("NOT delivered: {}", text("error")),
        };
        // Delivered after the run went on, and so resolved again.
        let late = &l["resolved_late"];
        if late.is_object() {
            let late_text = |k: &str| late[k].as_str().unwrap_or("?").to_string();
            answer += &match late["delivered"].as_bool() {
                Some(true) => format!(
                    " after the run went on, then resolved ({})",
                    late_text("status")
                ),
                _ => format!(
                    " after the run went on, and NOT resolved: {}",
                    late_text("error")
                ),
            };
        }
        say!(
            out,
            "page to `{}` ({} at step `{}`): {answer}, {} tries",
            text("target"),
            text("about"),
            text("step"),
            l["tries"]
        );
    }
    out
}

pub fn runs(args: RunsArgs) -> Result<Exit> {
    let store = super::run::store_for(&args.state)?;
    let mut out = String::new();
    if !args.json {
        say!(
            out,
            "{:<14} {:<21} {:<10} {:<18} {:<20} incident",
            "run",
            "started",
            "runbook",
            "status",
            "by"
        );
    }
    for id in store.recent_runs(args.limit)? {
        let lines = store.read_run(&id).unwrap_or_default();
        let start = lines.iter().find(|l| l["event"] == "run-start");
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let status = match finished(&lines) {
            Some(e) => text(&e["status"]),
            None if store.is_running(&id) => "running".into(),
            None => "unfinished".into(),
        };
        if args.json {
            let row = serde_json::json!({
                "run_id": id,
                "started": start.map(|s| s["time"].clone()),
                "runbook": start.map(|s| s["runbook"]["id"].clone()),
                "status": status,
                "incident": start.map(|s| s["incident"].clone()),
                "holder": start.map(|s| s["holder"].clone()),
                "applied": lines
                    .iter()
                    .filter(|l| l["event"] == "applied")
                    .map(|l| format!("{} {}", text(&l["step"]), text(&l["resource"])))
                    .collect::<Vec<_>>(),
            });
            say!(out, "{row}");
            continue;
        }
        say!(
            out,
            "{:<14} {:<21} {:<10} {:<18} {:<20} {}",
            id,
            start
                .map(|s| text(&s["time"]))
                .unwrap_or_default()
                .get(..19)
                .unwrap_or(""),
            start.map(|s| text(&s["runbook"]["id"])).unwrap_or_default(),
            status,
            start
                .map(|s| format!(
                    "{}@{}",
                    text(&s["holder"]["who"]),
                    text(&s["holder"]["host"])
                ))
                .unwrap_or_default(),
            start.map(|s| text(&s["incident"])).unwrap_or_default(),
        );
    }
    emit(&out)?;
    Ok(Exit::Ok)
}

pub fn verify_log(args: VerifyLogArgs) -> Result<Exit> {
    let shown = args.file.display();
    match runbook_journal::chain::verify(&args.file)? {
        Ok(n) => {
            emit(&format!("`{shown}`: {n} lines, the chain is intact\n"))?;
            Ok(Exit::Ok)
        }
        Err(broken) => {
            emit(&format!(
                "`{shown}`: line {}: {}\n",
                broken.line, broken.why
            ))?;
            Ok(Exit::Failed)
        }
    }
}
