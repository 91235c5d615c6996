//! The fault matrix's machinery (`tests/faults.rs`): one trial of RB-0031's
//! live bad-deploy path with a failpoint set, where its journals and
//! leases are kept (a state directory or JetStream), resuming it until it
//! ends, and what every row must show.

use super::durable::*;
use super::fleet::Nats;
use super::live::*;
use runbook_fleet::store::JetStreamStore;
use runbook_journal::store::Store;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a trial ended.
#[derive(Debug, Default)]
pub struct Row {
    /// Exit status of the faulted run (`None`: it hung and was killed).
    pub first: Option<i32>,
    /// Processes run (the faulted one, then each resume).
    pub runs: usize,
    /// Rollbacks applied beyond the one.
    pub double: usize,
    /// Changes in ECS no journal has an intent for.
    pub unrecorded: usize,
    /// Runs that did not end (no `run-end`) after the resumes.
    pub lost: usize,
    /// The final status, from the last `run-end`.
    pub status: String,
    pub reason: String,
    /// Each step's outcome, in journal order (to tell why a row ended as
    /// it did).
    pub steps: Vec<String>,
}

/// Where a trial's journals and leases are kept.
pub enum Place {
    /// A state directory of the trial's own.
    Local,
    /// A NATS JetStream server shared by the trials (each its incident).
    Nats(Nats, Arc<JetStreamStore>),
}

/// One trial's runs: where they keep their journals, its incident.
pub struct Runs<'a> {
    pub place: &'a Place,
    pub state: &'a Path,
    pub incident: String,
}

