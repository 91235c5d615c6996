//! RB-0031 against real servers: `redis-server` and `moto_server` (ECS,
//! SSM) on loopback, started here or by `.ci/run` (which exports
//! `RUNBOOK_TEST_MOTO_URL`). Metrics are replayed from recorded values:
//! moto cannot answer CloudWatch's current protocol nor compute p99 (the
//! CloudWatch backend is tested with `aws-smithy-mocks` in the host crate).

mod common;

use common::live::*;

use common::{RB0031, audit_lines, output, path, runbook, step};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

/// A Redis to keep flags in: the `redis-server` `.ci/run` started
/// (`RUNBOOK_TEST_REDIS_URL`), or one of this test's own. Each test uses a
/// hash of its own.
struct FlagRedis {
    url: String,
    hash: String,
    _own: Option<RedisServer>,
}

impl FlagRedis {
    fn start() -> Self {
        let hash = unique("feature-flags");
        match std::env::var("RUNBOOK_TEST_REDIS_URL") {
            Ok(url) => Self {
                url,
                hash,
                _own: None,
            },
            Err(_) => {
                let own = RedisServer::start();
                Self {
                    url: own.url(),
                    hash,
                    _own: Some(own),
                }
            }
        }
    }

    fn config(&self) -> String {
        format!(
            "[flags]\nstore = \"redis\"\nurl = \"{}\"\nhash = \"{}\"",
            self.url, self.hash
        )
    }

    fn get(&self, key: &str) -> Option<String> {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut c = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap();
        redis::cmd("HGET")
            .arg(&self.hash)
            .arg(key)
            .query(&mut c)
            .unwrap()
    }
}

fn ssm_get(moto: &Moto, name: &str) -> Option<String> {
    let ssm = ssm_client(moto);
    rt().block_on(async {
        match ssm.get_parameter().name(name).send().await {
            Ok(o) => o.parameter().and_then(|p| p.value()).map(str::to_string),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_parameter_not_found()) =>
            {
                None
            }
            Err(e) => panic!("ssm get {name}: {e:?}"),
        }
    })
}

fn dead_redis_url() -> String {
    format!("redis://127.0.0.1:{}", free_port())
}

const OUTAGE_PATH: [&str; 6] = [
    "check-latency",
    "session-store",
    "enable-fallback",
    "downstream-impact",
    "verify-fallback",
    "announce-resolved",
];

/// The session-store path, with the flag really set in each flag store.
#[test]
fn session_store_outage_sets_the_flag_in_every_store() {
    let moto = Moto::start();
    let (cluster, service, _) = ecs_service(&moto);
    let flags_redis = FlagRedis::start();
    // The session store really is down: started, then stopped.
    let mut session = RedisServer::start();
    let session_url = session.url();
    session.signal("-TERM");
    let _ = session.child.wait();

    let prefix = format!("/{}/flags/", unique("auth"));
    let stores = [
        (
            "file",
            "[flags]\nstore = \"file\"\npath = \"flags.json\"".to_string(),
        ),
        ("redis", flags_redis.config()),
        (
            "ssm",
            format!("[flags]\nstore = \"ssm\"\nprefix = \"{prefix}\""),
        ),
    ];
    for (store, flags) in stores {
        let live = Live::new(
            &session_outage_metrics(),
            &session_url,
            &moto,
            (&cluster, &service),
            &flags,
        );
        let out = live.run(&["--yes"]);
        let report = out.json();
        assert_eq!(
            report["status"], "resolved",
            "{store}: {report:#}\n{}",
            out.stderr
        );
        assert_eq!(out.code, 0);
        assert_eq!(path(&report), OUTAGE_PATH, "{store}");
        let error = step(&report, "session-store")["facts"]["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with("unavailable: redis `session-store`"),
            "{store}: {error}"
        );
        let value = match store {
            "file" => {
                let text = std::fs::read_to_string(live.dir.path().join("flags.json")).unwrap();
                let map: std::collections::BTreeMap<String, String> =
                    serde_json::from_str(&text).unwrap();
                map.get("AUTH_STATELESS_FALLBACK").cloned()
            }
            "redis" => flags_redis.get("AUTH_STATELESS_FALLBACK"),
            _ => ssm_get(&moto, &format!("{prefix}AUTH_STATELESS_FALLBACK")),
        };
        assert_eq!(value.as_deref(), Some("true"), "{store}");
        // The approval is in the audit log: how, and by whom.
        let set = audit_lines(&live.audit())
            .into_iter()
            .find(|l| l["operation"] == "set")
            .unwrap();
        assert_eq!(set["approval"]["decision"], "approved");
        assert_eq!(set["approval"]["how"], "--yes");
        // Who approved: `$USER`, or the uid's name when it is unset.
        let by = set["approval"]["by"].as_str().unwrap_or_default();
        assert!(!by.is_empty(), "{set}");
        assert!(
            set["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{set}"
        );
        // No rollback on this path: the service is untouched.
        assert!(service_task_definition(&moto, &cluster, &service).ends_with(":3"));
    }
}

#[test]
fn bad_deploy_rolls_the_service_back_for_real() {
    let moto = Moto::start();
    let (cluster, service, family) = ecs_service(&moto);
    let session = RedisServer::start();
    let live = Live::new(
        &bad_deploy_metrics(),
        &session.url(),
        &moto,
        (&cluster, &service),
        "[flags]\nstore = \"file\"\npath = \"flags.json\"",
    );
    let out = live.run(&["--approve", "rollback", "--approve", "announce-resolved"]);
    let report = out.json();
    assert_eq!(report["status"], "resolved", "{report:#}\n{}", out.stderr);
    assert_eq!(
        path(&report),
        [
            "check-latency",
            "session-store",
            "recent-deploys",
            "rollback",
            "verify-rollback",
            "announce-resolved"
        ]
    );
    let rollback = step(&report, "rollback");
    assert_eq!(rollback["facts"]["from"], format!("{family}:3"));
    assert_eq!(rollback["facts"]["to"], format!("{family}:2"));
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let audited = audit_lines(&live.audit())
        .into_iter()
        .find(|l| l["operation"] == "rollback")
        .unwrap();
    assert_eq!(audited["approval"]["how"], "--approve");
    assert_eq!(
        audited["approval"]["change"],
        format!("roll back `production/auth-service` {family}:3 → {family}:2")
    );
}

#[test]
fn without_approval_the_run_stops_before_the_first_mutation() {
    let moto = Moto::start();
    let (cluster, service, _) = ecs_service(&moto);
    let live = Live::new(
        &session_outage_metrics(),
        &dead_redis_url(),
        &moto,
        (&cluster, &service),
        "[flags]\nstore = \"file\"\npath = \"flags.json\"",
    );
    let out = live.run(&[]);
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["status"], "awaiting-approval");
    assert_eq!(
        path(&report),
        ["check-latency", "session-store", "enable-fallback"]
    );
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("set flag `AUTH_STATELESS_FALLBACK` from `(unset)` to `true`"),
        "{reason}"
    );
    assert!(reason.contains("--approve enable-fallback"), "{reason}");
    assert!(
        !live.dir.path().join("flags.json").exists(),
        "the flag was written without approval"
    );
    let held = audit_lines(&live.audit())
        .into_iter()
        .find(|l| l["operation"] == "set")
        .unwrap();
    assert_eq!(held["approval"]["decision"], "awaiting-approval");
}

