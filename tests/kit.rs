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

/// The SDK builds from the repository's WIT itself (a symlink, not a
/// copy that could drift), and the kit vendors exactly those files.
#[test]
fn the_sdk_embeds_the_repository_wit() {
    let sdk = std::fs::canonicalize(root().join("plugins/sdk/wit")).unwrap();
    assert_eq!(sdk, std::fs::canonicalize(root().join("wit")).unwrap());
    let mut names: Vec<String> = std::fs::read_dir(root().join("wit"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wit"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let scratch = tempfile::tempdir().unwrap();
    let out = common::output(common::runbook().current_dir(scratch.path()).args([
        "new",
        "wit-check",
        "--lang",
        "rust",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let vendored = scratch.path().join("wit-check/vendor/runbook-sdk/wit");
    let mut got: Vec<String> = std::fs::read_dir(&vendored)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, names, "the vendored SDK's WIT");
    for n in &names {
        assert_eq!(
            std::fs::read(vendored.join(n)).unwrap(),
            std::fs::read(root().join("wit").join(n)).unwrap(),
            "vendored {n}"
        );
    }
}

/// The plugins' own unit tests, natively, with the SDK's fake host
/// answering their capability calls (no component, no host): every test
/// each plugin crate declares runs and passes.
#[test]
fn plugins_test_natively_against_the_fake_host() {
    // One stream, so each test binary's result follows its name.
    let out = std::process::Command::new("sh")
        .current_dir(root().join("plugins"))
        .args([
            "-c",
            "exec \"$0\" test --workspace --target-dir \"$1\" 2>&1",
        ])
        .arg(env!("CARGO"))
        .arg(root().join("target/plugins-native"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Each crate's binary and how many passed, in the order they ran.
    let mut passed: std::collections::BTreeMap<String, usize> = Default::default();
    let mut current = None;
    for line in text.lines() {
        if let Some(at) = line.find("/deps/") {
            current = line[at + 6..].split('-').next().map(str::to_string);
        } else if let (Some(c), Some(rest)) = (&current, line.strip_prefix("test result: ok. ")) {
            let n: usize = rest.split(' ').next().unwrap().parse().unwrap();
            *passed.entry(c.clone()).or_default() += n;
        }
    }
    let mut checked = 0;
    for kind in ["steps", "testing"] {
        for e in std::fs::read_dir(root().join("plugins").join(kind)).unwrap() {
            let dir = e.unwrap().path();
            let src = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap_or_default();
            let declared = src.matches("#[test]").count();
            if declared == 0 {
                continue;
            }
            let name = dir.file_name().unwrap().to_string_lossy().replace('-', "_");
            let ran = passed.get(&name).copied().unwrap_or(0);
            assert!(
                ran >= declared,
                "plugin `{name}` declares {declared} tests, {ran} passed:\n{text}"
            );
            checked += declared;
        }
    }
    assert!(checked >= 8, "only {checked} plugin tests found:\n{text}");
}

/// What a new platform team does, in a scratch directory outside the
/// repository: `new`, `build`, `test`; then `check` refuses a route to a
/// label the plugin does not declare. The toolchains come from
/// `scripts/test` (componentize-py on PATH, componentize-js in
/// `RUNBOOK_JS_TOOLS`).
fn journey(lang: &str) -> std::path::PathBuf {
    let scratch = tempfile::tempdir().unwrap().keep();
    let at = |dir: &std::path::Path, args: &[&str]| {
        common::output(common::runbook().current_dir(dir).args(args))
    };
    let out = at(&scratch, &["new", "budget-check", "--lang", lang]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let project = scratch.join("budget-check");
    let out = at(&project, &["build"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("built `plugins/budget-check/budget_check.wasm`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("imports  metrics (all granted)"),
        "{}",
        out.stdout
    );
    eprintln!("{lang}: {}", out.stdout.lines().next().unwrap());
    let out = at(&project, &["test", "runbook.md"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("2 of 2 scenarios took their expected path"),
        "{}",
        out.stdout
    );
    let out = at(
        &project,
        &[
            "step",
            "budget-check",
            "--plugins",
            "plugins",
            "--input",
            "namespace=Example",
            "--input",
            "metric=errors",
            "--input",
            "budget=100",
            "--sim",
            "scenarios/burning.toml",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("errors is 250 a minute; the budget is 100"),
        "{}",
        out.stdout
    );
    // A plugin that cannot even start fails its scenarios, though its
    // `limit-exceeded` goes where `burning` goes: the expectation names
    // the outcome.
    let manifest = project.join("plugins/budget-check/plugin.toml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let starved = regex_free_replace(&good, "memory_mib = ", "memory_mib = 1 #");
    std::fs::write(&manifest, starved).unwrap();
    let out = at(&project, &["test", "runbook.md"]);
    assert_eq!(out.code, 7, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("returned `limit-exceeded`, expected `burning`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("0 of 2 scenarios took their expected path"),
        "{}",
        out.stdout
    );
    std::fs::write(&manifest, good).unwrap();
    let rb = project.join("runbook.md");
    let text = std::fs::read_to_string(&rb).unwrap();
    std::fs::write(&rb, text.replace("burning: escalated", "burnt: escalated")).unwrap();
    let out = at(&project, &["check", "runbook.md"]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stderr
            .contains("routes outcome `burnt`, which plugin `budget-check` never returns"),
        "{}",
        out.stderr
    );
    project
}

#[test]
fn a_rust_plugin_from_new_to_test() {
    let project = journey("rust");
    // Its own unit tests, natively, against the SDK's fake host.
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(project.join("plugins/budget-check"))
        .args(["test", "--quiet"])
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("test result: ok. 2 passed"), "{stdout}");
    let _ = std::fs::remove_dir_all(project.parent().unwrap());
}

#[test]
fn a_python_plugin_from_new_to_test() {
    let project = journey("python");
    // Its own unit tests, natively in CPython, against the fake host in
    // `test_app.py` (the bindings come from `build`).
    let out = std::process::Command::new("python3")
        .current_dir(project.join("plugins/budget-check"))
        .args(["-m", "unittest", "-v"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Ran 3 tests") && stderr.contains("OK"),
        "{stderr}"
    );
    let world =
        std::fs::read_to_string(project.join("plugins/budget-check/.wit/world.wit")).unwrap();
    assert!(
        world.contains("import runbook:host/metrics@0.2.0;"),
        "{world}"
    );
    assert!(!world.contains("redis"), "only what is granted: {world}");
    let _ = std::fs::remove_dir_all(project.parent().unwrap());
}

#[test]
fn a_javascript_plugin_from_new_to_test() {
    let project = journey("js");
    // Its own unit tests, natively in Node, against the fake host.
    let out = std::process::Command::new("node")
        .current_dir(project.join("plugins/budget-check"))
        .args(["--import", "./fake-host.mjs", "--test"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("# pass 3") && stdout.contains("# fail 0"),
        "{stdout}"
    );
    let out = common::output(
        common::runbook()
            .current_dir(&project)
            .args(["inspect", "plugins/budget-check"]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stdout.contains("wasi:http"), "{}", out.stdout);
    let _ = std::fs::remove_dir_all(project.parent().unwrap());
}

/// The repository's own Python and JavaScript steps, built and run by
/// RB-9001 through the real binary.
#[test]
fn the_python_and_javascript_examples_take_their_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("error-budget");
    copy_dir(&root().join("examples/error-budget"), &dir);
    for p in ["check-error-budget", "format-impact"] {
        let plugin = dir.join("plugins").join(p);
        let out = run(&["build", plugin.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        eprintln!("{}", out.stdout.lines().next().unwrap());
    }
    let rb = dir.join("RB-9001-error-budget.md");
    let out = run(&["test", rb.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("2 of 2 scenarios took their expected path"),
        "{}",
        out.stdout
    );
    let out = run(&[
        "run",
        rb.to_str().unwrap(),
        "--sim",
        dir.join("scenarios/burning.toml").to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let report = out.json();
    assert_eq!(common::step(&report, "error-budget")["outcome"], "burning");
    let note = common::step(&report, "impact-note");
    assert!(
        note["facts"]["message"]
            .as_str()
            .unwrap()
            .starts_with("[HIGH] auth-service: error budget burning"),
        "{note:#}"
    );
    // The JavaScript step imports no capability at all, and no network.
    let out = run(&[
        "inspect",
        dir.join("plugins/format-impact").to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.contains("runbook:host/metrics") && !out.stdout.contains("wasi:http"),
        "{}",
        out.stdout
    );
}

/// A component that imports `wasi:http` is refused before it is compiled,
/// with what to change.
#[test]
fn an_http_import_is_refused_with_the_flag_to_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("format-impact");
    copy_dir(
        &root().join("examples/error-budget/plugins/format-impact"),
        &dir,
    );
    // Built with the HTTP features left on.
    let tools = std::env::var("RUNBOOK_JS_TOOLS")
        .expect("RUNBOOK_JS_TOOLS: run the tests with scripts/test");
    let script = "import { componentize } from '@bytecodealliance/componentize-js';\nimport { writeFile } from 'node:fs/promises';\nconst e = process.env;\nconst { component } = await componentize({ sourcePath: e.SRC, witPath: e.WIT, worldName: 'format-impact' });\nawait writeFile(e.OUT, component);";
    let wit = tmp.path().join("wit");
    std::fs::create_dir_all(wit.join("deps/runbook-host")).unwrap();
    for e in std::fs::read_dir(root().join("wit")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "wit") {
            std::fs::copy(
                &p,
                wit.join("deps/runbook-host").join(p.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    std::fs::write(
        wit.join("world.wit"),
        "package plugin:format-impact;\nworld format-impact {\n  import runbook:host/log@0.2.0;\n  use runbook:host/types@0.2.0.{pair, run-context, outcome, error};\n  export run: func(ctx: run-context, inputs: list<pair>) -> result<outcome, error>;\n}\n",
    )
    .unwrap();
    let status = std::process::Command::new("node")
        .current_dir(&tools)
        .args(["--input-type=module", "-e", script])
        .env("SRC", dir.join("step.js"))
        .env("WIT", &wit)
        .env("OUT", dir.join("format_impact.wasm"))
        .status()
        .unwrap();
    assert!(status.success());
    let out = run(&["inspect", dir.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(
        out.stdout.contains("NOT PROVIDED: no network"),
        "{}",
        out.stdout
    );
    // Run (and check) refuse it before compiling, saying what to change.
    let started = std::time::Instant::now();
    let out = run(&[
        "step",
        "format-impact",
        "--plugins",
        tmp.path().to_str().unwrap(),
        "--input",
        "service=auth",
        "--input",
        "headline=x",
        "--sim",
        "runbooks/scenarios/healthy.toml",
    ]);
    assert_eq!(out.code, 2, "{}", out.stdout);
    assert!(out.stderr.contains("imports `wasi:http/"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("unless its `http` and `fetch-event` features are disabled"),
        "{}",
        out.stderr
    );
    eprintln!("refused in {:?}, nothing compiled", started.elapsed());
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap();
        if name == ".wit" || p.extension().is_some_and(|x| x == "wasm") {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(name));
        } else {
            std::fs::copy(&p, to.join(name)).unwrap();
        }
    }
}

/// `plugins/README.md`'s catalogue is what the manifests say.
#[test]
fn the_plugin_catalogue_in_the_readme_is_current() {
    let out = run(&["plugins", "--markdown"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let path = root().join("plugins/README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- catalogue: generated -->\n", "<!-- end catalogue -->");
    let a = readme.find(start).expect("the catalogue markers") + start.len();
    let b = readme.find(end).unwrap();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(
            &path,
            format!("{}{}{}", &readme[..a], out.stdout, &readme[b..]),
        )
        .unwrap();
        return;
    }
    assert!(
        readme[a..b] == out.stdout,
        "plugins/README.md's catalogue is stale: rerun with UPDATE_GOLDEN=1"
    );
}

/// `a` with the first `from` replaced by `to`.
fn regex_free_replace(a: &str, from: &str, to: &str) -> String {
    assert!(a.contains(from), "{a}");
    a.replacen(from, to, 1)
}

#[test]
fn an_expectation_can_name_outcomes_and_an_error_is_never_expected_silently() {
    let (_dir, rb, scenario) =
        expecting(r#"["check-latency:healthy", "announce-resolved:posted"]"#);
    let out = run(&["run", &rb, "--sim", &scenario]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let (_dir, rb, _) = expecting(r#"["check-latency:degraded", "announce-resolved"]"#);
    let out = run(&["test", &rb]);
    assert_eq!(out.code, 7, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("step `check-latency` returned `healthy`, expected `degraded`"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("check-latency → `healthy`"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_scenario_that_does_not_load_fails_runbook_test() {
    let (dir, rb, _) = expecting(r#"["check-latency", "announce-resolved"]"#);
    std::fs::write(
        dir.path().join("scenarios/broken.toml"),
        "description = 1\n",
    )
    .unwrap();
    let out = run(&["test", &rb]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("broken.toml"), "{}", out.stderr);
}
