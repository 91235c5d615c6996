//! The guest target: step plugins build for `wasm32-wasip2`, which a
//! toolchain installed before this checkout existed does not have
//! (`rust-toolchain.toml` only adds targets when rustup installs the
//! toolchain itself). The build script calls [`ensure_target`] first.
//!
//! Included by `build.rs`, `src/kit.rs` and `tests/toolchain.rs` with
//! `#[path]`: it may use nothing but `std`.

use std::path::Path;
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";

/// An outer cargo's flags and wrappers (clippy, coverage, a test run) are
/// for the host, not for the guests: removed from a guest build's
/// environment.
pub const OUTER_CARGO_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "CARGO_PRIMARY_PACKAGE",
];

/// What [`ensure_target`] found or did.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// The toolchain already had the target.
    Present,
    /// It did not; `rustup target add` added it.
    Added,
}

/// Makes sure the toolchain of `rustc` can build for [`TARGET`], adding the
/// target with `rustup` when it is missing. The error is one paragraph
/// saying what to install.
pub fn ensure_target(rustc: &Path, rustup: &Path) -> Result<Target, String> {
    let sysroot = sysroot(rustc)?;
    let has_target = || {
        Path::new(&sysroot)
            .join("lib/rustlib")
            .join(TARGET)
            .is_dir()
    };
    if has_target() {
        return Ok(Target::Present);
    }
    let added = Command::new(rustup)
        .args(["target", "add", TARGET])
        .output();
    match added {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "the Rust target `{TARGET}` is not installed (toolchain `{sysroot}`) and there is no `rustup` to add it: install the `{TARGET}` standard library for this toolchain (with rustup: `rustup target add {TARGET}`), then build again"
        )),
        Err(e) => Err(format!(
            "the Rust target `{TARGET}` is not installed and running `{} target add {TARGET}` failed: {e}",
            rustup.display()
        )),
        Ok(out) if !out.status.success() => Err(format!(
            "the Rust target `{TARGET}` is not installed and `rustup target add {TARGET}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) if has_target() => Ok(Target::Added),
        Ok(_) => Err(format!(
            "`rustup target add {TARGET}` succeeded, but the toolchain at `{sysroot}` still lacks it: is `{}` a rustup toolchain? Install the target for it, then build again",
            rustc.display()
        )),
    }
}

fn sysroot(rustc: &Path) -> Result<String, String> {
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running `{} --print sysroot`: {e}", rustc.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`{} --print sysroot` failed: {}",
            rustc.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