#[test]
fn dry_run_reads_for_real_and_changes_nothing() {
    let moto = Moto::start();
    let (cluster, service, family) = ecs_service(&moto);
    let session = RedisServer::start();
    let flags = FlagRedis::start();
    let flags_conf = flags.config();
    let live = Live::new(
        &bad_deploy_metrics(),
        &session.url(),
        &moto,
        (&cluster, &service),
        &flags_conf,
    );
    let out = live.run(&["--dry-run"]);
    let report = out.json();
    assert_eq!(
        path(&report),
        [
            "check-latency",
            "session-store",
            "recent-deploys",
            "rollback",
            "verify-rollback",
            "announce-resolved"
        ],
        "{report:#}"
    );
    // The rollback step saw what the rollback would have reported ...
    assert_eq!(
        step(&report, "rollback")["facts"]["to"],
        format!("{family}:2")
    );
    let call = &step(&report, "rollback")["calls"].as_array().unwrap()[0];
    assert_eq!(call["approval"]["decision"], "dry-run");
    // ... but moto still runs revision 3.
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:3")
    );
    assert!(report["mode"].as_str().unwrap().ends_with("dry run"));

    // The session path in a dry run leaves the flag store untouched.
    let live = Live::new(
        &session_outage_metrics(),
        &dead_redis_url(),
        &moto,
        (&cluster, &service),
        &flags_conf,
    );
    let out = live.run(&["--dry-run"]);
    let report = out.json();
    assert_eq!(
        step(&report, "enable-fallback")["outcome"],
        "set",
        "{report:#}"
    );
    assert_eq!(flags.get("AUTH_STATELESS_FALLBACK"), None);
    let decision = audit_lines(&live.audit())
        .into_iter()
        .find(|l| l["operation"] == "set")
        .unwrap();
    assert_eq!(decision["approval"]["decision"], "dry-run");
}

#[test]
fn a_hung_session_store_times_out_and_the_run_goes_on() {
    let moto = Moto::start();
    let (cluster, service, _) = ecs_service(&moto);
    let session = RedisServer::start();
    session.signal("-STOP");
    let live = Live::new(
        &session_outage_metrics(),
        &session.url(),
        &moto,
        (&cluster, &service),
        "[flags]\nstore = \"file\"\npath = \"flags.json\"",
    );
    let out = live.run(&["--yes"]);
    let report = out.json();
    let error = step(&report, "session-store")["facts"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.starts_with("timeout: redis `session-store`"),
        "{error}"
    );
    assert_eq!(path(&report), OUTAGE_PATH);
    assert_eq!(report["status"], "resolved");
}

