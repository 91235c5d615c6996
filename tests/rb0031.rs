//! RB-0031 end to end: the real binary, the real compiled plugins, each
//! shipped scenario against the simulated backends.

mod common;

use common::{RB0031, audit_lines, path, root, run, step};
use serde_json::Value;

fn scenario_expectation(name: &str) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(
        root()
            .join("runbooks/scenarios")
            .join(format!("{name}.toml")),
    )
    .unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let expect = doc["expect"].as_table().unwrap();
    let path = expect["path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (expect["status"].as_str().unwrap().to_string(), path)
}

fn run_scenario(name: &str) -> (i32, Value) {
    let sim = format!("runbooks/scenarios/{name}.toml");
    let out = run(&["run", RB0031, "--sim", &sim, "--json"]);
    assert!(out.stderr.is_empty(), "unexpected stderr: {}", out.stderr);
    let report = out.json();
    let (status, expected_path) = scenario_expectation(name);
    assert_eq!(report["status"], status.as_str(), "{name}: {report:#}");
    assert_eq!(path(&report), expected_path, "{name}");
    let code = match status.as_str() {
        "resolved" => 0,
        "escalated" => 1,
        other => panic!("unexpected status {other}"),
    };
    assert_eq!(out.code, code, "{name}: exit status");
    (out.code, report)
}

