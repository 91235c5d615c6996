//! The organisation's guardrails in Cedar (`--policies DIR`), live
//! against moto and redis-server: reported by `check` and `review` before
//! anything runs, asked before every change with the decision journaled,
//! and a change they hold waits for the people they name (`runbook
//! approve`), never for `--yes`. Bad policy directories are refused in
//! `bad_input.rs`.

mod common;

use common::journal;

use common::approvers::{STARTER, people};
use common::fleet::{
    Nats, Worker, aws, incident_state, one_at_a_time, parked_at, submit_command, wait_until,
};
use common::live::*;
use common::{RB0031, Run, output, path, root, runbook};
use serde_json::Value;
use std::path::Path;

/// Nothing mutates an `AUTH_*` flag without two approvals; no production
/// rollback while `change-freeze` is closed, unless an incident
/// commander approves it.
const ORG: &str = r#"// Nothing mutates an AUTH_* flag without two approvals.
@id("auth-flags-two-approvals")
forbid (principal, action == Runbook::Action::"feature-flags:mutate", resource is Runbook::Flag)
when { resource.name like "AUTH_*" }
unless { context.approvals.count >= 2 };

// Rollbacks wait out a freeze, unless the incident commander approves.
@id("rollback-freeze")
forbid (principal, action == Runbook::Action::"ecs:mutate", resource is Runbook::Service)
when { context.calendars.closed.contains("change-freeze") }
unless { context.approvals.groups.contains(Runbook::Group::"incident-commander") };
"#;

/// A policy directory with [`ORG`] and a `change-freeze` calendar closed
/// from `from` to `to` (RFC 3339).
fn policies(dir: &Path, from: &str, to: &str) -> String {
    let pol = dir.join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(pol.join("org.cedar"), ORG).unwrap();
    std::fs::write(
        pol.join("calendars.toml"),
        format!(
            "[[calendar]]\nname = \"change-freeze\"\nclosed = [{{ start = \"{from}\", end = \"{to}\" }}]\n"
        ),
    )
    .unwrap();
    pol.to_string_lossy().into_owned()
}

fn at(offset_s: i64) -> String {
    let now = std::time::SystemTime::now();
    let t = if offset_s >= 0 {
        now + std::time::Duration::from_secs(offset_s as u64)
    } else {
        now - std::time::Duration::from_secs((-offset_s) as u64)
    };
    humantime::format_rfc3339_seconds(t).to_string()
}

fn policy_lines(lines: &[Value], step: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["event"] == "policy" && l["step"] == step)
        .cloned()
        .collect()
}

fn refused(out: &Run, expect: &str) {
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(expect),
        "wanted `{expect}` in:\n{}",
        out.stderr
    );
}

fn flag(live: &Live, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(live.dir.path().join("flags.json")).ok()?;
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
    map.get(key).cloned()
}

/// A second runbook, of another team: it turns on MFA enforcement, an
/// `AUTH_*` flag the same policy holds.
const RB_MFA: &str = r#"---
runbook_id: RB-0107
title: Credential Stuffing Surge
service: login-service
severity_scope: HIGH
first_action_step: Enforce MFA on every login.
steps:
  - id: enforce-mfa
    plugin: set-flag
    inputs:
      key: AUTH_MFA_ENFORCE
      value: "true"
    grants:
      feature-flags:
        read: [AUTH_MFA_ENFORCE]
        mutate: [AUTH_MFA_ENFORCE]
    on:
      set: resolved
      unchanged: resolved
      error: escalated
      limit-exceeded: escalated
---
# Credential Stuffing Surge
"#;

