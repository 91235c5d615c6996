//! The fleet against real servers on 127.0.0.1: `nats-server` with
//! JetStream (a three-node cluster, or one node), `runbook worker`
//! processes, moto (ECS) and `redis-server`. Workers are killed with -9
//! mid-rollback and a NATS node is killed mid-batch; two CLIs race on one
//! service; an alarm is submitted five times; leases race and lapse; the
//! host panics inside a worker's run; a run's journal is group-committed.
//! (Runs parked for approvals: `tests/approvals.rs`.)

mod common;

use common::fleet::{
    Nats, SIM, Worker, aws, incident_state, one_at_a_time, sim_run, soon, submit, wait_until,
    worker_logs,
};
use common::live::*;
use common::{RB0031, output, runbook};
use runbook_fleet::nats::Fleet;
use runbook_fleet::store::JetStreamStore;
use runbook_journal::store::Store;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP proxy to moto that can hold the first `UpdateService` (the
/// rollback) until told to let it through, and counts those it passed.
struct HoldingProxy {
    port: u16,
    held: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    updates: Arc<AtomicUsize>,
}

impl HoldingProxy {
    fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (held, release, updates) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let first = Arc::new(Mutex::new(true));
        {
            let (held, release, updates) = (held.clone(), release.clone(), updates.clone());
            std::thread::spawn(move || {
                for client in listener.incoming().flatten() {
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        continue;
                    };
                    let (mut c_in, mut s_out) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    let (held, release, updates, first) = (
                        held.clone(),
                        release.clone(),
                        updates.clone(),
                        first.clone(),
                    );
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match c_in.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            let chunk = &buf[..n];
                            if chunk.windows(13).any(|w| w == b"UpdateService") {
                                let hold = std::mem::replace(&mut *first.lock().unwrap(), false);
                                if hold {
                                    held.store(true, Ordering::SeqCst);
                                    // Bounded: at most two minutes.
                                    for _ in 0..1200 {
                                        if release.load(Ordering::SeqCst) {
                                            break;
                                        }
                                        std::thread::sleep(Duration::from_millis(100));
                                    }
                                }
                                updates.fetch_add(1, Ordering::SeqCst);
                            }
                            if s_out.write_all(chunk).is_err() {
                                break;
                            }
                        }
                    });
                    let (mut s_in, mut c_out) = (server, client);
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut s_in, &mut c_out);
                    });
                }
            });
        }
        Self {
            port,
            held,
            release,
            updates,
        }
    }
}