fn mutations(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["calls"].as_array().unwrap().iter())
        .filter(|c| c["access"] == "mutate")
        .map(|c| {
            format!(
                "{}.{} {}",
                c["interface"].as_str().unwrap(),
                c["operation"].as_str().unwrap(),
                c["resource"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn every_shipped_scenario_declares_and_takes_its_path() {
    let mut names: Vec<String> = std::fs::read_dir(root().join("runbooks/scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for required in [
        "bad-deploy",
        "healthy",
        "session-store-outage",
        "unrecoverable",
    ] {
        assert!(
            names.iter().any(|n| n == required),
            "scenario `{required}` is missing"
        );
    }
    for name in &names {
        run_scenario(name);
    }
}

#[test]
fn rb0031_healthy_takes_no_action() {
    let (_, report) = run_scenario("healthy");
    assert_eq!(step(&report, "check-latency")["outcome"], "healthy");
    // Nothing changed; the channel hears how it ended.
    assert_eq!(mutations(&report), ["notify.message channel/incidents"]);
    assert_eq!(step(&report, "announce-resolved")["outcome"], "posted");
    assert_eq!(report["mutations"]["used"], 0);
}

#[test]
fn rb0031_session_store_outage_enables_fallback_without_rollback() {
    let (_, report) = run_scenario("session-store-outage");
    assert_eq!(step(&report, "session-store")["outcome"], "unreachable");
    let fallback = step(&report, "enable-fallback");
    assert_eq!(fallback["facts"]["previous"], "false");
    assert_eq!(fallback["facts"]["value"], "true");
    assert_eq!(
        mutations(&report),
        [
            "feature-flags.set AUTH_STATELESS_FALLBACK",
            "notify.message channel/incidents"
        ]
    );
    // The flag's effect is what verification sees.
    assert!(
        step(&report, "verify-fallback")["summary"]
            .as_str()
            .unwrap()
            .contains("p99 164ms")
    );
}

#[test]
fn rb0031_bad_deploy_rolls_back_and_verifies() {
    let (_, report) = run_scenario("bad-deploy");
    assert_eq!(
        step(&report, "recent-deploys")["facts"]["task_definition"],
        "auth-service:42"
    );
    let rollback = step(&report, "rollback");
    assert_eq!(rollback["outcome"], "rolled-back");
    assert_eq!(rollback["facts"]["from"], "auth-service:42");
    assert_eq!(rollback["facts"]["to"], "auth-service:41");
    assert_eq!(
        mutations(&report),
        [
            "ecs.rollback production/auth-service",
            "notify.message channel/incidents"
        ]
    );
    assert_eq!(step(&report, "verify-rollback")["outcome"], "recovered");
    // Simulated time moved through the 140 s rollout without waiting for it.
    assert!(report["elapsed_ms"].as_u64().unwrap() >= 140_000);
    assert!(report["wall_ms"].as_u64().unwrap() < 140_000);
}

#[test]
fn rb0031_unrecoverable_escalates_with_who_to_page() {
    let (code, report) = run_scenario("unrecoverable");
    assert_eq!(code, 1);
    assert_eq!(step(&report, "verify-rollback")["outcome"], "not-recovered");
    assert_eq!(report["escalation"]["page"], "auth-team on-call");
}

#[test]
fn timeline_shows_steps_calls_and_status() {
    let out = run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/session-store-outage.toml",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for needle in [
        "RB-0031 Auth Service Degradation",
        "enable-fallback",
        "ok     feature-flags.set AUTH_STATELESS_FALLBACK",
        "failed redis.ping session-store: unavailable:",
        "status: resolved after 6 steps",
        "scenario: took the expected path",
    ] {
        assert!(
            out.stdout.contains(needle),
            "timeline lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    let escalated = run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/unrecoverable.toml",
    ]);
    assert_eq!(escalated.code, 1);
    assert!(
        escalated.stdout.contains("status: escalated"),
        "{}",
        escalated.stdout
    );
    assert!(
        escalated.stdout.contains("page: auth-team on-call"),
        "{}",
        escalated.stdout
    );
}

#[test]
fn audit_log_has_one_line_per_call_as_it_happens() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let log_arg = log.to_str().unwrap();
    let out = run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/bad-deploy.toml",
        "--json",
        "--audit-log",
        log_arg,
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report = out.json();
    let lines = audit_lines(&log);
    let calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l.get("event").is_none() && l.get("interface").is_some())
        .collect();
    // The rollback's intent was written before it was applied.
    let intent = lines.iter().position(|l| l["event"] == "intent").unwrap();
    let applied = lines
        .iter()
        .position(|l| l["operation"] == "rollback" && l.get("event").is_none())
        .unwrap();
    assert!(intent < applied);
    let reported: usize = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["calls"].as_array().unwrap().len())
        .sum();
    assert_eq!(calls.len(), reported);
    let rollback = calls
        .iter()
        .find(|c| c["operation"] == "rollback")
        .expect("rollback audited");
    assert_eq!(rollback["run_id"], report["run_id"]);
    assert_eq!(rollback["step"], "rollback");
    assert_eq!(rollback["plugin"], "ecs-rollback");
    assert_eq!(
        rollback["plugin_digest"],
        step(&report, "rollback")["plugin_digest"]
    );
    assert_eq!(rollback["plugin_digest"].as_str().unwrap().len(), 64);
    assert_eq!(rollback["args"]["service"], "auth-service");
    assert_eq!(rollback["allowed"], true);
    assert_eq!(rollback["result"]["to"], "auth-service:41");
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "run-end" && l["status"] == "resolved")
    );
    // Appending: a second run adds to the same file.
    run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/healthy.toml",
        "--audit-log",
        log_arg,
    ]);
    assert!(audit_lines(&log).len() > lines.len());
}

