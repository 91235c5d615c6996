//! Builds every step plugin (`plugins/`, its own workspace) for
//! `wasm32-wasip2`, then precompiles the built-in ones (`plugins/steps/*`)
//! for this host's engine and embeds them in the binary: a `runbook`
//! binary carries its step library, compiled, and needs no source tree,
//! `target/` or cache to run RB-0031.
//!
//! The testing plugins (`plugins/testing/*`) are built but not embedded;
//! the tests find them through `RUNBOOK_BUILT_PLUGINS`, which only the
//! crate's own tests and benches see.

#[path = "build/toolchain.rs"]
mod toolchain;

#[path = "src/engine_config.rs"]
mod engine_config;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(e) = build() {
        // One clear line instead of a panic's backtrace.
        println!("cargo::error={e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("the host crate has no parent directory")?
        .to_path_buf();
    let plugins = root.join("plugins");
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed=src/engine_config.rs");
    println!("cargo:rerun-if-changed=build/toolchain.rs");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");

    // `cargo fuzz` (nightly, `--cfg fuzzing`) exercises the parsers only:
    // no step library, no guest toolchain needed.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let generated = PathBuf::from(env("OUT_DIR")?).join("builtins.rs");
        println!("cargo:rustc-env=RUNBOOK_BUILT_PLUGINS=");
        return std::fs::write(&generated, "pub static BUILTINS: &[Builtin] = &[];\n")
            .map_err(|e| format!("writing `{}`: {e}", generated.display()));
    }

    let rustc = PathBuf::from(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    if toolchain::ensure_target(&rustc, Path::new("rustup"))? == toolchain::Target::Added {
        println!(
            "cargo:warning=added the Rust target `{}` with rustup (step plugins are built for it)",
            toolchain::TARGET
        );
    }

    // A target directory of its own: the outer build holds a lock on ours.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("plugins");
    build_plugins(&plugins, &target_dir)?;
    let artifacts = target_dir.join(toolchain::TARGET).join("release");
    println!(
        "cargo:rustc-env=RUNBOOK_BUILT_PLUGINS={}",
        artifacts.display()
    );
    embed_builtins(&plugins.join("steps"), &artifacts)
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("cargo did not set `{name}`"))
}

fn build_plugins(plugins: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(plugins)
        .args([
            "build",
            "--release",
            "--quiet",
            "--target",
            toolchain::TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
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
        .map_err(|e| format!("running cargo to build the step plugins: {e}"))?;
    if !out.status.success() {
        // The compiler's messages, then the one-line error.
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return Err(format!(
            "building the step plugins in `{}` failed; the compiler's messages are above",
            plugins.display()
        ));
    }
    Ok(())
}

/// Precompiles each built-in plugin and writes `builtins.rs`, which embeds
/// its manifest, its component and the compiled code.
fn embed_builtins(steps: &Path, artifacts: &Path) -> Result<(), String> {
    let out_dir = PathBuf::from(env("OUT_DIR")?).join("builtins");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating `{}`: {e}", out_dir.display()))?;
    let engine = wasmtime::Engine::new(&engine_config::config())
        .map_err(|e| format!("configuring wasmtime to precompile the built-in plugins: {e}"))?;
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(steps)
        .map_err(|e| format!("reading `{}`: {e}", steps.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("plugin.toml").is_file())
        .collect();
    dirs.sort();
    let mut code = String::from(
        "// Generated by host/build.rs: the built-in step plugins.\npub static BUILTINS: &[Builtin] = &[\n",
    );
    for dir in dirs {
        let manifest_path = dir.join("plugin.toml");
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| format!("reading `{}`: {e}", manifest_path.display()))?;
        let manifest: toml::Table = toml::from_str(&text)
            .map_err(|e| format!("parsing `{}`: {e}", manifest_path.display()))?;
        let field = |name: &str| {
            manifest
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| format!("`{}` has no `{name}`", manifest_path.display()))
        };
        let (name, component) = (field("name")?, field("component")?);
        let wasm_path = artifacts.join(&component);
        let wasm = std::fs::read(&wasm_path)
            .map_err(|e| format!("reading the built component `{}`: {e}", wasm_path.display()))?;
        let cwasm = engine
            .precompile_component(&wasm)
            .map_err(|e| format!("precompiling plugin `{name}`: {e}"))?;
        // Its imports, recorded so the host can check a plan without
        // loading the component until a step needs it.
        // SAFETY: `cwasm` was just produced by this engine.
        let compiled = unsafe { wasmtime::component::Component::deserialize(&engine, &cwasm) }
            .map_err(|e| format!("loading the precompiled plugin `{name}`: {e}"))?;
        let imports: Vec<String> = compiled
            .component_type()
            .imports(&engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let digest = sha256_hex(&wasm);
        let wasm_out = out_dir.join(format!("{name}.wasm"));
        let cwasm_out = out_dir.join(format!("{name}.cwasm"));
        for (path, bytes) in [(&wasm_out, &wasm), (&cwasm_out, &cwasm)] {
            std::fs::write(path, bytes)
                .map_err(|e| format!("writing `{}`: {e}", path.display()))?;
        }
        let _ = writeln!(
            code,
            "    Builtin {{\n        name: {name:?},\n        manifest: include_str!({:?}),\n        sha256: {digest:?},\n        imports: &{imports:?},\n        wasm: include_bytes!({:?}),\n        cwasm: include_bytes!({:?}),\n    }},",
            manifest_path.display().to_string(),
            wasm_out.display().to_string(),
            cwasm_out.display().to_string(),
        );
    }
    code.push_str("];\n");
    let generated = PathBuf::from(env("OUT_DIR")?).join("builtins.rs");
    std::fs::write(&generated, code).map_err(|e| format!("writing `{}`: {e}", generated.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
