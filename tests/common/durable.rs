//! Durable live runs (moto, redis-server): the CLI with a state
//! directory, a run's journals, the rollbacks they applied, and finishing
//! whatever a kill or a fault left.

use super::{RB0031, runbook};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The CLI for live runs, with the AWS test credentials.
pub fn cli(state: &Path) -> Command {
    let mut cmd = runbook();
    cmd.env("RUNBOOK_STATE_DIR", state)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

pub fn run_args<'a>(live: &'a str, incident_start: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        RB0031,
        "--env",
        live,
        "--yes",
        "--incident-start",
        incident_start,
    ]
}

pub fn soon() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(60))
        .to_string()
}

pub fn journals(state: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(state.join("runs")) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    out.sort();
    out
}

/// Checks every journal in `state`: the chain verifies, every applied
/// change has its intent before it; returns the rollbacks applied.
pub fn applied_rollbacks(state: &Path) -> usize {
    let mut applied = 0;
    for j in journals(state) {
        assert_eq!(
            runbook_journal::chain::verify(&j).unwrap(),
            Ok(runbook_journal::chain::read(&j).unwrap().len()),
            "{}",
            j.display()
        );
        let lines = runbook_journal::chain::read(&j).unwrap();
        applied += applied_in(&lines, &j.display().to_string());
    }
    applied
}

/// The rollbacks one run's journal (`lines`, from `place`) applied, each
/// checked to have its intent before it.
pub fn applied_in(lines: &[serde_json::Value], place: &str) -> usize {
    let mut applied = 0;
    for (i, l) in lines.iter().enumerate() {
        if l["event"] == "applied" && l["resource"] == "production/auth-service" {
            let intent = l["intent"].as_u64().expect("applied names its intent");
            assert!(
                lines[..i]
                    .iter()
                    .any(|x| x["event"] == "intent" && x["seq"].as_u64() == Some(intent)),
                "applied without an intent before it: {place}"
            );
            applied += 1;
        }
    }
    applied
}

/// Finishes whatever the kill left: resumes the unfinished run, or
/// starts the run again if it never got going.
pub fn finish(state: &Path, env: &str, incident_start: &str) {
    let has = |j: &PathBuf, event: &str| {
        runbook_journal::chain::read(j)
            .unwrap()
            .iter()
            .any(|l| l["event"] == event)
    };
    let mut last = String::new();
    for _ in 0..3 {
        // A journal without `run-start` is a run killed before it did
        // anything: not one to resume.
        let started: Vec<PathBuf> = journals(state)
            .into_iter()
            .filter(|j| has(j, "run-start"))
            .collect();
        if started.iter().any(|j| has(j, "run-end")) {
            return;
        }
        let status = match started.first() {
            Some(j) => {
                let id = j.file_stem().unwrap().to_string_lossy().into_owned();
                let out = cli(state)
                    .args(["resume", &id, "--yes"])
                    .stderr(Stdio::piped())
                    .output()
                    .unwrap();
                last = format!(
                    "resume {id}: {:?}: {}\njournal:\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr),
                    std::fs::read_to_string(j).unwrap_or_default()
                );
                out.status
            }
            None => cli(state)
                .args(run_args(env, incident_start))
                .status()
                .unwrap(),
        };
        assert!(status.code().is_some());
    }
    panic!("the run did not finish after three attempts; last: {last}");
}