/// A batch of live RB-0031 runs across distinct services on three workers
/// and a three-node cluster. The worker rolling back the first service is
/// killed with -9 while its `UpdateService` is on the wire (which then
/// reaches moto anyway), and a NATS node is killed too: every incident
/// ends, each with exactly one rollback, the killed run finished by
/// another worker from its journal, and no second `UpdateService`.
#[test]
fn a_killed_worker_and_a_lost_server_lose_nothing_and_repeat_nothing() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let mut nats = Nats::start(3);
    let logs = tempfile::tempdir().unwrap();
    let mut workers: Vec<Worker> = (0..3)
        .map(|i| Worker::start(&nats, logs.path(), &format!("w{i}")))
        .collect();
    let proxy = HoldingProxy::start(&moto.url);
    let proxied = Moto {
        url: format!("http://127.0.0.1:{}", proxy.port),
        child: None,
    };
    let batch = 6;
    let mut services = Vec::new();
    let mut envs = Vec::new();
    for i in 0..batch {
        let (cluster, service, family) = ecs_service(&moto);
        let via = if i == 0 { &proxied } else { &moto };
        let live = Live::new(
            &bad_deploy_metrics(),
            &redis.url(),
            via,
            (&cluster, &service),
            FILE_FLAGS,
        );
        services.push((cluster, service, family));
        envs.push(live);
    }
    let tag = format!("{}", common::now_nanos() % 1_000_000_000);
    let incident = |i: usize| format!("fleet-{tag}-{i}");
    for (i, live) in envs.iter().enumerate() {
        let out = submit(&nats, &live.env(), &incident(i), &["--yes"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    let store = nats.store();
    // The first service's rollback is on the wire: kill its worker.
    wait_until(
        "the first rollback to reach the proxy",
        120,
        &workers.iter().collect::<Vec<_>>(),
        || proxy.held.load(Ordering::SeqCst),
    );
    let run = store.incident_runs(&incident(0)).unwrap()[0].clone();
    let start = store.read_run(&run).unwrap();
    let pid = start
        .iter()
        .find(|l| l["event"] == "run-start")
        .and_then(|l| l["holder"]["pid"].as_u64())
        .unwrap() as u32;
    let victim = workers
        .iter()
        .position(|w| w.child.id() == pid)
        .expect("a worker runs it");
    assert!(
        start
            .iter()
            .any(|l| l["event"] == "intent" && l["step"] == "rollback"),
        "the rollback's intent is journaled before it is sent"
    );
    workers[victim].kill9();
    // The request went out before the kill: moto applies it.
    proxy.release.store(true, Ordering::SeqCst);
    // And a NATS server goes away mid-batch.
    nats.kill(2);
    let alive: Vec<&Worker> = workers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, w)| w)
        .collect();
    wait_until("every incident's run to end", 240, &alive, || {
        (0..batch).all(|i| incident_state(&store, &incident(i)).2.is_some())
    });
    for (i, (cluster, service, family)) in services.iter().enumerate() {
        let (runs, rollbacks, ended) = incident_state(&store, &incident(i));
        let shown = || {
            let run = store.incident_runs(&incident(i)).unwrap()[0].clone();
            output(runbook().args(["show", &run, "--nats", &nats.url()])).stdout
        };
        if runs != 1 {
            // Why: every run's journal and every worker's log (the killed
            // one's too).
            let journals: String = store
                .incident_runs(&incident(i))
                .unwrap_or_default()
                .iter()
                .map(|r| format!("run {r}: {:?}\n", store.read_run(r)))
                .collect();
            let logs = worker_logs(&workers.iter().collect::<Vec<_>>());
            panic!(
                "incident {i}: one run, continued, not restarted: {runs} runs\n{journals}worker logs:\n{logs}"
            );
        }
        assert_eq!(
            rollbacks,
            1,
            "incident {i}: exactly one rollback journaled: {}",
            shown()
        );
        // A run continued in another process (the killed worker had
        // several) reads the recorded metrics from their start again, so
        // its verification may see the incident as it was and escalate.
        assert!(
            matches!(ended.as_deref(), Some("resolved" | "escalated")),
            "incident {i}: {}",
            shown()
        );
        assert_eq!(
            service_task_definition(&moto, cluster, service),
            format!("{family}:2"),
            "incident {i}"
        );
    }
    assert_eq!(
        proxy.updates.load(Ordering::SeqCst),
        1,
        "the killed worker's rollback reached ECS once; the run was finished without a second"
    );
    let lines = store.read_run(&run).unwrap();
    let holders: std::collections::BTreeSet<u64> = lines
        .iter()
        .filter(|l| l["event"] == "resume")
        .filter_map(|l| l["holder"]["pid"].as_u64())
        .collect();
    assert!(
        !holders.is_empty() && !holders.contains(&u64::from(pid)),
        "another worker resumed the killed run"
    );
    let redelivered: u64 = alive.iter().map(|w| w.counter("redelivered_total")).sum();
    assert!(
        redelivered >= 1,
        "the killed run's request was delivered again"
    );
}