#[test]
fn an_alias_the_environment_lacks_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join("env.toml");
    std::fs::write(
        &env,
        "[aws]\nregion = \"us-east-1\"\n[flags]\nstore = \"file\"\npath = \"f.json\"\n",
    )
    .unwrap();
    let out = output(runbook().args(["run", RB0031, "--env", env.to_str().unwrap()]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("step `session-store` of `runbooks/RB-0031-auth-service-degradation.md` is granted redis `session-store`, which environment"), "{}", out.stderr);
    assert!(
        out.stderr.contains("hint: add `[redis.session-store]`"),
        "{}",
        out.stderr
    );
}

/// From a terminal, a live run asks before each mutation, showing the
/// change; "y" performs it, anything else refuses it.
#[test]
fn a_terminal_is_asked_before_each_mutation() {
    use std::io::{Read, Write};
    let moto = Moto::start();
    let (cluster, service, _) = ecs_service(&moto);
    for (answer, code, flag) in [("y", 0, Some("true")), ("n", 1, None)] {
        let live = Live::new(
            &session_outage_metrics(),
            &dead_redis_url(),
            &moto,
            (&cluster, &service),
            "[flags]\nstore = \"file\"\npath = \"flags.json\"",
        );
        let command = format!(
            "{} run {RB0031} --env {} --incident-start 2026-11-26T02:52:00Z --audit-log {}",
            env!("CARGO_BIN_EXE_runbook"),
            live.env(),
            live.audit().display()
        );
        // `script` gives the run a terminal of its own.
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .current_dir(common::root())
            .env(
                "RUNBOOK_CACHE_DIR",
                common::root().join("target").join("test-cache"),
            )
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUNBOOK_STATE_DIR", common::fresh_state_dir())
            .env(
                "RUNBOOK_TEST_SLACK_URL",
                format!("{}/slack/incidents", notify_hook()),
            )
            .env("RUNBOOK_TEST_PD_KEY", "test-routing-key")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("`script` (util-linux) runs the CLI on a terminal");
        // One answer for each change the path asks about: the flag, then
        // the escalation's page and message (or the resolved message).
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{answer}\n").repeat(4).as_bytes())
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            stdout.read_to_string(&mut text).unwrap();
            text
        });
        let status = common::wait_bounded(&mut child, std::time::Duration::from_secs(120));
        drop(stdin);
        let screen = reader.join().unwrap();
        assert!(
            screen.contains("step `enable-fallback` will set flag `AUTH_STATELESS_FALLBACK` from `(unset)` to `true`"),
            "{screen}"
        );
        assert!(screen.contains("approve? [y/N]"), "{screen}");
        assert_eq!(status.code(), Some(code), "{screen}");
        let file = std::fs::read_to_string(live.dir.path().join("flags.json")).ok();
        assert_eq!(file.is_some(), flag.is_some(), "{screen}");
        let decision = audit_lines(&live.audit())
            .into_iter()
            .find(|l| l["operation"] == "set" && l.get("event").is_none())
            .unwrap();
        let expected = if answer == "y" { "approved" } else { "refused" };
        assert_eq!(decision["approval"]["decision"], expected);
        assert_eq!(decision["approval"]["how"], "interactive");
    }
}

/// A person slower to answer than the step's deadline is waited for: the
/// step's clock stops while it asks, and the runner does not give up on it.
#[test]
fn a_slow_approval_is_waited_for() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let manifest =
        std::fs::read_to_string(common::root().join("plugins/steps/set-flag/plugin.toml")).unwrap();
    assert!(manifest.contains("timeout_ms = 10000"));
    std::fs::create_dir_all(d.join("plugins/set-flag")).unwrap();
    std::fs::write(
        d.join("plugins/set-flag/plugin.toml"),
        manifest.replace("timeout_ms = 10000", "timeout_ms = 300"),
    )
    .unwrap();
    std::fs::write(
        d.join("env.toml"),
        "[flags]\nstore = \"file\"\npath = \"flags.json\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("rb.md"),
        "---\nrunbook_id: RB-SLOW\ntitle: t\nservice: s\nseverity_scope: T\ntags: []\nfirst_action_step: x\nsteps:\n  - id: flip\n    plugin: set-flag\n    inputs: { key: AUTH_STATELESS_FALLBACK, value: \"true\" }\n    grants: { feature-flags: { mutate: [AUTH_STATELESS_FALLBACK] } }\n    on: { set: resolved, unchanged: resolved, error: escalated, limit-exceeded: escalated }\n---\n",
    )
    .unwrap();
    let command = format!(
        "{} run rb.md --env env.toml --plugins plugins",
        env!("CARGO_BIN_EXE_runbook")
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(d)
        .env(
            "RUNBOOK_CACHE_DIR",
            common::root().join("target").join("test-cache"),
        )
        .env("RUNBOOK_COMPONENTS", common::built_plugins())
        .env("RUNBOOK_STATE_DIR", common::fresh_state_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("`script` (util-linux) runs the CLI on a terminal");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).unwrap();
        text
    });
    // Well past the 300 ms deadline and the runner's 2 s grace.
    std::thread::sleep(Duration::from_secs(4));
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"y\n").unwrap();
    let status = common::wait_bounded(&mut child, Duration::from_secs(120));
    drop(stdin);
    let screen = reader.join().unwrap();
    assert_eq!(status.code(), Some(0), "{screen}");
    assert!(screen.contains("status: resolved"), "{screen}");
    let flags = std::fs::read_to_string(d.join("flags.json")).unwrap();
    assert!(
        flags.contains("\"AUTH_STATELESS_FALLBACK\": \"true\""),
        "{flags}"
    );
}

