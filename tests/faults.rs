//! Fail closed, proven with faults: RB-0031's bad-deploy path live (moto's
//! ECS, redis-server), with a failpoint on the mutation path set to fail,
//! to panic or to hang (`FAILPOINTS`, in the binary `cargo test` builds),
//! then resumed until it ends; with journals and leases in a state
//! directory, and again in NATS JetStream (with failpoints on its writes).
//! Every trial: no rollback applied twice, no change without an intent
//! before it, no run lost, and the run ends as a clean run does (resolved)
//! or blocked with a reason. And the journal's integrity: a journal
//! altered in the middle is refused (exit 8), a torn last line is cut off
//! and the run goes on; an approval given after the world moved changes
//! nothing; a lease lost while the intent is written changes nothing.

mod common;

use common::RB0031;
use common::durable::*;
use common::faults::*;
use common::fleet::Nats;
use common::live::*;
use serde_json::Value;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

/// The matrices take turns: each measures how long a clean run takes.
static MATRIX: Mutex<()> = Mutex::new(());

/// The matrix: each failpoint on the mutation path × error, panic, hang.
#[test]
fn every_fault_on_the_mutation_path_fails_closed() {
    let _turn = MATRIX.lock().unwrap_or_else(|e| e.into_inner());
    let moto = Moto::start();
    let redis = RedisServer::start();
    let sync = [
        "journal-run-start",
        "journal-step-start",
        "journal-intent",
        "journal-applied",
        "journal-step-end",
        "journal-run-end",
        "lease-take",
        "lease-release",
    ];
    let asynchronous = ["backend-apply", "backend-applied", "backend-check"];
    // Faults of a journal write itself, errors by nature: half the line
    // written, or all of it with its fsync failing.
    let writes = [
        "torn-intent",
        "fsync-intent",
        "torn-applied",
        "fsync-applied",
    ];
    let hang = span(&Place::Local, &moto, &redis) * 2 + Duration::from_secs(3);
    let mut rows = Vec::new();
    for point in writes {
        let row = trial(
            &Place::Local,
            &moto,
            &redis,
            point,
            "return(injected)",
            hang,
        );
        rows.push((point.to_string(), "error", row));
    }
    for point in sync.iter().chain(asynchronous.iter()) {
        for (name, action) in actions(sync.contains(point)) {
            // Nothing can fail between a change's answer and its result's
            // journal line but that line (`journal-applied`); a panic or a
            // hang there is the process dying after the change.
            if *point == "backend-applied" && name == "error" {
                continue;
            }
            let row = trial(&Place::Local, &moto, &redis, point, action, hang);
            rows.push((point.to_string(), name, row));
        }
    }
    check(&rows);
}

/// The same matrix with journals and leases in NATS JetStream, and
/// failpoints on its writes too: a journal line before it is sent
/// (`nats-append`) and after the server stored it with the answer lost
/// (`nats-appended`), taking the run (`nats-run-take`), taking, renewing
/// (before it is sent, and after it landed with the answer lost) and
/// letting go of a lease (`nats-lease-take`, `nats-renew`, `nats-renewed`,
/// `nats-release`). Trials run side by side (each its own ECS service,
/// incident and redis-server): a killed process's holds lapse only after
/// 15 s.
#[test]
fn every_fault_on_the_mutation_path_fails_closed_on_jetstream() {
    let _turn = MATRIX.lock().unwrap_or_else(|e| e.into_inner());
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let store = nats.store();
    let place = Place::Nats(nats, store);
    let sync = [
        "journal-run-start",
        "journal-intent",
        "journal-applied",
        // Lines that waited (the step's start) are in memory here: a
        // process killed now loses them, and resume must not mind.
        "journal-step-end",
        "journal-run-end",
        "nats-append",
        "nats-appended",
        "nats-run-take",
        "nats-lease-take",
        "nats-release",
    ];
    let asynchronous = [
        "nats-renew",
        "nats-renewed",
        "backend-apply",
        "backend-applied",
        "backend-check",
    ];
    // Several at a time on two cores: a clean run takes longer than alone.
    let hang = span(&place, &moto, &redis) * 5 + Duration::from_secs(5);
    let mut todo = Vec::new();
    for point in sync.iter().chain(asynchronous.iter()) {
        for (name, action) in actions(sync.contains(point)) {
            if *point == "backend-applied" && name == "error" {
                continue;
            }
            todo.push((*point, name, action));
        }
    }
    let rows: Mutex<Vec<(String, &str, Row)>> = Mutex::new(Vec::new());
    // Hung processes wait in a sleep: seven at a time (then each waits
    // out its holds); the others three at a time.
    let (hangs, others): (Vec<_>, Vec<_>) = todo.iter().partition(|t| t.1 == "hang");
    let batches = others.chunks(3).chain(hangs.chunks(7));
    for batch in batches {
        std::thread::scope(|s| {
            for &&(point, name, action) in batch {
                let (place, moto, rows) = (&place, &moto, &rows);
                s.spawn(move || {
                    // Its own redis-server: the verification checks that
                    // the session store's connections are steady, which
                    // another trial's processes would upset.
                    let redis = RedisServer::start();
                    let row = trial(place, moto, &redis, point, action, hang);
                    rows.lock().unwrap().push((point.to_string(), name, row));
                });
            }
        });
    }
    let mut rows = rows.into_inner().unwrap();
    rows.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    assert_eq!(rows.len(), todo.len());
    check(&rows);
}