impl Runs<'_> {
    /// The CLI for this trial's runs: `args`, then where its store is.
    pub fn cli(&self, args: &[&str]) -> Command {
        let mut cmd = cli(self.state);
        cmd.args(args);
        if let Place::Nats(nats, _) = self.place {
            cmd.args(["--nats", &nats.url()]);
            if args[0] == "run" {
                cmd.args(["--incident", &self.incident]);
            }
        }
        cmd
    }

    /// Each run's id and journal (a torn last line left out, as resume
    /// will cut it off); with `check`, every chain must verify whole.
    fn read(&self, check: bool) -> Vec<(String, Vec<Value>)> {
        match self.place {
            Place::Local => journals(self.state)
                .iter()
                .map(|j| {
                    let lines = runbook_journal::chain::read(j).unwrap();
                    if check {
                        assert_eq!(
                            runbook_journal::chain::verify(j).unwrap(),
                            Ok(lines.len()),
                            "{}",
                            j.display()
                        );
                    }
                    (j.file_stem().unwrap().to_string_lossy().into_owned(), lines)
                })
                .collect(),
            Place::Nats(_, store) => store
                .incident_runs(&self.incident)
                .unwrap()
                .into_iter()
                .map(|id| {
                    let (raw, _) = store.raw_lines(&id).unwrap();
                    let text: String = raw.iter().map(|l| format!("{l}\n")).collect();
                    if check {
                        assert!(
                            runbook_journal::chain::verify_bytes(text.as_bytes()).is_ok(),
                            "{id}: {text}"
                        );
                    }
                    let lines = raw
                        .iter()
                        .map(|l| serde_json::from_str(l).unwrap())
                        .collect();
                    (id, lines)
                })
                .collect(),
        }
    }

    pub fn journals(&self) -> Vec<(String, Vec<Value>)> {
        self.read(false)
    }

    pub fn lines(&self) -> Vec<Value> {
        self.journals().into_iter().flat_map(|(_, l)| l).collect()
    }

    pub fn statuses(&self) -> Vec<(String, String)> {
        self.lines()
            .into_iter()
            .filter(|l| l["event"] == "run-end")
            .map(|l| {
                (
                    l["status"].as_str().unwrap_or_default().to_string(),
                    l["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    pub fn intents(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l["event"] == "intent" && l["resource"] == "production/auth-service")
            .count()
    }

    /// The rollbacks applied, every journal's chain checked whole.
    pub fn applied(&self) -> usize {
        self.read(true)
            .iter()
            .map(|(id, lines)| applied_in(lines, id))
            .sum()
    }

    /// A run listed for the incident that never wrote its `run-start`
    /// keeps another from starting for 15 s after it was listed (its line
    /// may lag on a replica): wait that out once.
    pub fn wait_unstarted(&self, listed: usize) {
        if matches!(self.place, Place::Nats(..)) && listed > 0 {
            std::thread::sleep(Duration::from_secs(16));
        }
    }

    /// Until a killed process's hold on `run_id` lapses (NATS: its
    /// renewals stopped; a state directory's locks go with the process).
    pub fn wait_free(&self, run_id: &str) {
        if let Place::Nats(_, store) = self.place {
            let until = Instant::now() + Duration::from_secs(30);
            while store.is_running(run_id) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

/// Runs `cmd`, killing it (-9) if it has not ended within `limit`.
pub fn bounded(mut cmd: Command, limit: Duration) -> Option<i32> {
    let mut child = cmd.spawn().unwrap();
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Resumes (or starts again) until a `run-end`, at most four times.
/// Metrics are replayed in order by each process: once the incident's
/// latency was read, a later process reads the recovered value (as the
/// real metric would show after the rollback).
pub fn settle(runs: &Runs, live: &Live, incident_start: &str, row: &mut Row) {
    let env = live.env();
    for _ in 0..4 {
        let journals = runs.journals();
        let read = journals.iter().any(|(_, lines)| {
            lines
                .iter()
                .any(|l| l["event"] == "step-end" && l["step"] == "check-latency")
        });
        if read {
            std::fs::write(
                live.dir.path().join("metrics.toml"),
                recorded(121.0, 121.0, 99.9),
            )
            .unwrap();
        }
        let started: Vec<&String> = journals
            .iter()
            .filter(|(_, lines)| lines.iter().any(|l| l["event"] == "run-start"))
            .map(|(id, _)| id)
            .collect();
        if !runs.statuses().is_empty() {
            return;
        }
        let cmd = match started.first() {
            Some(id) => {
                runs.wait_free(id);
                runs.cli(&["resume", id, "--yes"])
            }
            None => {
                runs.wait_unstarted(journals.len());
                runs.cli(&run_args(&env, incident_start))
            }
        };
        row.runs += 1;
        bounded(cmd, Duration::from_secs(60));
    }
}

/// One trial: `point` set to `action` in the first run (or, for
/// `backend-check`, in the resume after a run whose result was lost).
pub fn trial(
    place: &Place,
    moto: &Moto,
    redis: &RedisServer,
    point: &str,
    action: &str,
    hang: Duration,
) -> Row {
    let (live, (cluster, service, family)) = bad_deploy_service(moto, redis);
    let state = tempfile::tempdir().unwrap();
    let runs = Runs {
        place,
        state: state.path(),
        incident: format!("faults-{family}"),
    };
    let incident_start =
        humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(60))
            .to_string();
    let env = live.env();
    let mut row = Row::default();
    let (setup, faulted) = match point {
        // Only a resume checks the backend: lose the first run's result.
        "backend-check" => (Some("journal-applied=1*return(lost)"), true),
        _ => (None, false),
    };
    let spec = format!("{point}=1*{action}");
    let mut first = runs.cli(&run_args(&env, &incident_start));
    first.env("FAILPOINTS", setup.unwrap_or(&spec));
    row.first = bounded(first, hang);
    row.runs = 1;
    if faulted {
        let id = runs.journals()[0].0.clone();
        runs.wait_free(&id);
        let mut resume = runs.cli(&["resume", &id, "--yes"]);
        resume.env("FAILPOINTS", &spec);
        row.runs += 1;
        bounded(resume, hang);
    }
    settle(&runs, &live, &incident_start, &mut row);
    let applied = runs.applied();
    let now = service_task_definition(moto, &cluster, &service);
    row.double = applied.saturating_sub(1) + usize::from(now == format!("{family}:1"));
    row.unrecorded = usize::from(now != format!("{family}:3") && runs.intents() == 0);
    let ends = runs.statuses();
    row.lost = usize::from(ends.is_empty());
    row.steps = runs
        .lines()
        .iter()
        .filter(|l| l["event"] == "step-end")
        .map(|l| {
            format!(
                "{}={}",
                l["step"].as_str().unwrap_or("?"),
                l["report"]["outcome"].as_str().unwrap_or("?")
            )
        })
        .collect();
    if let Some((status, reason)) = ends.last() {
        row.status = status.clone();
        row.reason = reason.clone();
        // Resolved: rolled back once. Anything else: said why, and ECS is
        // either untouched or rolled back once.
        match status.as_str() {
            "resolved" => assert_eq!(now, format!("{family}:2"), "{point} {action}: {row:?}"),
            _ => {
                assert!(!reason.is_empty(), "{point} {action}: {row:?}");
                assert!(
                    now == format!("{family}:3") || now == format!("{family}:2"),
                    "{point} {action}: ECS at {now}: {row:?}"
                );
            }
        }
    }
    row
}

/// The three faults a failpoint is set to; `sync`: whether it hangs in
/// a blocking sleep (else in a timer).
pub fn actions(sync: bool) -> [(&'static str, &'static str); 3] {
    [
        ("error", "return(injected)"),
        ("panic", "panic(injected)"),
        (
            "hang",
            if sync {
                "sleep(600000)"
            } else {
                "return(hang)"
            },
        ),
    ]
}

/// Prints the matrix's rows and checks what every row must show: no
/// double change, no change without an intent, no lost run; each ends as
/// a clean run does, or blocked saying why (the one exception, a rollback
/// that failed, escalates as the runbook routes a failed rollback); an
/// error in the journal stops the run with its own status (9).
pub fn check(rows: &[(String, &str, Row)]) {
    for (point, name, row) in rows {
        eprintln!(
            "| {point} | {name} | first exit {:?} | runs {} | double {} | unrecorded {} | lost {} | {} | {} | {} |",
            row.first,
            row.runs,
            row.double,
            row.unrecorded,
            row.lost,
            row.status,
            row.reason.chars().take(160).collect::<String>(),
            row.steps.join(" ")
        );
    }
    let bad: Vec<_> = rows
        .iter()
        .filter(|(_, _, r)| r.double + r.unrecorded + r.lost > 0)
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
    for (point, name, row) in rows {
        let expected: &[&str] = match (point.as_str(), *name) {
            ("backend-apply", "error") => &["escalated"],
            _ => &["resolved", "blocked"],
        };
        assert!(
            expected.contains(&row.status.as_str()),
            "{point} {name}: {row:?}"
        );
    }
    for (point, name, row) in rows {
        let journal_write = (point.starts_with("journal-") && point != "journal-run-start")
            || point.starts_with("torn-")
            || point.starts_with("fsync-")
            || point == "nats-append"
            || point == "nats-appended";
        if journal_write && *name == "error" {
            assert_eq!(row.first, Some(9), "{point}: {row:?}");
        }
    }
}

/// A clean run's length here, to tell a hang from a slow run.
pub fn span(place: &Place, moto: &Moto, redis: &RedisServer) -> Duration {
    let started = Instant::now();
    let row = trial(place, moto, redis, "none", "off", Duration::from_secs(120));
    assert_eq!(row.status, "resolved", "{row:?}");
    started.elapsed()
}