mod faults {
    //! Each backend against a server that refuses or never answers: the
    //! step gets the right error, bounded by its timeouts.

    use super::*;
    use runbook_capabilities::bindings::Error;
    use runbook_capabilities::ecs::EcsBackend;
    use runbook_capabilities::ecs::live::EcsTarget;
    use runbook_capabilities::redis::RedisBackend;
    use runbook_capabilities::redis::live::Redis;
    use runbook_capabilities::redis::live::RedisTarget;

    fn target(url: String) -> RedisTarget {
        RedisTarget {
            url,
            password_env: None,
            password_secret: None,
            password: None,
            username: None,
            ca_file: None,
            connect_timeout_ms: 300,
            response_timeout_ms: 300,
        }
    }

    fn redis_backend(url: String) -> Redis {
        Redis::new([("cache".to_string(), target(url))].into())
    }

    fn deadline() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    #[tokio::test]
    async fn redis_refused_is_unavailable() {
        let err = redis_backend(dead_redis_url())
            .ping("cache", deadline())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    }

    /// Connect and response timeouts each cut a call off, well before the
    /// step's 10 s deadline (before: a silent server took twice the connect
    /// timeout and `response_timeout_ms` had no effect).
    #[tokio::test]
    async fn redis_that_accepts_but_never_answers_times_out() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("redis://{}", silent.local_addr().unwrap());
        let started = Instant::now();
        let err = redis_backend(url)
            .ping("cache", deadline())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let paused = RedisServer::start();
        paused.signal("-STOP");
        let started = Instant::now();
        let err = redis_backend(paused.url())
            .info("cache", deadline())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn the_step_deadline_bounds_a_redis_call() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut t = target(format!("redis://{}", silent.local_addr().unwrap()));
        t.response_timeout_ms = 60_000;
        t.connect_timeout_ms = 60_000;
        let backend = Redis::new([("cache".to_string(), t)].into());
        let started = Instant::now();
        let err = backend
            .ping("cache", Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        // The 0.3 s deadline, not the 60 s response timeout, ended it.
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }

    /// `rediss://` with a private CA, the password from the variable the
    /// environment names.
    #[test]
    fn tls_redis_with_a_password_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            assert!(ok, "openssl {args:?}");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(d.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ]);
        let port = free_port();
        let mut server = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args([
                "--tls-cert-file",
                "srv.pem",
                "--tls-key-file",
                "srv.key",
                "--tls-ca-cert-file",
                "ca.pem",
            ])
            .args(["--tls-auth-clients", "no", "--requirepass", "s3cret"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("tls redis-server", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        std::fs::write(
            d.join("env.toml"),
            format!("[redis.session-store]\nurl = \"rediss://127.0.0.1:{port}\"\nca_file = \"ca.pem\"\npassword_env = \"RUNBOOK_TEST_TLS_PW\"\n"),
        )
        .unwrap();
        std::fs::write(
            d.join("rb.md"),
            "---\nrunbook_id: RB-TLS\ntitle: t\nservice: s\nseverity_scope: T\ntags: []\nfirst_action_step: x\nsteps:\n  - id: ping\n    plugin: redis-health\n    inputs: { target: session-store }\n    grants: { redis: { read: [session-store] } }\n    on: { healthy: resolved, degraded: resolved, unreachable: escalated }\n---\n",
        )
        .unwrap();
        let plugins = common::root().join("plugins");
        let args = [
            "run",
            "rb.md",
            "--env",
            "env.toml",
            "--json",
            "--plugins",
            plugins.to_str().unwrap(),
        ];
        let with = output(
            runbook()
                .current_dir(d)
                .args(args)
                .env("RUNBOOK_TEST_TLS_PW", "s3cret"),
        );
        let without = output(
            runbook()
                .current_dir(d)
                .args(args)
                .env_remove("RUNBOOK_TEST_TLS_PW"),
        );
        let _ = server.kill();
        let _ = server.wait();
        let report = with.json();
        assert_eq!(step(&report, "ping")["outcome"], "healthy", "{report:#}");
        // Without the variable the run is refused before anything runs,
        // and the name `password_env` holds is not echoed: it could be a
        // password pasted in by mistake.
        assert_eq!(without.code, 2, "{}", without.stdout);
        assert!(
            without
                .stderr
                .contains("redis.session-store.password_env names a variable that is not set"),
            "{}",
            without.stderr
        );
        assert!(
            !without.stderr.contains("RUNBOOK_TEST_TLS_PW"),
            "{}",
            without.stderr
        );
    }

    #[tokio::test]
    async fn an_aws_endpoint_that_never_answers_times_out() {
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let env: runbook_capabilities::environment::Environment = toml::from_str(&format!(
            "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://{}\"\nattempt_timeout_ms = 300\noperation_timeout_ms = 800\nmax_attempts = 2\n",
            silent.local_addr().unwrap()
        ))
        .unwrap();
        // Our timeouts and retries, with test credentials instead of the chain.
        let aws = runbook_capabilities::aws::load(&env.aws).await.unwrap();
        let conf = aws_sdk_ecs::config::Builder::from(&aws.sdk)
            .credentials_provider(creds())
            .build();
        let ecs = runbook_capabilities::ecs::live::Ecs::new(
            aws_sdk_ecs::Client::from_conf(conf),
            Duration::from_secs(30),
            [(
                "production/auth-service".to_string(),
                EcsTarget {
                    cluster: "c".into(),
                    service: "s".into(),
                },
            )]
            .into(),
        );
        let started = Instant::now();
        let err = ecs
            .describe("production", "auth-service", deadline())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err:?}");
        // The SDK's own operation timeout (0.8 s) ended it, not our 30 s
        // backstop nor the 10 s deadline.
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{:?}",
            started.elapsed()
        );
    }
}