/// The `AUTH_*` policy, in RB-0031 and in a second runbook: `check` and
/// `review` report the step before anything runs; `--yes` parks the run
/// at the flag, nothing set, the decision journaled with its policy and
/// context; the starter cannot approve, one approval is not enough (a
/// resume parks again), a second person's lets the resumed run set it.
#[test]
fn an_auth_flag_waits_for_two_approvers_in_every_runbook() {
    let moto = Moto::start();
    let (cluster, service, _) = ecs_service(&moto);
    // The session store really is down: started, then stopped.
    let mut session = RedisServer::start();
    let session_url = session.url();
    session.signal("-TERM");
    let _ = session.child.wait();
    let live = Live::new(
        &session_outage_metrics(),
        &session_url,
        &moto,
        (&cluster, &service),
        FILE_FLAGS,
    );
    // No freeze now: the calendar closed last year.
    let pol = policies(
        live.dir.path(),
        "2025-12-24T00:00:00Z",
        "2025-12-27T00:00:00Z",
    );
    let people = people(live.dir.path());
    let mfa = live.dir.path().join("RB-0107-credential-stuffing.md");
    std::fs::write(&mfa, RB_MFA).unwrap();
    let mfa = mfa.to_string_lossy().into_owned();

    // Before anything runs.
    let check = output(runbook().args(["check", RB0031, "--policies", &pol]));
    assert_eq!(check.code, 0, "{}", check.stderr);
    let expect = "policy: `feature-flags:mutate` on `AUTH_STATELESS_FALLBACK` needs approvals: 2 approvals from anyone in the approvers file; not the run's starter; no timeout of its own (policy `auth-flags-two-approvals` (org.cedar, line 3))";
    assert!(check.stdout.contains(expect), "{}", check.stdout);
    assert!(
        check.stdout.contains("2 policies, 1 calendars; 1 findings"),
        "{}",
        check.stdout
    );
    let check = output(runbook().args(["check", &mfa, "--policies", &pol]));
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        check.stdout.contains(
            "policy: `feature-flags:mutate` on `AUTH_MFA_ENFORCE` needs approvals: 2 approvals"
        ),
        "{}",
        check.stdout
    );
    let review = output(
        runbook()
            .args(["review", "runbooks", "--policies", &pol])
            .current_dir(root()),
    );
    assert_eq!(review.code, 0, "{}", review.stderr);
    assert!(review.stdout.contains("## Guardrails"), "{}", review.stdout);
    let json = output(
        runbook()
            .args(["review", "runbooks", "--json", "--policies", &pol])
            .current_dir(root()),
    );
    let found = &json.json()["guardrails"];
    assert_eq!(found[0]["step"], "enable-fallback", "{found:#}");
    assert_eq!(found[0]["action"], "feature-flags:mutate");
    assert_eq!(found[0]["kind"], "needs-approvals");
    assert_eq!(found[0]["rule"]["approvals"], 2);
    assert!(
        review.stdout.contains("- step `enable-fallback`: `feature-flags:mutate` on `AUTH_STATELESS_FALLBACK` needs approvals: 2 approvals"),
        "{}",
        review.stdout
    );

    // A dry run is not held: it records what the change would do (the
    // policy's decision journaled), sets nothing, and a resume of it
    // changes nothing (an unfinished dry run is refused: `api.rs`).
    let dry_state = live.dir.path().join("state-dry");
    let ds = dry_state.to_str().unwrap();
    let dry = output(
        live.command(&["--dry-run", "--state-dir", ds, "--policies", &pol])
            .env("USER", STARTER),
    );
    let report = dry.json();
    assert_ne!(report["status"], "awaiting-approval", "{report:#}");
    assert_eq!(flag(&live, "AUTH_STATELESS_FALLBACK"), None);
    let dry_run = report["run_id"].as_str().unwrap().to_string();
    let held = policy_lines(&journal(&dry_state, &dry_run), "enable-fallback");
    assert_eq!(held[0]["decision"], "needs-approvals", "{held:?}");
    let again = output(aws(runbook().args([
        "resume",
        &dry_run,
        "--yes",
        "--json",
        "--state-dir",
        ds,
    ])));
    let said = format!("{}{}", again.stdout, again.stderr);
    assert!(said.contains("already finished"), "{said}");
    assert_eq!(flag(&live, "AUTH_STATELESS_FALLBACK"), None);

    for (rb, step, key) in [
        (RB0031, "enable-fallback", "AUTH_STATELESS_FALLBACK"),
        (mfa.as_str(), "enforce-mfa", "AUTH_MFA_ENFORCE"),
    ] {
        let state = live.dir.path().join(format!("state-{step}"));
        let st = state.to_str().unwrap();
        let local = ["--state-dir", st];
        let first = output(
            live.command_for(rb, &["--yes", "--state-dir", st, "--policies", &pol])
                .env("USER", STARTER),
        );
        assert_eq!(first.code, 4, "{step}: {}\n{}", first.stdout, first.stderr);
        let report = first.json();
        assert_eq!(path(&report).last().unwrap(), step);
        let run = report["run_id"].as_str().unwrap().to_string();
        assert_eq!(flag(&live, key), None, "{step}: set before anyone approved");
        let parked = policy_lines(&journal(&state, &run), step);
        assert_eq!(parked.len(), 1, "{parked:?}");
        assert_eq!(parked[0]["decision"], "needs-approvals");
        assert_eq!(parked[0]["rule"]["approvals"], 2);
        assert_eq!(
            parked[0]["policies"],
            serde_json::json!(["auth-flags-two-approvals"])
        );
        assert_eq!(parked[0]["context"]["approvals"]["count"], 0);
        assert_eq!(parked[0]["context"]["starter"], STARTER);
        assert_eq!(parked[0]["resource"], key);

        // The starter may not; one person is not two.
        refused(
            &people.decide(&run, step, "dave", None, &local),
            "`dave` started this run",
        );
        let alice = people.decide(&run, step, "alice", None, &local);
        assert_eq!(alice.code, 0, "{}", alice.stderr);
        assert!(
            alice.stdout.contains("1 of 2 approvals (alice)"),
            "{}",
            alice.stdout
        );
        let again = output(aws(runbook()
            .args(["resume", &run, "--yes", "--json"])
            .args(local)));
        assert_eq!(again.code, 4, "{step}: {}\n{}", again.stdout, again.stderr);
        assert_eq!(flag(&live, key), None, "{step}: set with one approval");

        // A second person (of another group): it goes on.
        let carol = people.decide(&run, step, "carol", None, &local);
        assert_eq!(carol.code, 0, "{}", carol.stderr);
        // The replayed metrics start over in a new process: recovered now.
        std::fs::write(
            live.dir.path().join("metrics.toml"),
            recorded(164.0, 164.0, 99.7),
        )
        .unwrap();
        let done = output(aws(runbook()
            .args(["resume", &run, "--yes", "--json"])
            .args(local)));
        assert_eq!(done.code, 0, "{step}: {}\n{}", done.stdout, done.stderr);
        assert_eq!(done.json()["status"], "resolved");
        assert_eq!(flag(&live, key).as_deref(), Some("true"));
        let lines = journal(&state, &run);
        let last = policy_lines(&lines, step).pop().unwrap();
        assert_eq!(last["decision"], "allow");
        assert_eq!(last["context"]["approvals"]["count"], 2);
        let intents: Vec<&Value> = lines
            .iter()
            .filter(|l| l["event"] == "intent" && l["step"] == step)
            .collect();
        assert_eq!(intents.len(), 1, "{intents:?}");
        assert_eq!(intents[0]["approval"]["by"], "alice, carol");
    }
}

