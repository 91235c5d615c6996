//! Journals and leases in JetStream: the [`Store`] every CLI and worker
//! of a fleet shares, so they exclude each other across machines.
//!
//! - A run's journal is the subject `runbook.journal.RUN_ID` of the
//!   `RUNBOOK_JOURNAL` stream, chained lines ([`runbook_journal::chain`]),
//!   one per message or a step's lines in one (group commit:
//!   [`journal`]). Each append says which message it follows
//!   (`Nats-Expected-Last-Subject-Sequence`): a process that lost the run
//!   to another (it stalled past its hold, a worker took over) cannot add
//!   a line, so it cannot journal an intent, so it changes nothing.
//! - Everything else is in the `RUNBOOK_STATE` bucket, changed only by
//!   revision-checked updates: `incident.H` (the incident's runs),
//!   `run.ID` (who started it, when), `running.ID` and `lease.H` (held by
//!   a live process: it renews the entry every few seconds; an entry not
//!   renewed in time is free, so a process killed with -9 frees what it
//!   held), `parked` and
//!   `approvals.ID` (approvals without a terminal). Lists are single
//!   values changed by revision-checked updates, not scans of keys: a
//!   scan needs a consumer, which a 2.9 cluster that lost a node may
//!   leave stalled for minutes.
//! - The runs `runbook runs` lists are messages on `RUNBOOK_RUNS`, one per
//!   run started (a publish, no read, no lock), read back by sequence
//!   from the stream's end; `runs.0`..`runs.f`, values an earlier version
//!   rewrote on every start, are still read.
//!
//! Holds assume the machines' clocks agree within a few seconds (NTP).

use super::exclusive::{Write, write_held, write_if};
use super::nats::{Fleet, JOURNAL_PREFIX, TIMEOUT};
use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::stream::DirectGetErrorKind;
use runbook_core::error::hinted;
use runbook_journal::chain::Head;
use runbook_journal::holder::{Held, Holder};
use runbook_journal::lease::{Granted, Lease};
use runbook_journal::log::{Journal, JournalLog};
use runbook_journal::replay::finished;
use runbook_journal::store::Shared;
use runbook_journal::store::{Store, incident_taken};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod hold;
mod journal;
mod listing;
mod shared;

use hold::Hold;
use journal::StreamLog;

/// A hold not renewed for this long is free.
const HOLD_FOR: Duration = Duration::from_secs(15);
/// How long a lease is asked for while NATS does not answer.
const UNREACHABLE_FOR: Duration = Duration::from_secs(30);
/// How often a holder renews.
const RENEW_EVERY: Duration = Duration::from_secs(4);
/// Where runs were listed before `RUNBOOK_RUNS`: `[started_ms, run id]`,
/// newest last, in `RUN_SHARDS` values (`runs.0` .. `runs.f`). Read, never
/// written any more.
const RUN_SHARDS: usize = 16;

fn runs_key(shard: usize) -> String {
    format!("runs.{shard:x}")
}
/// Most lines read back from one run's journal.
const MAX_LINES: usize = 100_000;

pub struct JetStreamStore {
    fleet: Arc<Fleet>,
    /// One run per incident, ever (workers): a request for an incident
    /// whose run has ended starts nothing. A CLI may run an incident again.
    once_per_incident: bool,
}

impl JetStreamStore {
    pub fn new(fleet: Arc<Fleet>) -> Arc<Self> {
        Arc::new(Self {
            fleet,
            once_per_incident: false,
        })
    }

    /// The store a worker runs requests with: an incident that has had
    /// its run starts no other, decided in the same revision-checked
    /// write that lists a run, so two workers that both saw no run cannot
    /// both start one.
    pub fn once_per_incident(fleet: Arc<Fleet>) -> Arc<Self> {
        Arc::new(Self {
            fleet,
            once_per_incident: true,
        })
    }

    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    /// `key`'s value and revision as the stream's leader has them: what
    /// decides whether a run may start, or who holds what, reads this, since
    /// a replica may lag (direct gets are answered by any).
    fn entry(&self, key: &str) -> Result<Option<(Value, u64)>> {
        Ok(self.entry_last(key)?.0)
    }

