//! The plugin authoring kit: `runbook new` scaffolds a step plugin (Rust,
//! Python or JavaScript) with its manifest, a runbook and scenarios that
//! exercise it, and tests; `runbook build` builds it with the right tool
//! and flags and puts the component beside its manifest.
//!
//! Python and JavaScript toolchains import every interface of the world
//! they are given, so each plugin gets a world of its own, derived from
//! its manifest's grants: it imports exactly what it is granted (and
//! `log`), nothing else. Rust plugins use the SDK, whose imports follow
//! what the code calls.

use anyhow::{Context, Result};
use runbook_core::error::hinted;
use runbook_core::ids::Name;
use runbook_core::manifest::{self, LoadedManifest};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub mod toolchain;

/// The languages `runbook new` writes plugins in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// Versions of the guest toolchains the kit is tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The longest a build may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);

// `WIT`, `SDK`, `CONTRACT_VERSION`, `SDK_VERSION`: listed by the build script.
include!(concat!(env!("OUT_DIR"), "/embedded.rs"));

const PLUGIN_TOML: &str = include_str!("../templates/common/plugin.toml");
const RUNBOOK: &str = include_str!("../templates/common/runbook.md");
const WITHIN_BUDGET: &str = include_str!("../templates/common/within-budget.toml");
const BURNING: &str = include_str!("../templates/common/burning.toml");
const RUST_CARGO: &str = include_str!("../templates/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("../templates/rust/lib.rs");
const PYTHON_APP: &str = include_str!("../templates/python/app.py");
const JS_STEP: &str = include_str!("../templates/js/step.js");
const JS_PACKAGE: &str = include_str!("../templates/js/package.json");
const PYTHON_TEST: &str = include_str!("../templates/python/test_app.py");
const JS_FAKE_HOST: &str = include_str!("../templates/js/fake-host.mjs");
const JS_TEST: &str = include_str!("../templates/js/step.test.mjs");

/// A plugin name that is also a WIT identifier: words start with a letter.
fn world_name(name: &Name) -> Result<&str> {
    let n = name.as_str();
    if n.split('-')
        .all(|w| w.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
    {
        return Ok(n);
    }
    Err(hinted(
        format!(
            "plugin name `{n}`: each `-`-separated word must start with a letter, so that it can name its WIT world"
        ),
        "rename it, e.g. `check-5xx` to `check-http-5xx`",
    ))
}

/// Writes a new project for plugin `name` in `dir` (which must not exist
/// or be empty); returns the files written, relative to `dir`.
pub fn new(name: &Name, lang: Lang, dir: &Path) -> Result<Vec<String>> {
    world_name(name)?;
    if dir.exists() && fs_err::read_dir(dir)?.next().is_some() {
        return Err(hinted(
            format!("`{}` exists and is not empty", dir.display()),
            "name a new directory with `--dir`, or remove it",
        ));
    }
    let crate_name = name.as_str().replace('-', "_");
    let component = format!("{crate_name}.wasm");
    let memory = match lang {
        Lang::Rust => "16",
        // CPython and SpiderMonkey start with 13 and 10 MiB of heap.
        Lang::Python | Lang::Js => "32",
    };
    let fill = |t: &str| {
        t.replace("{{name}}", name.as_str())
            .replace("{{component}}", &component)
            .replace("{{memory_mib}}", memory)
            .replace("{{sdk_version}}", SDK_VERSION)
            .replace("{{wit_version}}", CONTRACT_VERSION)
    };
    let plugin = format!("plugins/{name}");
    let mut files: Vec<(String, String)> = vec![
        (format!("{plugin}/plugin.toml"), fill(PLUGIN_TOML)),
        ("runbook.md".into(), fill(RUNBOOK)),
        ("scenarios/within-budget.toml".into(), fill(WITHIN_BUDGET)),
        ("scenarios/burning.toml".into(), fill(BURNING)),
        (".gitignore".into(), gitignore(lang).into()),
    ];
    match lang {
        Lang::Rust => {
            files.push((format!("{plugin}/Cargo.toml"), fill(RUST_CARGO)));
            files.push((format!("{plugin}/src/lib.rs"), fill(RUST_LIB)));
            for (f, text) in SDK {
                files.push((format!("vendor/runbook-sdk/{f}"), (*text).into()));
            }
            for (f, text) in WIT {
                files.push((format!("vendor/runbook-sdk/wit/{f}"), (*text).into()));
            }
        }
        Lang::Python => {
            files.push((format!("{plugin}/app.py"), fill(PYTHON_APP)));
            files.push((format!("{plugin}/test_app.py"), fill(PYTHON_TEST)));
        }
        Lang::Js => {
            files.push((format!("{plugin}/step.js"), fill(JS_STEP)));
            files.push((format!("{plugin}/fake-host.mjs"), fill(JS_FAKE_HOST)));
            files.push((format!("{plugin}/step.test.mjs"), fill(JS_TEST)));
            files.push(("package.json".into(), fill(JS_PACKAGE)));
        }
    }
    files.push(("README.md".into(), readme(name, lang)));
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent)?;
        }
        fs_err::write(&path, text)?;
    }
    Ok(files.into_iter().map(|(f, _)| f).collect())
}

