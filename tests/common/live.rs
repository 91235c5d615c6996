//! Real servers for the live and fleet tests: `redis-server`, `moto_server`
//! (ECS), a webhook catcher, and an RB-0031 environment file wired to them.

use super::{RB0031, output, runbook};
use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < until, "{what} did not come up within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` of this test's own, so it can be stopped or paused.
pub struct RedisServer {
    pub child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("`redis-server` must be installed for the live tests (`apt-get install redis-server`)");
        let server = Self { child, port };
        wait_for("redis-server", || {
            server
                .client()
                .get_connection_with_timeout(Duration::from_millis(200))
                .is_ok()
        });
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A paused server must resume to die; a stopped one is already gone.
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server`: the one `.ci/run` started, or one of this test's own.
pub struct Moto {
    pub url: String,
    pub child: Option<Child>,
}

impl Moto {
    pub fn start() -> Self {
        if let Ok(url) = std::env::var("RUNBOOK_TEST_MOTO_URL") {
            return Self { url, child: None };
        }
        let port = free_port();
        let mut child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .env("MOTO_ECS_SERVICE_RUNNING", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "`moto_server` must be installed for the live tests (`pip install 'moto[server]'`)",
            );
        let url = format!("http://127.0.0.1:{port}");
        wait_for("moto_server", || {
            let exited = child.try_wait().ok().flatten();
            assert!(
                exited.is_none(),
                "moto exited ({exited:?}): install it with `pip install 'moto[server]'`"
            );
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self {
            url,
            child: Some(child),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

pub fn creds() -> aws_sdk_ecs::config::Credentials {
    aws_sdk_ecs::config::Credentials::new("test", "test", None, None, "tests")
}

pub fn ecs_client(moto: &Moto) -> aws_sdk_ecs::Client {
    let conf = aws_sdk_ecs::Config::builder()
        .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
        .region(aws_sdk_ecs::config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(creds())
        .build();
    aws_sdk_ecs::Client::from_conf(conf)
}

pub fn ssm_client(moto: &Moto) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(creds())
        .build();
    aws_sdk_ssm::Client::from_conf(conf)
}

pub fn unique(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!(
        "{prefix}-{}-{n}-{}",
        std::process::id(),
        super::now_nanos() % 1_000_000
    )
}

/// A cluster with `family:1..=3` registered and the service on revision 3.
pub fn ecs_service(moto: &Moto) -> (String, String, String) {
    let (cluster, service, family) = (unique("prod"), unique("auth"), unique("auth-td"));
    let ecs = ecs_client(moto);
    rt().block_on(async {
        ecs.create_cluster()
            .cluster_name(&cluster)
            .send()
            .await
            .unwrap();
        for rev in 1..=3 {
            let container = aws_sdk_ecs::types::ContainerDefinition::builder()
                .name("app")
                .image(format!("auth:{rev}"))
                .memory(128)
                .build();
            ecs.register_task_definition()
                .family(&family)
                .container_definitions(container)
                .send()
                .await
                .unwrap();
        }
        ecs.create_service()
            .cluster(&cluster)
            .service_name(&service)
            .task_definition(format!("{family}:3"))
            .desired_count(2)
            .send()
            .await
            .unwrap();
    });
    (cluster, service, family)
}

pub fn service_task_definition(moto: &Moto, cluster: &str, service: &str) -> String {
    let ecs = ecs_client(moto);
    rt().block_on(async {
        let out = ecs
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await
            .unwrap();
        let td = out.services()[0].task_definition().unwrap().to_string();
        td.rsplit('/').next().unwrap().to_string()
    })
}

/// Recorded RB-0031 metrics: token-validation p99 before and after the
/// remediation, and the success rate verification reads.
pub fn recorded(p99_before: f64, p99_after: f64, success: f64) -> String {
    format!(
        r#"
[[series]]
namespace = "AuthService"
name = "auth-service.token.validation.duration"
dimensions = {{ Service = "auth-service" }}
statistic = "p99"
values = [{p99_before:?}, {p99_after:?}]

[[series]]
namespace = "AuthService"
name = "auth-service.token.validation.success_rate"
dimensions = {{ Service = "auth-service" }}
statistic = "average"
values = [{success:?}]
"#
    )
}

pub fn session_outage_metrics() -> String {
    recorded(1850.0, 164.0, 99.7)
}

pub fn bad_deploy_metrics() -> String {
    recorded(1460.0, 121.0, 99.9)
}

/// Feature flags in a file in the environment's directory.
pub const FILE_FLAGS: &str = "[flags]\nstore = \"file\"\npath = \"flags.json\"";

/// RB-0031's bad-deploy path live on a new ECS service (`ecs_service`),
/// redis-server and file flags: the environment, and the service's
/// cluster, name and task family.
pub fn bad_deploy_service(moto: &Moto, redis: &RedisServer) -> (Live, (String, String, String)) {
    let (cluster, service, family) = ecs_service(moto);
    let live = Live::new(
        &bad_deploy_metrics(),
        &redis.url(),
        moto,
        (&cluster, &service),
        FILE_FLAGS,
    );
    (live, (cluster, service, family))
}

/// A wiremock server on a runtime of its own, so the test can stay
/// synchronous.
pub struct Hook {
    pub rt: tokio::runtime::Runtime,
    pub server: MockServer,
}

impl Hook {
    /// Answers every POST with `status`.
    pub fn start(status: u16) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(MockServer::start());
        let hook = Self { rt, server };
        hook.mount(
            Mock::given(method("POST"))
                .respond_with(ok(status))
                .with_priority(10),
        );
        hook
    }

    pub fn mount(&self, mock: Mock) {
        self.rt.block_on(mock.mount(&self.server));
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The JSON bodies POSTed to `path`, oldest first.
    pub fn bodies(&self, path: &str) -> Vec<Value> {
        self.rt
            .block_on(self.server.received_requests())
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.url.path() == path)
            .map(|r| serde_json::from_slice(&r.body).unwrap_or(Value::Null))
            .collect()
    }

    /// Waits (bounded) until `path` got `n` requests.
    pub fn wait_for(&self, path: &str, n: usize) {
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while self.bodies(path).len() < n {
            assert!(
                std::time::Instant::now() < until,
                "`{path}` got no {n} requests"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub fn ok(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({ "status": "success" }))
}

/// PagerDuty- and Slack-style endpoints on 127.0.0.1, shared by the tests
/// of this binary: every POST is accepted as PagerDuty and Slack accept
/// them.
pub fn notify_hook() -> &'static str {
    let hook = notify_hook_server();
    super::NOTIFY_HOOK.get_or_init(|| hook.uri())
}

/// The server behind [`notify_hook`]: what it was sent.
pub fn notify_hook_server() -> &'static Hook {
    static HOOK: std::sync::OnceLock<Hook> = std::sync::OnceLock::new();
    HOOK.get_or_init(|| Hook::start(202))
}

/// The `[notify]` section RB-0031's escalation needs, at the hook.
pub fn notify_section() -> String {
    let url = notify_hook();
    format!(
        "[notify.targets.auth-team-oncall]\nkind = \"pagerduty\"\nrouting_key_env = \"RUNBOOK_TEST_PD_KEY\"\nurl = \"{url}/v2/enqueue\"\n\n[notify.targets.security-team]\nkind = \"pagerduty\"\nrouting_key_env = \"RUNBOOK_TEST_PD_KEY\"\nurl = \"{url}/v2/enqueue\"\n\n[notify.channels.incidents]\nkind = \"slack\"\nwebhook_url_env = \"RUNBOOK_TEST_SLACK_URL\"\n"
    )
}

pub struct Live {
    pub dir: tempfile::TempDir,
}

impl Live {
    /// An environment file in a temp dir: `session-store` at `redis_url`,
    /// `production/auth-service` at moto's `cluster/service`, `flags` as given.
    pub fn new(
        metrics: &str,
        redis_url: &str,
        moto: &Moto,
        ecs: (&str, &str),
        flags: &str,
    ) -> Self {
        let live = Self::with_metrics(
            "[metrics]\nsource = \"replay\"\npath = \"metrics.toml\"",
            redis_url,
            moto,
            ecs,
            flags,
        );
        std::fs::write(live.dir.path().join("metrics.toml"), metrics).unwrap();
        live
    }

    /// The same, with `metrics` as the environment's `[metrics]` section.
    pub fn with_metrics(
        metrics: &str,
        redis_url: &str,
        moto: &Moto,
        ecs: (&str, &str),
        flags: &str,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = format!(
            r#"
[aws]
region = "us-east-1"
endpoint_url = "{moto}"
attempt_timeout_ms = 2000
operation_timeout_ms = 5000
max_attempts = 2

{metrics}

# Generous: the fault matrix runs seven live processes at once on two
# cores, where a 500 ms connect once timed out and sent a run down the
# `unreachable` path. A stopped server refuses at once whatever this is.
[redis.session-store]
url = "{redis_url}"
connect_timeout_ms = 3000
response_timeout_ms = 3000

[ecs."production/auth-service"]
cluster = "{cluster}"
service = "{service}"

{flags}

{notify}
"#,
            moto = moto.url,
            cluster = ecs.0,
            service = ecs.1,
            notify = notify_section(),
        );
        std::fs::write(dir.path().join("env.toml"), env).unwrap();
        Self { dir }
    }

    pub fn env(&self) -> String {
        self.dir
            .path()
            .join("env.toml")
            .to_string_lossy()
            .into_owned()
    }

    pub fn audit(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn run(&self, extra: &[&str]) -> super::Run {
        output(&mut self.command(extra))
    }

    /// Replaces the environment's `[notify]` sections with `section`.
    pub fn set_notify(&self, section: &str) {
        let path = self.dir.path().join("env.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let cut = text.find("\n[notify").unwrap();
        std::fs::write(&path, format!("{}\n{section}", &text[..cut])).unwrap();
    }

    pub fn command(&self, extra: &[&str]) -> Command {
        self.command_for(RB0031, extra)
    }

    /// [`Self::command`] for another runbook.
    pub fn command_for(&self, runbook_path: &str, extra: &[&str]) -> Command {
        let env = self.env();
        let audit = self.audit();
        let incident = humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() + Duration::from_secs(60),
        )
        .to_string();
        let mut args = vec![
            "run",
            runbook_path,
            "--env",
            &env,
            "--json",
            "--incident-start",
            &incident,
            "--audit-log",
        ];
        let audit = audit.to_string_lossy().into_owned();
        args.push(&audit);
        args.extend_from_slice(extra);
        let mut cmd = runbook();
        cmd.args(&args)
            .stdin(Stdio::null())
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE");
        cmd
    }
}