#[test]
fn check_validates_without_running() {
    let out = run(&["check", RB0031]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("RB-0031 Auth Service Degradation: 11 steps, all valid"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "feature-flags: read `AUTH_STATELESS_FALLBACK`; mutate `AUTH_STATELESS_FALLBACK`"
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn a_runbook_without_steps_is_reported_not_executable() {
    let seed = "tests/fixtures/runbooks/not-executable.md";
    let out = run(&["check", seed]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("not executable"), "{}", out.stdout);
    let out = run(&["run", seed, "--sim", "runbooks/scenarios/healthy.toml"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("is not executable: it has no `steps`"),
        "{}",
        out.stderr
    );
}

#[test]
fn inspect_shows_imports_grants_limits_and_digest() {
    let out = run(&["inspect", "plugins/steps/set-flag"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for needle in [
        "plugin     set-flag 0.1.0",
        "runbook:host/feature-flags@0.2.0",
        "granted",
        "feature-flags: read `*`; mutate `*`",
        "limits     memory 16 MiB, deadline 10000 ms",
        "not pinned",
    ] {
        assert!(
            out.stdout.contains(needle),
            "inspect lacks {needle:?}:\n{}",
            out.stdout
        );
    }
    let digest = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("sha256     "))
        .unwrap();
    let digest = digest.split_whitespace().next().unwrap();
    let bytes = std::fs::read(
        std::path::Path::new(runbook_engine::builtin::BUILT_PLUGINS).join("set_flag.wasm"),
    )
    .unwrap();
    // Computed independently of the host's own digest code.
    use sha2::Digest;
    let expected: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, expected);
    // A plugin that imports an interface its manifest does not grant is flagged.
    let out = run(&["inspect", "plugins/testing/ungranted-import"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stdout.contains("runbook:host/ecs@0.2.0"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("NOT GRANTED: refused at load"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("metrics: read `*`"), "{}", out.stdout);
    assert!(out.stdout.contains("NOT USED"), "{}", out.stdout);
}

/// Plugins from a directory (here the source tree's manifests, with the
/// components the build made) are compiled once and cached.
#[test]
fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let args = [
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/healthy.toml",
        "--plugins",
        "plugins",
        "--cache-dir",
        cache_arg,
    ];
    assert_eq!(run(&args).code, 0);
    let files = cwasm_files(cache.path());
    // One per distinct plugin RB-0031 uses.
    assert_eq!(files.len(), 8, "{files:?}");
    let before: Vec<_> = files.iter().map(|f| identity(f)).collect();
    assert_eq!(run(&args).code, 0);
    let after: Vec<_> = files.iter().map(|f| identity(f)).collect();
    assert_eq!(before, after, "a warm run must not recompile");
    // A damaged cache entry is recompiled, not trusted.
    std::fs::write(&files[0], b"garbage").unwrap();
    assert_eq!(run(&args).code, 0);
    assert_ne!(std::fs::read(&files[0]).unwrap(), b"garbage");
}

/// A rewrite replaces the file (write to a temporary, rename), so a new
/// inode or mtime means the component was compiled again.
fn identity(f: &std::path::Path) -> (u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(f).unwrap();
    (m.ino(), m.modified().unwrap())
}

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(cwasm_files(&p));
        } else if p.extension().is_some_and(|x| x == "cwasm") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `run --markdown` writes the postmortem timeline; `show --markdown`
/// rebuilds the same text from the journal. Compared with golden files
/// (`tests/golden/postmortem/`; `UPDATE_GOLDEN=1` rewrites them), with the
/// run id and the state directory, which differ on every run, replaced.
#[test]
fn postmortem_timelines_match_their_golden_files() {
    let golden = root().join("tests/golden/postmortem");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for name in [
        "healthy",
        "session-store-outage",
        "bad-deploy",
        "unrecoverable",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let file = dir.path().join("timeline.md");
        let sim = format!("runbooks/scenarios/{name}.toml");
        let out = run(&[
            "run",
            RB0031,
            "--sim",
            &sim,
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
            "--markdown",
            file.to_str().unwrap(),
        ]);
        assert!(out.stderr.is_empty(), "{name}: {}", out.stderr);
        let run_id = out.json()["run_id"].as_str().unwrap().to_string();
        let written = std::fs::read_to_string(&file).unwrap();
        let shown = run(&[
            "show",
            &run_id,
            "--markdown",
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        assert_eq!(shown.code, 0, "{}", shown.stderr);
        assert_eq!(shown.stdout, written, "{name}: `show --markdown` differs");
        let normal = written
            .replace(&run_id, "RUN_ID")
            .replace(state.to_str().unwrap(), "STATE");
        let expected_file = golden.join(format!("{name}.md"));
        if update {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&expected_file, &normal).unwrap();
        }
        let expected = std::fs::read_to_string(&expected_file).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (UPDATE_GOLDEN=1 writes it)",
                expected_file.display()
            )
        });
        assert_eq!(
            normal,
            expected,
            "{name}: differs from {}",
            expected_file.display()
        );
    }
}