    /// [`Self::entry`], and the revision of the key's last message of any
    /// kind: a write decided on this read expects it ([`put_if`]).
    /// Whether the incident at `key` lists `run_id`, read back after a
    /// write whose answer was lost: a few tries a second apart (a new
    /// leader is elected within seconds); `false` when it cannot be read.
    fn lists(&self, key: &str, run_id: &str) -> bool {
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            if let Ok((current, _)) = self.entry_last(key) {
                return current.is_some_and(|(v, _)| {
                    v["runs"]
                        .as_array()
                        .is_some_and(|runs| runs.iter().any(|r| r == run_id))
                });
            }
        }
        false
    }

    fn entry_last(&self, key: &str) -> Result<(Option<(Value, u64)>, u64)> {
        let (value, revision, last) = self.fleet.read_last("reading the fleet's state", key)?;
        Ok((revision.map(|r| (value, r)), last))
    }

    /// The run's journal lines as written (to check their chain), and the
    /// stream sequence of the last message.
    pub fn raw_lines(&self, run_id: &str) -> Result<(Vec<String>, u64)> {
        check_run_id(run_id)?;
        let stream = self.fleet.journal.clone();
        let subject = format!("{JOURNAL_PREFIX}{run_id}");
        self.fleet.wait("reading a run's journal", async move {
            let mut out = Vec::new();
            let mut next = 1;
            let mut last = 0;
            let until = Instant::now() + TIMEOUT * 2;
            loop {
                if out.len() >= MAX_LINES || Instant::now() > until {
                    return Err(anyhow!(
                        "reading `{subject}`: more than {MAX_LINES} lines or {} s",
                        (TIMEOUT * 2).as_secs()
                    ));
                }
                match stream
                    .direct_get_next_for_subject(&subject, Some(next))
                    .await
                {
                    Ok(m) => {
                        // A message holds one line or a batch (a group
                        // commit: `store::journal`).
                        out.extend(journal::message_lines(&m.payload));
                        last = m.sequence;
                        next = m.sequence + 1;
                    }
                    Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => break,
                    Err(e) => return Err(anyhow!("reading `{subject}`: {e}")),
                }
            }
            Ok((out, last))
        })
    }

    /// The run's journal lines, and the stream sequence of the last one.
    fn lines(&self, run_id: &str) -> Result<(Vec<Value>, u64)> {
        let (raw, last) = self.raw_lines(run_id)?;
        let lines = raw
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        Ok((lines, last))
    }

    fn started_by(&self, run_id: &str) -> Option<Holder> {
        let (v, _) = self.entry(&format!("run.{run_id}")).ok()??;
        serde_json::from_value(v["holder"].clone()).ok()
    }

    /// Takes `running.RUN_ID` for `holder`: `Err(Held)` while a live
    /// process holds it.
    fn take_running(&self, run_id: &str, holder: &Holder) -> Result<Hold> {
        let key = format!("running.{run_id}");
        let mut value = serde_json::to_value(holder)?;
        for _ in 0..5 {
            let (current, seen) = self.entry_last(&key)?;
            if let Some((v, _)) = &current
                && live(v)
            {
                return Err(anyhow::Error::new(Held {
                    what: format!("run `{run_id}`"),
                    by: serde_json::from_value(v.clone()).ok(),
                    unknown: None,
                })
                .context(format!("run `{run_id}` is running in another process")));
            }
            let taken = Instant::now();
            value["expires_ms"] = expiry().into();
            injected("nats-run-take")?;
            if let Some(revision) = put_if(&self.fleet, &key, &value, current.map(|c| c.1), seen)? {
                return Ok(Hold::start(&self.fleet, key, value, revision, true, taken));
            }
        }
        Err(anyhow!("run `{run_id}`: its hold kept changing; try again"))
    }

    fn journal(&self, run_id: &str, hold: Hold, lines: &[Value], last: u64) -> Journal {
        let head = lines.last().and_then(|l| {
            Some(Head {
                seq: l["seq"].as_u64()?,
                hash: l["hash"].as_str()?.to_string(),
            })
        });
        let log = StreamLog {
            fleet: self.fleet.clone(),
            subject: format!("{JOURNAL_PREFIX}{run_id}"),
            at: Mutex::new(journal::At {
                head,
                sequence: last,
                waiting: Vec::new(),
            }),
            lost: hold.lost.clone(),
        };
        Journal::new(Box::new(log), run_id, Box::new(hold))
    }
}

