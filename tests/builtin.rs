//! A self-contained binary: the step plugins RB-0031 uses are built into
//! `runbook`, precompiled, so it runs from any directory with no source
//! tree, no `target/` and no cache; a plugin directory beside the runbook
//! (or `--plugins`) overrides or adds plugins.

mod common;

use common::{RB0031, built_plugins, output, root, run};
use std::path::Path;
use std::process::Command;

/// The binary alone: no repository as the working directory, no component
/// directories, and a cache directory it must never create.
fn bare(cwd: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(cwd)
        .env("RUNBOOK_CACHE_DIR", cache)
        .env("RUNBOOK_STATE_DIR", cache.with_file_name("state"))
        .env_remove("RUNBOOK_COMPONENTS")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("RUST_BACKTRACE");
    cmd
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn rb0031_runs_from_anywhere_with_only_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    // The runbook and scenario copied out of the repository: nothing
    // beside them, no `plugins/` anywhere above.
    let runbook = dir.path().join("rb.md");
    let scenario = dir.path().join("outage.toml");
    std::fs::copy(root().join(RB0031), &runbook).unwrap();
    std::fs::copy(
        root().join("runbooks/scenarios/session-store-outage.toml"),
        &scenario,
    )
    .unwrap();
    let cache = dir.path().join("cache-never-created");
    let out = output(bare(Path::new("/"), &cache).args([
        "run",
        runbook.to_str().unwrap(),
        "--sim",
        scenario.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["status"], "resolved");
    assert_eq!(common::path(&report).len(), 6);
    assert!(!cache.exists(), "built-in plugins need no cache");
}

#[test]
fn plugins_lists_the_builtins_with_the_digests_of_what_was_built() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(bare(dir.path(), &dir.path().join("cache")).arg("plugins"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for step in std::fs::read_dir(root().join("plugins/steps")).unwrap() {
        let name = step.unwrap().file_name().to_string_lossy().into_owned();
        let wasm = built_plugins().join(format!("{}.wasm", name.replace('-', "_")));
        let digest = sha256_file(&wasm);
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("`{name}` not listed:\n{}", out.stdout));
        assert!(line.contains(&digest[..12]), "{line}");
        assert!(line.ends_with("built-in"), "{line}");
    }
}

#[test]
fn builtins_are_pinned_so_locked_runs_accept_them() {
    let out = run(&[
        "run",
        RB0031,
        "--sim",
        "runbooks/scenarios/healthy.toml",
        "--locked",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let out = run(&["inspect", "set-flag"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("built in: pinned by this binary"),
        "{}",
        out.stdout
    );
}

/// `plugins/` beside the runbook overrides a built-in of the same name; the
/// others still come from the binary.
#[test]
fn a_plugin_directory_beside_the_runbook_overrides_a_builtin() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("rb.md");
    std::fs::copy(root().join(RB0031), &runbook).unwrap();
    // A different component under the name `set-flag`.
    let own = dir.path().join("plugins/set-flag");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::copy(
        built_plugins().join("escape_env.wasm"),
        own.join("own.wasm"),
    )
    .unwrap();
    std::fs::write(
        own.join("plugin.toml"),
        "name = \"set-flag\"\nversion = \"9.0.0\"\ncomponent = \"own.wasm\"\n\n[grants]\nfeature-flags = { read = [\"*\"], mutate = [\"*\"] }\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let out = output(bare(dir.path(), &cache).args(["check", "rb.md"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let own_digest = sha256_file(&own.join("own.wasm"));
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("enable-fallback → set-flag"))
        .unwrap();
    assert!(line.contains(&own_digest[..12]), "{}", out.stdout);

    let out = output(bare(dir.path(), &cache).args(["plugins", "rb.md"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("set-flag ")
            && l.contains("9.0.0")
            && l.contains("plugins/set-flag/plugin.toml")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("set-flag ") && l.ends_with("built-in (overridden above)")),
        "{}",
        out.stdout
    );
}

#[test]
fn an_unknown_plugin_names_where_it_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    let runbook = dir.path().join("rb.md");
    let text = std::fs::read_to_string(root().join(RB0031))
        .unwrap()
        .replace("plugin: set-flag", "plugin: set-flags");
    std::fs::write(&runbook, text).unwrap();
    let out = output(bare(dir.path(), &dir.path().join("cache")).args(["check", "rb.md"]));
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "plugin `set-flags` not found; searched the built-in plugins (`deploy-correlation`"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("hint: put it in a directory"),
        "{}",
        out.stderr
    );
}
