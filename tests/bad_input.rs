//! Bad input, as golden files: each malformed runbook, manifest, scenario,
//! environment and trust file under `tests/fixtures/bad/` sits beside the
//! `.err` file holding exactly what the CLI must print (exit status 2,
//! nothing run), with the checkout's absolute path written as `<root>` and
//! the registry's lists of interfaces and sections as `<interfaces>` and
//! `<sections>`.
//!
//! Regenerate after a deliberate wording change with
//! `UPDATE_GOLDEN=1 cargo test --test bad_input`, then review the diff.

mod common;

use common::{RB0031, root, run};
use std::path::Path;

fn cases(kind: &str, ext: &str) -> Vec<String> {
    let dir = root().join("tests/fixtures/bad").join(kind);
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| {
            format!(
                "tests/fixtures/bad/{kind}/{}",
                p.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "too few `{kind}` cases");
    out
}

fn golden(case: &str, args: &[&str]) -> Option<String> {
    let mut out = run(args);
    // Golden files hold paths relative to the checkout, wherever it is,
    // and the registry's lists by name, whatever capabilities there are.
    out.stderr = registry_lists(out.stderr.replace(root().to_str().unwrap(), "<root>"));
    let err_file = root().join(Path::new(case).with_extension("err"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&err_file, &out.stderr).unwrap();
    }
    let expected = std::fs::read_to_string(&err_file)
        .unwrap_or_else(|_| panic!("missing {}", err_file.display()));
    let mut problems = Vec::new();
    if out.code != 2 {
        problems.push(format!("exit status {} instead of 2", out.code));
    }
    if !out.stdout.is_empty() {
        problems.push(format!("printed to stdout: {}", out.stdout));
    }
    if out.stderr != expected {
        problems.push(format!(
            "stderr differs.\n--- expected\n{expected}--- got\n{}",
            out.stderr
        ));
    }
    (!problems.is_empty()).then(|| format!("{case}: {}", problems.join("; ")))
}

/// `text` with the registry's interface names and scenario and
/// environment sections, as messages list them, written `<interfaces>`
/// and `<sections>`: adding a capability changes no golden file.
fn registry_lists(text: String) -> String {
    use runbook_core::interface::Interface;
    let list = |name: fn(Interface) -> &'static str| {
        Interface::ALL
            .iter()
            .map(|i| format!("`{}`", name(*i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    text.replace(&list(Interface::wit_name), "<interfaces>")
        .replace(&list(Interface::section), "<sections>")
}

fn assert_all(failures: Vec<Option<String>>) {
    let failures: Vec<String> = failures.into_iter().flatten().collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn malformed_runbooks() {
    let plugins = root().join("plugins");
    assert_all(
        cases("runbooks", "md")
            .iter()
            .map(|c| golden(c, &["check", c, "--plugins", plugins.to_str().unwrap()]))
            .collect(),
    );
}

#[test]
fn malformed_manifests() {
    assert_all(
        cases("manifests", "toml")
            .iter()
            .map(|c| golden(c, &["inspect", c]))
            .collect(),
    );
}

/// Environment files may hold a secret next to a typo: no error shows
/// their text, and no case's error contains `hunter2`.
#[test]
fn malformed_environments() {
    let cases = cases("environments", "toml");
    for c in &cases {
        let out = run(&["check", RB0031, "--env", c]);
        assert!(
            !out.stderr.contains("hunter2"),
            "{c} printed a secret:\n{}",
            out.stderr
        );
    }
    assert_all(
        cases
            .iter()
            .map(|c| golden(c, &["check", RB0031, "--env", c]))
            .collect(),
    );
}

#[test]
fn malformed_scenarios() {
    assert_all(
        cases("scenarios", "toml")
            .iter()
            .map(|c| golden(c, &["run", RB0031, "--sim", c]))
            .collect(),
    );
}

#[test]
fn malformed_trust_files() {
    assert_all(
        cases("trust", "toml")
            .iter()
            .map(|c| golden(c, &["check", RB0031, "--trust", c]))
            .collect(),
    );
}

/// Triggers files (`runbook serve --triggers FILE --check`): refused at
/// start, before any alarm arrives.
#[test]
fn malformed_triggers_files() {
    assert_all(
        cases("triggers", "toml")
            .iter()
            .map(|c| golden(c, &["serve", "--triggers", c, "--check"]))
            .collect(),
    );
}

/// Policy directories (`runbook check RB-0031 --policies DIR`): each
/// directory under `tests/fixtures/bad/policies/` beside its `.err`.
/// Refused with the file and line, before anything is loaded or run.
#[test]
fn malformed_policy_directories() {
    let dir = root().join("tests/fixtures/bad/policies");
    let mut cases: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| {
            format!(
                "tests/fixtures/bad/policies/{}",
                p.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "too few policy cases");
    assert_all(
        cases
            .iter()
            .map(|c| golden(c, &["check", RB0031, "--policies", c]))
            .collect(),
    );
}

/// Policy directories a trust file asks to be signed
/// (`tests/fixtures/bad/signed-policies/trust.toml`: one signature by a
/// key with `policies = true`): unsigned, signed by a key that may sign
/// plugins only, by a key nobody trusts, altered after it was signed.
/// Nothing runs on them: `run` is refused like `check`.
#[test]
fn policy_directories_not_signed_as_the_trust_file_asks() {
    let dir = "tests/fixtures/bad/signed-policies";
    let trust = format!("{dir}/trust.toml");
    let mut cases: Vec<String> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .map(|p| format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    cases.sort();
    assert_eq!(cases.len(), 4);
    for c in &cases {
        let out = run(&[
            "run",
            RB0031,
            "--sim",
            "runbooks/scenarios/bad-deploy.toml",
            "--yes",
            "--policies",
            c,
            "--trust",
            &trust,
            "--state-dir",
            "target/test-state/never",
        ]);
        assert_eq!(out.code, 2, "{c}: {}\n{}", out.stdout, out.stderr);
        assert!(out.stdout.is_empty(), "{c} ran: {}", out.stdout);
    }
    assert_all(
        cases
            .iter()
            .map(|c| golden(c, &["check", RB0031, "--policies", c, "--trust", &trust]))
            .collect(),
    );
}

/// Approvers files (`runbook check RUNBOOK --approvers FILE`, RB-0031
/// with two approvals from `sre` on its rollback): refused at check, a
/// pasted token never echoed.
#[test]
fn malformed_approvers_files() {
    let ruled = "tests/fixtures/bad/approvers/RB-0031-ruled.md";
    let cases = cases("approvers", "toml");
    for c in &cases {
        let out = run(&["check", ruled, "--approvers", c]);
        assert!(
            !out.stderr.contains("hunter2"),
            "{c} printed a token:\n{}",
            out.stderr
        );
    }
    assert_all(
        cases
            .iter()
            .map(|c| golden(c, &["check", ruled, "--approvers", c]))
            .collect(),
    );
}