mod durable {
    //! Durable runs against moto and redis-server: a run killed at any
    //! point and resumed, two runs at once, a rerun, concurrent flag
    //! writers, and a tampered journal.

    use super::*;

    use common::durable::*;

    /// kill -9 at points spread over a live bad-deploy run (seeded), then
    /// resume: every time exactly one rollback reached ECS, the journal
    /// verifies and every change has its intent before it.
    #[test]
    fn a_run_killed_anywhere_and_resumed_rolls_back_exactly_once() {
        let moto = Moto::start();
        let redis = RedisServer::start();
        // How long a whole run takes here, to spread the kills over it.
        let span = {
            let (live, _) = bad_deploy_service(&moto, &redis);
            let state = tempfile::tempdir().unwrap();
            let started = Instant::now();
            cli(state.path())
                .args(run_args(&live.env(), &soon()))
                .status()
                .unwrap();
            started.elapsed()
        };
        let trials = 6;
        for trial in 0..trials {
            let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
            let state = tempfile::tempdir().unwrap();
            let incident_start = soon();
            let env = live.env();
            // Evenly spread, a little past the end too.
            let delay = span.mul_f64((trial as f64 + 0.5) / trials as f64 * 1.1);
            let mut child = cli(state.path())
                .args(run_args(&env, &incident_start))
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            let _ = child.kill();
            let _ = child.wait();
            finish(state.path(), &env, &incident_start);
            assert_eq!(
                service_task_definition(&moto, &cluster, &service),
                format!("{family}:2"),
                "trial {trial} (killed after {delay:?})"
            );
            assert_eq!(applied_rollbacks(state.path()), 1, "trial {trial}");
        }
    }

    /// Two runs of one incident started together: one rolls back, the
    /// other is blocked naming the first (or, started after it finished,
    /// shows its result); runs of two incidents on one service: the lease
    /// and the precondition stop the second rollback.
    #[test]
    fn two_runs_at_once_roll_back_once() {
        let moto = Moto::start();
        let redis = RedisServer::start();
        for incidents in [None, Some(("first", "second"))] {
            for pair in 0..3 {
                let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
                let state = tempfile::tempdir().unwrap();
                let incident_start = soon();
                let env = live.env();
                let spawn = |incident: Option<&str>| {
                    let mut args = run_args(&env, &incident_start);
                    if let Some(i) = incident {
                        args.extend(["--incident", i]);
                    }
                    let mut cmd = cli(state.path());
                    cmd.args(args).stderr(Stdio::piped());
                    cmd.spawn().unwrap()
                };
                let a = spawn(incidents.map(|i| i.0));
                let b = spawn(incidents.map(|i| i.1));
                let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
                assert_eq!(
                    service_task_definition(&moto, &cluster, &service),
                    format!("{family}:2"),
                    "{incidents:?} pair {pair}"
                );
                assert_eq!(
                    applied_rollbacks(state.path()),
                    1,
                    "{incidents:?} pair {pair}"
                );
                for out in [&a, &b] {
                    if out.status.code() == Some(5) {
                        let err = String::from_utf8_lossy(&out.stderr);
                        assert!(
                            err.contains("blocked:") && err.contains("started by"),
                            "{err}"
                        );
                    }
                }
            }
        }
    }