/// A closed `change-freeze` holds the rollback, `--yes` or not, until
/// an incident commander approves it; someone else's approval does not
/// count, and the service stays on its revision until then.
#[test]
fn a_freeze_holds_the_rollback_until_the_incident_commander_approves() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let pol = policies(live.dir.path(), &at(-3600), &at(3600));
    let mut people = people(live.dir.path());
    people.add("ivan", "[\"incident-commander\"]");
    let state = live.dir.path().join("state");
    let st = state.to_str().unwrap();
    let local = ["--state-dir", st];

    let cal = output(runbook().args(["calendar", "--policies", &pol, "--json"]));
    assert_eq!(cal.code, 0, "{}", cal.stderr);
    let cal = cal.json();
    assert_eq!(cal["calendars"][0]["state"], "CLOSED", "{cal:#}");

    let first = output(
        live.command(&["--yes", "--state-dir", st, "--policies", &pol])
            .env("USER", STARTER),
    );
    assert_eq!(first.code, 4, "{}\n{}", first.stdout, first.stderr);
    let report = first.json();
    assert_eq!(path(&report).last().unwrap(), "rollback");
    let run = report["run_id"].as_str().unwrap().to_string();
    let before = format!("{family}:3");
    assert_eq!(service_task_definition(&moto, &cluster, &service), before);
    let parked = policy_lines(&journal(&state, &run), "rollback");
    assert_eq!(parked[0]["decision"], "needs-approvals");
    assert_eq!(
        parked[0]["rule"]["from"],
        serde_json::json!(["incident-commander"])
    );
    assert_eq!(
        parked[0]["context"]["calendars"]["closed"],
        serde_json::json!(["change-freeze"])
    );
    assert_eq!(
        parked[0]["policies"],
        serde_json::json!(["rollback-freeze"])
    );

    refused(
        &people.decide(&run, "rollback", "alice", None, &local),
        "`alice` is not one of `incident-commander`",
    );
    let ivan = people.decide(&run, "rollback", "ivan", None, &local);
    assert_eq!(ivan.code, 0, "{}", ivan.stderr);
    std::fs::write(
        live.dir.path().join("metrics.toml"),
        recorded(121.0, 121.0, 99.9),
    )
    .unwrap();
    let done = output(aws(runbook()
        .args(["resume", &run, "--yes", "--json"])
        .args(local)));
    assert_eq!(done.code, 0, "{}\n{}", done.stdout, done.stderr);
    assert_eq!(done.json()["status"], "resolved");
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let last = policy_lines(&journal(&state, &run), "rollback")
        .pop()
        .unwrap();
    assert_eq!(last["decision"], "allow");
    assert_eq!(
        last["context"]["approvals"]["groups"],
        serde_json::json!([{ "__entity": { "type": "Runbook::Group", "id": "incident-commander" } }])
    );
}

