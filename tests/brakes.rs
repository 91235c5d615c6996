//! The brakes every run that shares a store answers to: `runbook halt`
//! stops runs before their next change (a state directory's, a fleet's on
//! every worker) and `runbook resume-all` continues them; a rate limit
//! the policies keep (`context.recent`) lets exactly as many changes
//! through as it says, however many runs race for them, in one process
//! or on several workers.

mod common;

use common::journal;

use common::fleet::{Nats, Worker, incident_state, one_at_a_time, submit_command, wait_until};
use common::live::*;
use common::{RB0031, Run, fresh_state_dir, output, root, runbook};
use runbook_journal::store::Store;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const BAD_DEPLOY: &str = "runbooks/scenarios/bad-deploy.toml";

/// At most `n` rollbacks of one service an hour, across every run.
fn rate_limit(dir: &Path, n: u32) -> String {
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(
        pol.join("rate.cedar"),
        format!(
            "// No more than {n} rollbacks of one service an hour, fleet-wide.\n@id(\"rollbacks-per-hour\")\nforbid (principal, action == Runbook::Action::\"ecs:mutate\", resource is Runbook::Service)\nwhen {{ context.recent.resource.hour >= {n} }};\n"
        ),
    )
    .unwrap();
    pol.to_string_lossy().into_owned()
}

/// RB-0031 on the bad-deploy scenario for `incident`, every change
/// approved, in `state`.
fn sim_run(state: &Path, incident: &str, extra: &[&str]) -> Command {
    let mut cmd = runbook();
    cmd.args([
        "run",
        RB0031,
        "--sim",
        BAD_DEPLOY,
        "--incident",
        incident,
        "--yes",
        "--json",
        "--state-dir",
    ])
    .arg(state)
    .args(extra);
    cmd
}

fn rollbacks(lines: &[Value]) -> usize {
    lines
        .iter()
        .filter(|l| l["event"] == "applied" && l["resource"] == "production/auth-service")
        .count()
}

fn in_state(state: &Path, args: &[&str]) -> Run {
    output(
        runbook()
            .args(args)
            .arg("--state-dir")
            .arg(state)
            .current_dir(root()),
    )
}