    /// After a resolved run, running the incident again changes nothing:
    /// it shows the result (and `--new` is how to start over).
    #[test]
    fn a_rerun_of_a_resolved_incident_changes_nothing() {
        let moto = Moto::start();
        let redis = RedisServer::start();
        let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
        let state = tempfile::tempdir().unwrap();
        let incident_start = soon();
        let env = live.env();
        let first = output(
            cli(state.path())
                .args(run_args(&env, &incident_start))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
        let again = output(
            cli(state.path())
                .args(run_args(&env, &incident_start))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        assert_eq!(again.code, 0, "{}", again.stderr);
        assert!(
            again.stdout.contains("was handled by run"),
            "{}",
            again.stdout
        );
        assert_eq!(
            service_task_definition(&moto, &cluster, &service),
            format!("{family}:2")
        );
        assert_eq!(applied_rollbacks(state.path()), 1);
        // Started over with `--new`: the suspect deployment no longer runs
        // (moto keeps listing it; a real ECS lists the rollback's own
        // deployment, which the host marks as this incident's and the
        // plugin skips: `ecs::tests`); nothing is rolled back again.
        let mut args = run_args(&env, &incident_start);
        args.extend(["--new", "--json"]);
        let new = output(
            cli(state.path())
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        let report = new.json();
        let deploys = step(&report, "recent-deploys");
        assert_eq!(deploys["outcome"], "uncorrelated", "{report:#}");
        assert_eq!(
            deploys["facts"]["suspect"],
            format!("{family}:3"),
            "{deploys:#}"
        );
        assert_eq!(
            service_task_definition(&moto, &cluster, &service),
            format!("{family}:2")
        );
        assert_eq!(applied_rollbacks(state.path()), 1);
    }

    /// Eight processes setting eight keys in one flag file at once: no
    /// write lost, the file's mode and owner kept.
    #[test]
    fn concurrent_flag_writers_lose_nothing() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let flags = d.join("flags.json");
        std::fs::write(&flags, "{}\n").unwrap();
        std::fs::set_permissions(&flags, std::fs::Permissions::from_mode(0o640)).unwrap();
        let owner = std::fs::metadata(&flags).unwrap().uid();
        std::fs::write(
            d.join("env.toml"),
            "[flags]\nstore = \"file\"\npath = \"flags.json\"\n",
        )
        .unwrap();
        let writers: Vec<_> = (0..8)
            .map(|i| {
                let rb = d.join(format!("flip{i}.md"));
                std::fs::write(
                    &rb,
                    format!("---\nrunbook_id: RB-FLIP-{i}\ntitle: t\nservice: s\nseverity_scope: T\ntags: []\nfirst_action_step: x\nsteps:\n  - id: flip\n    plugin: set-flag\n    inputs: {{ key: KEY_{i}, value: \"on\" }}\n    grants: {{ feature-flags: {{ mutate: [KEY_{i}] }} }}\n    on: {{ set: resolved, unchanged: resolved, error: escalated, limit-exceeded: escalated }}\n---\n"),
                )
                .unwrap();
                let mut cmd = cli(&d.join("state"));
                cmd.args(["run", rb.to_str().unwrap(), "--env", "env.toml", "--yes"])
                    .current_dir(d);
                cmd.spawn().unwrap()
            })
            .collect();
        for mut w in writers {
            assert_eq!(w.wait().unwrap().code(), Some(0));
        }
        let on_disk: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&std::fs::read_to_string(&flags).unwrap()).unwrap();
        assert_eq!(on_disk.len(), 8, "{on_disk:?}");
        let meta = std::fs::metadata(&flags).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o640);
        assert_eq!(meta.uid(), owner);
    }

    /// `verify-log` names the line of a journal that was edited, removed
    /// or swapped.
    #[test]
    fn a_tampered_journal_is_named() {
        let state = tempfile::tempdir().unwrap();
        let out = output(runbook().env("RUNBOOK_STATE_DIR", state.path()).args([
            "run",
            RB0031,
            "--sim",
            "runbooks/scenarios/bad-deploy.toml",
            "--json",
        ]));
        assert_eq!(out.code, 0, "{}", out.stderr);
        let journal = journals(state.path()).remove(0);
        let verify = |expect_code: i32| {
            let v = common::run(&["verify-log", journal.to_str().unwrap()]);
            assert_eq!(v.code, expect_code, "{}", v.stdout);
            v.stdout
        };
        assert!(verify(0).contains("the chain is intact"));
        let original = std::fs::read_to_string(&journal).unwrap();
        let lines: Vec<&str> = original.lines().collect();
        let write = |l: Vec<String>| std::fs::write(&journal, l.join("\n") + "\n").unwrap();
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // The rollback's recorded result changed by hand.
        let i = lines
            .iter()
            .position(|l| l.contains("\"event\":\"applied\""))
            .unwrap();
        let mut edited = own(&lines);
        edited[i] = edited[i].replace("auth-service:41", "auth-service:40");
        write(edited);
        assert!(verify(3).contains(&format!("line {}: altered", i + 1)));
        // A line removed.
        let mut removed = own(&lines);
        removed.remove(i);
        write(removed);
        assert!(verify(3).contains(&format!("line {}:", i + 1)));
        // Two lines swapped.
        let mut swapped = own(&lines);
        swapped.swap(2, 3);
        write(swapped);
        assert!(verify(3).contains("line 3:"));
    }
}

