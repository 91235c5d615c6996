//! Steps under an approval rule (`approval:` in the runbook: M of N
//! people of an approvers file, not the run's starter, a timeout), live
//! against moto and redis-server, on a state directory and on a fleet
//! (nats-server, `runbook worker`): `--yes` does not approve such a step;
//! each person's decision is authenticated by their token, checked
//! against the rule and the change the run waits for, and journaled; the
//! change happens once enough different people approved it, never before;
//! a denial or a timeout that denies stops it; bad decisions are refused
//! with nothing recorded, and no token is ever printed.

mod common;

use common::journal;

use common::approvers::{STARTER, people, ruled};
use common::fleet::{
    Nats, Worker, aws, incident_state, one_at_a_time, parked_at, submit_command, wait_until,
};
use common::live::*;
use common::{Run, output, runbook};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The decisions in a run's journal in a state directory: (who, decision).
fn decisions(state: &Path, run: &str) -> Vec<(String, String)> {
    journal(state, run)
        .iter()
        .filter(|l| l["event"] == "approval")
        .map(|l| {
            (
                l["vote"]["by"].as_str().unwrap().to_string(),
                l["vote"]["decision"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn refused(out: &Run, expect: &str) {
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(expect),
        "wanted `{expect}` in:\n{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
}

/// Two approvals from `sre`, not the starter's: `--yes` parks the run at
/// the rollback; every bad decision is refused with nothing recorded; one
/// approval is not enough (a resume parks again, nothing changed); the
/// second, from another person and naming the change shown, lets the
/// resumed run roll back, its intent saying who approved it.
#[test]
fn two_approvers_of_the_group_let_the_rollback_happen_and_nobody_else_does() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let rb = ruled(live.dir.path(), "approvals: 2\nfrom: [sre]\ntimeout: 1h");
    let people = people(live.dir.path());
    let state = live.dir.path().join("state");
    let st = state.to_str().unwrap();
    let local = ["--state-dir", st];

    let check = output(
        runbook()
            .args(["check", &rb, "--approvers"])
            .arg(&people.file),
    );
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        check
            .stdout
            .contains("approval: 2 approvals from `sre`; not the run's starter; 1h, then escalate"),
        "{}",
        check.stdout
    );

    // `--yes` approves everything else, not this step.
    let first = output(
        live.command_for(&rb, &["--yes", "--state-dir", st])
            .env("USER", STARTER),
    );
    assert_eq!(first.code, 4, "{}\n{}", first.stdout, first.stderr);
    let report = first.json();
    let run = report["run_id"].as_str().unwrap().to_string();
    assert_eq!(common::path(&report).last().unwrap(), "rollback");
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("runbook approve {run} rollback --as NAME")),
        "{reason}"
    );
    let before = format!("{family}:3");
    assert_eq!(service_task_definition(&moto, &cluster, &service), before);

    // Refused, each with nothing recorded.
    let zeros = format!("sha256:{}", "0".repeat(64));
    let other_state = tempfile::tempdir().unwrap();
    let elsewhere = other_state.path().to_str().unwrap();
    let bob_token = people.tokens["bob"].clone();
    // Who, which step, whose token (theirs when `None`), more arguments,
    // and what the refusal says.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<&'a str>, String);
    let bad: [Case; 7] = [
        (
            "carol",
            "rollback",
            None,
            vec![],
            "`carol` is not one of `sre`".into(),
        ),
        (
            "dave",
            "rollback",
            None,
            vec![],
            "`dave` started this run".into(),
        ),
        (
            "alice",
            "rollback",
            Some(&bob_token),
            vec![],
            "`alice` could not be authenticated".into(),
        ),
        (
            "mallory",
            "rollback",
            None,
            vec![],
            "`mallory` could not be authenticated".into(),
        ),
        (
            "alice",
            "rollback",
            None,
            vec!["--intent", &zeros],
            format!("this decision is for change `{zeros}`"),
        ),
        (
            "alice",
            "check-latency",
            None,
            vec![],
            format!("run `{run}` waits for step `rollback`"),
        ),
        (
            "alice",
            "rollback",
            None,
            vec!["--state-dir", elsewhere],
            format!("run `{run}` could not be read"),
        ),
    ];
    for (who, step, token, extra, expect) in &bad {
        let mut args = extra.clone();
        if !args.contains(&"--state-dir") {
            args.extend(local);
        }
        refused(&people.decide(&run, step, who, *token, &args), expect);
        assert!(decisions(&state, &run).is_empty(), "{who}: {expect}");
    }

    let alice = people.decide(&run, "rollback", "alice", None, &local);
    assert_eq!(alice.code, 0, "{}", alice.stderr);
    assert!(
        alice
            .stdout
            .contains("1 of 2 approvals (alice); the run waits for 1 more"),
        "{}",
        alice.stdout
    );
    refused(
        &people.decide(&run, "rollback", "alice", None, &local),
        "`alice` already approved this change",
    );
    assert_eq!(
        decisions(&state, &run),
        [("alice".into(), "approve".into())]
    );

    // One approval of two: a resume (with `--yes`) parks again.
    let again = output(aws(runbook()
        .args(["resume", &run, "--yes", "--json"])
        .args(local)));
    assert_eq!(again.code, 4, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(service_task_definition(&moto, &cluster, &service), before);

    // What `show` says the run waits for is what bob approves.
    let show = output(runbook().args(["show", &run]).args(local));
    assert_eq!(show.code, 0, "{}", show.stderr);
    assert!(
        show.stdout.contains("approvals: 1 of 2 approvals (alice)"),
        "{}",
        show.stdout
    );
    let intent = show
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("waits for: "))
        .and_then(|l| {
            l.rsplit_once(" (")
                .map(|(_, d)| d.trim_end_matches(')').to_string())
        })
        .unwrap_or_else(|| panic!("{}", show.stdout));
    let bob = people.decide(
        &run,
        "rollback",
        "bob",
        None,
        &[&["--intent", &intent][..], &local].concat(),
    );
    assert_eq!(bob.code, 0, "{}", bob.stderr);
    assert!(
        bob.stdout.contains(&format!(
            "decided: `runbook resume {run}` continues the run"
        )),
        "{}",
        bob.stdout
    );
    refused(
        &people.decide(&run, "rollback", "erin", None, &local),
        "already approved by alice, bob",
    );

    // The replayed metrics start over in a new process: recovered now.
    std::fs::write(
        live.dir.path().join("metrics.toml"),
        recorded(121.0, 121.0, 99.9),
    )
    .unwrap();
    // `--yes` approves the rest (the announcement), not the rollback.
    let done = output(aws(runbook()
        .args(["resume", &run, "--yes", "--json"])
        .args(local)));
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    assert_eq!(done.json()["status"], "resolved");
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let lines = journal(&state, &run);
    let intents: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "intent" && l["step"] == "rollback")
        .collect();
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(intents[0]["approval"]["how"], "approvers");
    assert_eq!(intents[0]["approval"]["by"], "alice, bob");
    refused(
        &people.decide(&run, "rollback", "erin", None, &local),
        "is not waiting for an approval (it is resolved)",
    );
}

