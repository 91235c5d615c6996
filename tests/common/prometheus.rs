//! A real `prometheus` (Debian's) scraping an exporter the test serves on
//! 127.0.0.1: the auth service's RB-0031 metrics, with traffic that is
//! slow (a bad deploy, a session-store outage) until the test says it
//! recovered.

use super::live::{free_port, wait_for};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Latency histogram buckets (seconds), as the auth service exports them.
const BUCKETS: [f64; 5] = [0.1, 0.25, 0.5, 1.0, 2.5];

/// What the auth service has counted so far. Every scrape is a second of
/// traffic: 1,000 token validations while slow (2 % of them 1-2.5 s, so a
/// p99 of about 1.75 s), a million fast ones once recovered (so a minute's
/// window that still holds slow seconds has its p99 under 100 ms).
#[derive(Default)]
struct Traffic {
    /// No token is validated at all (every rate is 0, every quantile NaN).
    silent: bool,
    recovered: bool,
    fast: u64,
    slow: u64,
    /// 401/403 answers per edge service: only `api-gateway` sees them.
    rejections: BTreeMap<&'static str, u64>,
    scrapes: u64,
}

impl Traffic {
    fn tick(&mut self) {
        self.scrapes += 1;
        if self.silent {
            return;
        }
        if self.recovered {
            self.fast += 1_000_000;
        } else {
            self.fast += 980;
            self.slow += 20;
        }
        for service in ["api-gateway", "orders", "payments", "profile"] {
            let n = self.rejections.entry(service).or_default();
            if service == "api-gateway" {
                *n += 100;
            }
        }
    }

    fn exposition(&self) -> String {
        let mut out = String::from("# TYPE auth_token_validation_duration_seconds histogram\n");
        let sel = "service=\"auth-service\"";
        for le in BUCKETS {
            // Fast ones are all under the first bound, slow ones between
            // the last two.
            let count = self.fast + if le >= 2.5 { self.slow } else { 0 };
            out += &format!(
                "auth_token_validation_duration_seconds_bucket{{{sel},le=\"{le}\"}} {count}\n"
            );
        }
        let total = self.fast + self.slow;
        out += &format!(
            "auth_token_validation_duration_seconds_bucket{{{sel},le=\"+Inf\"}} {total}\n"
        );
        out += &format!(
            "auth_token_validation_duration_seconds_sum{{{sel}}} {}\n",
            self.fast as f64 * 0.02 + self.slow as f64 * 1.75
        );
        out += &format!("auth_token_validation_duration_seconds_count{{{sel}}} {total}\n");
        out += "# TYPE auth_token_validation_success_ratio gauge\n";
        out += &format!("auth_token_validation_success_ratio{{{sel}}} 0.999\n");
        out += "# TYPE auth_token_signature_failures_total counter\n";
        out += &format!("auth_token_signature_failures_total{{{sel}}} 0\n");
        out += "# TYPE http_auth_rejections_total counter\n";
        for (service, n) in &self.rejections {
            out += &format!("http_auth_rejections_total{{service=\"{service}\"}} {n}\n");
        }
        out
    }
}

struct Scrape(Arc<Mutex<Traffic>>);

impl Respond for Scrape {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut t = self.0.lock().unwrap();
        t.tick();
        ResponseTemplate::new(200).set_body_raw(t.exposition(), "text/plain; version=0.0.4")
    }
}

/// The exporter (wiremock, a real HTTP server) and the `prometheus` that
/// scrapes it every second, each on a free loopback port.
pub struct Prometheus {
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
    traffic: Arc<Mutex<Traffic>>,
    rt: tokio::runtime::Runtime,
    _exporter: MockServer,
}

impl Prometheus {
    pub fn start() -> Self {
        Self::start_with(false, None)
    }

    /// With alerting `rules` (a rule file's YAML), sending what fires to
    /// the Alertmanager at `alertmanager` (`host:port`) and sending it
    /// again every second while it fires.
    pub fn start_alerting(rules: &str, alertmanager: &str) -> Self {
        Self::start_with(false, Some((rules, alertmanager)))
    }

    /// An auth service that validates no tokens: its series exist, never
    /// change, and every quantile of them is NaN.
    pub fn start_silent() -> Self {
        Self::start_with(true, None)
    }