/// A lease that lapses while the change's intent is being written (a
/// slow store, NATS not renewing): the change is not made. Renewals fail
/// from the start and the intent's journal line takes 11 s, past the
/// point where the lease is relied on (10 s): blocked, ECS untouched, the
/// intent answered by `failed`.
#[test]
fn a_lease_lost_while_its_intent_is_written_changes_nothing() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let state = tempfile::tempdir().unwrap();
    let store = nats.store();
    let place = Place::Nats(nats, store);
    let runs = Runs {
        place: &place,
        state: state.path(),
        incident: format!("lost-{family}"),
    };
    let env = live.env();
    let start = soon();
    let out = runs
        .cli(&run_args(&env, &start))
        .env(
            "FAILPOINTS",
            "nats-renew=return(down);journal-intent=sleep(11000)",
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    let lines = runs.lines();
    let intent = lines
        .iter()
        .find(|l| l["event"] == "intent" && l["resource"] == "production/auth-service")
        .expect("the intent was written");
    let answer = lines
        .iter()
        .find(|l| l["event"] == "failed" && l["intent"] == intent["seq"])
        .unwrap_or_else(|| panic!("no `failed` for the intent: {lines:#?}"));
    assert!(
        answer
            .to_string()
            .contains("while the change's intent was written"),
        "{answer}"
    );
    assert_eq!(runs.applied(), 0);
}

/// A live bad-deploy run stopped before its rollback for want of an
/// approval (exit 4): its state directory, run id, and ECS.
struct Stopped {
    moto: Moto,
    cluster: String,
    service: String,
    family: String,
    state: tempfile::TempDir,
    run_id: String,
    live: Live,
    _redis: RedisServer,
}