/// In a state directory: a halt of another runbook stops nothing of
/// RB-0031; a halt of RB-0031 stops its run before the rollback (exit 10,
/// nothing changed, listed as stopped); `resume-all` lifts it and
/// continues the run, which rolls back once; `--all` and `--lift-only`.
#[test]
fn a_halt_stops_runs_before_their_change_and_resume_all_continues_them() {
    let state = fresh_state_dir();
    let other = in_state(
        &state,
        &["halt", "--runbook", "RB-0107", "--reason", "mfa drill"],
    );
    assert_eq!(other.code, 0, "{}", other.stderr);
    assert!(
        other.stdout.contains("HALTED: `RB-0107`, by `"),
        "{}",
        other.stdout
    );
    let free = output(&mut sim_run(&state, "free", &[]));
    assert_eq!(free.code, 0, "{}\n{}", free.stdout, free.stderr);

    // Typed in lower case: a kill switch errs on the side of stopping.
    let halted = in_state(
        &state,
        &["halt", "--runbook", "rb-0031", "--reason", "bad region"],
    );
    assert_eq!(halted.code, 0, "{}", halted.stderr);
    assert!(
        halted.stdout.contains("halted in the state directory `"),
        "{}",
        halted.stdout
    );
    let again = in_state(
        &state,
        &["halt", "--runbook", "RB-0031", "--reason", "later"],
    );
    assert!(
        again
            .stdout
            .contains("already halted in the state directory"),
        "{}",
        again.stdout
    );
    assert!(
        again.stdout.contains("(bad region): that halt stands"),
        "{}",
        again.stdout
    );
    let no_scope = in_state(&state, &["halt", "--reason", "why"]);
    assert_eq!(no_scope.code, 2, "{}", no_scope.stderr);
    let run = output(&mut sim_run(&state, "stopped", &[]));
    assert_eq!(run.code, 10, "{}\n{}", run.stdout, run.stderr);
    let report = run.json();
    assert_eq!(report["status"], "halted");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("step `rollback` stopped before its change: halted by `")
            && reason.contains("(bad region)")
            && reason.contains("`runbook resume-all`"),
        "{reason}"
    );
    let run_id = report["run_id"].as_str().unwrap().to_string();
    let lines = journal(&state, &run_id);
    assert!(!lines.iter().any(|l| l["event"] == "intent"), "{lines:#?}");
    assert_eq!(lines.last().unwrap()["status"], "halted");
    let listed = in_state(&state, &["halt"]);
    assert!(
        listed.stdout.contains("runs stopped by a halt: 1")
            && listed.stdout.contains(&format!(
                "{run_id}: RB-0031, incident `stopped`, before a change of step `rollback`"
            )),
        "{}",
        listed.stdout
    );
    // A resume while it is halted stops again, changing nothing.
    let again = in_state(&state, &["resume", &run_id, "--yes"]);
    assert_eq!(again.code, 10, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(rollbacks(&journal(&state, &run_id)), 0);

    let resumed = in_state(&state, &["resume-all", "--runbook", "RB-0031"]);
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    assert!(
        resumed.stdout.contains("lifted the halt of `RB-0031`"),
        "{}",
        resumed.stdout
    );
    assert!(
        resumed.stdout.contains("status: resolved"),
        "{}",
        resumed.stdout
    );
    let lines = journal(&state, &run_id);
    assert_eq!(rollbacks(&lines), 1);
    assert_eq!(lines.last().unwrap()["status"], "resolved");
    // The other runbook's halt stands; the record says who did what.
    let shown: Value = serde_json::from_str(&in_state(&state, &["halt", "--json"]).stdout).unwrap();
    assert!(shown["runbooks"]["RB-0107"].is_object(), "{shown:#}");
    assert!(shown["runbooks"].get("RB-0031").is_none());
    assert!(shown["stopped"].is_null(), "{shown:#}");
    let actions: Vec<(&str, &str)> = shown["record"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["scope"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        [
            ("halt", "RB-0107"),
            ("halt", "rb-0031"),
            ("resume-all", "RB-0031")
        ]
    );
    assert_eq!(shown["record"][2]["runs"][0], run_id.as_str());
    // Lifting what is not halted records nothing.
    let nothing = in_state(&state, &["resume-all", "--runbook", "RB-0031"]);
    assert!(
        nothing.stdout.contains("`RB-0031` had no halt of its own"),
        "{}",
        nothing.stdout
    );
    let after: Value = serde_json::from_str(&in_state(&state, &["halt", "--json"]).stdout).unwrap();
    assert_eq!(after["record"].as_array().unwrap().len(), 3);

    // `--all`, lifted without continuing: the run waits for its resume.
    assert_eq!(in_state(&state, &["halt", "--all"]).code, 0);
    let run = output(&mut sim_run(&state, "all", &[]));
    assert_eq!(run.code, 10, "{}", run.stderr);
    let id = run.json()["run_id"].as_str().unwrap().to_string();
    let lifted = in_state(&state, &["resume-all", "--lift-only"]);
    assert!(
        lifted.stdout.contains(&format!(
            "continue it with `runbook resume {id} --yes --state-dir {}`",
            state.display()
        )),
        "{}",
        lifted.stdout
    );
    assert_eq!(rollbacks(&journal(&state, &id)), 0);
    // Listed until it is continued: a `resume-all` that stopped here
    // would find it again.
    let listed: Value =
        serde_json::from_str(&in_state(&state, &["halt", "--json"]).stdout).unwrap();
    assert!(listed["stopped"][&id].is_object(), "{listed:#}");
    let done = in_state(&state, &["resume", &id, "--yes"]);
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    assert_eq!(rollbacks(&journal(&state, &id)), 1);
    let nothing = in_state(&state, &["halt"]);
    assert!(
        nothing.stdout.contains("nothing halted now"),
        "{}",
        nothing.stdout
    );
}

/// A limit of 2 rollbacks an hour: `check` reports it; five runs started
/// at once in one state directory make exactly 2; the others are refused
/// by the policy (journaled with the count they saw) and escalate.
#[test]
fn a_rate_limit_lets_exactly_n_changes_through_however_many_runs_race() {
    let state = fresh_state_dir();
    let pol = rate_limit(&state, 2);
    let check = output(runbook().args(["check", RB0031, "--policies", &pol]));
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        check.stdout.contains("policy: `ecs:mutate` on `production/auth-service` depends on context: a rate limit: forbidden once 2 changes of it (or by the runbook) were counted in the last hour or day"),
        "{}",
        check.stdout
    );
    let children: Vec<_> = (0..5)
        .map(|i| {
            sim_run(&state, &format!("race-{i}"), &["--policies", &pol])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut made = 0;
    let mut refused = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let lines = journal(&state, report["run_id"].as_str().unwrap());
        match rollbacks(&lines) {
            1 => {
                made += 1;
                assert_eq!(report["status"], "resolved", "{report:#}");
            }
            0 => {
                refused += 1;
                assert_eq!(report["status"], "escalated", "{report:#}");
                let forbid = lines
                    .iter()
                    .rfind(|l| l["event"] == "policy" && l["step"] == "rollback")
                    .unwrap();
                assert_eq!(forbid["decision"], "forbid", "{forbid:#}");
                assert_eq!(forbid["policies"][0], "rollbacks-per-hour");
                assert_eq!(forbid["context"]["recent"]["resource"]["hour"], 2);
                let call = &common::step(&report, "rollback")["calls"];
                assert!(
                    call.to_string()
                        .contains("forbidden by policy `rollbacks-per-hour`")
                        && call
                            .to_string()
                            .contains("2 change(s) of it in the last hour"),
                    "{call:#}"
                );
            }
            n => panic!("{n} rollbacks in one run"),
        }
    }
    assert_eq!((made, refused), (2, 3));
    // Simulated changes are counted apart from live ones, in the store
    // (live ones would be in `shared/changes.json`).
    assert!(!state.join("shared/changes.json").exists());
    let counted: Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("shared/simulated-changes.json")).unwrap(),
    )
    .unwrap();
    let times = &counted["resources"]["simulation:ecs:production/auth-service"];
    assert_eq!(times.as_array().map(Vec::len), Some(2), "{counted:#}");
}