/// RB-0031's escalation for real: PagerDuty- and Slack-style endpoints on
/// 127.0.0.1 (wiremock, a real HTTP server of each test's own), SNS in
/// moto delivering to one of them.
mod notify {
    use super::*;
    use wiremock::matchers::path as url_path;

    const PD: &str = "/v2/enqueue";
    /// The webhook's path carries its token, as Slack's do: it must never
    /// be printed.
    const SLACK: &str = "/services/T000/B000/webhook-token-secret";
    const SNS: &str = "/sns/security";
    const ROUTING_KEY: &str = "routing-key-secret";

    /// Token validation has no data (so the run goes straight to the
    /// escalation checks) and `signature_failures` are 37: signing keys
    /// may be involved, security is paged too.
    fn escalation_metrics() -> String {
        r#"
[[series]]
namespace = "AuthService"
name = "auth-service.token.signature_failures"
dimensions = { Service = "auth-service" }
statistic = "sum"
values = [37.0]
"#
        .into()
    }

    fn sns_topic(moto: &Moto, hook: &Hook) -> String {
        let conf = aws_sdk_sns::Config::builder()
            .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
            .region(aws_sdk_sns::config::Region::new("us-east-1"))
            .endpoint_url(&moto.url)
            .credentials_provider(creds())
            .build();
        let sns = aws_sdk_sns::Client::from_conf(conf);
        rt().block_on(async {
            let topic = sns
                .create_topic()
                .name(unique("security"))
                .send()
                .await
                .unwrap()
                .topic_arn()
                .unwrap()
                .to_string();
            sns.subscribe()
                .topic_arn(&topic)
                .protocol("http")
                .endpoint(format!("{}{SNS}", hook.uri()))
                .send()
                .await
                .unwrap();
            topic
        })
    }

    /// An environment whose `auth-team-oncall` is PagerDuty at `hook`,
    /// `security-team` an SNS topic and `incidents` a Slack webhook.
    fn live(moto: &Moto, hook: &Hook, extra: &str) -> Live {
        let (cluster, service, _) = ecs_service(moto);
        let live = Live::new(
            &escalation_metrics(),
            &dead_redis_url(),
            moto,
            (&cluster, &service),
            "[flags]\nstore = \"file\"\npath = \"flags.json\"",
        );
        let topic = sns_topic(moto, hook);
        live.set_notify(&format!(
            r#"
[notify]
timeout_ms = 2000
max_attempts = 3
{extra}

[notify.targets.auth-team-oncall]
kind = "pagerduty"
routing_key_env = "RUNBOOK_TEST_NOTIFY_KEY"
url = "{uri}{PD}"

[notify.targets.security-team]
kind = "sns"
topic_arn = "{topic}"

[notify.channels.incidents]
kind = "slack"
webhook_url_env = "RUNBOOK_TEST_NOTIFY_SLACK"
"#,
            uri = hook.uri()
        ));
        live
    }

    fn command(live: &Live, hook: &Hook, extra: &[&str]) -> Command {
        let mut cmd = live.command(extra);
        cmd.env("RUNBOOK_TEST_NOTIFY_KEY", ROUTING_KEY).env(
            "RUNBOOK_TEST_NOTIFY_SLACK",
            format!("{}{SLACK}", hook.uri()),
        );
        cmd
    }

    const ESCALATION_PATH: [&str; 3] = ["check-latency", "check-signing", "page-oncall"];

    #[test]
    fn an_escalated_run_pages_posts_and_tells_security_once_per_incident() {
        let moto = Moto::start();
        let hook = Hook::start(202);
        let live = live(&moto, &hook, "");
        let state = tempfile::tempdir().unwrap();
        let state_arg = state.path().to_str().unwrap().to_string();
        let args = ["--yes", "--incident", "INC-7", "--state-dir", &state_arg];
        let out = output(&mut command(&live, &hook, &args));
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        let report = out.json();
        assert_eq!(path(&report), ESCALATION_PATH, "{report:#}");
        assert_eq!(step(&report, "page-oncall")["facts"]["security"], "true");

        let pages = hook.bodies(PD);
        assert_eq!(pages.len(), 1, "{pages:#?}");
        assert_eq!(pages[0]["event_action"], "trigger");
        assert_eq!(pages[0]["routing_key"], ROUTING_KEY);
        assert_eq!(pages[0]["payload"]["severity"], "critical");
        assert_eq!(pages[0]["dedup_key"], "INC-7");
        assert!(
            pages[0]["payload"]["summary"]
                .as_str()
                .unwrap()
                .contains("check-signing degraded"),
            "{pages:#?}"
        );
        let posts = hook.bodies(SLACK);
        assert_eq!(posts.len(), 1, "{posts:#?}");
        assert!(
            posts[0]["text"]
                .as_str()
                .unwrap()
                .starts_with("Paged `auth-team-oncall` (triggered)"),
            "{posts:#?}"
        );
        // SNS (moto) delivered the security page to its HTTP subscriber.
        let security = hook.bodies(SNS);
        assert_eq!(security.len(), 1, "{security:#?}");
        assert!(
            security[0]["Message"]
                .as_str()
                .unwrap()
                .contains("token signing keys may be compromised"),
            "{security:#?}"
        );
        // Secrets stay out of everything the run leaves behind.
        let audit = std::fs::read_to_string(live.audit()).unwrap();
        for secret in ["webhook-token-secret", ROUTING_KEY] {
            for (what, text) in [
                ("stdout", &out.stdout),
                ("stderr", &out.stderr),
                ("audit log", &audit),
            ] {
                assert!(!text.contains(secret), "{what} shows `{secret}`");
            }
        }

        // The same incident again: its result, nobody paged again.
        let again = output(&mut command(&live, &hook, &args));
        assert_eq!(again.code, 1, "{}", again.stderr);
        assert_eq!(hook.bodies(PD).len(), 1);
        // Started over with `--new`: the same PagerDuty incident (its
        // dedup key), not a second one.
        let mut new_args = args.to_vec();
        new_args.push("--new");
        let new = output(&mut command(&live, &hook, &new_args));
        assert_eq!(new.code, 1, "{}", new.stderr);
        let pages = hook.bodies(PD);
        assert_eq!(pages.len(), 2);
        assert_eq!(pages[1]["dedup_key"], pages[0]["dedup_key"]);
    }

