//! The fleet's servers and processes for tests: `nats-server` with
//! JetStream (one node or a cluster) and `runbook worker` processes.

use super::live::{free_port, notify_hook, wait_for};
use super::{output, runbook};
use runbook_fleet::nats::Fleet;
use runbook_fleet::store::JetStreamStore;
use runbook_journal::store::Store;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `nats-server` the tests start: `RUNBOOK_TEST_NATS_SERVER` (a path;
/// `scripts/test` runs the fleet's tests again with a current 2.x from
/// PyPI that way), else the one on `PATH` (Debian's 2.9).
pub fn server() -> String {
    std::env::var("RUNBOOK_TEST_NATS_SERVER")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "nats-server".into())
}

/// `nats-server -js` processes; a cluster when more than one.
pub struct Nats {
    nodes: Vec<Option<Child>>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl Nats {
    pub fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let nodes = (0..n)
            .map(|i| {
                let mut cmd = Command::new(server());
                cmd.args(["-js", "-a", "127.0.0.1", "-p", &ports[i].to_string()])
                    .args(["-n", &format!("n{i}")])
                    .arg("-sd")
                    .arg(dir.path().join(format!("n{i}")));
                if n > 1 {
                    let others: Vec<String> = (0..n)
                        .filter(|j| *j != i)
                        .map(|j| format!("nats://127.0.0.1:{}", routes[j]))
                        .collect();
                    cmd.args(["--cluster_name", "runbook-test"])
                        .args(["--cluster", &format!("nats://127.0.0.1:{}", routes[i])])
                        .args(["--routes", &others.join(",")]);
                }
                Some(
                    cmd.stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("`nats-server` must be installed (`apt-get install nats-server`)"),
                )
            })
            .collect();
        let nats = Self {
            nodes,
            ports,
            _dir: dir,
        };
        // Ready when the streams can be made with a copy on every node.
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let out = output(runbook().args([
                "approve",
                "no-such-run",
                "step",
                "--nats",
                &nats.url(),
                "--replicas",
                &n.to_string(),
            ]));
            if out.stderr.contains("no run `no-such-run`") {
                break;
            }
            assert!(
                Instant::now() < until,
                "the NATS cluster did not come up within 60 s: {}",
                out.stderr
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        nats
    }

    pub fn url(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn store(&self) -> Arc<JetStreamStore> {
        JetStreamStore::new(Fleet::connect(&self.url(), None).unwrap())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

pub fn aws(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env("RUNBOOK_TEST_PD_KEY", "test-routing-key")
        .env("RUNBOOK_TEST_SLACK_URL", format!("{}/slack", notify_hook()))
}

/// A `runbook worker` process with its health endpoint.
pub struct Worker {
    pub child: Child,
    pub health: u16,
    pub log: std::path::PathBuf,
}

impl Worker {
    pub fn start(nats: &Nats, dir: &Path, name: &str) -> Self {
        Self::start_with(nats, dir, name, &[])
    }

    /// A worker with `env` set (`FAILPOINTS`, for one).
    pub fn start_with(nats: &Nats, dir: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        Self::start_running(nats, dir, name, env, 3)
    }

    /// [`Worker::start_with`], running up to `concurrency` runs at once.
    pub fn start_running(
        nats: &Nats,
        dir: &Path,
        name: &str,
        env: &[(&str, &str)],
        concurrency: usize,
    ) -> Self {
        let health = free_port();
        let concurrency = concurrency.to_string();
        let log = dir.join(format!("{name}.log"));
        let mut cmd = runbook();
        cmd.envs(env.iter().copied());
        let child = aws(cmd.args([
            "worker",
            "--nats",
            &nats.url(),
            "--concurrency",
            &concurrency,
            "--ack-wait",
            "6",
            "--grace",
            "10",
            "--health",
            &format!("127.0.0.1:{health}"),
        ]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        let w = Self { child, health, log };
        wait_for("a worker's health endpoint", || w.get("/healthz").is_some());
        w
    }

    pub fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.health)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let ok = text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200");
        ok.then_some(text)
    }

    pub fn counter(&self, name: &str) -> u64 {
        let text = self.get("/metrics").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("runbook_worker_{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits (bounded) for `done`, failing with `what` and the workers' logs.
pub fn wait_until(what: &str, secs: u64, logs: &[&Worker], mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    while !done() {
        if Instant::now() > until {
            panic!(
                "{what}: not within {secs} s; worker logs:\n{}",
                worker_logs(logs)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The workers' logs, one after another, each under its file's name.
pub fn worker_logs(workers: &[&Worker]) -> String {
    workers
        .iter()
        .map(|w| {
            format!(
                "--- {}\n{}",
                w.log.display(),
                std::fs::read_to_string(&w.log).unwrap_or_default()
            )
        })
        .collect()
}

/// One test at a time (in a test binary): each starts its own servers and workers, and a
/// two-core machine running two of them would measure the machine.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

pub const SIM: &str = "runbooks/scenarios/session-store-outage.toml";

/// `runbook run` of RB-0031 in the session-store scenario for `incident`,
/// its journal and state on `nats`.
pub fn sim_run(nats: &Nats, incident: &str) -> Command {
    let mut cmd = runbook();
    cmd.args([
        "run",
        super::RB0031,
        "--sim",
        SIM,
        "--incident",
        incident,
        "--nats",
        &nats.url(),
    ]);
    cmd
}

pub fn soon() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(60))
        .to_string()
}

pub fn submit(nats: &Nats, env: &str, incident: &str, extra: &[&str]) -> super::Run {
    output(&mut submit_command(
        nats,
        super::RB0031,
        env,
        incident,
        extra,
    ))
}

/// `runbook submit` of `runbook` for `incident`, to be run.
pub fn submit_command(
    nats: &Nats,
    runbook_path: &str,
    env: &str,
    incident: &str,
    extra: &[&str],
) -> Command {
    let start = soon();
    let mut args = vec![
        "submit",
        runbook_path,
        "--env",
        env,
        "--incident",
        incident,
        "--incident-start",
        &start,
    ];
    args.extend_from_slice(extra);
    let url = nats.url();
    args.extend(["--nats", &url]);
    let mut cmd = runbook();
    cmd.args(&args);
    cmd
}

/// The incident's runs' journals, each line checked: the chain holds
/// (`seq`, `prev`, `hash`), and every applied change has its intent before
/// it. Returns (runs, rollbacks applied, whether one ended).
/// The incident's (first) run and the step it is parked at, if it is.
pub fn parked_at(store: &JetStreamStore, incident: &str) -> Option<(String, String)> {
    let runs = store.incident_runs(incident).unwrap_or_default();
    let run = runs.first()?.clone();
    let lines = store.read_run(&run).ok()?;
    runbook_fleet::parked::waiting_step(&lines).map(|(s, _)| (run, s))
}

pub fn incident_state(store: &JetStreamStore, incident: &str) -> (usize, usize, Option<String>) {
    let runs = store.incident_runs(incident).unwrap_or_default();
    let mut applied = 0;
    let mut ended = None;
    for run in &runs {
        // One read: the run may still be writing. Right after a node was
        // killed the stream may have no leader yet ("no responders"):
        // asked again for up to 10 s, then it fails as before.
        let mut tries = 0;
        let raw = loop {
            match store.raw_lines(run) {
                Ok((raw, _)) => break raw,
                Err(_) if tries < 20 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("reading run {run}'s journal: {e:#}"),
            }
        };
        let lines: Vec<serde_json::Value> = raw
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("j.jsonl");
        let text: String = raw.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, text).unwrap();
        assert_eq!(
            runbook_journal::chain::verify(&file).unwrap(),
            Ok(lines.len()),
            "run {run}'s journal chain"
        );
        for (i, l) in lines.iter().enumerate() {
            if l["event"] == "applied" && l["resource"] == "production/auth-service" {
                assert!(
                    lines[..i]
                        .iter()
                        .any(|x| x["event"] == "intent" && x["seq"] == l["intent"]),
                    "applied without its intent before it in run {run}"
                );
                applied += 1;
            }
        }
        if let Some(end) = runbook_journal::replay::finished(&lines) {
            ended = end["status"].as_str().map(str::to_string);
        }
    }
    (runs.len(), applied, ended)
}