/// Decisions at the same instant are judged one after another under the
/// run's hold: two people both count, one person twice counts once. A
/// denial of another run's change stops it: no rollback.
#[test]
fn decisions_at_the_same_instant_count_once_each_and_a_denial_stops_the_change() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let rb = ruled(live.dir.path(), "approvals: 3\nfrom: [sre]");
    let people = people(live.dir.path());
    let state = live.dir.path().join("state");
    let st = state.to_str().unwrap();
    let local = ["--state-dir", st];
    let parked = |incident: &str| {
        let out = output(
            live.command_for(&rb, &["--state-dir", st, "--incident", incident])
                .env("USER", STARTER),
        );
        assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
        out.json()["run_id"].as_str().unwrap().to_string()
    };
    let run = parked("same-instant");
    let mut children: Vec<(&str, std::process::Child)> = ["alice", "alice", "bob"]
        .into_iter()
        .map(|who| {
            let child = people
                .command(&run, "rollback", who, None, &local)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (who, child)
        })
        .collect();
    let mut codes: Vec<(&str, i32, String)> = children
        .drain(..)
        .map(|(who, c)| {
            let out = c.wait_with_output().unwrap();
            (
                who,
                out.status.code().unwrap(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes.iter().map(|(w, c, _)| (*w, *c)).collect::<Vec<_>>(),
        [("alice", 0), ("alice", 2), ("bob", 0)],
        "{codes:?}"
    );
    assert!(
        codes[1].2.contains("`alice` already approved this change"),
        "{codes:?}"
    );
    let mut got = decisions(&state, &run);
    got.sort();
    assert_eq!(
        got,
        [
            ("alice".to_string(), "approve".to_string()),
            ("bob".to_string(), "approve".to_string())
        ]
    );
    // The journal's chain still holds: the run resumes (and parks again:
    // two of three).
    let again = output(aws(runbook().args(["resume", &run, "--json"]).args(local)));
    assert_eq!(again.code, 4, "{}\n{}", again.stdout, again.stderr);

    // Another incident's run: one denial stops its change.
    let denied_run = parked("denied");
    let deny = people.decide(
        &denied_run,
        "rollback",
        "erin",
        None,
        &[&["--deny"][..], &local].concat(),
    );
    assert_eq!(deny.code, 0, "{}", deny.stderr);
    assert!(
        deny.stdout.contains("erin denied step `rollback`"),
        "{}",
        deny.stdout
    );
    let done = output(aws(runbook()
        .args(["resume", &denied_run, "--yes", "--json"])
        .args(local)));
    let report = done.json();
    let rollback = common::step(&report, "rollback");
    assert!(
        rollback.to_string().contains("`erin` denied the change"),
        "{rollback:#}"
    );
    assert_eq!(report["status"], "escalated", "{report:#}");
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
}

/// On a fleet: a run submitted by dave parks at the rollback; one
/// approval leaves it parked (the worker does not continue it), the
/// second continues it and it rolls back once. Another, whose rule
/// denies on timeout, goes on without its rollback once nobody approved
/// it in time, the denial journaled.
#[test]
fn a_fleet_run_goes_on_after_its_second_approver_and_a_timeout_denies() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, logs.path(), "w");
    let store = nats.store();
    let url = nats.url();
    let tag = common::now_nanos();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let rb = ruled(live.dir.path(), "approvals: 2\nfrom: [sre]");
    let people = people(live.dir.path());
    let fleet = ["--nats", url.as_str()];
    let incident = format!("ruled-{tag}");
    let submitted =
        output(submit_command(&nats, &rb, &live.env(), &incident, &["--yes"]).env("USER", STARTER));
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    use runbook_journal::store::Store;
    let waiting = |incident: &str| parked_at(&store, incident);
    wait_until("the run to park", 90, &[&worker], || {
        waiting(&incident).is_some()
    });
    let (run, step) = waiting(&incident).unwrap();
    assert_eq!(step, "rollback");
    refused(
        &people.decide(&run, "rollback", "dave", None, &fleet),
        "`dave` started this run",
    );
    let alice = people.decide(&run, "rollback", "alice", None, &fleet);
    assert_eq!(alice.code, 0, "{}", alice.stderr);
    assert!(
        alice.stdout.contains("1 of 2 approvals"),
        "{}",
        alice.stdout
    );
    // Two sweeps later it still waits, unchanged.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        waiting(&incident).map(|(_, s)| s).as_deref(),
        Some("rollback")
    );
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    let bob = people.decide(&run, "rollback", "bob", None, &fleet);
    assert_eq!(bob.code, 0, "{}", bob.stderr);
    assert!(
        bob.stdout.contains("a worker continues the run"),
        "{}",
        bob.stdout
    );
    let over = |incident: &str| {
        incident_state(&store, incident)
            .2
            .is_some_and(|s| s != "awaiting-approval")
    };
    // Later changes (a page, a message: no rule) are approved as before.
    for _ in 0..4 {
        wait_until("the approved run to end or park", 120, &[&worker], || {
            over(&incident) || waiting(&incident).is_some_and(|(_, s)| s != "rollback")
        });
        let Some((_, step)) = waiting(&incident) else {
            break;
        };
        let out = output(runbook().args(["approve", &run, &step]).args(fleet));
        assert_eq!(out.code, 0, "{}", out.stderr);
        wait_until("the run to go on", 120, &[&worker], || {
            waiting(&incident).is_none_or(|(_, s)| s != step)
        });
    }
    wait_until("the approved run to end", 120, &[&worker], || {
        over(&incident)
    });
    let (runs, rollbacks, _) = incident_state(&store, &incident);
    let told: Vec<String> = store
        .read_run(&run)
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {} {} {}",
                l["event"], l["step"], l["status"], l["report"]["summary"]
            )
        })
        .collect();
    assert_eq!((runs, rollbacks), (1, 1), "{told:#?}");
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );

    // Nobody approves the other in time: its rule denies the change.
    let (other, (cluster2, service2, family2)) = bad_deploy_service(&moto, &redis);
    let rb2 = ruled(
        other.dir.path(),
        "approvals: 1\ntimeout: 5s\non_timeout: deny",
    );
    let incident2 = format!("timeout-{tag}");
    let submitted = output(
        submit_command(&nats, &rb2, &other.env(), &incident2, &["--yes"]).env("USER", STARTER),
    );
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    wait_until("the second run to park", 90, &[&worker], || {
        waiting(&incident2).is_some()
    });
    let (run2, _) = waiting(&incident2).unwrap();
    let entry = runbook_fleet::parked::list(store.fleet()).unwrap()[&run2].clone();
    assert_eq!(entry["on_timeout"], "deny", "{entry:#}");
    wait_until("the timed-out run to end", 120, &[&worker], || {
        over(&incident2)
    });
    let (_, rollbacks, _) = incident_state(&store, &incident2);
    assert_eq!(rollbacks, 0);
    assert_eq!(
        service_task_definition(&moto, &cluster2, &service2),
        format!("{family2}:3")
    );
    let lines = store.read_run(&run2).unwrap();
    let votes: Vec<&Value> = lines.iter().filter(|l| l["event"] == "approval").collect();
    assert_eq!(votes.len(), 1, "{votes:?}");
    assert_eq!(votes[0]["vote"]["by"], "timeout");
    assert_eq!(votes[0]["vote"]["decision"], "deny");
    let report = lines
        .iter()
        .rev()
        .find(|l| l["event"] == "step-end" && l["report"]["id"] == "rollback")
        .unwrap();
    assert!(
        report.to_string().contains("nobody approved the change"),
        "{report:#}"
    );
}