/// Rust builds are reproducible: the component is rebuilt from the
/// reviewed source. componentize-py and componentize-js builds are not
/// (every build has another digest), so there the component itself is
/// what is reviewed, locked and signed: commit it.
fn gitignore(lang: Lang) -> &'static str {
    match lang {
        Lang::Rust => "target/\n*.wasm\n",
        Lang::Python => ".wit/\n.bindings/\n.venv/\n__pycache__/\n",
        Lang::Js => ".wit/\nnode_modules/\n",
    }
}

fn readme(name: &Name, lang: Lang) -> String {
    let (setup, test) = match lang {
        Lang::Rust => (
            "rustup target add wasm32-wasip2    # `runbook build` adds it when missing".to_string(),
            format!("(cd plugins/{name} && cargo test)  # natively, against the SDK's fake host\n"),
        ),
        Lang::Python => (
            format!(
                "python3 -m venv .venv && .venv/bin/pip install componentize-py=={COMPONENTIZE_PY}\nexport PATH=\"$PWD/.venv/bin:$PATH\""
            ),
            format!(
                "(cd plugins/{name} && python3 -m unittest)  # natively, against a fake host (after `build`)\n"
            ),
        ),
        Lang::Js => (
            "npm install    # componentize-js, from package.json".to_string(),
            format!(
                "(cd plugins/{name} && node --import ./fake-host.mjs --test)  # natively, against a fake host\n"
            ),
        ),
    };
    format!(
        "# `{name}`: a runbook step plugin\n\n\
         `plugins/{name}/plugin.toml` is its capability manifest: what it may touch\n\
         (reviewed), its inputs and outcomes (`runbook check` holds every step to\n\
         them). `runbook.md` uses it; `scenarios/` simulate the world it reads.\n\n\
         ```sh\n{setup}\nrunbook build plugins/{name}     # the component, beside its manifest\n\
         runbook test runbook.md           # every scenario takes its expected path\n\
         {test}runbook step {name} --plugins plugins --input namespace=Example \\\n  --input metric=errors --input budget=100 --sim scenarios/burning.toml\n```\n"
    )
}

/// What `runbook build` made.
pub struct Built {
    pub lang: Lang,
    pub component: PathBuf,
    pub manifest: LoadedManifest,
    pub seconds: f64,
}