fn check_run_id(run_id: &str) -> Result<()> {
    if runbook_journal::store::is_run_id(run_id) {
        Ok(())
    } else {
        Err(hinted(
            format!("`{run_id}` is not a run id"),
            "run ids are letters, digits and `-`; `runbook runs` lists them",
        ))
    }
}

/// A name usable as a key: the text's digest.
fn key_of(prefix: &str, text: &str) -> String {
    format!(
        "{prefix}.{}",
        &runbook_core::hash::sha256_hex(text.as_bytes())[..32]
    )
}

fn expiry() -> u64 {
    runbook_core::time::now_ms() + HOLD_FOR.as_millis() as u64
}

/// Held by a live process: renewed lately and not let go.
fn live(v: &Value) -> bool {
    v["released_ms"].is_null()
        && v["expires_ms"].as_u64().unwrap_or(0) > runbook_core::time::now_ms()
}

/// A failpoint in front of a write to NATS (tests only): `return(ARG)`
/// fails it as NATS not answering would, without sending it.
fn injected(name: &str) -> Result<()> {
    match runbook_journal::failpoint(name) {
        Some(why) => Err(anyhow!("failpoint `{name}` ({why})")),
        None => Ok(()),
    }
}

/// Writes `key` if its revision is still `revision`; `seen`: the revision
/// of its last message as the read that decided this write found it
/// ([`JetStreamStore::entry_last`]), `None` for a key never read (a new
/// run's entry: its first write).
fn put_if(
    fleet: &Fleet,
    key: &str,
    value: &Value,
    revision: Option<u64>,
    seen: impl Into<Option<u64>>,
) -> Result<Option<u64>> {
    let (kv, key, bytes) = (
        fleet.state.clone(),
        key.to_string(),
        bytes::Bytes::from(value.to_string()),
    );
    let (locking, seen) = (fleet.locking, seen.into());
    fleet.wait("writing the fleet's state", async move {
        write_if(&kv, locking, &key, Write::Put(bytes), revision, seen)
            .await
            .map_err(|e| anyhow!("writing `{key}` to the fleet's state: {e:#}"))
    })
}

