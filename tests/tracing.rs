//! OpenTelemetry traces of runs, received by an OTLP/HTTP receiver on
//! 127.0.0.1 and decoded with the protocol's own types: the span tree of
//! one RB-0031 run (live, on moto's ECS and redis-server) that stops for
//! approval and is resumed; tracing off by default; a collector that is
//! down or never answers changes nothing about a run; bad configuration
//! refused before anything runs.

mod common;

use common::live::*;
use common::otlp::{Collector, Span};
use common::{RB0031, output, path, runbook};
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;

/// The caller's trace the runs join (`TRACEPARENT`).
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// Given to the process as its AWS secret key: it must not be exported.
const CANARY: &str = "canary-secret-5f2d9c1e";

/// None of this process's own `OTEL_*` settings (or `TRACEPARENT`).
fn untraced(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars() {
        if k.starts_with("OTEL_") || k == "TRACEPARENT" {
            cmd.env_remove(k);
        }
    }
    cmd
}

fn traced(cmd: &mut Command, collector: &Collector) {
    untraced(cmd)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("TRACEPARENT", format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .env("AWS_SECRET_ACCESS_KEY", CANARY);
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    let mut out: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent == parent.span_id)
        .collect();
    out.sort_by_key(|s| s.start_ns);
    out
}

/// The step spans under `run`, each with as many call spans as the
/// report's step has calls, each call inside its step.
fn check_steps(spans: &[Span], run: &Span, report: &serde_json::Value) -> Vec<String> {
    // (A resumed run's span is a child of the first run's too.)
    let steps: Vec<&Span> = children(spans, run)
        .into_iter()
        .filter(|s| s.name.starts_with("step "))
        .collect();
    let by_id: BTreeMap<&str, &serde_json::Value> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s))
        .collect();
    for step in &steps {
        let id = step.attr("runbook.step");
        assert_eq!(step.name, format!("step {id}"));
        let reported = by_id[id];
        assert_eq!(step.attr("runbook.plugin"), reported["plugin"]);
        assert_eq!(
            step.attr("runbook.plugin.digest"),
            reported["plugin_digest"]
        );
        assert_eq!(step.attr("runbook.outcome"), reported["outcome"]);
        let calls = children(spans, step);
        assert_eq!(
            calls.len(),
            reported["calls"].as_array().unwrap().len(),
            "step `{id}`: one span per call"
        );
        for (call, rec) in calls.iter().zip(reported["calls"].as_array().unwrap()) {
            assert_eq!(
                call.name,
                format!(
                    "{}.{}",
                    rec["interface"].as_str().unwrap(),
                    rec["operation"].as_str().unwrap()
                )
            );
            assert_eq!(call.attr("runbook.resource"), rec["resource"]);
            assert_eq!(call.attr("runbook.access"), rec["access"]);
            assert!(
                call.start_ns >= step.start_ns && call.end_ns <= step.end_ns,
                "a call inside its step: {call:?} {step:?}"
            );
        }
        assert!(step.start_ns >= run.start_ns && step.end_ns <= run.end_ns);
    }
    steps
        .iter()
        .map(|s| s.attr("runbook.step").to_string())
        .collect()
}