/// Builds the plugin in `dir` (with `plugin.toml`) and puts the component
/// where its manifest says.
pub fn build(dir: &Path) -> Result<Built> {
    let manifest = LoadedManifest::load(&dir.join(manifest::FILE_NAME))?;
    let lang = if dir.join("Cargo.toml").is_file() {
        Lang::Rust
    } else if dir.join("app.py").is_file() {
        Lang::Python
    } else if dir.join("step.js").is_file() {
        Lang::Js
    } else {
        return Err(hinted(
            format!(
                "`{}` has no `Cargo.toml`, `app.py` or `step.js`: which language is it?",
                dir.display()
            ),
            "`runbook new NAME --lang rust|python|js` shows the layout",
        ));
    };
    let out = dir.join(&manifest.manifest.component);
    let started = Instant::now();
    match lang {
        Lang::Rust => build_rust(dir, &out)?,
        Lang::Python => {
            let wit = world(dir, &manifest)?;
            let program = std::env::var_os("RUNBOOK_COMPONENTIZE_PY")
                .unwrap_or_else(|| "componentize-py".into());
            let mut cmd = Command::new(&program);
            cmd.arg("-d")
                .arg(&wit)
                .args([
                    "-w",
                    manifest.manifest.name.as_str(),
                    "componentize",
                    "app",
                    "-p",
                ])
                .arg(dir)
                .arg("-o")
                .arg(&out);
            // Its own backtraces are noise next to a Python error.
            cmd.env("RUST_BACKTRACE", "0");
            let install = format!(
                "install it: `pip install componentize-py=={COMPONENTIZE_PY}` (in a virtual environment whose `bin` is on PATH), or set `RUNBOOK_COMPONENTIZE_PY`"
            );
            run_tool(cmd, "componentize-py", &install)?;
            // The same bindings as plain Python, for the native tests.
            let mut cmd = Command::new(&program);
            cmd.env("RUST_BACKTRACE", "0")
                .arg("-d")
                .arg(&wit)
                .args(["-w", manifest.manifest.name.as_str(), "bindings"])
                .arg(dir.join(".bindings"));
            run_tool(cmd, "componentize-py", &install)?;
        }
        Lang::Js => {
            let wit = world(dir, &manifest)?;
            let tools = js_tools(dir)?;
            let mut cmd = Command::new("node");
            cmd.current_dir(&tools)
                .args(["--input-type=module", "-e", JS_BUILD])
                .env("RUNBOOK_JS_SOURCE", absolute(&dir.join("step.js"))?)
                .env("RUNBOOK_JS_WIT", absolute(&wit)?)
                .env("RUNBOOK_JS_WORLD", manifest.manifest.name.as_str())
                .env(
                    "RUNBOOK_JS_OUT",
                    absolute(dir)?.join(&manifest.manifest.component),
                );
            run_tool(
                cmd,
                "node",
                "install Node.js 20 or later (`apt-get install nodejs npm`)",
            )?;
        }
    }
    if !out.is_file() {
        return Err(hinted(
            format!("the build did not write `{}`", out.display()),
            "its output is above",
        ));
    }
    Ok(Built {
        lang,
        component: out,
        manifest,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Builds with componentize-js, without `wasi:http`: steps have no
/// network of their own, and the host does not link it.
const JS_BUILD: &str = r#"
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
const env = process.env;
const { component } = await componentize({
  sourcePath: env.RUNBOOK_JS_SOURCE,
  witPath: env.RUNBOOK_JS_WIT,
  worldName: env.RUNBOOK_JS_WORLD,
  disableFeatures: ['http', 'fetch-event'],
});
await writeFile(env.RUNBOOK_JS_OUT, component);
"#;

/// Where `@bytecodealliance/componentize-js` is installed: in a
/// `node_modules` at or above the plugin, else `RUNBOOK_JS_TOOLS`.
fn js_tools(dir: &Path) -> Result<PathBuf> {
    let has = |d: &Path| {
        d.join("node_modules/@bytecodealliance/componentize-js")
            .is_dir()
    };
    let start = absolute(dir)?;
    if let Some(found) = start.ancestors().find(|d| has(d)) {
        return Ok(found.to_path_buf());
    }
    if let Some(t) = std::env::var_os("RUNBOOK_JS_TOOLS").map(PathBuf::from)
        && has(&t)
    {
        return Ok(t);
    }
    Err(hinted(
        format!(
            "componentize-js is not installed at or above `{}`",
            dir.display()
        ),
        format!(
            "run `npm install` where `runbook new` wrote `package.json` (or `npm install @bytecodealliance/componentize-js@{COMPONENTIZE_JS}` in a directory named by `RUNBOOK_JS_TOOLS`)"
        ),
    ))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving `{}`", p.display()))
}

/// Writes `dir/.wit/`: the host's WIT as a dependency, and the plugin's
/// own world importing exactly what its manifest grants (and `log`).
fn world(dir: &Path, manifest: &LoadedManifest) -> Result<PathBuf> {
    let name = &manifest.manifest.name;
    let world = world_name(name)?;
    let wit = dir.join(".wit");
    let deps = wit.join("deps/runbook-host");
    if wit.exists() {
        fs_err::remove_dir_all(&wit)?;
    }
    fs_err::create_dir_all(&deps)?;
    for (f, text) in WIT {
        fs_err::write(deps.join(f), text)?;
    }
    let v = CONTRACT_VERSION;
    let mut imports: Vec<String> = manifest
        .manifest
        .grants
        .interfaces()
        .map(|i| format!("    import runbook:host/{}@{v};\n", i.wit_name()))
        .collect();
    // Always available, whatever is granted.
    imports.push(format!("    import runbook:host/log@{v};\n"));
    imports.push(format!("    import runbook:host/history@{v};\n"));
    fs_err::write(
        wit.join("world.wit"),
        format!(
            "// Written by `runbook build` from plugin.toml's grants: the plugin\n\
             // imports exactly these, and the host links nothing else.\n\
             package plugin:{world};\n\n\
             world {world} {{\n{}\n    use runbook:host/types@{v}.{{pair, run-context, outcome, error}};\n\n    \
             export run: func(ctx: run-context, inputs: list<pair>) -> result<outcome, error>;\n}}\n",
            imports.concat()
        ),
    )?;
    Ok(wit)
}

fn build_rust(dir: &Path, out: &Path) -> Result<()> {
    let rustc = PathBuf::from(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));
    toolchain::ensure_target(&rustc, Path::new("rustup")).map_err(|why| {
        hinted(
            why,
            format!(
                "install Rust with rustup, then `rustup target add {}`",
                toolchain::TARGET
            ),
        )
    })?;
    let cargo_toml: toml::Value = toml::from_str(&runbook_core::files::read_text(
        &dir.join("Cargo.toml"),
        "Cargo.toml",
    )?)
    .with_context(|| format!("reading `{}`", dir.join("Cargo.toml").display()))?;
    let crate_name = cargo_toml
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .ok_or_else(|| {
            hinted(
                format!(
                    "`{}` has no `[package] name`",
                    dir.join("Cargo.toml").display()
                ),
                "the plugin's Cargo.toml names its package",
            )
        })?
        .replace('-', "_");
    let target_dir = absolute(dir)?.join("target");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            toolchain::TARGET,
            "--target-dir",
        ])
        .arg(&target_dir);
    for var in toolchain::OUTER_CARGO_VARS {
        cmd.env_remove(var);
    }
    run_tool(cmd, "cargo", "install Rust with rustup (https://rustup.rs)")?;
    let built = target_dir
        .join(toolchain::TARGET)
        .join("release")
        .join(format!("{crate_name}.wasm"));
    fs_err::copy(&built, out)?;
    Ok(())
}

/// Runs a build tool, its output passed through, within [`BUILD_TIMEOUT`].
fn run_tool(mut cmd: Command, tool: &str, install: &str) -> Result<()> {
    let mut child = match cmd.stdin(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(hinted(
                format!("`{tool}` is not installed (not on PATH)"),
                install,
            ));
        }
        Err(e) => return Err(anyhow::Error::new(e).context(format!("running `{tool}`"))),
    };
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if started.elapsed() > BUILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(hinted(
                format!(
                    "`{tool}` did not finish within {} minutes",
                    BUILD_TIMEOUT.as_secs() / 60
                ),
                "its output is above",
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        return Err(hinted(
            format!("`{tool}` failed ({status})"),
            "its messages are above",
        ));
    }
    Ok(())
}
