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

use crate::store::JetStreamStore;
use anyhow::{Context, Result};
use runbook_capabilities::environment::Environment;
use runbook_capabilities::notify::NotifyBackend;
use runbook_capabilities::notify::live::Notify;
use runbook_journal::store::Store;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What happened to a parked run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    Parked,
    Escalated,
    Continued,
}

/// The page a parked run gets, if its environment names a target: the
/// target and dedup key, to record in the parked entry before sending.
/// One key per parking (`parking`: the journal sequence of the
/// `awaiting-approval` end that parked it): the resolve of one parking,
/// however late it arrives, cannot close the page of the next, even when
/// a runbook that loops back parks again at the same step.
pub fn planned(env: Option<&Path>, run_id: &str, step: &str, parking: u64) -> Option<Value> {
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
        "dedup_key": format!("runbook-approval-{run_id}-{step}-{parking}"),
    }))
}

/// Sends (or resolves) the page `plan` describes for `parked` (the parked
/// entry: run, step, change), bounded by the environment's notify
/// timeouts.
pub async fn send(plan: &Value, parked: &Value, event: Event) -> Result<String> {
    let path = plan["env"].as_str().unwrap_or_default();
    let env = Environment::load(Path::new(path))?;
    let config = env.notify.clone();
    // AWS when SNS or a Secrets Manager secret needs it; the page's
    // routing key read now.
    let ctx = env
        .live_context(&[runbook_core::interface::Interface::Notify].into(), None)
        .await?;
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
        Event::Escalated if parked["escalated"]["journaled"] == false => Some((
            format!(
                "runbook run {run} escalated: nobody approved step `{step}` ({change}) in time, and its journal cannot be continued"
            ),
            Severity::Critical,
        )),
        Event::Escalated => Some((
            format!(
                "runbook run {run} escalated: nobody approved step `{step}` ({change}) in time"
            ),
            Severity::Critical,
        )),
        Event::Continued => None,
    };
    // A change under an approval rule: on Slack, a message with buttons
    // the console takes the clicks of.
    let intent = parked["intent"]
        .as_str()
        .filter(|_| matches!(event, Event::Parked));
    let sent = match (page, intent) {
        (Some((summary, _)), Some(intent)) => {
            let value = format!("{run} {step} {intent}");
            notify
                .approval_request(target, &summary, &value, key, deadline)
                .await
        }
        (Some((summary, severity)), None) => {
            notify.page(target, &summary, severity, key, deadline).await
        }
        (None, _) => notify.resolve(target, key, deadline).await,
    };
    sent.map(|s| s.status)
        .map_err(|e| anyhow::anyhow!("paging `{target}`: {e:?}"))
}

/// Tries of a page, and the pause before the second (doubling).
const PAGE_TRIES: u32 = 3;
const PAGE_BACKOFF: Duration = Duration::from_secs(2);

/// What became of a page.
struct Tried {
    /// The last answer: the status, or why it was not delivered.
    answer: Result<String>,
    tries: u32,
    /// A parked page delivered after its run went on is resolved again:
    /// that resolve's answer.
    resolved_late: Option<Result<String>>,
}

/// [`send`], tried up to `PAGE_TRIES` times (the same dedup key: a page
/// that did arrive is one incident), each outcome logged.
async fn send_tried(
    store: &Arc<JetStreamStore>,
    plan: &Value,
    parked: &Value,
    event: Event,
) -> Tried {
    let run = parked["run_id"].as_str().unwrap_or_default();
    let mut attempt = 1;
    loop {
        // A run approved while its page was being retried: paging now
        // would open what its approval already resolved.
        if attempt > 1 && event == Event::Parked && !still_parked(store, parked).await {
            tracing::info!(run, "not paging again: the run went on meanwhile");
            return Tried {
                answer: Err(anyhow::anyhow!(
                    "not tried again: the run went on meanwhile"
                )),
                tries: attempt - 1,
                resolved_late: None,
            };
        }
        match send(plan, parked, event).await {
            Ok(status) => {
                tracing::info!(run, ?event, status, attempt, "paged");
                // Approved while this page was on its way (its tries take
                // seconds): the run's own resolve, sent once it left the
                // parked list, may have arrived first and this page would
                // stay open. Resolved again, after it, so the last word
                // on the key is the resolve. (Still parked here means it
                // leaves the list later, and its resolve comes after.)
                // The key is this parking's alone: the resolve closes
                // nothing the run asked for since.
                let mut resolved_late = None;
                if event == Event::Parked && !still_parked(store, parked).await {
                    let resolved = send(plan, parked, Event::Continued).await;
                    match &resolved {
                        Ok(_) => tracing::info!(run, "page resolved: the run went on meanwhile"),
                        Err(e) => tracing::warn!(run, "resolving a page sent late: {e:#}"),
                    }
                    resolved_late = Some(resolved);
                }
                return Tried {
                    answer: Ok(status),
                    tries: attempt,
                    resolved_late,
                };
            }
            Err(e) if attempt < PAGE_TRIES => {
                tracing::warn!(run, ?event, attempt, "could not page, trying again: {e:#}");
                tokio::time::sleep(PAGE_BACKOFF * 2u32.pow(attempt - 1)).await;
                attempt += 1;
            }
            Err(e) => {
                tracing::error!(
                    run,
                    ?event,
                    attempts = PAGE_TRIES,
                    "could not page; nobody was told: {e:#}"
                );
                return Tried {
                    answer: Err(e),
                    tries: attempt,
                    resolved_late: None,
                };
            }
        }
    }
}