/// Two CLIs on two "machines" (one NATS), two incidents on one service:
/// the lease in JetStream and the staleness check let one rollback through.
#[test]
fn two_clis_on_one_service_roll_back_once() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let store = nats.store();
    for pair in 0..2 {
        let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
        let start = soon();
        let env = live.env();
        let url = nats.url();
        let incidents = [
            format!("cli-a-{pair}-{family}"),
            format!("cli-b-{pair}-{family}"),
        ];
        let spawn = |incident: &str| {
            aws(runbook().args([
                "run",
                RB0031,
                "--env",
                &env,
                "--yes",
                "--incident-start",
                &start,
                "--incident",
                incident,
                "--nats",
                &url,
            ]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        };
        let (a, b) = (spawn(&incidents[0]), spawn(&incidents[1]));
        let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
        assert_eq!(
            service_task_definition(&moto, &cluster, &service),
            format!("{family}:2"),
            "pair {pair}"
        );
        let rollbacks: usize = incidents.iter().map(|i| incident_state(&store, i).1).sum();
        assert_eq!(rollbacks, 1, "pair {pair}: {a:?} {b:?}");
        let codes = [a.status.code(), b.status.code()];
        assert!(
            codes.contains(&Some(0)),
            "pair {pair}: one resolved: {codes:?}"
        );
    }
}

/// The same alarm five times is one run; a request for an incident that
/// already has its run (past the duplicate window too) starts nothing.
#[test]
fn a_duplicate_alarm_is_one_run() {
    let _serial = one_at_a_time();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, logs.path(), "w");
    let url = nats.url();
    let incident = format!("dup-{}", common::now_nanos());
    for i in 0..5 {
        let out = output(runbook().args([
            "submit",
            RB0031,
            "--sim",
            SIM,
            "--incident",
            &incident,
            "--nats",
            &url,
        ]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stdout.contains("already submitted"),
            i > 0,
            "{}",
            out.stdout
        );
    }
    let store = nats.store();
    wait_until("the run to end", 60, &[&worker], || {
        incident_state(&store, &incident).2.is_some()
    });
    // Past the window: another message for the same incident.
    let request = runbook_fleet::request::RunRequest::new(
        &common::root().join(RB0031),
        Some(&common::root().join(SIM)),
        None,
        Some(incident.clone()),
    )
    .unwrap();
    runbook_fleet::request::publish(
        store.fleet(),
        &runbook_fleet::request::Request::Run(request),
        "another-key",
    )
    .unwrap();
    wait_until("the worker to see the duplicate", 30, &[&worker], || {
        worker.counter("duplicates_total") >= 1
    });
    assert_eq!(incident_state(&store, &incident).0, 1, "one run");
    assert_eq!(worker.counter("completed_total"), 1);
}

/// Group commit on JetStream: a run's journal is one message per durable
/// line, each message that durable line and the lines that waited for it
/// (`runbook_journal::log::durable`) after a line that counts them, and
/// read back it is the whole chain: every line, in order, verified.
#[test]
fn a_runs_journal_on_jetstream_is_one_publish_per_durable_line() {
    let _serial = one_at_a_time();
    let nats = Nats::start(1);
    let store = nats.store();
    let incident = format!("group-{}", common::now_nanos());
    let out = output(&mut sim_run(&nats, &incident));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let run = store.incident_runs(&incident).unwrap()[0].clone();
    // The messages on the run's subject, as stored.
    let (stream, subject) = (
        store.fleet().journal.clone(),
        format!("{}{run}", runbook_fleet::nats::JOURNAL_PREFIX),
    );
    let messages: Vec<String> = store
        .fleet()
        .wait("reading the journal's messages", async move {
            let mut out = Vec::new();
            let mut next = 1;
            for _ in 0..1000 {
                match stream
                    .direct_get_next_for_subject(&subject, Some(next))
                    .await
                {
                    Ok(m) => {
                        out.push(String::from_utf8_lossy(&m.payload).into_owned());
                        next = m.sequence + 1;
                    }
                    Err(_) => break,
                }
            }
            Ok(out)
        })
        .unwrap();
    let event = |line: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        v["event"].as_str().unwrap().to_string()
    };
    let mut lines = Vec::new();
    for m in &messages {
        let mut batch: Vec<&str> = m.split('\n').collect();
        // Several lines: a first line that counts them (what keeps an
        // older reader from taking the message for one line).
        if batch.len() > 1 {
            let count: serde_json::Value = serde_json::from_str(batch.remove(0)).unwrap();
            assert_eq!(count, serde_json::json!({ "runbook_batch": batch.len() }));
        }
        let (last, waited) = batch.split_last().unwrap();
        assert!(
            runbook_journal::log::durable(&event(last)),
            "a message ends with a durable line: {m}"
        );
        for w in waited {
            assert!(
                !runbook_journal::log::durable(&event(w)),
                "only lines that may wait share a message: {m}"
            );
        }
        lines.extend(batch.iter().map(|l| l.to_string()));
    }
    let events: Vec<String> = lines.iter().map(|l| event(l)).collect();
    // RB-0031's session-store path: six steps, two changes.
    assert_eq!(events.iter().filter(|e| *e == "step-start").count(), 6);
    assert_eq!(events.iter().filter(|e| *e == "applied").count(), 2);
    assert_eq!(events.first().map(String::as_str), Some("run-start"));
    assert_eq!(events.last().map(String::as_str), Some("run-end"));
    assert_eq!(
        messages.len(),
        events
            .iter()
            .filter(|e| runbook_journal::log::durable(e))
            .count()
    );
    assert!(messages.len() < lines.len(), "{events:?}");
    let text = lines.join("\n") + "\n";
    assert_eq!(
        runbook_journal::chain::verify_bytes(text.as_bytes()),
        Ok(lines.len())
    );
    // What every reader gets: the same lines, one by one.
    let read: Vec<String> = store
        .read_run(&run)
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(read, events);
}

