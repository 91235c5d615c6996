//! The WIT contract is versioned: a component built against
//! `runbook:host@0.1.0` (`plugins/testing/v0-1-step`, wit-bindgen on
//! `wit/v0.1.0/`) runs unchanged on a host whose latest is 0.2.0, with its
//! grants checked and its calls journaled like any other.

mod common;

use common::{root, run, step};

#[test]
fn a_component_built_against_0_1_0_still_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rb = dir.path().join("old.md");
    std::fs::write(
        &rb,
        "---\nrunbook_id: RB-OLD\ntitle: t\nservice: s\nseverity_scope: T\ntags: []\nfirst_action_step: x\nsteps:\n  - id: old\n    plugin: v0-1-step\n    inputs: { key: AUTH_STATELESS_FALLBACK }\n    grants: { feature-flags: { mutate: [AUTH_STATELESS_FALLBACK] } }\n    on: { done: resolved, error: escalated, limit-exceeded: escalated }\n---\n",
    )
    .unwrap();
    let plugins = root().join("plugins");
    let out = run(&[
        "run",
        rb.to_str().unwrap(),
        "--sim",
        "runbooks/scenarios/session-store-outage.toml",
        "--plugins",
        plugins.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    let old = step(&report, "old");
    assert_eq!(old["outcome"], "done", "{old:#}");
    assert_eq!(old["facts"]["previous"], "false");
    assert_eq!(old["facts"]["run"], report["run_id"]);
    assert_eq!(old["logs"][0]["message"], "hello from a 0.1.0 component");
    let set = &old["calls"][0];
    assert_eq!(set["operation"], "set");
    assert_eq!(set["allowed"], true);

    let out = run(&["inspect", "plugins/testing/v0-1-step"]);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("runbook:host/feature-flags@0.1.0") && l.contains("granted")),
        "{}",
        out.stdout
    );
}