/// A run whose policy directory cannot be read does not start: nothing
/// journaled, nothing changed.
#[test]
fn nothing_runs_on_a_policy_it_cannot_read() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let state = live.dir.path().join("state");
    let st = state.to_str().unwrap();
    let bad = root().join("tests/fixtures/bad/policies/schema");
    let out = output(&mut live.command(&[
        "--yes",
        "--state-dir",
        st,
        "--policies",
        bad.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("org.cedar`, line 9"), "{}", out.stderr);
    assert!(
        !state.join("runs").exists() || std::fs::read_dir(state.join("runs")).unwrap().count() == 0
    );
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    // The same from the environment.
    let out = output(
        live.command(&["--yes", "--state-dir", st])
            .env("RUNBOOK_POLICIES", &bad),
    );
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
}

/// On a fleet: a worker given the policies by `RUNBOOK_POLICIES` holds a
/// rollback in a closed freeze (the submitted `--yes` does not decide
/// it); an `sre` approver is refused, the incident commander's decision
/// has a worker continue the run, which rolls back once.
#[test]
fn a_fleet_worker_holds_a_rollback_in_a_freeze_until_the_commander_approves() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let pol = policies(live.dir.path(), &at(-3600), &at(3600));
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start_with(
        &nats,
        logs.path(),
        "w",
        &[("RUNBOOK_POLICIES", pol.as_str())],
    );
    let store = nats.store();
    let url = nats.url();
    let fleet = ["--nats", url.as_str()];
    let mut people = people(live.dir.path());
    people.add("ivan", "[\"incident-commander\"]");
    let incident = format!("guarded-{}", common::now_nanos());
    let submitted = output(
        submit_command(&nats, RB0031, &live.env(), &incident, &["--yes"]).env("USER", STARTER),
    );
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    use runbook_journal::store::Store;
    let waiting = |incident: &str| parked_at(&store, incident);
    wait_until("the run to park", 90, &[&worker], || {
        waiting(&incident).is_some()
    });
    let (run, step) = waiting(&incident).unwrap();
    assert_eq!(step, "rollback");
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    let lines = store.read_run(&run).unwrap();
    let held = policy_lines(&lines, "rollback");
    assert_eq!(held[0]["decision"], "needs-approvals", "{held:?}");
    refused(
        &people.decide(&run, "rollback", "alice", None, &fleet),
        "`alice` is not one of `incident-commander`",
    );
    let ivan = people.decide(&run, "rollback", "ivan", None, &fleet);
    assert_eq!(ivan.code, 0, "{}", ivan.stderr);
    assert!(
        ivan.stdout.contains("a worker continues the run"),
        "{}",
        ivan.stdout
    );
    let over = |incident: &str| {
        incident_state(&store, incident)
            .2
            .is_some_and(|s| s != "awaiting-approval")
    };
    wait_until("the run to go past the rollback", 120, &[&worker], || {
        over(&incident) || waiting(&incident).is_some_and(|(_, s)| s != "rollback")
    });
    let (runs, rollbacks, _) = incident_state(&store, &incident);
    assert_eq!((runs, rollbacks), (1, 1));
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let lines = store.read_run(&run).unwrap();
    let last = policy_lines(&lines, "rollback").pop().unwrap();
    assert_eq!(last["decision"], "allow", "{last:#}");
    assert_eq!(last["context"]["approvals"]["count"], 1);
    // The submitted `--incident-start` (a minute from the submission).
    let start = last["context"]["incident"]["start_unix_seconds"]
        .as_i64()
        .unwrap();
    let now = (runbook_core::time::now_ms() / 1000) as i64;
    assert!((now - 600..now + 600).contains(&start), "{last:#}");
}

