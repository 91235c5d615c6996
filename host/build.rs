//! Builds every step plugin (`plugins/`, its own workspace) for
//! `wasm32-wasip2`, so `cargo build`/`cargo test` always run against
//! components made from the sources in this tree. The binary learns where
//! they are through `RUNBOOK_BUILT_PLUGINS`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let plugins = root.join("plugins");
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    // A target directory of its own: the outer build holds a lock on ours.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage) are for the
    // host, not for the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .expect("running cargo to build the step plugins");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        panic!(
            "building the step plugins failed (is the `wasm32-wasip2` target installed? `rustup target add wasm32-wasip2`)"
        );
    }
    let artifacts = target_dir.join("wasm32-wasip2").join("release");
    println!(
        "cargo:rustc-env=RUNBOOK_BUILT_PLUGINS={}",
        artifacts.display()
    );
}
