//! The plugin authoring kit through the real binary: `runbook test` (a
//! runbook against its scenarios' `[expect]`), `runbook step` (one plugin
//! alone), and a scenario expectation that fails a run.

mod common;

use common::{RB0031, root, run};

/// RB-0031 and one scenario whose `[expect]` says `path`.
fn expecting(path: &str) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("rb.md");
    std::fs::copy(root().join(RB0031), &rb).unwrap();
    std::fs::create_dir_all(dir.path().join("scenarios")).unwrap();
    let text = std::fs::read_to_string(root().join("runbooks/scenarios/healthy.toml")).unwrap();
    let from = "path = [\"check-latency\", \"announce-resolved\"]";
    assert!(text.contains(from));
    let scenario = dir.path().join("scenarios/healthy.toml");
    std::fs::write(&scenario, text.replace(from, &format!("path = {path}"))).unwrap();
    let (rb, scenario) = (
        rb.to_str().unwrap().to_string(),
        scenario.to_str().unwrap().to_string(),
    );
    (dir, rb, scenario)
}

#[test]
fn runbook_test_passes_rb0031_in_every_scenario() {
    let out = run(&["test", RB0031]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("5 of 5 scenarios took their expected path"),
        "{}",
        out.stdout
    );
    let json = run(&["test", RB0031, "--json"]).json();
    assert_eq!(json["passed"], 5);
    assert_eq!(json["failed"], 0);
}

#[test]
fn a_scenario_that_expects_another_path_fails_run_and_test() {
    let (_dir, rb, scenario) =
        expecting(r#"["check-latency", "session-store", "announce-resolved"]"#);
    let out = run(&["run", &rb, "--sim", &scenario]);
    assert_eq!(out.code, 7, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("scenario: did not take the expected path:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("step 2 was `announce-resolved`, expected `session-store`"),
        "{}",
        out.stdout
    );
    let json = run(&["run", &rb, "--sim", &scenario, "--json"]);
    assert_eq!(json.code, 7);
    let doc = json.json();
    assert_eq!(doc["expectation"]["met"], false, "{doc}");
    assert_eq!(doc["expectation"]["path"][1], "session-store");
    assert!(
        doc["expectation"]["differences"][0]
            .as_str()
            .unwrap()
            .contains("step 2")
    );
    let out = run(&["test", &rb]);
    assert_eq!(out.code, 7, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("FAIL  "), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("0 of 1 scenarios took their expected path"),
        "{}",
        out.stdout
    );
    // A met expectation is in the JSON too, and the run's own status stands.
    let (_dir, rb, scenario) = expecting(r#"["check-latency", "announce-resolved"]"#);
    let json = run(&["run", &rb, "--sim", &scenario, "--json"]);
    assert_eq!(json.code, 0);
    assert_eq!(json.json()["expectation"]["met"], true);
}

#[test]
fn runbook_test_needs_scenarios_with_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("rb.md");
    std::fs::copy(root().join(RB0031), &rb).unwrap();
    let out = run(&["test", rb.to_str().unwrap()]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("no scenario with an `[expect]` in `"),
        "{}",
        out.stderr
    );
}

#[test]
fn one_step_runs_alone_with_its_inputs() {
    let out = run(&[
        "step",
        "set-flag",
        "--input",
        "key=AUTH_STATELESS_FALLBACK",
        "--input",
        "value=true",
        "--sim",
        "runbooks/scenarios/session-store-outage.toml",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("set `AUTH_STATELESS_FALLBACK` to `true` (was `false`)"),
        "{}",
        out.stdout
    );
    let json = run(&[
        "step",
        "metric-threshold",
        "--input",
        "namespace=AuthService",
        "--input",
        "metric=auth-service.token.validation.duration",
        "--input",
        "dimensions=Service=auth-service",
        "--input",
        "threshold=500",
        "--sim",
        "runbooks/scenarios/session-store-outage.toml",
        "--json",
    ]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    assert_eq!(json.json()["outcome"], "degraded");
    // A missing required input is refused before anything runs.
    let out = run(&[
        "step",
        "metric-threshold",
        "--input",
        "namespace=AuthService",
        "--sim",
        "runbooks/scenarios/healthy.toml",
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("lacks input `metric`, which plugin `metric-threshold` requires"),
        "{}",
        out.stderr
    );
    let out = run(&[
        "step",
        "set-flag",
        "--input",
        "key",
        "--sim",
        "runbooks/scenarios/healthy.toml",
    ]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("`--input key` is not `KEY=VALUE`"),
        "{}",
        out.stderr
    );
}

/// The SDK carries the WIT it is built from, so that it packages on its
/// own; it must be the repository's.
#[test]
fn the_sdk_embeds_the_repository_wit() {
    let mut names = Vec::new();
    for e in std::fs::read_dir(root().join("wit")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wit") {
            let name = p.file_name().unwrap().to_owned();
            let copy = root().join("plugins/sdk/wit").join(&name);
            assert_eq!(
                std::fs::read(&p).unwrap(),
                std::fs::read(&copy).unwrap_or_default(),
                "plugins/sdk/wit/{} differs from wit/; copy it over",
                name.to_string_lossy()
            );
            names.push(name);
        }
    }
    let copies = std::fs::read_dir(root().join("plugins/sdk/wit")).unwrap().count();
    assert_eq!(copies, names.len(), "plugins/sdk/wit has files wit/ lacks");
}

/// The plugins' own unit tests, natively, with the SDK's fake host
/// answering their capability calls (no component, no host).
#[test]
fn plugins_test_natively_against_the_fake_host() {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(root().join("plugins"))
        .args(["test", "--workspace", "--quiet", "--target-dir"])
        .arg(root().join("target/plugins-native"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passed: usize = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(passed >= 6, "only {passed} plugin tests ran:\n{stdout}");
}