/// A trust file that asks for a signed policy directory
/// (`policy-signatures = 1`): the directory signed by a key trusted to
/// sign policy is used (`policies`, `check`, `run`); changed afterwards,
/// a parked run is not resumed on it until it is signed again.
#[test]
fn a_policy_directory_is_used_only_as_signed_when_the_trust_file_asks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let keygen = output(runbook().args(["keygen"]).arg(d.join("security")));
    assert_eq!(keygen.code, 0, "{}", keygen.stderr);
    let public = std::fs::read_to_string(d.join("security.pub")).unwrap();
    let trust = d.join("trust.toml");
    std::fs::write(
        &trust,
        format!(
            "[[key]]\nname = \"security-team\"\npublic-key = \"{}\"\nplugins = [\"*\"]\npolicies = true\n\n[policy]\npolicy-signatures = 1\n",
            public.lines().nth(1).unwrap()
        ),
    )
    .unwrap();
    let trust = trust.to_string_lossy().into_owned();
    let pol = d.join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(
        pol.join("org.cedar"),
        "@id(\"rollbacks-need-a-commander\")\nforbid (principal, action == Runbook::Action::\"ecs:mutate\", resource is Runbook::Service)\nunless { context.approvals.groups.contains(Runbook::Group::\"incident-commander\") };\n",
    )
    .unwrap();
    let pol = pol.to_string_lossy().into_owned();
    let unsigned = output(runbook().args(["policies", "--policies", &pol, "--trust", &trust]));
    assert_eq!(unsigned.code, 2);
    assert!(
        unsigned.stderr.contains("has 0 valid signatures"),
        "{}",
        unsigned.stderr
    );
    let sign = || {
        output(
            runbook()
                .args(["sign", "--policies", &pol, "--key"])
                .arg(d.join("security.key")),
        )
    };
    let signed = sign();
    assert_eq!(signed.code, 0, "{}", signed.stderr);
    assert!(
        signed.stdout.contains("signed policy directory"),
        "{}",
        signed.stdout
    );
    let listed = output(runbook().args(["policies", "--policies", &pol, "--trust", &trust]));
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let check = output(runbook().args(["check", RB0031, "--policies", &pol, "--trust", &trust]));
    assert_eq!(check.code, 0, "{}", check.stderr);

    let state = common::fresh_state_dir();
    let run = output(
        runbook()
            .args([
                "run",
                RB0031,
                "--sim",
                "runbooks/scenarios/bad-deploy.toml",
                "--yes",
                "--json",
                "--policies",
                &pol,
                "--trust",
                &trust,
                "--state-dir",
            ])
            .arg(&state),
    );
    // Parked at the rollback (the scenario's `[expect]` is for a run
    // that goes on: exit 7).
    assert_eq!(run.json()["status"], "awaiting-approval", "{}", run.stderr);
    let run_id = run.json()["run_id"].as_str().unwrap().to_string();
    // Someone edits the policies after they were signed.
    let org = Path::new(&pol).join("org.cedar");
    let text = std::fs::read_to_string(&org).unwrap();
    std::fs::write(&org, format!("{text}\n// loosened later\n")).unwrap();
    let resumed = output(
        runbook()
            .args(["resume", &run_id, "--state-dir"])
            .arg(&state),
    );
    assert_eq!(resumed.code, 2, "{}\n{}", resumed.stdout, resumed.stderr);
    assert!(
        resumed.stderr.contains("does not match policy directory")
            && resumed.stderr.contains("changed after it was signed"),
        "{}",
        resumed.stderr
    );
    let again = sign();
    assert_eq!(again.code, 0, "{}", again.stderr);
    let check = output(runbook().args(["check", RB0031, "--policies", &pol, "--trust", &trust]));
    assert_eq!(check.code, 0, "{}", check.stderr);
}

