//! Runs parked for approvals on a fleet, against real servers on
//! 127.0.0.1 (`nats-server` with JetStream, `runbook worker` processes,
//! moto, `redis-server`) and approvers paged at an HTTP endpoint of the
//! test's own: approved runs go on, ignored ones escalate, a worker that
//! dies while escalating drops nothing, a page that arrives after its run
//! went on is resolved again, and a run whose journal cannot be continued
//! is escalated all the same.

mod common;

use common::fleet::{Nats, Worker, incident_state, one_at_a_time, submit, wait_until};
use common::live::*;
use common::{output, runbook};
use runbook_fleet::store::JetStreamStore;
use runbook_journal::store::Store;
use serde_json::Value;
use std::time::Duration;
use wiremock::Mock;
use wiremock::matchers::{body_string_contains, method};

/// An approvers' target in `[notify]` at `hook`, with `extra` settings.
fn paging(hook: &Hook, extra: &str) -> String {
    format!(
        "[notify]\napprovals = \"approvers\"\n{extra}\n[notify.targets.approvers]\nkind = \"pagerduty\"\nrouting_key_env = \"RUNBOOK_TEST_PD_KEY\"\nurl = \"{}/v2/enqueue\"\n\n{}",
        hook.uri(),
        notify_section()
    )
}

/// A parked page's dedup key is its parking's own,
/// `runbook-approval-RUN-STEP-SEQ`, SEQ being the journal line that
/// parked the run there (its `awaiting-approval` end): a later parking
/// of the same run and step has another, and a late resolve of the one
/// cannot close the other.
fn assert_parking_key(store: &JetStreamStore, run: &str, step: &str, key: &str) {
    let prefix = format!("runbook-approval-{run}-{step}-");
    let seq: u64 = key
        .strip_prefix(&prefix)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("`{key}` is not `{prefix}SEQ`"));
    let lines = store.read_run(run).unwrap();
    let parked_by = lines.iter().find(|l| l["seq"] == seq);
    assert!(
        parked_by.is_some_and(|l| l["event"] == "run-end" && l["status"] == "awaiting-approval"),
        "line {seq} of run {run} did not park it: {parked_by:?}"
    );
}

/// A service of its own in moto, and a live environment for it (flags in
/// a file) whose `[notify]` is `paging`: the environment, and the
/// service's cluster, name and task family.
fn paged_service(
    moto: &Moto,
    redis: &RedisServer,
    paging: &str,
) -> (Live, (String, String, String)) {
    let (live, service) = bad_deploy_service(moto, redis);
    live.set_notify(paging);
    (live, service)
}

/// `run`'s entry on the parked list (`Null` when it is not there).
fn parked_entry(store: &JetStreamStore, run: &str) -> Value {
    runbook_fleet::parked::list(store.fleet()).unwrap()[run].clone()
}

/// The bodies the approvers' hook got for `key` with `action`.
fn pages(hook: &Hook, action: &str, key: &str) -> Vec<Value> {
    hook.bodies("/v2/enqueue")
        .into_iter()
        .filter(|b| b["dedup_key"] == key && b["event_action"] == action)
        .collect()
}