fn stopped_before_rollback() -> Stopped {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let state = tempfile::tempdir().unwrap();
    let status = cli(state.path())
        .args([
            "run",
            RB0031,
            "--env",
            &live.env(),
            "--approve",
            "enable-fallback",
            "--incident-start",
            &humantime::format_rfc3339_seconds(
                std::time::SystemTime::now() + Duration::from_secs(60),
            )
            .to_string(),
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(4));
    let run_id = journals(state.path())[0]
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    Stopped {
        moto,
        cluster,
        service,
        family,
        state,
        run_id,
        live,
        _redis: redis,
    }
}

fn resume_yes(s: &Stopped) -> std::process::Output {
    cli(s.state.path())
        .args(["resume", &s.run_id, "--yes"])
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Tampered as an attacker would: a line duplicated, two swapped, a value
/// edited: refused with exit 8, nothing rolled back. A torn last line (a
/// crash mid-write) is cut off, said, and the run goes on.
#[test]
fn resume_refuses_an_altered_journal_and_cuts_off_a_torn_line() {
    let s = stopped_before_rollback();
    let journal = s
        .state
        .path()
        .join("runs")
        .join(format!("{}.jsonl", s.run_id));
    let original = std::fs::read_to_string(&journal).unwrap();
    let ls: Vec<&str> = original.lines().collect();
    assert!(ls.len() > 4, "{original}");
    let edited = ls[2].replacen("\"step-", "\"stepx-", 1);
    let tampered: Vec<(&str, Vec<&str>)> = vec![
        ("duplicated", [&ls[..3], &ls[2..]].concat()),
        ("swapped", [&ls[..1], &[ls[2], ls[1]], &ls[3..]].concat()),
        ("edited", [&ls[..2], &[edited.as_str()], &ls[3..]].concat()),
    ];
    for (how, lines) in tampered {
        std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
        let out = resume_yes(&s);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(8), "{how}: {stderr}");
        assert!(stderr.contains("was altered"), "{how}: {stderr}");
        assert_eq!(
            service_task_definition(&s.moto, &s.cluster, &s.service),
            format!("{}:3", s.family),
            "{how}"
        );
    }
    // Torn: the original with half a line after it. (The resumed process
    // replays metrics from the start: it reads the recovered latency.)
    std::fs::write(
        s.live.dir.path().join("metrics.toml"),
        recorded(121.0, 121.0, 99.9),
    )
    .unwrap();
    std::fs::write(
        &journal,
        format!("{original}{{\"seq\":{},\"prev\":\"ab", ls.len() + 1),
    )
    .unwrap();
    let out = resume_yes(&s);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ends: Vec<Value> = runbook_journal::chain::read(&journal)
        .unwrap()
        .into_iter()
        .filter(|l| l["event"] == "run-end" || l["event"] == "step-end")
        .collect();
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{ends:#?}");
    assert!(stderr.contains("last line was torn"), "{stderr}");
    assert_eq!(
        service_task_definition(&s.moto, &s.cluster, &s.service),
        format!("{}:2", s.family)
    );
    assert!(runbook_journal::chain::verify(&journal).unwrap().is_ok());
    let lines = runbook_journal::chain::read(&journal).unwrap();
    let resumed = lines.iter().find(|l| l["event"] == "resume").unwrap();
    assert!(
        resumed["dropped_torn_line"]
            .as_str()
            .unwrap()
            .starts_with("{\"seq\"")
    );
}

/// Stopped before its rollback; meanwhile someone rolled the service back
/// by hand; `resume --yes` is for the world as it was: blocked with the
/// evidence, and ECS is not rolled back a second time.
#[test]
fn an_approval_after_the_world_moved_changes_nothing() {
    let s = stopped_before_rollback();
    let ecs = ecs_client(&s.moto);
    rt().block_on(async {
        ecs.update_service()
            .cluster(&s.cluster)
            .service(&s.service)
            .task_definition(format!("{}:2", s.family))
            .send()
            .await
            .unwrap();
    });
    let out = resume_yes(&s);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(stderr.contains("the world moved"), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:3 → {}:2", s.family, s.family)),
        "{stderr}"
    );
    assert_eq!(
        service_task_definition(&s.moto, &s.cluster, &s.service),
        format!("{}:2", s.family)
    );
    assert_eq!(applied_rollbacks(s.state.path()), 0);
}

/// A crash while `run-start` was written (half of it reached the file:
/// the `torn-run-start` failpoint) leaves a journal of one torn line:
/// nothing ran, and `resume` says to start the run again rather than
/// going on with a configuration the journal does not hold; `run` then
/// starts it again and it resolves.
#[test]
fn a_journal_whose_run_start_is_torn_is_not_resumed() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let state = tempfile::tempdir().unwrap();
    let (env, start) = (live.env(), soon());
    let first = cli(state.path())
        .args(run_args(&env, &start))
        .env("FAILPOINTS", "torn-run-start=1*return(full disk)")
        .status()
        .unwrap();
    assert_eq!(first.code(), Some(9));
    let journal = journals(state.path()).remove(0);
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(!text.is_empty() && !text.contains('\n'), "{text}");
    let id = journal.file_stem().unwrap().to_string_lossy().into_owned();
    let out = cli(state.path())
        .args(["resume", &id, "--yes"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no whole `run-start`"), "{stderr}");
    assert!(stderr.contains("runbook run"), "{stderr}");
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    let again = cli(state.path())
        .args(run_args(&env, &start))
        .status()
        .unwrap();
    assert_eq!(again.code(), Some(0));
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
}
