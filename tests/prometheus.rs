//! RB-0031 live with its metrics from a real Prometheus (Debian's
//! `prometheus`, scraping an exporter the test serves every second), moto's
//! ECS and redis-server: `[metrics] source = "prometheus"` with the mapping
//! of `runbooks/environments/prometheus.example.toml`.
//!
//! Each run stops before its change (no approval yet); the auth service
//! recovers while the responder looks; `runbook resume --yes` makes the
//! change and verifies it against what Prometheus now computes.

mod common;

use common::live::*;
use common::prometheus::Prometheus;
use common::{output, path, runbook, step};
use std::time::Instant;

/// What `check-latency` asks Prometheus (the mapping's histogram, p99 over
/// its 60 s period), in seconds.
const P99: &str = r#"histogram_quantile(0.99, sum by (le) (rate(auth_token_validation_duration_seconds_bucket{service="auth-service"}[60s])))"#;

fn dead_redis_url() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

/// Runs RB-0031 until it stops for approval, lets the service recover,
/// and resumes it with approval: both reports and how long each took.
fn run_then_resume(
    prom: &Prometheus,
    live: &Live,
) -> (serde_json::Value, serde_json::Value, std::time::Duration) {
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_string_lossy().into_owned();
    let started = Instant::now();
    let first = output(&mut live.command(&["--state-dir", &state_arg]));
    let first_took = started.elapsed();
    assert_eq!(first.code, 4, "{}\n{}", first.stdout, first.stderr);
    let first = first.json();
    assert_eq!(first["status"], "awaiting-approval", "{first:#}");

    prom.recover();
    prom.wait_until("the recovered p99 under 200 ms", P99, |v| v < 0.2);
    let started = Instant::now();
    let resumed = output(
        runbook()
            .args([
                "resume",
                first["run_id"].as_str().unwrap(),
                "--yes",
                "--json",
                "--state-dir",
                &state_arg,
            ])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE"),
    );
    let took = first_took + started.elapsed();
    assert_eq!(resumed.code, 0, "{}\n{}", resumed.stdout, resumed.stderr);
    (first, resumed.json(), took)
}

fn latency_ms(report: &serde_json::Value) -> f64 {
    step(report, "check-latency")["facts"]["value"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{report:#}"))
}

#[test]
fn session_store_outage_on_prometheus_sets_the_fallback_and_verifies_it() {
    let moto = Moto::start();
    let (cluster, service, _) = ecs_service(&moto);
    let prom = Prometheus::start();
    let slow = prom.wait_until("the slow p99", P99, |v| v > 0.5);
    let live = Live::with_metrics(
        &prom.metrics_section(),
        &dead_redis_url(),
        &moto,
        (&cluster, &service),
        FILE_FLAGS,
    );
    let (first, done, took) = run_then_resume(&prom, &live);
    assert_eq!(
        path(&first),
        ["check-latency", "session-store", "enable-fallback"]
    );
    // Prometheus's p99 of the slow traffic, in ms: between the 1 s and
    // 2.5 s bucket bounds, where the slow 2 % are.
    let p99 = latency_ms(&first);
    assert!(
        (1000.0..=2500.0).contains(&p99),
        "p99 {p99} ms (prometheus said {slow} s)"
    );
    assert_eq!(step(&first, "check-latency")["outcome"], "degraded");

    assert_eq!(done["status"], "resolved", "{done:#}");
    assert_eq!(
        path(&done),
        [
            "check-latency",
            "session-store",
            "enable-fallback",
            "downstream-impact",
            "verify-fallback",
            "announce-resolved"
        ]
    );
    // One query per edge service: only api-gateway rejects tokens.
    let impact = step(&done, "downstream-impact");
    assert_eq!(impact["outcome"], "widespread", "{impact:#}");
    let summary = impact["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("1 of 4 services above baseline 50: api-gateway"),
        "{summary}"
    );
    let checks = step(&done, "verify-fallback")["facts"]["checks"]
        .as_str()
        .unwrap();
    assert!(checks.starts_with("success 99.9% > 99%; p99 "), "{checks}");
    let flags: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(live.dir.path().join("flags.json")).unwrap())
            .unwrap();
    assert_eq!(flags["AUTH_STATELESS_FALLBACK"], "true", "{flags}");
    eprintln!(
        "prometheus, session-store path: {:.2} s of runs (stopped for approval, then resumed), {} scrapes",
        took.as_secs_f64(),
        prom.scrapes()
    );
}

#[test]
fn bad_deploy_on_prometheus_rolls_back_and_verifies_it() {
    let moto = Moto::start();
    let (cluster, service, family) = ecs_service(&moto);
    let session = RedisServer::start();
    let prom = Prometheus::start();
    prom.wait_until("the slow p99", P99, |v| v > 0.5);
    let live = Live::with_metrics(
        &prom.metrics_section(),
        &session.url(),
        &moto,
        (&cluster, &service),
        FILE_FLAGS,
    );
    let (first, done, took) = run_then_resume(&prom, &live);
    assert_eq!(
        path(&first),
        [
            "check-latency",
            "session-store",
            "recent-deploys",
            "rollback"
        ]
    );
    assert!(latency_ms(&first) > 500.0, "{first:#}");
    assert_eq!(done["status"], "resolved", "{done:#}");
    assert_eq!(
        path(&done),
        [
            "check-latency",
            "session-store",
            "recent-deploys",
            "rollback",
            "verify-rollback",
            "announce-resolved"
        ]
    );
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let checks = step(&done, "verify-rollback")["facts"]["checks"]
        .as_str()
        .unwrap();
    assert!(checks.starts_with("success 99.9% > 99%; p99 "), "{checks}");
    eprintln!(
        "prometheus, bad-deploy path: {:.2} s of runs (stopped for approval, then resumed), {} scrapes",
        took.as_secs_f64(),
        prom.scrapes()
    );
}

/// No traffic at all: Prometheus answers NaN for the p99 (a quantile of an
/// empty histogram), which the step sees as no data, never as a number.
#[test]
fn a_quantile_prometheus_cannot_compute_is_no_data() {
    let moto = Moto::start();
    let (cluster, service, _) = ecs_service(&moto);
    let prom = Prometheus::start_silent();
    common::live::wait_for("three scrapes", || prom.scrapes() >= 3);
    let until = Instant::now() + std::time::Duration::from_secs(60);
    while prom.raw(P99).as_deref() != Some("NaN") {
        assert!(
            Instant::now() < until,
            "prometheus never answered NaN: {:?}",
            prom.raw(P99)
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let live = Live::with_metrics(
        &prom.metrics_section(),
        &dead_redis_url(),
        &moto,
        (&cluster, &service),
        FILE_FLAGS,
    );
    let out = live.run(&["--yes"]);
    let report = out.json();
    let latency = step(&report, "check-latency");
    assert_eq!(latency["outcome"], "no-data", "{report:#}\n{}", out.stderr);
    // The signature-failure counter exists and did not move: 0, healthy.
    assert_eq!(
        step(&report, "check-signing")["outcome"],
        "healthy",
        "{report:#}"
    );
    assert_eq!(step(&report, "check-signing")["facts"]["value"], "0");
}
