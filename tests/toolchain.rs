//! The build script adds the `wasm32-wasip2` target when the toolchain
//! lacks it (a fresh machine: rustup does not add `rust-toolchain.toml`
//! targets to a toolchain installed before), and says what to install when
//! it cannot. Tried with stand-in `rustc` and `rustup` programs.

use runbook_kit::toolchain::{Target, ensure_target};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The tests here write programs and run them: one at a time, or a fork
/// in one test can hold another's freshly written script open for writing
/// when it is executed (`ETXTBSY`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A fake toolchain: `rustc --print sysroot` prints `sysroot`; `rustup`
/// logs its arguments and, when `adds`, creates the target's directory.
fn fake(dir: &Path, adds: bool) -> (PathBuf, PathBuf, PathBuf) {
    let sysroot = dir.join("sysroot");
    std::fs::create_dir_all(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu")).unwrap();
    let rustc = dir.join("rustc");
    script(&rustc, &format!("echo {}", sysroot.display()));
    let rustup = dir.join("rustup");
    let log = dir.join("rustup.log");
    let add = if adds {
        format!("mkdir -p {}/lib/rustlib/wasm32-wasip2", sysroot.display())
    } else {
        String::new()
    };
    script(&rustup, &format!("echo \"$@\" >> {}\n{add}", log.display()));
    (rustc, rustup, log)
}

#[test]
fn a_missing_target_is_added_with_rustup() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (rustc, rustup, log) = fake(dir.path(), true);
    assert_eq!(ensure_target(&rustc, &rustup), Ok(Target::Added));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "target add wasm32-wasip2\n"
    );
    // Once there, rustup is not asked again.
    assert_eq!(ensure_target(&rustc, &rustup), Ok(Target::Present));
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}

#[test]
fn without_rustup_the_error_says_what_to_install() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (rustc, _, _) = fake(dir.path(), true);
    let err = ensure_target(&rustc, &dir.path().join("no-such-rustup")).unwrap_err();
    assert!(
        err.starts_with("the Rust target `wasm32-wasip2` is not installed"),
        "{err}"
    );
    assert!(err.contains("there is no `rustup` to add it"), "{err}");
    assert!(err.contains("`rustup target add wasm32-wasip2`"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn a_rustup_that_fails_or_adds_nothing_is_reported() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let (rustc, rustup, _) = fake(dir.path(), false);
    let err = ensure_target(&rustc, &rustup).unwrap_err();
    assert!(err.contains("still lacks it"), "{err}");
    let failing = dir.path().join("failing-rustup");
    script(&failing, "echo 'error: no network' >&2; exit 1");
    let err = ensure_target(&rustc, &failing).unwrap_err();
    assert!(
        err.contains("`rustup target add wasm32-wasip2` failed: error: no network"),
        "{err}"
    );
}

/// The real toolchain this test was built with has the target: the build
/// script made sure of it.
#[test]
fn the_toolchain_building_these_tests_has_the_target() {
    let _serial = serial();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    assert_eq!(
        ensure_target(Path::new(&rustc), Path::new("/nonexistent/rustup")),
        Ok(Target::Present)
    );
}