impl Store for JetStreamStore {
    fn start_run(&self, incident: &str, holder: &Holder) -> Result<Journal> {
        let run_id = holder.run_id.as_str();
        check_run_id(run_id)?;
        let hold = self.take_running(run_id, holder)?;
        let run = json!({
            "incident": incident,
            "holder": holder,
            "started_ms": runbook_core::time::now_ms(),
        });
        let run_key = format!("run.{run_id}");
        let key = key_of("incident", incident);
        // The revision of the run's entry, once written.
        let mut entered: Option<u64> = None;
        let mut list = || -> Result<bool> {
            // Read, decide, write if unchanged; again if another process
            // wrote in between (it is then among the runs read).
            for _ in 0..20 {
                let (current, seen) = self.entry_last(&key)?;
                let runs: Vec<String> = current
                    .as_ref()
                    .and_then(|(v, _)| serde_json::from_value(v["runs"].clone()).ok())
                    .unwrap_or_default();
                for earlier in &runs {
                    // Unreadable is not empty: whether the incident is free
                    // cannot be known, so the run does not start.
                    let lines = self.lines(earlier).map(|l| l.0).with_context(|| {
                        format!(
                            "reading run `{earlier}` of incident `{incident}` (is it finished?)"
                        )
                    })?;
                    if finished(&lines).is_some() {
                        if self.once_per_incident {
                            return Err(anyhow::Error::new(Held {
                                what: format!("incident `{incident}`"),
                                by: self.started_by(earlier),
                                unknown: None,
                            })
                            .context(format!(
                                "incident `{incident}` was handled already, by run `{earlier}`"
                            )));
                        }
                        continue;
                    }
                    let started = lines.iter().any(|l| l["event"] == "run-start");
                    let running = self.is_running(earlier);
                    // Listed moments ago: its `run-start` may not have reached
                    // the replica read, so it counts as started.
                    let young = self
                        .entry(&format!("run.{earlier}"))?
                        .and_then(|(v, _)| v["started_ms"].as_u64())
                        .is_some_and(|t| {
                            runbook_core::time::now_ms().saturating_sub(t)
                                < HOLD_FOR.as_millis() as u64
                        });
                    if !started && !running && !young {
                        continue;
                    }
                    // Listed, not running, nothing journaled: its process
                    // failed before its first line, or the line is on its way.
                    if !started && !running {
                        return Err(anyhow::Error::new(Held {
                            what: format!("incident `{incident}`"),
                            by: self.started_by(earlier),
                            unknown: None,
                        })
                        .context(format!(
                            "incident `{incident}` has a run `{earlier}` listed moments ago that has journaled nothing yet (its first line may be on its way, or its process failed before writing it); try again in {} s",
                            HOLD_FOR.as_secs()
                        )));
                    }
                    return Err(incident_taken(
                        incident,
                        earlier,
                        self.started_by(earlier),
                        running,
                    ));
                }
                // The run's entry before the incident lists it: a run listed
                // has a start time, so one listed moments ago whose first line
                // is on its way is seen as such (`young`) by whoever reads the
                // incident next. (Written after the listing, a write that
                // failed while NATS elected a leader left a run listed with no
                // entry, which the next request took for one that died before
                // its first line, and started a second run beside it.)
                if entered.is_none() {
                    entered = put_if(&self.fleet, &run_key, &run, None, None)?;
                }
                let mut next = runs.clone();
                next.push(run_id.to_string());
                let value = json!({ "incident": incident, "runs": next });
                match put_if(&self.fleet, &key, &value, current.map(|c| c.1), seen) {
                    Ok(Some(_)) => return Ok(true),
                    Ok(None) => {}
                    // Its answer lost (NATS electing a leader): it may
                    // have landed, and the incident list this run.
                    Err(e) => {
                        return if self.lists(&key, run_id) {
                            Ok(true)
                        } else {
                            Err(e)
                        };
                    }
                }
            }
            Ok(false)
        };
        let listed = list();
        if let Ok(true) = listed {
            self.list_run(run_id, &run["started_ms"]);
            return Ok(self.journal(run_id, hold, &[], 0));
        }
        // Not listed: its entry goes (best effort: an entry no incident
        // lists is never read by anyone). Not when listing failed: the
        // incident may list it after all (`lists` could not tell), and a
        // listed run keeps its entry, so it is seen as one listed moments
        // ago, not as one that died before its first line.
        if let (Ok(false), Some(revision)) = (&listed, entered) {
            let (kv, locking, run_key) = (
                self.fleet.state.clone(),
                self.fleet.locking,
                run_key.clone(),
            );
            if let Err(e) = self
                .fleet
                .wait("removing an unlisted run's entry", async move {
                    write_if(&kv, locking, &run_key, Write::Delete, Some(revision), None)
                        .await
                        .map(|_| ())
                })
            {
                tracing::warn!(
                    run_id,
                    "could not remove the entry of a run that did not start: {e:#}"
                );
            }
        }
        listed?;
        Err(anyhow!(
            "incident `{incident}`: its list of runs kept changing; try again"
        ))
    }

    fn reopen_run(&self, run_id: &str) -> Result<Journal> {
        check_run_id(run_id)?;
        if self.entry(&format!("run.{run_id}"))?.is_none() {
            return Err(hinted(
                format!("no run `{run_id}` in NATS `{}`", self.fleet.url),
                "`runbook runs --nats URL` lists the runs there",
            ));
        }
        let holder = Holder::me(run_id);
        let hold = self.take_running(run_id, &holder)?;
        let (raw, last) = self.raw_lines(run_id)?;
        // Continued only from a journal whose every line is in its chain
        // (a message is whole or absent: nothing is torn here).
        let mut text = raw.join("\n");
        text.push('\n');
        if let Err(broken) = runbook_journal::chain::verify_bytes(text.as_bytes()) {
            return Err(runbook_journal::chain::Untrusted {
                location: format!("nats `{}`: `{JOURNAL_PREFIX}{run_id}`", self.fleet.url),
                broken,
            }
            .into());
        }
        let lines: Vec<Value> = raw
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        Ok(self.journal(run_id, hold, &lines, last))
    }