/// A host panic inside a worker's run (a failpoint panics as the first
/// change is about to reach its backend): the worker records it in the
/// run's journal, stays up, and the run is continued from its journal to
/// its end, with exactly one rollback.
#[test]
fn a_host_panic_in_a_workers_run_is_continued_and_rolls_back_once() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let store = nats.store();
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start_with(
        &nats,
        logs.path(),
        "w",
        &[("FAILPOINTS", "backend-apply=1*panic(injected)")],
    );
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let incident = format!("panic-{family}");
    let submitted = submit(&nats, &live.env(), &incident, &["--yes"]);
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    wait_until("the run to end", 120, &[&worker], || {
        incident_state(&store, &incident).2.is_some()
    });
    let (runs, rollbacks, ended) = incident_state(&store, &incident);
    assert_eq!((runs, rollbacks), (1, 1), "one run, one rollback");
    // The recorded metrics stay bad after the rollback: the runbook
    // verifies, finds no recovery and escalates, as it does unfaulted.
    assert_eq!(ended.as_deref(), Some("escalated"));
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let run = store.incident_runs(&incident).unwrap()[0].clone();
    let events: Vec<String> = store
        .read_run(&run)
        .unwrap()
        .iter()
        .map(|l| l["event"].as_str().unwrap_or_default().to_string())
        .collect();
    let panicked = events.iter().position(|e| e == "host-panic");
    let resumed = events.iter().position(|e| e == "resume");
    assert!(panicked.is_some() && resumed > panicked, "{events:?}");
    // The intent before the panic and the one the resumed step wrote: one
    // `applied`, after the resume.
    let applied: Vec<usize> = (0..events.len())
        .filter(|&i| events[i] == "applied")
        .collect();
    assert!(applied.first() > resumed.as_ref(), "{events:?}");
    assert!(worker.get("/healthz").is_some(), "the worker is still up");
}