    /// Killed after the page went out and while the channel message was
    /// in flight, then resumed: the page is in the journal and is not
    /// sent again.
    #[test]
    fn a_resumed_run_does_not_page_twice() {
        let moto = Moto::start();
        let hook = Hook::start(202);
        // The first message hangs, so the run can be killed during it.
        hook.mount(
            Mock::given(method("POST"))
                .and(url_path(SLACK))
                .respond_with(ok(200).set_delay(Duration::from_secs(30)))
                .up_to_n_times(1)
                .with_priority(1),
        );
        let live = live(&moto, &hook, "");
        let state = tempfile::tempdir().unwrap();
        let state_arg = state.path().to_str().unwrap().to_string();
        let mut child = command(
            &live,
            &hook,
            &["--yes", "--incident", "INC-9", "--state-dir", &state_arg],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        hook.wait_for(SLACK, 1);
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(hook.bodies(PD).len(), 1);
        let run_id = std::fs::read_dir(state.path().join("runs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .unwrap()
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut resume = runbook();
        resume
            .args([
                "resume",
                &run_id,
                "--yes",
                "--json",
                "--state-dir",
                &state_arg,
            ])
            .env("RUNBOOK_TEST_NOTIFY_KEY", ROUTING_KEY)
            .env(
                "RUNBOOK_TEST_NOTIFY_SLACK",
                format!("{}{SLACK}", hook.uri()),
            )
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        let out = output(&mut resume);
        assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
        assert_eq!(out.json()["status"], "escalated");
        // One page for the incident; the message whose answer never came
        // is posted again (a message has no dedup key).
        assert_eq!(hook.bodies(PD).len(), 1, "{:#?}", hook.bodies(PD));
        assert_eq!(hook.bodies(SLACK).len(), 2);
        assert_eq!(hook.bodies(SNS).len(), 1);
    }

    /// PagerDuty answering 500: three attempts, then the step fails (and
    /// says so); nothing is posted as if the page had gone out.
    #[test]
    fn a_page_that_fails_is_a_step_error_after_bounded_retries() {
        let moto = Moto::start();
        let hook = Hook::start(202);
        hook.mount(
            Mock::given(method("POST"))
                .and(url_path(PD))
                .respond_with(ResponseTemplate::new(500))
                .with_priority(1),
        );
        let live = live(&moto, &hook, "");
        let out = output(&mut command(&live, &hook, &["--yes"]));
        let report = out.json();
        let page = step(&report, "page-oncall");
        assert_eq!(page["outcome"], "error", "{report:#}");
        let error = page["summary"].as_str().unwrap();
        assert!(
            error.contains(
                "`auth-team-oncall`: answered 500 Internal Server Error after 3 attempts"
            ),
            "{error}"
        );
        assert_eq!(hook.bodies(PD).len(), 3);
        assert!(hook.bodies(SLACK).is_empty());
        assert_eq!(report["status"], "escalated");
    }

    /// Without an approval nobody is paged: the run stops before it.
    #[test]
    fn an_unapproved_page_is_held_and_sends_nothing() {
        let moto = Moto::start();
        let hook = Hook::start(202);
        let live = live(&moto, &hook, "");
        let out = output(&mut command(&live, &hook, &[]));
        assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
        let report = out.json();
        assert_eq!(report["status"], "awaiting-approval");
        assert!(
            step(&report, "page-oncall")["awaiting_approval"]
                .as_str()
                .unwrap()
                .starts_with("page `auth-team-oncall` (critical)"),
            "{report:#}"
        );
        assert!(hook.bodies(PD).is_empty());
        assert!(hook.bodies(SLACK).is_empty());
    }
}