    fn read_run(&self, run_id: &str) -> Result<Vec<Value>> {
        Ok(self.lines(run_id)?.0)
    }

    fn journal_location(&self, run_id: &str) -> Option<String> {
        Some(format!(
            "nats `{}`: `{JOURNAL_PREFIX}{run_id}`",
            self.fleet.url
        ))
    }

    fn is_running(&self, run_id: &str) -> bool {
        // Unknown (NATS away) counts as running: nothing starts beside it.
        match self.entry(&format!("running.{run_id}")) {
            Ok(Some((v, _))) => live(&v),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    fn incident_runs(&self, incident: &str) -> Result<Vec<String>> {
        Ok(self
            .entry(&key_of("incident", incident))?
            .and_then(|(v, _)| serde_json::from_value(v["runs"].clone()).ok())
            .unwrap_or_default())
    }

    fn recent_runs(&self, limit: usize) -> Result<Vec<String>> {
        let mut runs = self.listed(limit)?;
        // Runs listed before `RUNBOOK_RUNS` (in values `runs.0`..`runs.f`
        // that every start rewrote): still shown.
        for shard in 0..RUN_SHARDS {
            let (all, _) = self.fleet.read("listing runs", &runs_key(shard))?;
            runs.extend(
                all.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| Some((r[0].as_u64()?, r[1].as_str()?.to_string()))),
            );
        }
        runs.sort();
        runs.reverse();
        // Each once (a publish retried after its answer was lost).
        let mut seen = std::collections::HashSet::new();
        runs.retain(|(_, id)| seen.insert(id.clone()));
        Ok(runs.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    fn lease(
        &self,
        resource: &str,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Box<dyn Lease>, Box<Held>> {
        let key = key_of("lease", resource);
        let held = |by| {
            Box::new(Held {
                what: format!("`{resource}`"),
                by,
                unknown: None,
            })
        };
        let until = Instant::now() + wait;
        // NATS not answering (a node lost, a leader being elected) is not
        // "held": keep asking for a while, then say what it is.
        let unreachable_until = Instant::now() + wait.max(UNREACHABLE_FOR);
        let unreachable = |e: anyhow::Error| {
            Box::new(Held {
                what: format!("`{resource}`"),
                by: None,
                unknown: Some(format!("{e:#}")),
            })
        };
        let mut told = false;
        // Bounded by `wait`, and by a count should the clock stall.
        for _ in 0..100_000 {
            let (current, seen) = match self.entry_last(&key) {
                Ok(c) => c,
                Err(e) if Instant::now() < unreachable_until => {
                    tracing::warn!(resource, "reading a lease: {e:#}; trying again");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Err(e) => return Err(unreachable(e)),
            };
            let before = current.as_ref().map(|c| c.0.clone());
            match &before {
                Some(v) if live(v) && v["run_id"] != holder.run_id.as_str() => {
                    let by = serde_json::from_value(v.clone()).ok();
                    if Instant::now() >= until {
                        return Err(held(by));
                    }
                    if !told {
                        eprintln!("waiting up to {} s for {}", wait.as_secs(), held(by));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                _ => {}
            }
            let (token, previous, mut record) =
                runbook_journal::lease::next_lease(before.as_ref(), holder, resource);
            let taken = Instant::now();
            record["expires_ms"] = expiry().into();
            let written = injected("nats-lease-take")
                .and_then(|()| put_if(&self.fleet, &key, &record, current.map(|c| c.1), seen));
            match written {
                Ok(Some(revision)) => {
                    let hold = Hold::start(&self.fleet, key, record, revision, false, taken);
                    return Ok(Box::new(Granted {
                        token,
                        previous,
                        guard: hold,
                    }));
                }
                // Someone else took it in between: look again.
                Ok(None) => continue,
                Err(e) if Instant::now() < unreachable_until => {
                    tracing::warn!(resource, "writing a lease: {e:#}; trying again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(unreachable(e)),
            }
        }
        Err(held(None))
    }

    fn read_shared(&self, name: Shared) -> Result<Value> {
        self.shared_value(name)
    }

    fn change_shared(
        &self,
        name: Shared,
        change: &mut (dyn FnMut(&mut Value) -> bool + Send),
    ) -> Result<bool> {
        self.change_shared_value(name, change)
    }
}
