//! The runs `runbook runs` lists: one message per run started on
//! `RUNBOOK_RUNS` (a publish, no read, no lock), read back by sequence
//! from the stream's end.

use super::{JetStreamStore, injected};
use crate::nats::{RUNS_SUBJECT, TIMEOUT};
use anyhow::{Result, anyhow};
use async_nats::jetstream::stream::DirectGetErrorKind;
use serde_json::{Value, json};
use std::time::Duration;

/// The most runs one listing reads back.
const MOST_READ: usize = 10_000;

impl JetStreamStore {
    /// Adds the run to the listing: one message on `RUNBOOK_RUNS` (one
    /// acknowledged publish, no read, no lock; its id makes a retry land
    /// once). A run not listed is still itself (found by id and by
    /// incident): a failure here is logged, and tried again in the
    /// background a while.
    pub(super) fn list_run(&self, run_id: &str, started_ms: &Value) {
        let entry = bytes::Bytes::from(json!([started_ms, run_id]).to_string());
        let (js, id) = (self.fleet.js.clone(), format!("listed:{run_id}"));
        let publish = move || {
            let (js, id, entry) = (js.clone(), id.clone(), entry.clone());
            async move {
                let message = async_nats::jetstream::message::PublishMessage::build()
                    .payload(entry)
                    .message_id(&id);
                let sent = async { js.send_publish(RUNS_SUBJECT, message).await?.await };
                match tokio::time::timeout(TIMEOUT, sent).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(anyhow!("listing a run: {e}")),
                    Err(_) => Err(anyhow!("listing a run: no answer in time")),
                }
            }
        };
        // A few tries here (a CLI's process may end soon after its run,
        // and with it anything left in the background), then behind.
        let mut listed = Err(anyhow!("not tried"));
        for attempt in 0..3u64 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(250 * attempt));
            }
            listed = injected("nats-list-run")
                .and_then(|()| self.fleet.wait("listing a run", publish()));
            if listed.is_ok() {
                return;
            }
        }
        if let Err(e) = listed {
            // NATS away for longer: keep at it in the background a while.
            tracing::warn!(run_id, "listing the run later: {e:#}");
            let run_id = run_id.to_string();
            self.fleet.spawn(async move {
                for attempt in 1..=60u64 {
                    tokio::time::sleep(Duration::from_secs(attempt.min(10))).await;
                    if publish().await.is_ok() {
                        return;
                    }
                }
                tracing::warn!(run_id, "the run could not be listed; it is found by its id");
            });
        }
    }

    /// The newest `limit` runs listed on `RUNBOOK_RUNS` (at most
    /// `MOST_READ`), read back from its end (any replica answers; a
    /// listing may lag a moment). A message that cannot be read is an
    /// error, not a run left out unseen.
    pub(super) fn listed(&self, limit: usize) -> Result<Vec<(u64, String)>> {
        let limit = limit.min(MOST_READ);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stream = self.fleet.runs.clone();
        self.fleet.wait("listing runs", async move {
            let last = match tokio::time::timeout(
                TIMEOUT,
                stream.direct_get_last_for_subject(RUNS_SUBJECT),
            )
            .await
            {
                Ok(Ok(m)) => m.sequence,
                Ok(Err(e)) if matches!(e.kind(), DirectGetErrorKind::NotFound) => {
                    return Ok(vec![]);
                }
                Ok(Err(e)) => return Err(anyhow!("listing runs: {e}")),
                Err(_) => return Err(anyhow!("listing runs: no answer in time")),
            };
            let first = last.saturating_sub(limit as u64 - 1).max(1);
            let mut out = Vec::new();
            // A few dozen reads in flight at a time.
            let mut reads = tokio::task::JoinSet::new();
            for seq in first..=last {
                let stream = stream.clone();
                reads.spawn(async move {
                    match tokio::time::timeout(TIMEOUT, stream.direct_get(seq)).await {
                        Ok(Ok(m)) => Ok(Some(m.payload)),
                        // Dropped as the oldest meanwhile.
                        Ok(Err(e)) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
                        Ok(Err(e)) => Err(anyhow!("listing runs: {e}")),
                        Err(_) => Err(anyhow!("listing runs: no answer in time")),
                    }
                });
                while reads.len() >= 32
                    && let Some(read) = reads.join_next().await
                {
                    out.extend(entry_of(read??));
                }
            }
            while let Some(read) = reads.join_next().await {
                out.extend(entry_of(read??));
            }
            Ok(out)
        })
    }
}

/// `[started_ms, run id]` as listed, if it is that.
fn entry_of(payload: Option<bytes::Bytes>) -> Option<(u64, String)> {
    let v: Value = serde_json::from_slice(&payload?).ok()?;
    Some((v[0].as_u64()?, v[1].as_str()?.to_string()))
}
