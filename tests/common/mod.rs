//! Helpers shared by the integration tests: run the real `runbook` binary
//! from the repository root and read what it printed.

#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod approvers;
pub mod durable;
pub mod faults;
pub mod fleet;
pub mod live;
pub mod otlp;
pub mod prometheus;
pub mod tls;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const RB0031: &str = "runbooks/RB-0031-auth-service-degradation.md";

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Where the build put the plugin components (the testing ones too).
pub fn built_plugins() -> PathBuf {
    PathBuf::from(runbook_engine::builtin::BUILT_PLUGINS)
}

/// The binary, run from the repository root with its own compiled-component
/// cache (shared by the tests, kept out of the user's). Components of
/// plugins given with `--plugins plugins` are found where the build put
/// them; RB-0031 alone uses the plugins built into the binary.
pub fn runbook() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_runbook"));
    cmd.current_dir(root())
        .env(
            "RUNBOOK_CACHE_DIR",
            root().join("target").join("test-cache"),
        )
        .env("RUNBOOK_COMPONENTS", built_plugins())
        .env("RUNBOOK_STATE_DIR", fresh_state_dir())
        .env_remove("RUST_BACKTRACE");
    notify_env(&mut cmd);
    cmd
}

/// Where the live tests' notify endpoints are, once a test has started
/// them: every `runbook` command gets the webhook and routing key the
/// environment files name.
pub static NOTIFY_HOOK: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub fn notify_env(cmd: &mut Command) {
    if let Some(url) = NOTIFY_HOOK.get() {
        cmd.env("RUNBOOK_TEST_SLACK_URL", format!("{url}/slack/incidents"))
            .env("RUNBOOK_TEST_PD_KEY", "test-routing-key");
    }
}

/// A state directory no other invocation uses: runs of one test never
/// meet another's incidents. Tests of durable runs pass `--state-dir`.
pub fn fresh_state_dir() -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    root().join("target").join("test-state").join(format!(
        "{}-{n}-{}",
        std::process::id(),
        now_nanos() % 1_000_000_000
    ))
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON report ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

pub fn output(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("running the runbook binary");
    Run {
        code: status.code().expect("exited normally"),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

pub fn run(args: &[&str]) -> Run {
    output(runbook().args(args))
}

/// The report's step ids in order.
pub fn path(report: &Value) -> Vec<String> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

pub fn step<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step `{id}` in the report"))
}

/// A run's journal lines in a state directory (`runs/RUN.jsonl`).
pub fn journal(state: &Path, run: &str) -> Vec<Value> {
    std::fs::read_to_string(state.join("runs").join(format!("{run}.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each audit line is JSON"))
        .collect()
}

pub fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Waits for `child` at most `limit`; past it the child is killed and the
/// test fails instead of hanging.
pub fn wait_bounded(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let until = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