/// A live run without approvals parks at each change; `runbook approve`
/// continues it until it resolves, with one rollback. Another, never
/// approved, escalates after its timeout and changes nothing.
#[test]
fn parked_runs_continue_when_approved_and_escalate_when_not() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, logs.path(), "w");
    let store = nats.store();
    let url = nats.url();
    let tag = common::now_nanos();
    // Approvers are paged at a hook of this test's own.
    let approvers = Hook::start(202);
    // The first page fails every try the notify backend makes (503 three
    // times): the worker pages again, and the page arrives.
    approvers.mount(
        Mock::given(method("POST"))
            .respond_with(ok(503))
            .up_to_n_times(3)
            .with_priority(1),
    );
    let paging = paging(&approvers, "");
    let (live, (cluster, service, family)) = paged_service(&moto, &redis, &paging);
    let approved = format!("approve-{tag}");
    assert_eq!(submit(&nats, &live.env(), &approved, &[]).code, 0);
    let mut approved_steps = Vec::new();
    for _ in 0..6 {
        wait_until("the run to park or end", 90, &[&worker], || {
            incident_state(&store, &approved).2.is_some()
        });
        let run = store.incident_runs(&approved).unwrap()[0].clone();
        let lines = store.read_run(&run).unwrap();
        let Some((step, _)) = runbook_fleet::parked::waiting_step(&lines) else {
            break;
        };
        let out = output(runbook().args(["approve", &run, &step, "--nats", &url]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        // Approving twice, or the wrong step, is refused.
        let again = output(runbook().args(["approve", &run, "no-such-step", "--nats", &url]));
        assert_eq!(again.code, 2, "{}", again.stdout);
        approved_steps.push(step);
        wait_until("the approved run to go on", 90, &[&worker], || {
            let lines = store.read_run(&run).unwrap();
            runbook_fleet::parked::waiting_step(&lines)
                .is_none_or(|(s, _)| !approved_steps.contains(&s))
        });
    }
    assert!(
        approved_steps.contains(&"rollback".to_string()),
        "{approved_steps:?}"
    );
    let (_, rollbacks, ended) = incident_state(&store, &approved);
    // Continued in a fresh process, the recorded metrics start over: the
    // verification may escalate (paging, approved too); it ended either way.
    assert!(
        matches!(ended.as_deref(), Some("resolved" | "escalated")),
        "{ended:?} {approved_steps:?}"
    );
    assert_eq!(rollbacks, 1);
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    // The approvers were paged when it parked, and the page resolved when
    // it went on.
    let run = store.incident_runs(&approved).unwrap()[0].clone();
    // Each page's delivery is in the run's journal (and `runbook show`
    // says so), under a key of its parking's own.
    let journaled = |run: &str, about: &str| {
        let found = std::cell::RefCell::new(None);
        wait_until(
            &format!("the {about} page in the journal"),
            60,
            &[&worker],
            || {
                *found.borrow_mut() = store.read_run(run).unwrap().into_iter().find(|l| {
                    l["event"] == "page" && l["about"] == about && l["step"] == "rollback"
                });
                found.borrow().is_some()
            },
        );
        found.into_inner().unwrap()
    };
    let parked_page = journaled(&run, "parked");
    let key = parked_page["dedup_key"].as_str().unwrap().to_string();
    assert_parking_key(&store, &run, "rollback", &key);
    let pages = |action: &str, key: &str| pages(&approvers, action, key);
    wait_until("the approvers' page to resolve", 30, &[&worker], || {
        !pages("resolve", &key).is_empty()
    });
    let last = approvers
        .bodies("/v2/enqueue")
        .into_iter()
        .rfind(|b| b["dedup_key"] == key.as_str());
    assert_eq!(
        last.map(|b| b["event_action"].clone()),
        Some("resolve".into()),
        "the page for the approved step is resolved last"
    );
    let triggered = pages("trigger", &key);
    assert!(
        triggered
            .iter()
            .any(|b| b["payload"]["severity"] == "warning"
                && b["payload"]["summary"]
                    .as_str()
                    .is_some_and(|s| s.contains(&format!("runbook approve {run} rollback")))),
        "{triggered:?}"
    );
    assert_eq!(parked_page["delivered"], true, "{parked_page}");
    assert!(
        (1..=3).contains(&parked_page["tries"].as_u64().unwrap()),
        "{parked_page}"
    );
    assert!(parked_page.get("error").is_none(), "{parked_page}");
    assert_eq!(journaled(&run, "continued")["delivered"], true);
    let show = output(runbook().args(["show", &run, "--nats", &url]));
    assert!(
        show.stdout
            .contains("page to `approvers` (parked at step `rollback`): delivered (triggered)"),
        "{}",
        show.stdout
    );
    assert!(!show.stdout.contains("test-routing-key"), "{}", show.stdout);
    // Never approved: escalates after 2 s, nothing changed.
    let (live, (cluster, service, family)) = paged_service(&moto, &redis, &paging);
    let ignored = format!("ignored-{tag}");
    assert_eq!(
        submit(&nats, &live.env(), &ignored, &["--approval-timeout", "2"]).code,
        0
    );
    wait_until("the ignored run to escalate", 90, &[&worker], || {
        incident_state(&store, &ignored).2.as_deref() == Some("escalated")
    });
    assert_eq!(incident_state(&store, &ignored).1, 0);
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    let run = store.incident_runs(&ignored).unwrap()[0].clone();
    let show = output(runbook().args(["show", &run, "--nats", &url]));
    assert!(
        show.stdout.contains("nobody approved step `rollback`"),
        "{}",
        show.stdout
    );
    assert!(worker.counter("escalated_total") >= 1);
    // Paged when it parked, again (critical, the same key) when it
    // escalated.
    let key = journaled(&run, "parked")["dedup_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert_parking_key(&store, &run, "rollback", &key);
    wait_until("the escalation page", 30, &[&worker], || {
        pages("trigger", &key)
            .iter()
            .any(|b| b["payload"]["severity"] == "critical")
    });
    assert!(
        pages("trigger", &key)
            .iter()
            .any(|b| b["payload"]["severity"] == "warning")
    );
    assert_eq!(journaled(&run, "escalated")["delivered"], true);
}

/// A worker that dies while escalating a parked run (after it claimed
/// it, before its journal says so) does not take the run with it: the
/// run stays parked, the claim lapses, and another worker escalates it.
#[test]
fn a_parked_run_is_never_dropped() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    // The first worker stops dead once it has claimed an overdue run.
    let mut first = Worker::start_with(
        &nats,
        logs.path(),
        "first",
        &[("FAILPOINTS", "parked-claimed=sleep(600000)")],
    );
    let store = nats.store();
    // The approvers' endpoint refuses, echoing what it was sent (the
    // routing key with it): the refusal is journaled, the echo is not.
    let approvers = Hook::start(202);
    approvers.mount(
        Mock::given(method("POST"))
            .respond_with(|req: &wiremock::Request| {
                wiremock::ResponseTemplate::new(400).set_body_bytes(req.body.clone())
            })
            .with_priority(1),
    );
    let (live, (cluster, service, family)) = paged_service(&moto, &redis, &paging(&approvers, ""));
    let incident = format!("dropped-{}", common::now_nanos());
    assert_eq!(
        submit(&nats, &live.env(), &incident, &["--approval-timeout", "1"]).code,
        0
    );
    let claimed = |run: &str| {
        runbook_fleet::parked::list(store.fleet()).unwrap()[run]["claim"]["by"].is_string()
    };
    wait_until("the run to park", 90, &[&first], || {
        incident_state(&store, &incident).2.is_some()
    });
    let run = store.incident_runs(&incident).unwrap()[0].clone();
    wait_until("the first worker to claim it", 30, &[&first], || {
        claimed(&run)
    });
    first.kill9();
    // Still parked, still waiting: nothing escalated it.
    assert!(parked_entry(&store, &run).is_object());
    assert_eq!(
        incident_state(&store, &incident).2.as_deref(),
        Some("awaiting-approval")
    );
    let second = Worker::start(&nats, logs.path(), "second");
    wait_until("the second worker to escalate it", 60, &[&second], || {
        incident_state(&store, &incident).2.as_deref() == Some("escalated")
    });
    wait_until("the run to leave the parked list", 30, &[&second], || {
        parked_entry(&store, &run).is_null()
    });
    assert_eq!(incident_state(&store, &incident).1, 0);
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    assert!(second.counter("escalated_total") >= 1);
    // The page nobody got, as its journal and `runbook show` say.
    wait_until(
        "the undelivered page in the journal",
        60,
        &[&second],
        || {
            store.read_run(&run).unwrap().iter().any(|l| {
                l["event"] == "page" && l["about"] == "escalated" && l["delivered"] == false
            })
        },
    );
    let show = output(runbook().args(["show", &run, "--nats", &nats.url()]));
    assert!(
        show.stdout
            .contains("page to `approvers` (escalated at step `rollback`): NOT delivered"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("3 tries"), "{}", show.stdout);
    assert!(!show.stdout.contains("test-routing-key"), "{}", show.stdout);
}

/// A page that reaches the approvers after its run was approved and went
/// on (here the hook holds the parking's page for 20 s) would stay open:
/// the worker resolves it again, last, under the parking's own key, and
/// the run's journal and `runbook show` say so.
#[test]
fn a_page_delivered_after_its_run_went_on_is_resolved_again_and_journaled() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, logs.path(), "w");
    let store = nats.store();
    let approvers = Hook::start(202);
    approvers.mount(
        Mock::given(method("POST"))
            .and(body_string_contains("\"event_action\":\"trigger\""))
            .respond_with(ok(202).set_delay(Duration::from_secs(20)))
            .up_to_n_times(1)
            .with_priority(1),
    );
    let (live, _) = paged_service(&moto, &redis, &paging(&approvers, "timeout_ms = 40000\n"));
    let incident = format!("late-page-{}", common::now_nanos());
    assert_eq!(submit(&nats, &live.env(), &incident, &[]).code, 0);
    wait_until("the run to park", 90, &[&worker], || {
        incident_state(&store, &incident).2.is_some()
    });
    let run = store.incident_runs(&incident).unwrap()[0].clone();
    let (step, _) = runbook_fleet::parked::waiting_step(&store.read_run(&run).unwrap())
        .expect("parked for an approval");
    wait_until("the run on the parked list", 30, &[&worker], || {
        parked_entry(&store, &run).is_object()
    });
    // Approved while its page is on its way.
    let out = output(runbook().args(["approve", &run, &step, "--nats", &nats.url()]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let journaled = std::cell::RefCell::new(Value::Null);
    wait_until("the parked page in the journal", 90, &[&worker], || {
        let lines = store.read_run(&run).unwrap();
        *journaled.borrow_mut() = lines
            .into_iter()
            .find(|l| l["event"] == "page" && l["about"] == "parked" && l["step"] == step.as_str())
            .unwrap_or_default();
        journaled.borrow().is_object()
    });
    let page = journaled.into_inner();
    assert_eq!(page["delivered"], true, "{page}");
    assert_eq!(page["resolved_late"]["delivered"], true, "{page}");
    let key = page["dedup_key"].as_str().unwrap().to_string();
    assert_parking_key(&store, &run, &step, &key);
    // The last word on the key is a resolve, after the late trigger.
    let actions: Vec<Value> = approvers
        .bodies("/v2/enqueue")
        .into_iter()
        .filter(|b| b["dedup_key"] == key.as_str())
        .map(|b| b["event_action"].clone())
        .collect();
    let last_trigger = actions.iter().rposition(|a| a == "trigger");
    let last_resolve = actions.iter().rposition(|a| a == "resolve");
    assert!(
        last_trigger.is_some() && last_resolve > last_trigger,
        "{actions:?}"
    );
    let show = output(runbook().args(["show", &run, "--nats", &nats.url()]));
    assert!(
        show.stdout.contains(&format!(
            "page to `approvers` (parked at step `{step}`): delivered (triggered) after the run went on, then resolved"
        )),
        "{}",
        show.stdout
    );
}

/// A parked run whose journal was altered can neither go on nor record
/// its escalation; once its time is up it is escalated all the same:
/// the approvers are paged (critical, saying why), the parked list keeps
/// it marked, and later sweeps do not page again.
#[test]
fn a_parked_run_whose_journal_cannot_be_continued_is_escalated_all_the_same() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, logs.path(), "w");
    let store = nats.store();
    let approvers = Hook::start(202);
    let (live, (cluster, service, family)) = paged_service(&moto, &redis, &paging(&approvers, ""));
    let incident = format!("untrusted-{}", common::now_nanos());
    assert_eq!(
        submit(&nats, &live.env(), &incident, &["--approval-timeout", "3"]).code,
        0
    );
    wait_until("the run to park", 90, &[&worker], || {
        incident_state(&store, &incident).2.is_some()
    });
    let run = store.incident_runs(&incident).unwrap()[0].clone();
    wait_until("the run on the parked list", 30, &[&worker], || {
        parked_entry(&store, &run).is_object()
    });
    // A line that is not in the chain, appended to the run's journal.
    let (js, subject) = (
        store.fleet().js.clone(),
        format!("{}{run}", runbook_fleet::nats::JOURNAL_PREFIX),
    );
    store
        .fleet()
        .wait("appending a forged line", async move {
            let forged = r#"{"event":"note","seq":2,"prev":"0","hash":"0"}"#;
            js.publish(subject, forged.into())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(())
        })
        .unwrap();
    let entry = std::cell::RefCell::new(Value::Null);
    wait_until(
        "the run to be escalated off its journal",
        90,
        &[&worker],
        || {
            *entry.borrow_mut() = parked_entry(&store, &run);
            entry.borrow()["escalated"]["journaled"] == false
        },
    );
    let entry = entry.into_inner();
    assert!(entry["open_failures"].as_u64() >= Some(3), "{entry}");
    let reason = entry["escalated"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("its journal cannot be continued"),
        "{reason}"
    );
    assert!(reason.contains("was altered"), "{reason}");
    let key = entry["page"]["dedup_key"].as_str().unwrap().to_string();
    let critical = || {
        pages(&approvers, "trigger", &key)
            .into_iter()
            .filter(|b| b["payload"]["severity"] == "critical")
            .collect::<Vec<_>>()
    };
    wait_until("the escalation page", 30, &[&worker], || {
        !critical().is_empty()
    });
    assert!(
        critical()[0]["payload"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("its journal cannot be continued")),
        "{:?}",
        critical()
    );
    assert!(worker.counter("escalated_total") >= 1);
    // The entry keeps what became of its page (the journal takes no more).
    wait_until("the page on record", 30, &[&worker], || {
        parked_entry(&store, &run)["escalated"]["paged"]["delivered"] == true
    });
    // Later sweeps (every 2 s) leave it be: still listed, paged once.
    std::thread::sleep(Duration::from_secs(6));
    let after = parked_entry(&store, &run);
    assert_eq!(
        after["escalated"]["at_ms"], entry["escalated"]["at_ms"],
        "{after}"
    );
    assert_eq!(after["open_failures"], entry["open_failures"], "{after}");
    assert_eq!(critical().len(), 1);
    // Nobody can approve it now: it stays as it is.
    let step = entry["step"].as_str().unwrap();
    let approve = output(runbook().args(["approve", &run, step, "--nats", &nats.url()]));
    assert_eq!(approve.code, 2, "{}", approve.stdout);
    assert!(
        approve
            .stderr
            .contains("was escalated and cannot be approved"),
        "{}",
        approve.stderr
    );
    let after = parked_entry(&store, &run);
    assert!(after["escalated"].is_object(), "{after}");
    // `runbook parked` shows it, and why.
    let listed = output(runbook().args(["parked", "--nats", &nats.url()]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    assert!(listed.stdout.contains(&run), "{}", listed.stdout);
    assert!(
        listed.stdout.contains("(paged): nobody approved step"),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("was altered"), "{}", listed.stdout);
    // It changed nothing.
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
}
