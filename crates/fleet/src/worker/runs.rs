//! What a request asks for, done through the engine: a new run of an
//! incident, the incident's unfinished run continued from its journal, or
//! a parked run continued after an approval.

use super::{Outcome, Worker};
use crate::request::{Request, RunRequest};
use crate::{page, parked};
use anyhow::{Result, anyhow};
use runbook_engine::{Approvals, BackendChoice, ResumeRequest, Unwatched};
use runbook_journal::replay::finished;
use runbook_journal::store::Store;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Worker {
    pub(super) async fn execute(&self, request: Request, delivered: i64) -> Outcome {
        match request {
            Request::Run(r) => self.run(r, delivered).await,
            Request::Resume { run_id, step, by } => {
                tracing::info!(run_id, step, by, "approved: continuing");
                let incident = self
                    .store
                    .read_run(&run_id)
                    .ok()
                    .and_then(|l| {
                        l.iter()
                            .find(|l| l["event"] == "run-start")
                            .and_then(|s| s["incident"].as_str().map(str::to_string))
                    })
                    .unwrap_or_default();
                self.continue_run(&run_id, &incident, None).await
            }
        }
    }

    async fn run(&self, r: RunRequest, delivered: i64) -> Outcome {
        if let Err(e) = r.check_files() {
            return Outcome::Refused(e);
        }
        let store = self.store.clone();
        let incident = r.incident.clone();
        let last = {
            let store = store.clone();
            let incident = incident.clone();
            tokio::task::spawn_blocking(
                move || -> Result<Option<(String, Vec<serde_json::Value>, bool)>> {
                    let Some(last) = store.incident_runs(&incident)?.last().cloned() else {
                        return Ok(None);
                    };
                    let lines = store.read_run(&last)?;
                    let running = store.is_running(&last);
                    Ok(Some((last, lines, running)))
                },
            )
            .await
        };
        let last = match last {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(incident, "reading the incident's runs: {e:#}");
                return Outcome::Later;
            }
            Err(e) => return Outcome::Refused(anyhow!("{e}")),
        };
        match last {
            Some((run_id, lines, _)) if finished(&lines).is_some() => {
                // Handled already, or parked for an approval: the same
                // alarm again is not another run.
                tracing::info!(
                    incident,
                    run_id,
                    delivered,
                    "duplicate request: the incident has its run"
                );
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
            Some((_, _, true)) => Outcome::Later,
            Some((run_id, lines, false)) if lines.iter().any(|l| l["event"] == "run-start") => {
                tracing::info!(
                    incident,
                    run_id,
                    delivered,
                    "continuing the incident's unfinished run from its journal"
                );
                self.continue_run(&run_id, &incident, Some(&r)).await
            }
            _ => self.start(&r).await,
        }
    }

    async fn start(&self, r: &RunRequest) -> Outcome {
        let Ok(backend) = BackendChoice::from_flags(r.sim.as_deref(), r.env.as_deref()) else {
            return Outcome::Refused(anyhow!("the request names no backend"));
        };
        let request = runbook_engine::RunRequest {
            incident: Some(r.incident.clone()),
            incident_start: r.incident_start.clone(),
            approvals: Approvals {
                all: r.yes,
                steps: r.approve.clone(),
                // Whoever submitted it asked for it: a step whose rule
                // says so is not theirs to approve.
                starter: Some(r.submitted_by.clone()),
                severity: r.severity.clone(),
                ..Approvals::default()
            },
            // Submitted with a lock (checked to be this worker's): every
            // plugin must be what it pins.
            locked: r.lock_sha256.is_some(),
            // Whether the incident has had its run was read just now (in
            // `run`), and this store starts no second run of an incident
            // in any case: not read once more.
            new: true,
            trace: r.trace.clone(),
            ..runbook_engine::RunRequest::new(r.runbook.clone(), backend)
        };
        tracing::info!(incident = r.incident, runbook = %r.runbook.display(), "starting a run");
        let engine = self.engine.clone();
        let exit = super::thread::on_own_thread(move || async move {
            engine.run(request, Arc::new(Unwatched)).await
        })
        .await;
        // Reads and writes NATS and files: off the runtime's own threads.
        tokio::task::block_in_place(|| {
            self.after(&r.incident, exit, r.approval_timeout_s, r.env.as_deref())
        })
    }

    async fn continue_run(&self, run_id: &str, incident: &str, r: Option<&RunRequest>) -> Outcome {
        let approved = {
            let (fleet, id) = (self.fleet.clone(), run_id.to_string());
            tokio::task::spawn_blocking(move || parked::approvals(&fleet, &id))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        // What the run was submitted with still holds when it goes on
        // after an approval: `--yes` approved everything up front (but
        // the changes of a step under an approval rule).
        let start = {
            let (store, id) = (self.store.clone(), run_id.to_string());
            tokio::task::spawn_blocking(move || store.read_run(&id))
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|lines| lines.into_iter().find(|l| l["event"] == "run-start"))
                .unwrap_or_default()
        };
        let submitted = start["policy"].clone();
        let mut steps = r.map(|r| r.approve.clone()).unwrap_or_default();
        steps.extend(approved);
        steps.extend(
            submitted["approve"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string)),
        );
        let request = ResumeRequest {
            run_id: run_id.to_string(),
            approvals: Approvals {
                all: r.is_some_and(|r| r.yes) || submitted["yes"] == true,
                steps,
                ..Approvals::default()
            },
            audit_log: None,
            // A run the fleet started recorded its trace at its start.
            trace: r.map(|r| r.trace.clone()).unwrap_or_default(),
        };
        // Who is paged about it, from its parked entry (read, not taken:
        // it stays parked until the run has gone on).
        let paged = {
            let (fleet, id) = (self.fleet.clone(), run_id.to_string());
            tokio::task::spawn_blocking(move || parked::list(&fleet).map(|all| all[&id].clone()))
                .await
                .ok()
                .and_then(Result::ok)
                .map(|entry| entry["page"].clone())
                .filter(|p| !p.is_null())
        };
        // Who is paged if it parks later: the request's environment, its
        // parked entry's, else (a run `resume-all` continued) the live
        // environment it started with.
        let env = r
            .and_then(|r| r.env.clone())
            .or_else(|| {
                paged
                    .as_ref()
                    .and_then(|p| p["env"].as_str().map(std::path::PathBuf::from))
            })
            .or_else(|| {
                (start["backend"]["kind"] == "live")
                    .then(|| {
                        start["backend"]["path"]
                            .as_str()
                            .map(std::path::PathBuf::from)
                    })
                    .flatten()
            });
        let engine = self.engine.clone();
        let exit = super::thread::on_own_thread(move || async move {
            engine.resume(request, Arc::new(Unwatched)).await
        })
        .await;
        // Held elsewhere for now: still parked, delivered again later
        // (its deadline still stands, so it cannot be lost). Its journal
        // altered: it did not go on either, and stays parked until its
        // deadline escalates it.
        let held = match &exit {
            Ok(runbook_engine::Outcome::Blocked(e)) | Err(e) => {
                runbook_journal::holder::Held::in_chain(e)
                    || runbook_journal::chain::Untrusted::in_chain(e)
            }
            _ => false,
        };
        if !held {
            // It went on: off the parked list (before `after` may park it
            // again at a later step), and the page resolved.
            let was_parked = {
                let (fleet, id) = (self.fleet.clone(), run_id.to_string());
                tokio::task::spawn_blocking(move || parked::unpark(&fleet, &id))
                    .await
                    .ok()
                    .flatten()
            };
            if let Some(entry) = was_parked
                && !entry["page"].is_null()
            {
                let (store, plan) = (self.store.clone(), entry["page"].clone());
                tokio::spawn(page::deliver(store, plan, entry, page::Event::Continued));
            }
        }
        tokio::task::block_in_place(|| {
            self.after(
                incident,
                exit,
                r.and_then(|r| r.approval_timeout_s),
                env.as_deref(),
            )
        })
    }
}