    fn start_with(silent: bool, alerting: Option<(&str, &str)>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let traffic = Arc::new(Mutex::new(Traffic {
            silent,
            ..Traffic::default()
        }));
        let exporter = rt.block_on(async {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path("/metrics"))
                .respond_with(Scrape(traffic.clone()))
                .mount(&server)
                .await;
            server
        });
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let target = exporter.address().to_string();
        let mut yaml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: edge\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        if let Some((rules, alertmanager)) = alerting {
            std::fs::write(dir.path().join("rules.yml"), rules).unwrap();
            yaml += &format!(
                "rule_files: [\"{}\"]\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{alertmanager}\"]\n",
                dir.path().join("rules.yml").display()
            );
        }
        std::fs::write(&config, yaml).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .arg("--rules.alert.resend-delay=1s")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("`prometheus` must be installed for these tests (`apt-get install prometheus`; scripts/test does)");
        let mut server = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
            traffic,
            rt,
            _exporter: exporter,
        };
        wait_for("prometheus", || {
            let exited = server.child.try_wait().ok().flatten();
            assert!(
                exited.is_none(),
                "prometheus exited ({exited:?}): {}",
                server.log()
            );
            server
                .get("/-/ready")
                .is_some_and(|(status, _)| status == 200)
        });
        server
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    fn get(&self, path_and_query: &str) -> Option<(u16, String)> {
        let url = format!("{}{path_and_query}", self.url);
        self.rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap();
            let r = client.get(url).send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.ok()?))
        })
    }

    /// The value of the instant query `expr` now, if it is a number.
    pub fn value(&self, expr: &str) -> Option<f64> {
        self.raw(expr)?.parse().ok().filter(|v: &f64| v.is_finite())
    }

    /// The value of the instant query `expr` now, as Prometheus wrote it.
    pub fn raw(&self, expr: &str) -> Option<String> {
        let mut url = reqwest::Url::parse(&format!("{}/api/v1/query", self.url)).unwrap();
        url.query_pairs_mut().append_pair("query", expr);
        let (status, body) = self.get(&format!("/api/v1/query?{}", url.query()?))?;
        if status != 200 {
            return None;
        }
        let answer: serde_json::Value = serde_json::from_str(&body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    }

    /// Waits (bounded: 90 s) until `expr` answers a value `ok` accepts.
    pub fn wait_until(&self, what: &str, expr: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let until = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(v) = self.value(expr).filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < until,
                "prometheus: {what} not seen within 90 s (`{expr}` = {:?}); its log:\n{}",
                self.value(expr),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// From now on the auth service is fast again.
    pub fn recover(&self) {
        self.traffic.lock().unwrap().recovered = true;
    }

    /// How many times Prometheus scraped the exporter.
    pub fn scrapes(&self) -> u64 {
        self.traffic.lock().unwrap().scrapes
    }

    /// `[metrics]` of `runbooks/environments/prometheus.example.toml`
    /// (RB-0031's metrics mapped to these), pointed at this server.
    pub fn metrics_section(&self) -> String {
        let example = std::fs::read_to_string(
            super::root().join("runbooks/environments/prometheus.example.toml"),
        )
        .unwrap();
        // `[metrics]` and its `[metrics.series."…"]` tables, nothing else.
        let mut lines = Vec::new();
        let mut inside = false;
        for line in example.lines() {
            if line.starts_with('[') {
                inside = line.starts_with("[metrics");
            }
            if inside {
                lines.push(line);
            }
        }
        let text = lines.join("\n");
        let url_line = text
            .lines()
            .find(|l| l.starts_with("url"))
            .expect("the example's `[metrics]` has a `url`");
        text.replace(url_line, &format!("url = \"{}\"", self.url))
            .lines()
            .filter(|l| !l.starts_with("bearer_token_env"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's `prometheus-alertmanager` on a free loopback port (clustering
/// off), routing every alert to one webhook with a bearer token from a
/// file, re-sending what still fires every 2 s and what resolved once.
pub struct Alertmanager {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Alertmanager {
    pub fn start(webhook: &str, token_file: &std::path::Path) -> Self {
        Self::with_http_config(
            webhook,
            &format!(
                "          authorization:\n            type: Bearer\n            credentials_file: \"{}\"\n",
                token_file.display()
            ),
        )
    }

    /// Delivering over HTTPS, trusting `ca`, with the client certificate
    /// `cert` and its `key` (mutual TLS).
    pub fn start_tls(
        webhook: &str,
        ca: &std::path::Path,
        cert: &std::path::Path,
        key: &std::path::Path,
    ) -> Self {
        Self::with_http_config(
            webhook,
            &format!(
                "          tls_config:\n            ca_file: \"{}\"\n            cert_file: \"{}\"\n            key_file: \"{}\"\n",
                ca.display(),
                cert.display(),
                key.display()
            ),
        )
    }

    /// `http_config`: its lines, indented under it.
    fn with_http_config(webhook: &str, http_config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: runbook\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 2s\nreceivers:\n  - name: runbook\n    webhook_configs:\n      - url: \"{webhook}\"\n        send_resolved: true\n        http_config:\n{http_config}"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("alertmanager.log")).unwrap())
            .spawn()
            .expect("`prometheus-alertmanager` must be installed for these tests (`apt-get install prometheus-alertmanager`; scripts/test does)");
        let mut am = Self { port, child, dir };
        wait_for("alertmanager", || {
            let exited = am.child.try_wait().ok().flatten();
            assert!(
                exited.is_none(),
                "alertmanager exited ({exited:?}): {}",
                am.log()
            );
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        am
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("alertmanager.log")).unwrap_or_default()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Stops this Prometheus now: what it had firing resolves once
    /// Alertmanager stops hearing of it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
