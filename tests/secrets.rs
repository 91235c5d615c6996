//! Secrets from AWS Secrets Manager (moto's, in server mode) instead of
//! environment variables: RB-0031 live against a redis-server that wants
//! a password, paging PagerDuty with a routing key, both named by
//! `*_secret` in the environment file; each read once per run, before any
//! step, and never printed, journaled or reported. A secret that cannot be
//! read stops the run before its first step, naming the field and the
//! secret.

mod common;

use common::live::*;
use common::output;
use std::process::{Child, Command, Stdio};

/// A redis-server that wants `password`.
struct Locked {
    child: Child,
    port: u16,
}

impl Locked {
    fn start(password: &str) -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--requirepass",
                password,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`redis-server` must be installed for the live tests");
        wait_for("redis-server", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port }
    }
}

impl Drop for Locked {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn secrets_client(moto: &Moto) -> (tokio::runtime::Runtime, aws_sdk_secretsmanager::Client) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conf = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "test",
        ))
        .build();
    (rt, aws_sdk_secretsmanager::Client::from_conf(conf))
}

fn put_secret(moto: &Moto, name: &str, value: &str) {
    let (rt, client) = secrets_client(moto);
    rt.block_on(
        client
            .create_secret()
            .name(name)
            .secret_string(value)
            .send(),
    )
    .expect("moto creates the secret");
}

/// The environment `live` wrote, its redis password, PagerDuty routing
/// key and Slack webhook URL named by `*_secret` instead of variables.
fn with_secrets(live: &Live, redis_secret: &str, pd_secret: &str, slack_secret: &str) {
    let path = live.dir.path().join("env.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace(
            "[redis.session-store]\n",
            &format!("[redis.session-store]\npassword_secret = \"{redis_secret}\"\n"),
        )
        .replace(
            "routing_key_env = \"RUNBOOK_TEST_PD_KEY\"",
            &format!("routing_key_secret = \"{pd_secret}\""),
        )
        .replace(
            "webhook_url_env = \"RUNBOOK_TEST_SLACK_URL\"",
            &format!("webhook_url_secret = \"{slack_secret}\""),
        );
    std::fs::write(&path, text).unwrap();
}

fn run(live: &Live, state: &std::path::Path) -> common::Run {
    let mut cmd = live.command(&["--yes", "--state-dir", state.to_str().unwrap()]);
    // Only the secrets named: no variable to fall back on.
    cmd.env_remove("RUNBOOK_TEST_PD_KEY")
        .env_remove("RUNBOOK_TEST_SLACK_URL");
    output(&mut cmd)
}

fn everything_written(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&everything_written(&p));
        } else {
            out.push_str(&String::from_utf8_lossy(
                &std::fs::read(&p).unwrap_or_default(),
            ));
        }
    }
    out
}

#[test]
fn rb0031_reads_its_redis_password_and_routing_key_from_secrets_manager() {
    let moto = Moto::start();
    let tag = common::now_nanos() % 1_000_000_000;
    let password = format!("redis-pw-{tag}");
    let routing_key = format!("pd-key-{tag}");
    let redis = Locked::start(&password);
    let redis_secret = format!("runbook/{tag}/session-store");
    let pd_secret = format!("runbook/{tag}/pagerduty");
    put_secret(&moto, &redis_secret, &password);
    put_secret(
        &moto,
        &pd_secret,
        &serde_json::json!({ "routing_key": routing_key, "note": "unused" }).to_string(),
    );
    // The webhook URL carries a token: a path of this test's own.
    let slack_path = format!("/slack-{tag}");
    let slack_secret = format!("runbook/{tag}/slack");
    put_secret(
        &moto,
        &slack_secret,
        &format!("{}{slack_path}", notify_hook()),
    );
    // The bad-deploy path: redis answers (with its password), the service
    // is rolled back, and RB-0031 pages.
    let (cluster, service, family) = ecs_service(&moto);
    // Latency that does not recover after the rollback: RB-0031 escalates
    // and pages.
    let live = Live::new(
        &recorded(1460.0, 1400.0, 99.9),
        &format!("redis://127.0.0.1:{}", redis.port),
        &moto,
        (&cluster, &service),
        FILE_FLAGS,
    );
    with_secrets(
        &live,
        &redis_secret,
        &format!("{pd_secret}#routing_key"),
        &slack_secret,
    );
    let state = tempfile::tempdir().unwrap();
    let out = run(&live, state.path());
    let report = out.json();
    let session = common::step(&report, "session-store");
    assert_eq!(
        session["outcome"], "healthy",
        "redis answered with the secret's password: {session:#}\n{}",
        out.stderr
    );
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    assert_eq!(report["status"], "escalated", "{report:#}");
    // It pages with the key from the secret's JSON, and posts to
    // `#incidents` at the URL the secret holds.
    let hook = notify_hook_server();
    assert!(
        !hook.bodies(&slack_path).is_empty(),
        "posted at the secret's webhook URL: {report:#}"
    );
    let keys: Vec<String> = hook
        .bodies("/v2/enqueue")
        .iter()
        .filter_map(|b| b["routing_key"].as_str().map(str::to_string))
        .collect();
    assert!(keys.contains(&routing_key), "{keys:?}");
    // Never printed, journaled or reported.
    let written = everything_written(state.path()) + &everything_written(live.dir.path());
    for secret in [&password, &routing_key, &slack_path] {
        assert!(!out.stdout.contains(secret.as_str()), "in the report");
        assert!(!out.stderr.contains(secret.as_str()), "on stderr");
        assert!(
            !written.contains(secret.as_str()),
            "in a file the run wrote"
        );
    }

    // A secret that is not there: refused before any step, naming the
    // field and the secret; no run journaled.
    let (cluster, service, _) = ecs_service(&moto);
    let live = Live::new(
        &bad_deploy_metrics(),
        &format!("redis://127.0.0.1:{}", redis.port),
        &moto,
        (&cluster, &service),
        FILE_FLAGS,
    );
    with_secrets(
        &live,
        &format!("runbook/{tag}/missing"),
        &format!("{pd_secret}#routing_key"),
        &slack_secret,
    );
    let state = tempfile::tempdir().unwrap();
    let out = run(&live, state.path());
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("`redis.session-store`")
            && out.stderr.contains(&format!(
                "secret `runbook/{tag}/missing` could not be read from AWS Secrets Manager"
            )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("hint:"), "{}", out.stderr);
    assert!(!everything_written(state.path()).contains("step-start"));
    assert!(!out.stderr.contains(&password), "{}", out.stderr);
    // (The refused run journaled its start and nothing else: `runbook
    // resume` continues it once the secret is there.)
    // A JSON key the secret lacks: said the same way.
    with_secrets_key(
        &live,
        &format!("runbook/{tag}/missing"),
        &format!("{pd_secret}#nope"),
        &redis_secret,
    );
    let state = tempfile::tempdir().unwrap();
    let out = run(&live, state.path());
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "secret `{pd_secret}` has no non-empty string under key `nope`"
        )),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(&routing_key), "{}", out.stderr);
}

/// `with_secrets` again on a file it already changed.
fn with_secrets_key(live: &Live, old_redis: &str, pd: &str, redis: &str) {
    let path = live.dir.path().join("env.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let pd_line = text
        .lines()
        .find(|l| l.starts_with("routing_key_secret"))
        .unwrap()
        .to_string();
    let text = text
        .replace(old_redis, redis)
        .replace(&pd_line, &format!("routing_key_secret = \"{pd}\""));
    std::fs::write(&path, text).unwrap();
}