#[test]
fn a_run_and_its_resume_are_one_trace_of_run_step_and_call_spans() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let collector = Collector::start();
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap().to_string();
    // No approval: the run stops before its rollback.
    let mut cmd = live.command(&["--state-dir", &state_arg]);
    traced(&mut cmd, &collector);
    let first = output(&mut cmd);
    assert_eq!(first.code, 4, "{}\n{}", first.stdout, first.stderr);
    let first = first.json();
    assert_eq!(first["trace_id"], TRACE, "the report names the trace");
    let run_id = first["run_id"].as_str().unwrap().to_string();
    // Resumed with approval, in a process of its own: the same trace.
    let mut cmd = runbook();
    cmd.args([
        "resume",
        &run_id,
        "--yes",
        "--json",
        "--state-dir",
        &state_arg,
    ])
    .env("AWS_ACCESS_KEY_ID", "test")
    .env("AWS_EC2_METADATA_DISABLED", "true")
    .env_remove("AWS_PROFILE");
    traced(&mut cmd, &collector);
    // A different caller now: the run goes on in the trace it began in.
    cmd.env(
        "TRACEPARENT",
        "00-11111111111111111111111111111111-2222222222222222-01",
    );
    let resumed = output(&mut cmd);
    let resumed = resumed.json();
    // The recorded metrics do not recover: verification may escalate.
    assert!(
        matches!(resumed["status"].as_str(), Some("resolved" | "escalated")),
        "{resumed:#}"
    );
    assert_eq!(resumed["trace_id"], TRACE);
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );

    // Each process sent its spans before it exited.
    let spans = collector.spans();
    assert!(spans.iter().all(|s| s.trace_id == TRACE), "{spans:#?}");
    assert!(spans.iter().all(|s| s.service == "runbook"));
    let runs: Vec<&Span> = spans.iter().filter(|s| s.name == "run RB-0031").collect();
    assert_eq!(runs.len(), 2, "{spans:#?}");
    let (run1, run2) = if runs[0].parent == CALLER_SPAN {
        (runs[0], runs[1])
    } else {
        (runs[1], runs[0])
    };
    assert_eq!(run1.parent, CALLER_SPAN, "the first run joins its caller");
    assert_eq!(
        run2.parent, run1.span_id,
        "the resumed run, under the first"
    );
    assert_eq!(run2.attr("runbook.resumed"), "true");
    for run in [run1, run2] {
        assert_eq!(run.attr("runbook.run_id"), run_id);
        assert_eq!(run.attr("runbook.id"), "RB-0031");
    }
    assert_eq!(run1.attr("runbook.status"), "awaiting-approval");
    assert_eq!(run2.attr("runbook.status"), resumed["status"]);
    assert_eq!(run2.attr("runbook.mutations"), "1");

    let before = check_steps(&spans, run1, &first);
    assert_eq!(before, path(&first), "every step of the first run");
    let after = check_steps(&spans, run2, &resumed);
    // The resumed run replays the steps that had ended (no spans again)
    // and runs the rest.
    let all = path(&resumed);
    assert!(
        !after.is_empty() && after.len() < all.len() && all.ends_with(&after),
        "{after:?} of {all:?}"
    );
    assert!(after.contains(&"rollback".to_string()), "{after:?}");
    let rollback = children(&spans, run2)
        .into_iter()
        .find(|s| s.attr("runbook.step") == "rollback")
        .unwrap();
    let change: Vec<&Span> = children(&spans, rollback)
        .into_iter()
        .filter(|c| c.attr("runbook.access") == "mutate")
        .collect();
    assert_eq!(change.len(), 1, "{change:#?}");
    assert_eq!(change[0].attr("runbook.capability"), "ecs");
    assert_eq!(change[0].attr("runbook.outcome"), "ok");
    assert_eq!(change[0].attr("runbook.approval"), "approved");
    // The resource as the grant names it (the environment maps it to
    // moto's service).
    assert_eq!(
        change[0].attr("runbook.resource"),
        "production/auth-service"
    );
    // The stopped rollback of the first run is there too, not done.
    let stopped = children(&spans, run1)
        .into_iter()
        .find(|s| s.attr("runbook.step") == "rollback")
        .expect("the first run's rollback step");
    assert!(
        children(&spans, stopped)
            .iter()
            .any(|c| c.attr("runbook.approval") == "awaiting-approval"),
        "{spans:#?}"
    );
    // Reads and the change, never arguments, results or secrets.
    let sent: Vec<u8> = collector.bodies().concat();
    assert!(
        !sent.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
        "the AWS secret was exported"
    );
    assert!(spans.iter().all(|s| !s.attributes.contains_key("args")));

    // The journal's run-start and the Markdown postmortem name the trace.
    let shown = output(runbook().args(["show", &run_id, "--json", "--state-dir", &state_arg]));
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert_eq!(shown.json()["trace_id"], TRACE, "{}", shown.stdout);
    let journal = std::fs::read_to_string(
        walk(state.path())
            .into_iter()
            .find(|p| p.ends_with(format!("{run_id}.jsonl")))
            .expect("the run's journal"),
    )
    .unwrap();
    let start: serde_json::Value = serde_json::from_str(journal.lines().next().unwrap()).unwrap();
    assert_eq!(start["event"], "run-start");
    assert_eq!(start["trace"]["trace_id"], TRACE);
    assert_eq!(start["trace"]["span_id"], run1.span_id.as_str());
    let markdown =
        output(runbook().args(["show", &run_id, "--markdown", "--state-dir", &state_arg]));
    assert!(
        markdown.stdout.contains(&format!("| Trace | `{TRACE}` |")),
        "{}",
        markdown.stdout
    );
    // The tree, for the record.
    fn tree(spans: &[Span], span: &Span, depth: usize, out: &mut String) {
        let ms = (span.end_ns.saturating_sub(span.start_ns)) as f64 / 1e6;
        let what = ["runbook.outcome", "runbook.status", "runbook.resource"]
            .iter()
            .filter_map(|k| span.attributes.get(*k).map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ");
        out.push_str(&format!(
            "{}{} ({ms:.2} ms) {what}\n",
            "  ".repeat(depth),
            span.name
        ));
        for c in children(spans, span) {
            tree(spans, c, depth + 1, out);
        }
    }
    let mut shown = String::new();
    tree(&spans, run1, 0, &mut shown);
    eprintln!(
        "span tree of one RB-0031 run ({} spans; run 1: {} steps, run 2 resumed: {} steps):\n{shown}",
        spans.len(),
        before.len(),
        after.len()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

const SIM: &str = "runbooks/scenarios/session-store-outage.toml";

fn sim(state: &std::path::Path) -> Command {
    let mut cmd = runbook();
    cmd.args(["run", RB0031, "--sim", SIM, "--json", "--state-dir"])
        .arg(state);
    untraced(&mut cmd);
    cmd
}

#[test]
fn tracing_is_off_by_default_and_a_collector_that_is_down_changes_nothing() {
    let state = tempfile::tempdir().unwrap();
    // Off: no trace id anywhere.
    let off = output(&mut sim(state.path()));
    assert_eq!(off.code, 0, "{}", off.stderr);
    assert!(off.json().get("trace_id").is_none(), "{}", off.stdout);
    let journals: String = walk(state.path())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(journals.contains("run-start") && !journals.contains("trace_id"));

    // Nobody listening, and a listener that never answers: the runs end
    // as they would, each with its trace id.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for port in [closed, silent_port] {
        // An export that would wait a minute: the process does not (it
        // waits at most `telemetry::SHUTDOWN`, 5 s, for its last spans).
        // Not a speed check: a bound that says it does not hang.
        let started = std::time::Instant::now();
        let run = output(
            sim(state.path())
                .env(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{port}"),
                )
                .env("OTEL_EXPORTER_OTLP_TIMEOUT", "60000"),
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(40),
            "port {port}: the run waited on its collector: {:?}",
            started.elapsed()
        );
        assert_eq!(run.code, 0, "port {port}: {}", run.stderr);
        let report = run.json();
        assert_eq!(report["status"], "resolved");
        let id = report["trace_id"].as_str().unwrap();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    drop(silent);

    // A `TRACEPARENT` that cannot be read: said, and the run goes on in a
    // trace of its own.
    let collector = Collector::start();
    let run = output(
        sim(state.path())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
            .env("TRACEPARENT", "00-not-a-trace-01"),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("note: `TRACEPARENT` is ignored: not a W3C `traceparent`"),
        "{}",
        run.stderr
    );
    let id = run.json()["trace_id"].as_str().unwrap().to_string();
    let spans = collector.spans();
    let root = spans.iter().find(|s| s.name == "run RB-0031").unwrap();
    assert_eq!(root.trace_id, id);
    assert_eq!(root.parent, "", "a root span");
}

#[test]
fn tracing_configuration_it_cannot_honour_is_refused_before_anything_runs() {
    for (var, value, says) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "`OTEL_EXPORTER_OTLP_PROTOCOL` is `grpc`: runbook sends traces as OTLP over HTTP/protobuf only",
        ),
        (
            "OTEL_TRACES_EXPORTER",
            "zipkin",
            "`OTEL_TRACES_EXPORTER` is `zipkin`: runbook exports traces over OTLP only",
        ),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "not a url\u{7f}",
            "tracing: `OTEL_EXPORTER_OTLP_ENDPOINT` cannot be used",
        ),
    ] {
        let state = tempfile::tempdir().unwrap();
        let mut cmd = sim(state.path());
        cmd.env(var, value);
        if var != "OTEL_EXPORTER_OTLP_ENDPOINT" {
            cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9");
        }
        let run = output(&mut cmd);
        assert_ne!(run.code, 0, "{var}={value}");
        assert!(run.stderr.contains(says), "{var}={value}: {}", run.stderr);
        assert!(run.stderr.contains("hint:"), "{}", run.stderr);
        assert!(walk(state.path()).is_empty(), "nothing ran: {var}={value}");
    }
    // Off, whatever else is set.
    let state = tempfile::tempdir().unwrap();
    let run = output(
        sim(state.path())
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env("OTEL_SDK_DISABLED", "true"),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.json().get("trace_id").is_none());
}
