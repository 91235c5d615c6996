//! Paging people about parked runs, through the notify capability's live
//! backend: the run's environment names the target in `[notify]`
//! `approvals = "ALIAS"` (one of its `[notify.targets]`). A run that parks
//! pages it (warning), one that escalates pages it again (critical, the
//! same dedup key, so PagerDuty updates one incident), and one that
//! continues after its approval resolves the page. Simulated runs and
//! environments without `approvals` page nobody; the parked-run event
//! and the log still say it.
//!
//! The parked entry in the fleet's state names the target and dedup key
//! before the page is sent: what was sent, or would have been, is on
//! record, and a page sent twice is one incident.

use anyhow::{Context, Result};
use runbook_capabilities::capability::LiveContext;
use runbook_capabilities::environment::Environment;
use runbook_capabilities::notify::NotifyBackend;
use runbook_capabilities::notify::live::Notify;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// What happened to a parked run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    Parked,
    Escalated,
    Continued,
}

/// The page a parked run gets, if its environment names a target: the
/// target and dedup key (one per run and step: a page resolved when the
/// run goes on is not the one it may get at its next step), to record in
/// the parked entry before sending.
pub fn planned(env: Option<&Path>, run_id: &str, step: &str) -> Option<Value> {
    let env = match Environment::load(env?) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(run_id, "nobody is paged about this parked run: {e:#}");
            return None;
        }
    };
    let target = env.notify.approvals.clone()?;
    Some(json!({
        "env": env.path,
        "target": target,
        "dedup_key": format!("runbook-approval-{run_id}-{step}"),
    }))
}

/// Sends (or resolves) the page `plan` describes for `parked` (the parked
/// entry: run, step, change), bounded by the environment's notify
/// timeouts.
pub async fn send(plan: &Value, parked: &Value, event: Event) -> Result<String> {
    let path = plan["env"].as_str().unwrap_or_default();
    let env = Environment::load(Path::new(path))?;
    let config = env.notify.clone();
    let aws = if config.uses_sns() {
        Some(runbook_capabilities::aws::load(&env.aws).await?)
    } else {
        None
    };
    let ctx = LiveContext {
        aws,
        incident_start_ms: None,
    };
    let notify = Notify::new(config, &ctx).context("setting up the page")?;
    let target = plan["target"].as_str().unwrap_or_default();
    let key = plan["dedup_key"].as_str().unwrap_or_default();
    let text = |k: &str| parked[k].as_str().unwrap_or_default().to_string();
    let (run, step, change) = (text("run_id"), text("step"), text("change"));
    let deadline = Instant::now() + Duration::from_secs(60);
    use runbook_capabilities::bindings::runbook::host::notify::Severity;
    let page = match event {
        Event::Parked => Some((
            format!(
                "runbook run {run} waits for approval of step `{step}` ({change}): `runbook approve {run} {step}`"
            ),
            Severity::Warning,
        )),
        Event::Escalated => Some((
            format!(
                "runbook run {run} escalated: nobody approved step `{step}` ({change}) in time"
            ),
            Severity::Critical,
        )),
        Event::Continued => None,
    };
    let sent = match page {
        Some((summary, severity)) => notify.page(target, &summary, severity, key, deadline).await,
        None => notify.resolve(target, key, deadline).await,
    };
    sent.map(|s| s.status)
        .map_err(|e| anyhow::anyhow!("paging `{target}`: {e:?}"))
}

/// Tries of a page, and the pause before the second (doubling).
const PAGE_TRIES: u32 = 3;
const PAGE_BACKOFF: Duration = Duration::from_secs(2);

/// [`send`], tried up to `PAGE_TRIES` times (the same dedup key: a page
/// that did arrive is one incident), each outcome logged; for callers that
/// go on either way. Returns whether it was delivered.
pub async fn send_logged(plan: &Value, parked: &Value, event: Event) -> bool {
    let run = parked["run_id"].as_str().unwrap_or_default();
    for attempt in 1..=PAGE_TRIES {
        match send(plan, parked, event).await {
            Ok(status) => {
                tracing::info!(run, ?event, status, attempt, "paged");
                return true;
            }
            Err(e) if attempt < PAGE_TRIES => {
                tracing::warn!(run, ?event, attempt, "could not page, trying again: {e:#}");
                tokio::time::sleep(PAGE_BACKOFF * 2u32.pow(attempt - 1)).await;
            }
            Err(e) => tracing::error!(
                run,
                ?event,
                attempts = PAGE_TRIES,
                "could not page; nobody was told: {e:#}"
            ),
        }
    }
    false
}