/// Whether `parked` (an entry as it was parked) is still on the parked
/// list (yes when that cannot be read: the page is then sent).
async fn still_parked(store: &Arc<JetStreamStore>, parked: &Value) -> bool {
    let fleet = store.fleet().clone();
    let (id, since) = (
        parked["run_id"].as_str().unwrap_or_default().to_string(),
        parked["since_ms"].clone(),
    );
    tokio::task::spawn_blocking(move || {
        crate::parked::list(&fleet).map(|all| all[&id]["since_ms"] == since)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or(true)
}

/// An error as the journal keeps it: a refusal's answer body is left out
/// (a relay may echo what it was sent, a routing key with it).
fn journaled_error(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    match text.find("refused: ") {
        Some(i) => {
            let code: String = text[i + 9..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            format!("{}refused: {code} (its answer is not kept)", &text[..i])
        }
        None => text,
    }
}

/// How long the page's journal line waits for the run to be free (it is
/// held while a worker continues it).
const RECORD_WAIT: Duration = Duration::from_secs(120);

/// Pages as [`send_tried`] does, then journals what happened in the run's
/// own journal (a `page` line: which event, the target and dedup key,
/// delivered or not, the status or error, the tries, and a resolve sent
/// after a late page), so `runbook show` and an audit see whether the
/// approvers were told. For callers that go on either way; returns
/// whether it was delivered.
pub async fn deliver(store: Arc<JetStreamStore>, plan: Value, parked: Value, event: Event) -> bool {
    let Tried {
        answer,
        tries,
        resolved_late,
    } = send_tried(&store, &plan, &parked, event).await;
    let mut line = json!({
        "about": match event {
            Event::Parked => "parked",
            Event::Escalated => "escalated",
            Event::Continued => "continued",
        },
        "step": parked["step"],
        "target": plan["target"],
        "dedup_key": plan["dedup_key"],
        "delivered": answer.is_ok(),
        "tries": tries,
    });
    match &answer {
        Ok(status) => line["status"] = status.clone().into(),
        Err(e) => line["error"] = journaled_error(e).into(),
    }
    if let Some(resolved) = &resolved_late {
        line["resolved_late"] = match resolved {
            Ok(status) => json!({ "delivered": true, "status": status }),
            Err(e) => json!({ "delivered": false, "error": journaled_error(e) }),
        };
    }
    let run_id = parked["run_id"].as_str().unwrap_or_default().to_string();
    let recorded =
        tokio::task::spawn_blocking(move || record(&store, &run_id, line).map(|()| run_id)).await;
    match recorded {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!("a page's delivery is not in its run's journal: {e:#}"),
        Err(e) => tracing::error!("a page's delivery is not in its run's journal: {e}"),
    }
    answer.is_ok()
}

/// Pages the escalation of the parked run `parked` (an entry that names
/// its page). One escalated without its journal keeps what became of the
/// page on its parked entry instead ([`crate::parked::mark_paged`]).
pub async fn escalated(store: Arc<JetStreamStore>, parked: Value) {
    let fleet = store.fleet().clone();
    let plan = parked["page"].clone();
    let delivered = deliver(store, plan, parked.clone(), Event::Escalated).await;
    if parked["escalated"]["journaled"] == false {
        let id = parked["run_id"].as_str().unwrap_or_default().to_string();
        let _ = tokio::task::spawn_blocking(move || {
            crate::parked::mark_paged(&fleet, &id, &parked, delivered)
        })
        .await;
    }
}

/// Appends `line` as a `page` event to `run_id`'s journal, waiting (up to
/// `RECORD_WAIT`) while another process holds the run.
fn record(store: &JetStreamStore, run_id: &str, line: Value) -> Result<()> {
    let until = Instant::now() + RECORD_WAIT;
    // Bounded by the time, and by a count should the clock stall.
    for _ in 0..RECORD_WAIT.as_secs() * 2 {
        match store.reopen_run(run_id) {
            Ok(journal) => {
                journal.record("page", line)?;
                return Ok(());
            }
            Err(e) if runbook_journal::holder::Held::in_chain(&e) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.context(format!("journaling a page for run `{run_id}`"))),
        }
    }
    Err(anyhow::anyhow!(
        "journaling a page for run `{run_id}`: the run stayed held for {} s",
        RECORD_WAIT.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal's answer (which a relay may fill with what it was sent)
    /// never reaches the journal; other errors do, as they are.
    #[test]
    fn a_refusal_is_journaled_without_its_answer() {
        let e = anyhow::anyhow!(
            "paging `approvers`: `approvers` refused: 400 Bad Request {{\"routing_key\":\"secret-key\"}}"
        );
        let kept = journaled_error(&e);
        assert_eq!(
            kept,
            "paging `approvers`: `approvers` refused: 400 (its answer is not kept)"
        );
        let e = anyhow::anyhow!("paging `approvers`: `approvers`: answered 503 after 3 attempts");
        assert_eq!(journaled_error(&e), format!("{e:#}"));
    }
}