/// `runbook runs` on a fleet lists runs from `RUNBOOK_RUNS`: one message
/// per run started (not a value that every start reads and rewrites
/// under a lock), newest first, each once, cut at `--limit`; a first
/// publish that fails is tried again at once. Runs listed by an earlier
/// version in a `runs.X` value are still shown, merged by when they
/// started, a run in both places once.
#[test]
fn runs_are_listed_one_message_each_and_older_listings_still_show() {
    let _serial = one_at_a_time();
    let nats = Nats::start(1);
    let store = nats.store();
    let run = |failpoints: &str| -> String {
        let incident = format!("listed-{}", common::now_nanos());
        let out = output(sim_run(&nats, &incident).env("FAILPOINTS", failpoints));
        assert_eq!(out.code, 0, "{}", out.stderr);
        store.incident_runs(&incident).unwrap()[0].clone()
    };
    let first = run("");
    // Listed the old way, by an earlier version, between the first run
    // and the next: itself, and the first run once more (at another time:
    // shown once all the same, where it is newest).
    let kv = store.fleet().state.clone();
    let old = format!(
        r#"[[1000,"{first}"],[{},"oldrun-1"]]"#,
        runbook_core::time::now_ms()
    );
    store
        .fleet()
        .wait("writing a listing as an earlier version did", async move {
            kv.put("runs.7", old.into())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let second = run("");
    // Its first publish fails (as NATS not answering would).
    let third = run("nats-list-run=1*return(away)");
    let mut runs = store.fleet().runs.clone();
    let messages = store
        .fleet()
        .wait("reading the listing's stream", async move {
            Ok(runs
                .info()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .state
                .messages)
        })
        .unwrap();
    assert_eq!(messages, 3, "one message per run started");
    let listed = |limit: &str| -> Vec<String> {
        let out =
            output(runbook().args(["runs", "--json", "--limit", limit, "--nats", &nats.url()]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
            .lines()
            .map(|l| {
                let row: serde_json::Value = serde_json::from_str(l).unwrap();
                row["run_id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let all = vec![
        third.clone(),
        second.clone(),
        "oldrun-1".into(),
        first.clone(),
    ];
    assert_eq!(listed("10"), all);
    assert_eq!(listed("3"), all[..3].to_vec());
    assert_eq!(listed("1"), all[..1].to_vec());
}

/// A stream made by something else, in a way that would lose or repeat
/// runs, is refused with what to do.
#[test]
fn an_incompatible_stream_is_refused() {
    let _serial = one_at_a_time();
    let nats = Nats::start(1);
    let store = nats.store();
    let js = store.fleet().js.clone();
    let done = store.fleet().wait("replacing the stream", async move {
        js.delete_stream("RUNBOOK_REQUESTS")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "RUNBOOK_REQUESTS".into(),
            subjects: vec!["runbook.requests".into()],
            max_age: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    });
    done.unwrap();
    let out = output(runbook().args(["worker", "--nats", &nats.url()]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("retention is `Limits`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint: "), "{}", out.stderr);
}

/// nats-server 2.9 (Debian's) checks a clustered stream's expected last
/// subject sequence before it agrees on the write, not as part of it:
/// updates racing with the same expected revision may all be stored
/// (nats-server#4320). Twelve processes' worth of connections race for a
/// lease that exists (released) on a three-node cluster, twenty times,
/// and for one never taken (its key's first write, without the lock), ten
/// times: someone gets it, and while one holds it nobody else does. (On 2.15 a
/// clustered write takes longer here, so racers still queued when the
/// winner lets go after 300 ms may win after it: 42 winners in 20 rounds,
/// never two at once; on 2.9, 20.)
#[test]
fn racing_for_a_lease_on_a_cluster_one_holds_it_at_a_time() {
    let _serial = one_at_a_time();
    let nats = Nats::start(3);
    let url = nats.url();
    let racers = 12;
    let stores: Vec<Arc<JetStreamStore>> = (0..racers)
        .map(|_| JetStreamStore::new(Fleet::connect(&url, None).unwrap()))
        .collect();
    let mut winners_total = 0;
    let first_takes_checked = AtomicUsize::new(0);
    for round in 0..30 {
        let resource = format!("ecs-service:race/{}-{round}", common::now_nanos());
        // In 20 rounds the lease exists and is free: taking it is an
        // update, under the lock. In 10 it was never taken: taking it is
        // the key's first write, which goes without the lock.
        if round < 20 {
            drop(stores[0].lease(
                &resource,
                &runbook_journal::holder::Holder::me("setup"),
                Duration::ZERO,
            ));
        }
        let barrier = Arc::new(std::sync::Barrier::new(racers));
        // Each winner: from when it was told it holds the lease to when it
        // let go. No two may overlap. (A racer slow to reach NATS may take
        // the lease after the winner let go: a second winner, not a
        // second holder.)
        let held: Vec<Option<(Instant, Instant, u64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = stores
                .iter()
                .enumerate()
                .map(|(i, store)| {
                    let (barrier, resource) = (barrier.clone(), resource.clone());
                    let checked = &first_takes_checked;
                    s.spawn(move || {
                        let me = runbook_journal::holder::Holder::me(&format!("racer-{i}"));
                        barrier.wait();
                        let lease = store.lease(&resource, &me, Duration::ZERO).ok()?;
                        let from = Instant::now();
                        let token = lease.fencing_token();
                        // A lease never taken before was taken without the
                        // lock: its key has no lock hint while it is held.
                        if round >= 20 && token == 1 {
                            let hint = format!(
                                "lockhint.lease.{}",
                                &runbook_core::hash::sha256_hex(resource.as_bytes())[..32]
                            );
                            let state = store.fleet().state.clone();
                            let found = store
                                .fleet()
                                .wait("reading a lock hint", async move {
                                    Ok(state.get(hint).await?.is_some())
                                })
                                .unwrap();
                            assert!(
                                !found,
                                "round {round}: the first take went through the lock"
                            );
                            checked.fetch_add(1, Ordering::SeqCst);
                        }
                        // Held for a moment, so late racers meet it held.
                        std::thread::sleep(Duration::from_millis(300));
                        let to = Instant::now();
                        drop(lease);
                        Some((from, to, token))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut holds: Vec<(Instant, Instant, u64)> = held.into_iter().flatten().collect();
        assert!(!holds.is_empty(), "round {round}: nobody got the lease");
        holds.sort();
        for pair in holds.windows(2) {
            assert!(
                pair[1].0 >= pair[0].1,
                "round {round}: {} racers won, and two held the lease at once",
                holds.len()
            );
            // Each later winner took it from the one before: a fencing
            // token above it (two written at once would share one).
            assert!(
                pair[1].2 > pair[0].2,
                "round {round}: fencing tokens {} then {}",
                pair[0].2,
                pair[1].2
            );
        }
        winners_total += holds.len();
    }
    assert_eq!(first_takes_checked.load(Ordering::SeqCst), 10);
    eprintln!("30 rounds of {racers} racers: {winners_total} winners in all, never two at once");
}

/// A renewal that lands while its answer is lost (a timeout after the
/// server stored it) is not a takeover: the next renewal finds the key
/// holding exactly what that renewal wrote, takes it as its own, and the
/// lease is still held, and still exclusive.
#[test]
fn a_renewal_whose_answer_was_lost_keeps_the_hold() {
    let _serial = one_at_a_time();
    let nats = Nats::start(1);
    let store = nats.store();
    let resource = format!("ecs-service:renewed/{}", common::now_nanos());
    runbook_journal::set_failpoint("nats-renewed", "1*return(lost)").unwrap();
    let lease = store
        .lease(
            &resource,
            &runbook_journal::holder::Holder::me("renewed"),
            Duration::ZERO,
        )
        .unwrap();
    // Renewals every 4 s: the first lands unanswered, the second finds
    // the key moved on (by the first), the third is as usual.
    std::thread::sleep(Duration::from_secs(13));
    runbook_journal::clear_failpoint("nats-renewed");
    assert_eq!(lease.lost(), None);
    let other = store.lease(
        &resource,
        &runbook_journal::holder::Holder::me("other"),
        Duration::ZERO,
    );
    assert!(other.is_err(), "taken while held");
    drop(lease);
}

/// A lease whose hold cannot be renewed (NATS gone) says it is lost
/// before it lapses (`HOLD_FOR`, 15 s), so no change is started under it.
#[test]
fn a_lease_that_cannot_be_renewed_knows_it_is_lost_before_it_lapses() {
    let _serial = one_at_a_time();
    let mut nats = Nats::start(1);
    let store = nats.store();
    let resource = format!("ecs-service:lost/{}", common::now_nanos());
    let lease = store
        .lease(
            &resource,
            &runbook_journal::holder::Holder::me("holder"),
            Duration::ZERO,
        )
        .unwrap();
    assert_eq!(lease.lost(), None);
    let taken = Instant::now();
    nats.kill(0);
    let until = taken + Duration::from_secs(20);
    let lost = loop {
        if let Some(why) = lease.lost() {
            break why;
        }
        assert!(Instant::now() < until, "still relied on after 20 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let after = taken.elapsed();
    assert!(lost.contains("could not be renewed"), "{lost}");
    // Given up with time to spare before the hold lapses.
    assert!(after < Duration::from_secs(15), "{after:?}");
    // Letting go would wait for the NATS that is gone.
    std::mem::forget(lease);
}