/// On a fleet: three workers given a limit of 3 rollbacks an hour; ten
/// incidents submitted at once: exactly 3 rollbacks in all.
#[test]
fn a_fleet_wide_limit_lets_exactly_n_rollbacks_through_across_workers() {
    let _serial = one_at_a_time();
    let nats = Nats::start(1);
    let dir = tempfile::tempdir().unwrap();
    let pol = rate_limit(dir.path(), 3);
    let env = [("RUNBOOK_POLICIES", pol.as_str())];
    let workers: Vec<Worker> = (0..3)
        .map(|i| Worker::start_with(&nats, dir.path(), &format!("w{i}"), &env))
        .collect();
    let incidents: Vec<String> = (0..10)
        .map(|i| format!("limit-{i}-{}", common::now_nanos()))
        .collect();
    let url = nats.url();
    let submitting: Vec<_> = incidents
        .iter()
        .map(|incident| {
            // Each run in a simulated world of its own: every one of them
            // would roll back.
            runbook()
                .args([
                    "submit",
                    RB0031,
                    "--sim",
                    BAD_DEPLOY,
                    "--incident",
                    incident,
                ])
                .args(["--yes", "--severity", "HIGH", "--nats", &url])
                .current_dir(root())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for s in submitting {
        let out = s.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let store = nats.store();
    let logs: Vec<&Worker> = workers.iter().collect();
    wait_until("every run to end", 180, &logs, || {
        incidents
            .iter()
            .all(|i| incident_state(&store, i).2.is_some())
    });
    let mut applied = 0;
    let mut refused = 0;
    for incident in &incidents {
        let (runs, rollbacks, ended) = incident_state(&store, incident);
        assert_eq!(runs, 1, "{incident}");
        applied += rollbacks;
        if rollbacks == 0 {
            assert_eq!(ended.as_deref(), Some("escalated"), "{incident}");
            let run = &store.incident_runs(incident).unwrap()[0];
            let lines = store.read_run(run).unwrap();
            let forbid = lines
                .iter()
                .rfind(|l| l["event"] == "policy" && l["step"] == "rollback")
                .unwrap();
            assert_eq!(forbid["decision"], "forbid", "{forbid:#}");
            assert_eq!(forbid["context"]["recent"]["resource"]["hour"], 3);
            // The submitted severity reached the worker's policies.
            assert_eq!(forbid["context"]["incident"]["severity"], "HIGH");
            refused += 1;
        }
    }
    assert_eq!((applied, refused), (3, 7));
    // Several workers raced for the limit.
    let ran: Vec<u64> = workers
        .iter()
        .map(|w| w.counter("completed_total"))
        .collect();
    eprintln!("runs completed per worker: {ran:?}");
    assert_eq!(ran.iter().sum::<u64>(), 10);
    assert!(ran.iter().filter(|&&n| n > 0).count() >= 2, "{ran:?}");
}

/// On a fleet: 50 live runs of RB-0031 (moto, redis-server) on two
/// workers, each stuck reading the session store (redis-server stopped
/// with SIGSTOP); `runbook halt --all`, then the session store back: each
/// of the 50 ends `halted` before its rollback, and the service is not
/// touched. `resume-all` queues them; they go on, and the service is
/// rolled back once (the others see it was changed after they read it).
#[test]
fn runbook_halt_stops_fifty_running_fleet_runs_before_their_next_change() {
    const RUNS: usize = 50;
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    // The session store may take as long as the test holds it.
    let env_path = live.dir.path().join("env.toml");
    let env = std::fs::read_to_string(&env_path)
        .unwrap()
        .replace("connect_timeout_ms = 3000", "connect_timeout_ms = 120000")
        .replace("response_timeout_ms = 3000", "response_timeout_ms = 120000");
    std::fs::write(&env_path, env).unwrap();
    let logs = tempfile::tempdir().unwrap();
    let workers: Vec<Worker> = (0..2)
        .map(|i| Worker::start_running(&nats, logs.path(), &format!("w{i}"), &[], RUNS / 2))
        .collect();
    let workers_ref: Vec<&Worker> = workers.iter().collect();
    redis.signal("-STOP");
    let stamp = common::now_nanos();
    let incidents: Vec<String> = (0..RUNS).map(|i| format!("halt-{i}-{stamp}")).collect();
    for chunk in incidents.chunks(10) {
        let children: Vec<_> = chunk
            .iter()
            .map(|i| {
                submit_command(&nats, RB0031, &live.env(), i, &["--yes"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let store = nats.store();
    // Where each run is: its last step started, and whether it set out a
    // change or ended (then the halt would come too late to show anything).
    let at_step = |incident: &str| -> Option<(String, bool)> {
        let run = store.incident_runs(incident).ok()?.first()?.clone();
        let lines = store.read_run(&run).ok()?;
        let step = lines
            .iter()
            .rev()
            .find(|l| l["event"] == "step-start")
            .and_then(|l| l["step"].as_str().map(str::to_string))?;
        let past = lines
            .iter()
            .any(|l| l["event"] == "intent" || l["event"] == "run-end");
        Some((step, past))
    };
    let mut seen = Vec::new();
    wait_until(
        "all 50 runs to be reading the session store",
        120,
        &workers_ref,
        || {
            seen = incidents.iter().map(|i| at_step(i)).collect();
            seen.iter().all(|s| s.is_some())
        },
    );
    assert!(
        seen.iter().flatten().all(|(_, past)| !past),
        "a run made a change or ended before the halt: {seen:?}"
    );
    eprintln!(
        "running at the halt, by step: {:?}",
        seen.iter().flatten().fold(
            std::collections::BTreeMap::<&str, usize>::new(),
            |mut m, (s, _)| {
                *m.entry(s.as_str()).or_default() += 1;
                m
            }
        )
    );
    let url = nats.url();
    let halting = Instant::now();
    let halt = output(runbook().args(["halt", "--all", "--reason", "drill", "--nats", &url]));
    let halt_took = halting.elapsed();
    assert_eq!(halt.code, 0, "{}", halt.stderr);
    assert!(
        halt.stdout.contains("HALTED: every runbook"),
        "{}",
        halt.stdout
    );
    redis.signal("-CONT");
    let released = Instant::now();
    let ended = |incident: &str| incident_state(&store, incident).2;
    wait_until("all 50 runs to stop", 240, &workers_ref, || {
        incidents.iter().all(|i| ended(i).is_some())
    });
    let stopped_in = released.elapsed();
    for incident in &incidents {
        let (runs, rollbacks, end) = incident_state(&store, incident);
        assert_eq!(
            (runs, rollbacks, end.as_deref()),
            (1, 0, Some("halted")),
            "{incident}"
        );
        let run = &store.incident_runs(incident).unwrap()[0];
        let lines = store.read_run(run).unwrap();
        assert!(!lines.iter().any(|l| l["event"] == "intent"), "{incident}");
    }
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    let halts = runbook_journal::halt::read(&*store).unwrap();
    assert_eq!(halts.stopped.len(), RUNS);
    eprintln!(
        "halt: `runbook halt --all` took {} ms; the 50 runs ended halted {} ms after the session store answered again",
        halt_took.as_millis(),
        stopped_in.as_millis()
    );

    // Lifted: the workers continue all 50; one rollback in all.
    let resumed = output(runbook().args(["resume-all", "--nats", &url]));
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(
        resumed
            .stdout
            .matches("queued for the fleet's workers")
            .count(),
        RUNS
    );
    wait_until("all 50 runs to go on", 300, &workers_ref, || {
        incidents
            .iter()
            .all(|i| ended(i).is_some_and(|s| s != "halted"))
    });
    let total: usize = incidents.iter().map(|i| incident_state(&store, i).1).sum();
    assert_eq!(total, 1);
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    assert!(
        runbook_journal::halt::read(&*store)
            .unwrap()
            .stopped
            .is_empty()
    );
}