/// What people do is asked too: who may run a runbook, resume a run of
/// it, and approve a change of one of its steps (`run`, `resume`,
/// `approve`, with the person's groups from the approvers file).
#[test]
fn policies_say_who_may_run_resume_and_approve() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("policies");
    std::fs::create_dir_all(&pol).unwrap();
    std::fs::write(
        pol.join("people.cedar"),
        r#"@id("rollbacks-wait-for-a-person")
forbid (principal, action == Runbook::Action::"ecs:mutate", resource)
unless { context.approvals.count >= 1 };

@id("rollbacks-approved-by-db-only")
forbid (principal, action == Runbook::Action::"approve", resource == Runbook::Runbook::"RB-0031")
when { context.step == "rollback" }
unless { principal in Runbook::Group::"db" };

@id("not-mallory")
forbid (principal == Runbook::Person::"mallory", action in [Runbook::Action::"run", Runbook::Action::"resume"], resource);
"#,
    )
    .unwrap();
    let pol = pol.to_string_lossy().into_owned();
    let people = people(dir.path());
    let state = common::fresh_state_dir();
    let run = |user: &str| {
        output(
            runbook()
                .args([
                    "run",
                    RB0031,
                    "--sim",
                    "runbooks/scenarios/bad-deploy.toml",
                    "--yes",
                    "--json",
                ])
                .args(["--policies", &pol, "--state-dir"])
                .arg(&state)
                .env("USER", user),
        )
    };
    let refused = run("mallory");
    assert_eq!(refused.code, 2, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("policy `not-mallory` (people.cedar, line 11) forbids `mallory` running `RB-0031`; nothing was done"),
        "{}",
        refused.stderr
    );
    assert!(
        !state.join("runs").exists()
            || std::fs::read_dir(state.join("runs"))
                .unwrap()
                .next()
                .is_none()
    );
    let parked = run(STARTER);
    assert_eq!(
        parked.json()["status"],
        "awaiting-approval",
        "{}",
        parked.stderr
    );
    let run_id = parked.json()["run_id"].as_str().unwrap().to_string();
    let flags = ["--state-dir", state.to_str().unwrap()];
    let alice = people.decide(&run_id, "rollback", "alice", None, &flags);
    assert_eq!(alice.code, 2, "{}\n{}", alice.stdout, alice.stderr);
    assert!(
        alice.stderr.contains("policy `rollbacks-approved-by-db-only` (people.cedar, line 6) forbids `alice` deciding on step `rollback`"),
        "{}",
        alice.stderr
    );
    let carol = people.decide(&run_id, "rollback", "carol", None, &flags);
    assert_eq!(carol.code, 0, "{}\n{}", carol.stdout, carol.stderr);
    let by_mallory = output(
        runbook()
            .args(["resume", &run_id])
            .args(flags)
            .env("USER", "mallory"),
    );
    assert_eq!(by_mallory.code, 2, "{}", by_mallory.stderr);
    assert!(
        by_mallory.stderr.contains("forbids `mallory` resuming run"),
        "{}",
        by_mallory.stderr
    );
    let resumed = output(
        runbook()
            .args(["resume", &run_id, "--json"])
            .args(flags)
            .env("USER", STARTER),
    );
    assert_eq!(resumed.json()["status"], "resolved", "{}", resumed.stderr);
    let lines = journal(&state, &run_id);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["event"] == "applied" && l["resource"] == "production/auth-service")
            .count(),
        1
    );
}
