//! Alarm intake (`runbook serve`) against real servers on 127.0.0.1:
//! moto's SNS delivers CloudWatch alarm notifications, signed with its own
//! key, over HTTP to `runbook serve`, which checks them, submits runs to a
//! `nats-server` JetStream, and a `runbook worker` runs them. A second test
//! plays SNS with a certificate of its own (made by `openssl`), to confirm
//! a subscription and to try altered, misdirected and old-style messages.

mod common;

use base64::Engine;
use common::fleet::{Nats, Worker, aws, wait_until};
use common::live::{Moto, free_port, wait_for};
use common::tls::issue;
use common::{RB0031, root, runbook};
use runbook_journal::store::Store;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SIM: &str = "runbooks/scenarios/bad-deploy.toml";

/// A `runbook serve` process.
struct Serve {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    /// Serving HTTPS: a client that trusts its certificate's CA.
    https: Option<reqwest::blocking::Client>,
}

impl Serve {
    fn start(nats: &Nats, triggers: &Path, sns_endpoint: &str, dir: &Path) -> Self {
        let port = free_port();
        let log = dir.join("serve.log");
        let child = aws(runbook().args([
            "serve",
            "--triggers",
            triggers.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            &nats.url(),
        ]))
        .env("AWS_ENDPOINT_URL_SNS", sns_endpoint)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        let s = Self {
            child,
            port,
            log,
            https: None,
        };
        wait_for("`runbook serve` to listen", || {
            http(s.port, "GET", "/healthz", "").is_some_and(|(c, _)| c == 200)
        });
        s
    }

    /// Over HTTPS with `cert` and `key`; the CA beside `cert`
    /// (`server-ca.pem`) is trusted by [`Serve::get`].
    fn start_tls(nats: &Nats, triggers: &Path, dir: &Path, cert: &Path, key: &Path) -> Self {
        let port = free_port();
        let log = dir.join("serve.log");
        let child = aws(runbook().args([
            "serve",
            "--triggers",
            triggers.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--nats",
            &nats.url(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
        let ca = std::fs::read(cert.with_file_name("server-ca.pem")).unwrap();
        let https = reqwest::blocking::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let s = Self {
            child,
            port,
            log,
            https: Some(https),
        };
        wait_for("`runbook serve` to listen over HTTPS", || {
            s.get("/healthz").is_some()
        });
        s
    }

    /// `GET path`'s body, over HTTPS when serving it.
    fn get(&self, path: &str) -> Option<String> {
        match &self.https {
            Some(c) => c
                .get(format!("https://127.0.0.1:{}{path}", self.port))
                .send()
                .ok()
                .filter(|r| r.status().is_success())
                .and_then(|r| r.text().ok()),
            None => http(self.port, "GET", path, "")
                .filter(|(c, _)| *c == 200)
                .map(|(_, t)| t),
        }
    }

    fn post(&self, body: &str) -> (u16, String) {
        http(self.port, "POST", "/sns", body).expect("`runbook serve` answers")
    }

    fn counter(&self, name: &str) -> u64 {
        let text = self.get("/metrics").unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("runbook_intake_{name}_total ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request written as given (`raw`: request line, headers, body), for
/// what a well-behaved client would not send.
fn http_raw(port: u16, raw: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    s.write_all(raw.as_bytes()).ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|b| b.1).unwrap_or("");
    Some((code, body.to_string()))
}

/// One HTTP/1.0 request to 127.0.0.1: status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    http_with(port, method, path, "", body)
}

/// The same with `headers` (each line ending in `\r\n`).
fn http_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: text/plain; charset=UTF-8\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|b| b.1).unwrap_or("");
    Some((code, body.to_string()))
}

fn sns(moto: &Moto) -> aws_sdk_sns::Client {
    let conf = aws_sdk_sns::Config::builder()
        .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
        .region(aws_sdk_sns::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sns::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(&moto.url)
        .build();
    aws_sdk_sns::Client::from_conf(conf)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// CloudWatch's notification of `alarm` entering `state` at `at`.
fn alarm_message(alarm: &str, state: &str, at: &str) -> String {
    serde_json::json!({
        "AlarmName": alarm,
        "AlarmDescription": "auth-service 5xx rate",
        "AWSAccountId": "123456789012",
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed: 1 datapoint [12.0] was greater than the threshold (5.0).",
        "StateChangeTime": at,
        "Region": "US East (N. Virginia)",
        "AlarmArn": format!("arn:aws:cloudwatch:us-east-1:123456789012:alarm:{alarm}"),
        "OldStateValue": "OK",
    })
    .to_string()
}

fn triggers_file(dir: &Path, topics: &[&str], alarm: &str) -> std::path::PathBuf {
    let path = dir.join("triggers.toml");
    let topics: Vec<String> = topics.iter().map(|t| format!("{t:?}")).collect();
    std::fs::write(
        &path,
        format!(
            "topics = [{}]\n\n[[trigger]]\nname = \"auth-5xx\"\nalarm = \"{alarm}\"\nrunbook = {:?}\nsim = {:?}\nyes = true\n",
            topics.join(", "),
            root().join(RB0031).to_str().unwrap(),
            root().join(SIM).to_str().unwrap(),
        ),
    )
    .unwrap();
    path
}

/// An Alertmanager version 4 notification of one alert.
fn alert_payload(status: &str, fingerprint: &str, starts_at: &str) -> String {
    serde_json::json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"AuthTokenValidationSlow\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "runbook",
        "groupLabels": {"alertname": "AuthTokenValidationSlow"},
        "commonLabels": {"alertname": "AuthTokenValidationSlow", "service": "auth-service"},
        "commonAnnotations": {},
        "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status,
            "labels": {"alertname": "AuthTokenValidationSlow", "service": "auth-service"},
            "annotations": {},
            "startsAt": starts_at,
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph",
            "fingerprint": fingerprint,
        }],
    })
    .to_string()
}

/// Debian's Prometheus fires a rule, Debian's Alertmanager delivers it to
/// `runbook serve` with a bearer token from a file, again every 2 s while
/// it fires and once when it resolves: one run, which a worker completes;
/// every re-sent notification a duplicate; the resolution noted. Before
/// that, deliveries without the token, with another, or with a payload
/// this host does not read are refused, and after it a replay of the
/// firing starts nothing.
#[test]
fn alertmanager_alerts_become_one_run_per_firing() {
    use common::prometheus::{Alertmanager, Prometheus};
    let nats = Nats::start(1);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, dir.path(), "w0");
    let token = format!("am-{}", common::now_nanos());
    let token_file = dir.path().join("am.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let triggers = dir.path().join("triggers.toml");
    std::fs::write(
        &triggers,
        format!(
            "[alertmanager]\nbearer_token_file = \"am.token\"\n\n[[trigger]]\nname = \"auth-slow\"\nalertname = \"AuthTokenValidationSlow\"\nlabels = {{ service = \"auth-service\" }}\nrunbook = {:?}\nsim = {sim:?}\nyes = true\n\n[[trigger]]\nname = \"doomed\"\nalertname = \"Doomed\"\nrunbook = \"doomed.md\"\nsim = {sim:?}\n",
            root().join(RB0031).to_str().unwrap(),
            sim = root().join(SIM).to_str().unwrap(),
        ),
    )
    .unwrap();
    // A runbook that will be gone when its alert comes.
    std::fs::copy(root().join(RB0031), dir.path().join("doomed.md")).unwrap();
    let serve = Serve::start(&nats, &triggers, "http://127.0.0.1:9", dir.path());
    std::fs::remove_file(dir.path().join("doomed.md")).unwrap();
    let post = |headers: &str, body: &str| {
        http_with(serve.port, "POST", "/alertmanager", headers, body)
            .expect("`runbook serve` answers")
    };
    let auth = format!("Authorization: Bearer {token}\r\n");
    let firing = alert_payload("firing", "0123456789abcdef", "2026-12-03T23:10:01.123Z");
    let mut v3: serde_json::Value = serde_json::from_str(&firing).unwrap();
    v3["version"] = "3".into();
    let mut extra: serde_json::Value = serde_json::from_str(&firing).unwrap();
    extra["alerts"][0]["silencedBy"] = serde_json::json!([]);
    let bad = [
        ("", firing.clone(), 401),
        ("Authorization: Bearer wrong\r\n", firing.clone(), 401),
        (
            &format!("Authorization: Basic {token}\r\n")[..],
            firing.clone(),
            401,
        ),
        (&auth[..], "{".to_string(), 400),
        (&auth[..], v3.to_string(), 400),
        (&auth[..], extra.to_string(), 400),
    ];
    for (headers, body, want) in &bad {
        let (code, text) = post(headers, body);
        assert_eq!(code, *want, "{headers:?}: {text}");
        assert!(!text.contains(&token), "{text}");
    }
    // Over the cap: refused from its `Content-Length`, before the body.
    let (code, text) = http_raw(
        serve.port,
        &format!(
            "POST /alertmanager HTTP/1.0\r\n{auth}Content-Length: {}\r\n\r\n{{",
            9 << 20
        ),
    )
    .expect("`runbook serve` answers");
    assert_eq!(code, 413, "{text}");
    let refused = bad.len() as u64 + 1;
    assert_eq!(serve.counter("refused"), refused);
    assert_eq!(serve.counter("submitted"), 0);

    let webhook = format!("http://127.0.0.1:{}/alertmanager", serve.port);
    let am = Alertmanager::start(&webhook, &token_file);
    let rules = "groups:\n  - name: auth\n    interval: 1s\n    rules:\n      - alert: AuthTokenValidationSlow\n        expr: vector(1)\n        labels:\n          service: auth-service\n";
    let mut prom = Prometheus::start_alerting(rules, &format!("127.0.0.1:{}", am.port));
    let before = serve.counter("received");
    let until = std::time::Instant::now() + Duration::from_secs(90);
    while serve.counter("received") < before + 3 {
        assert!(
            std::time::Instant::now() < until,
            "Alertmanager did not deliver three notifications in 90 s\nserve: {}\nalertmanager: {}\nprometheus: {}",
            serve.log(),
            am.log(),
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Each delivery is counted once it has been answered.
    let answered = || -> u64 {
        [
            "submitted",
            "duplicates",
            "resolved",
            "unmatched",
            "unavailable",
        ]
        .map(|c| serve.counter(c))
        .iter()
        .sum()
    };
    wait_for("the deliveries to be answered", || {
        answered() + refused >= serve.counter("received")
    });
    assert_eq!(serve.counter("submitted"), 1, "{}", serve.log());
    assert!(serve.counter("duplicates") >= 2, "{}", serve.log());
    assert_eq!(serve.counter("refused"), refused, "{}", serve.log());
    let runs = || -> Vec<serde_json::Value> {
        let out = common::output(runbook().args(["runs", "--json", "--nats", &nats.url()]));
        out.stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|r: &serde_json::Value| {
                r["incident"]
                    .as_str()
                    .is_some_and(|i| i.starts_with("alert:AuthTokenValidationSlow:"))
            })
            .collect()
    };
    wait_until("the alert's run to end", 120, &[&worker], || {
        runs().first().is_some_and(|r| r["status"] == "resolved")
    });
    let incident = runs()[0]["incident"].as_str().unwrap().to_string();
    // `alert:{alertname}:{fingerprint}:{starts_at}`.
    let parts: Vec<&str> = incident.splitn(4, ':').collect();
    let (fingerprint, starts_at) = (parts[2].to_string(), parts[3].to_string());
    assert_eq!(fingerprint.len(), 16, "{incident}");

    // It resolves once Prometheus no longer says it fires.
    prom.stop();
    wait_for("the resolved notification", || {
        serve.counter("resolved") >= 1
    });
    // Recorded for the run it started: `runbook show` says so.
    let run_id = runs()[0]["run_id"].as_str().unwrap().to_string();
    let url = nats.url();
    let show = |extra: &[&str]| {
        let mut args = vec!["show", run_id.as_str(), "--nats", url.as_str()];
        args.extend_from_slice(extra);
        common::output(runbook().args(&args))
    };
    let shown = show(&["--json"]);
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let resolution = &shown.json()["alert_resolved"];
    assert_eq!(
        resolution["incident"],
        incident.as_str(),
        "{}",
        shown.stdout
    );
    assert!(
        resolution["ends_at"]
            .as_str()
            .is_some_and(|t| t > starts_at.as_str()),
        "{resolution}"
    );
    let text = show(&[]).stdout;
    assert!(
        text.contains("the alert that started it resolved at"),
        "{text}"
    );
    // A replay of the firing, credentials and all, starts nothing.
    let (code, text) = post(&auth, &alert_payload("firing", &fingerprint, &starts_at));
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("was already submitted"), "{text}");
    assert_eq!(serve.counter("submitted"), 1);
    assert_eq!(
        runs().len(),
        1,
        "one run for {} notifications",
        serve.counter("received")
    );
    let delivered = serve.counter("received") - refused;
    let (submitted, duplicates, resolved) = (
        serve.counter("submitted"),
        serve.counter("duplicates"),
        serve.counter("resolved"),
    );

    // An alert whose runbook is gone does not hold back the other of its
    // notification: that one is submitted, and the answer asks for both
    // again (the submitted one is then a duplicate).
    let mut two: serde_json::Value =
        serde_json::from_str(&alert_payload("firing", "fedcba9876543210", &starts_at)).unwrap();
    let mut doomed = two["alerts"][0].clone();
    doomed["labels"] = serde_json::json!({"alertname": "Doomed"});
    doomed["fingerprint"] = "0000000000000001".into();
    two["alerts"] = serde_json::json!([doomed, two["alerts"][0].clone()]);
    let (code, text) = post(&auth, &two.to_string());
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("`Doomed`: try again"), "{text}");
    assert!(
        text.contains("submitted incident `alert:AuthTokenValidationSlow:fedcba9876543210:"),
        "{text}"
    );
    let (code, text) = post(&auth, &two.to_string());
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("was already submitted"), "{text}");
    assert_eq!(serve.counter("submitted"), 2);
    eprintln!(
        "alertmanager: {delivered} notifications delivered (one of them a replay by the test), {submitted} run started, {duplicates} duplicates, {resolved} resolved, {refused} refused"
    );
}

/// moto's SNS delivers the alarm five times (five publishes of one state
/// change), a recovery, another alarm, and a message on a topic the
/// triggers file does not list: one run, which a worker completes; the
/// alarm's next transition is a second run.
#[test]
fn alarms_from_moto_sns_become_one_run_per_transition() {
    let moto = Moto::start();
    let nats = Nats::start(1);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, dir.path(), "w0");
    let client = sns(&moto);
    let rt = rt();
    let tag = common::now_nanos() % 1_000_000_000;
    let (topic, other) = rt.block_on(async {
        let t = client
            .create_topic()
            .name(format!("alarms-{tag}"))
            .send()
            .await
            .unwrap();
        let o = client
            .create_topic()
            .name(format!("other-{tag}"))
            .send()
            .await
            .unwrap();
        (t.topic_arn.unwrap(), o.topic_arn.unwrap())
    });
    let alarm = format!("auth-5xx-{tag}");
    let triggers = triggers_file(dir.path(), &[&topic], &alarm);
    let serve = Serve::start(&nats, &triggers, &moto.url, dir.path());
    let endpoint = format!("http://127.0.0.1:{}/sns", serve.port);
    // No `Subject`: moto (5.1) leaves it out of the text it signs, where
    // AWS signs it (the other test signs one with a subject).
    let publish = |topic: &str, message: String| {
        rt.block_on(async {
            client
                .publish()
                .topic_arn(topic)
                .message(message)
                .send()
                .await
                .unwrap();
        })
    };
    rt.block_on(async {
        for t in [&topic, &other] {
            client
                .subscribe()
                .topic_arn(t)
                .protocol("http")
                .endpoint(&endpoint)
                .send()
                .await
                .unwrap();
        }
    });
    let first = "2026-11-27T15:04:05.000+0000";
    for _ in 0..5 {
        publish(&topic, alarm_message(&alarm, "ALARM", first));
    }
    publish(&topic, alarm_message(&alarm, "OK", first));
    publish(&topic, alarm_message("billing-latency", "ALARM", first));
    publish(&other, alarm_message(&alarm, "ALARM", first));
    // moto delivers while it publishes; the counters say what came.
    wait_for("eight deliveries", || serve.counter("received") >= 8);
    let counts = [
        "received",
        "submitted",
        "duplicates",
        "unmatched",
        "refused",
        "unavailable",
    ]
    .map(|c| serve.counter(c));
    assert_eq!(counts, [8, 1, 4, 2, 1, 0], "{}", serve.log());
    let store = nats.store();
    let ended = |incident: &str| {
        store
            .incident_runs(incident)
            .unwrap_or_default()
            .first()
            .and_then(|r| runbook_journal::replay::finished(&store.read_run(r).ok()?).cloned())
            .is_some()
    };
    let incident = format!("us-east-1:{alarm}:{first}");
    wait_until("the alarm's run to end", 120, &[&worker], || {
        ended(&incident)
    });
    let runs = store.incident_runs(&incident).unwrap();
    assert_eq!(runs.len(), 1, "one run for five deliveries");
    let lines = store.read_run(&runs[0]).unwrap();
    let end = runbook_journal::replay::finished(&lines).unwrap();
    assert_eq!(end["status"], "resolved", "{lines:?}");
    let start = lines.iter().find(|l| l["event"] == "run-start").unwrap();
    assert_eq!(start["incident"], incident.as_str());
    // The next transition is another incident.
    let second = "2026-11-27T16:10:00.000+0000";
    publish(&topic, alarm_message(&alarm, "ALARM", second));
    wait_for("the second transition", || serve.counter("submitted") == 2);
    let incident = format!("us-east-1:{alarm}:{second}");
    wait_until("the second run to end", 120, &[&worker], || {
        ended(&incident)
    });
    assert!(
        serve
            .log()
            .contains("is not among the triggers file's `topics`")
    );
}

/// An alarm whose incident key starts with `-` (the default template
/// starts with the region, which this notification lacks without its
/// `AlarmArn`, and the triggers file writes `-` for a missing field) runs
/// like any other. The worker once passed
/// the key to a command line of its own, where `-…` read as a flag: the
/// alarm was refused at every delivery and never ran.
#[test]
fn an_alarm_whose_incident_key_starts_with_a_dash_runs() {
    let moto = Moto::start();
    let nats = Nats::start(1);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, dir.path(), "w0");
    let client = sns(&moto);
    let rt = rt();
    let tag = common::now_nanos() % 1_000_000_000;
    let topic = rt.block_on(async {
        let t = client
            .create_topic()
            .name(format!("dash-{tag}"))
            .send()
            .await
            .unwrap();
        t.topic_arn.unwrap()
    });
    let alarm = format!("auth-5xx-{tag}");
    let triggers = triggers_file(dir.path(), &[&topic], &alarm);
    let serve = Serve::start(&nats, &triggers, &moto.url, dir.path());
    let endpoint = format!("http://127.0.0.1:{}/sns", serve.port);
    let at = "2026-11-27T15:04:05.000+0000";
    let mut message: serde_json::Value =
        serde_json::from_str(&alarm_message(&alarm, "ALARM", at)).unwrap();
    message.as_object_mut().unwrap().remove("AlarmArn");
    rt.block_on(async {
        client
            .subscribe()
            .topic_arn(&topic)
            .protocol("http")
            .endpoint(&endpoint)
            .send()
            .await
            .unwrap();
        client
            .publish()
            .topic_arn(&topic)
            .message(message.to_string())
            .send()
            .await
            .unwrap();
    });
    wait_for("the delivery", || serve.counter("submitted") == 1);
    let incident = format!("-:{alarm}:{at}");
    let store = nats.store();
    wait_until("the run to end", 120, &[&worker], || {
        store
            .incident_runs(&incident)
            .unwrap_or_default()
            .first()
            .and_then(|r| runbook_journal::replay::finished(&store.read_run(r).ok()?).cloned())
            .is_some()
    });
    let runs = store.incident_runs(&incident).unwrap();
    assert_eq!(runs.len(), 1);
    let lines = store.read_run(&runs[0]).unwrap();
    let end = runbook_journal::replay::finished(&lines).unwrap();
    assert_eq!(end["status"], "resolved", "{lines:?}");
    let start = lines.iter().find(|l| l["event"] == "run-start").unwrap();
    assert_eq!(start["incident"], incident.as_str());
    let log = std::fs::read_to_string(&worker.log).unwrap();
    assert!(!log.contains("request refused"), "{log}");
}

/// What the fake SNS host saw: request lines.
type Seen = Arc<Mutex<Vec<String>>>;

/// Plays the SNS host for a certificate and subscription confirmations:
/// serves `cert` at `/SimpleNotificationService-test.pem`, answers 500 at
/// `/SimpleNotificationService-broken.pem`, and 200 to a confirmation.
fn fake_sns_host(cert: Vec<u8>) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(200) {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut auth = false;
            for _ in 0..100 {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                auth |= h
                    .to_ascii_lowercase()
                    .starts_with("authorization: aws4-hmac-sha256");
            }
            let target = first.split(' ').nth(1).unwrap_or("").to_string();
            log.lock().unwrap().push(format!("{target} signed={auth}"));
            let (status, body) = if target == "/SimpleNotificationService-test.pem" {
                ("200 OK", cert.clone())
            } else if target.starts_with("/?Action=ConfirmSubscription") {
                ("200 OK", b"<ConfirmSubscriptionResponse/>".to_vec())
            } else if target == "/SimpleNotificationService-broken.pem" {
                ("500 Internal Server Error", Vec::new())
            } else {
                ("404 Not Found", Vec::new())
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    (port, seen)
}

/// Signs `fields` (SNS's string to sign, written out here from AWS's
/// documentation) with `key` via `openssl dgst -sha256 -sign`.
fn sign(key: &Path, fields: &[(&str, &str)]) -> String {
    let text: String = fields.iter().map(|(k, v)| format!("{k}\n{v}\n")).collect();
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("`openssl` must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    base64::engine::general_purpose::STANDARD.encode(out.stdout)
}

/// SNS played with a certificate of the test's own: a signed subscription
/// confirmation is confirmed at its `SubscribeURL` (signed SigV4, for a
/// local SNS); a signed alarm is submitted; an altered message, a
/// certificate URL off AWS's SNS hosts, signature version 1, an unlisted
/// topic and a confirmation URL elsewhere are refused (403) without
/// fetching anything they name; a certificate that does not come is 503,
/// for SNS to deliver again.
#[test]
fn sns_messages_are_checked_as_aws_documents() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=sns.amazonaws.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("`openssl` must be installed");
    assert!(made.success());
    let (port, seen) = fake_sns_host(std::fs::read(&cert).unwrap());
    let nats = Nats::start(1);
    let topic = "arn:aws:sns:us-east-1:123456789012:auth-alarms";
    let alarm = "auth-5xx";
    let triggers = triggers_file(dir.path(), &[topic], alarm);
    let serve = Serve::start(
        &nats,
        &triggers,
        &format!("http://127.0.0.1:{port}"),
        dir.path(),
    );
    let cert_url = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem";
    // Messages are taken within an hour of their `Timestamp`.
    let sent = now_timestamp();
    let subscribe_url = format!(
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}&Token=tok-123"
    );
    let confirmation_to =
        |message: &str, signed_message: &str, url: &str, version: &str, subscribe_url: &str| {
            let signature = sign(
                &key,
                &[
                    ("Message", signed_message),
                    ("MessageId", "c-1"),
                    ("SubscribeURL", subscribe_url),
                    ("Timestamp", &sent),
                    ("Token", "tok-123"),
                    ("TopicArn", topic),
                    ("Type", "SubscriptionConfirmation"),
                ],
            );
            serde_json::json!({
                "Type": "SubscriptionConfirmation",
                "MessageId": "c-1",
                "Token": "tok-123",
                "TopicArn": topic,
                "Message": message,
                "SubscribeURL": subscribe_url,
                "Timestamp": &sent,
                "SignatureVersion": version,
                "Signature": signature,
                "SigningCertURL": url,
            })
            .to_string()
        };
    let confirmation = |message: &str, signed_message: &str, url: &str, version: &str| {
        confirmation_to(message, signed_message, url, version, &subscribe_url)
    };
    let hello = "You have chosen to subscribe to the topic.";
    let (code, said) = serve.post(&confirmation(hello, hello, cert_url, "2"));
    assert_eq!(code, 200, "{said}\n{}", serve.log());
    let confirmed = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|l| {
                l.starts_with("/?Action=ConfirmSubscription") && l.contains("Token=tok-123")
            })
            .count()
    };
    assert_eq!(confirmed(&seen), 1, "{:?}", seen.lock().unwrap());
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .all(|l| l.ends_with("signed=true")),
        "requests to a local SNS are signed"
    );
    let fetched = seen.lock().unwrap().len();

    // Altered after signing.
    let (code, said) = serve.post(&confirmation(
        "Subscribe me elsewhere.",
        hello,
        cert_url,
        "2",
    ));
    assert_eq!(code, 403);
    assert!(said.contains("does not match"), "{said}");
    // Signed properly, but the certificate would come from off AWS's hosts.
    for url in [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem?Action=Publish&TopicArn=x&Message=y",
        "https://evil.example/SimpleNotificationService-test.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-test.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-test.pem",
    ] {
        let (code, said) = serve.post(&confirmation(hello, hello, url, "2"));
        assert_eq!(code, 403, "{url}");
        assert!(
            said.contains("not on an SNS host")
                || said.contains("not HTTPS")
                || said.contains("does not name an SNS certificate"),
            "{said}"
        );
    }
    let (code, said) = serve.post(&confirmation(hello, hello, cert_url, "1"));
    assert_eq!(code, 403);
    assert!(said.contains("`SignatureVersion` to `2`"), "{said}");
    // Signed, but confirming at a URL off AWS's SNS hosts, or another topic.
    for elsewhere in [
        format!("https://evil.example/?Action=ConfirmSubscription&TopicArn={topic}&Token=tok-123"),
        "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-east-1:1:x&Token=tok-123".to_string(),
    ] {
        let (code, said) = serve.post(&confirmation_to(hello, hello, cert_url, "2", &elsewhere));
        assert_eq!(code, 403, "{elsewhere}");
        assert!(said.contains("SubscribeURL"), "{said}");
    }
    // Nothing more confirmed, and nothing fetched but the cached certificate.
    assert_eq!(confirmed(&seen), 1);
    assert_eq!(
        seen.lock().unwrap().len(),
        fetched,
        "{:?}",
        seen.lock().unwrap()
    );

    let notification = |topic: &str, message: &str, url: &str| {
        let fields = [
            ("Message", message),
            ("MessageId", "n-1"),
            ("Subject", "ALARM: auth-5xx"),
            ("Timestamp", &sent),
            ("TopicArn", topic),
            ("Type", "Notification"),
        ];
        serde_json::json!({
            "Type": "Notification",
            "MessageId": "n-1",
            "TopicArn": topic,
            "Subject": "ALARM: auth-5xx",
            "Message": message,
            "Timestamp": &sent,
            "SignatureVersion": "2",
            "Signature": sign(&key, &fields),
            "SigningCertURL": url,
            "MessageAttributes": {},
        })
        .to_string()
    };
    let fired = alarm_message(alarm, "ALARM", "2026-11-27T15:04:05.000+0000");
    let (code, said) = serve.post(&notification(topic, &fired, cert_url));
    assert_eq!(code, 200, "{said}");
    assert!(
        said.contains("submitted incident `us-east-1:auth-5xx:2026-11-27T15:04:05.000+0000`"),
        "{said}"
    );
    // A topic the triggers file does not list: refused before any fetch.
    let elsewhere = "arn:aws:sns:us-east-1:123456789012:someone-elses";
    let (code, said) = serve.post(&notification(elsewhere, &fired, cert_url));
    assert_eq!(code, 403);
    assert!(said.contains("not among"), "{said}");
    // The certificate does not come: SNS is asked to deliver again.
    let broken = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-broken.pem";
    let (code, said) = serve.post(&notification(topic, &fired, broken));
    assert_eq!(code, 503, "{said}");
    assert_eq!(serve.counter("submitted"), 1);
    assert_eq!(serve.counter("unavailable"), 1);
    // Not JSON at all.
    assert_eq!(serve.post("Action=Publish&Message=hi").0, 403);
}

fn now_timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// Flooded with messages for a listed topic (an ARN anyone can copy),
/// each naming a certificate URL of its own: at most ten fetches a minute
/// go out, whatever comes in; a stale message fetches nothing.
#[test]
fn a_flood_of_certificate_urls_fetches_little() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = fake_sns_host(Vec::new());
    let nats = Nats::start(1);
    let topic = "arn:aws:sns:us-east-1:123456789012:auth-alarms";
    let triggers = triggers_file(dir.path(), &[topic], "auth-5xx");
    let serve = Serve::start(
        &nats,
        &triggers,
        &format!("http://127.0.0.1:{port}"),
        dir.path(),
    );
    let message = |n: usize, timestamp: &str| {
        serde_json::json!({
            "Type": "Notification",
            "MessageId": format!("flood-{n}"),
            "TopicArn": topic,
            "Message": "x",
            "Timestamp": timestamp,
            "SignatureVersion": "2",
            "Signature": "AAAA",
            "SigningCertURL": format!("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-flood{n}.pem"),
        })
        .to_string()
    };
    // Stale: refused before any fetch.
    let (code, said) = serve.post(&message(0, "2026-11-27T15:00:00.000Z"));
    assert_eq!(code, 403, "{said}");
    assert!(said.contains("more than an hour"), "{said}");
    assert!(seen.lock().unwrap().is_empty());
    let sent = 120;
    let mut codes = std::collections::BTreeMap::new();
    for n in 1..=sent {
        let (code, _) = serve.post(&message(n, &now_timestamp()));
        *codes.entry(code).or_insert(0) += 1;
    }
    let fetched = seen.lock().unwrap().len();
    eprintln!(
        "sns flood: {sent} messages in, {fetched} certificate requests out, answers {codes:?}"
    );
    // Ten URLs a minute (each 404 here, which is not tried again).
    assert!(fetched <= 10, "{fetched}: {:?}", seen.lock().unwrap());
    assert_eq!(codes.get(&503), Some(&(sent - fetched)), "{codes:?}");
}

/// The example triggers file checks, and says what it maps.
#[test]
fn the_example_triggers_file_checks() {
    let out = common::run(&[
        "serve",
        "--triggers",
        "runbooks/triggers.example.toml",
        "--check",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("auth-5xx: alarm `auth-service-5xx-rate` in `ALARM`"),
        "{}",
        out.stdout
    );
}

/// An alert delivered with a W3C `traceparent` becomes a run in that
/// trace: the worker's run span is the delivery's child and carries the
/// alert's identity and the trigger; the report and `runbook show` name
/// the trace.
#[test]
fn an_alerts_run_joins_the_deliverys_trace_and_carries_the_alert() {
    use common::otlp::Collector;
    let collector = Collector::start();
    let nats = Nats::start(1);
    let dir = tempfile::tempdir().unwrap();
    let endpoint = collector.endpoint();
    let worker = Worker::start_with(
        &nats,
        dir.path(),
        "w0",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Sent as soon as a span ends, not every 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let token = format!("am-{}", common::now_nanos());
    let token_file = dir.path().join("am.token");
    std::fs::write(&token_file, &token).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let triggers = dir.path().join("triggers.toml");
    std::fs::write(
        &triggers,
        format!(
            "[alertmanager]\nbearer_token_file = \"am.token\"\n\n[[trigger]]\nname = \"auth-slow\"\nalertname = \"AuthTokenValidationSlow\"\nrunbook = {:?}\nsim = {:?}\nyes = true\n",
            root().join(RB0031).to_str().unwrap(),
            root().join(SIM).to_str().unwrap(),
        ),
    )
    .unwrap();
    let serve = Serve::start(&nats, &triggers, "http://127.0.0.1:9", dir.path());
    let (trace, caller) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let fingerprint = format!("{:016x}", common::now_nanos() as u64);
    let (code, text) = http_with(
        serve.port,
        "POST",
        "/alertmanager",
        &format!("Authorization: Bearer {token}\r\ntraceparent: 00-{trace}-{caller}-01\r\n"),
        &alert_payload("firing", &fingerprint, "2026-12-04T05:00:00Z"),
    )
    .expect("`runbook serve` answers");
    assert_eq!(code, 200, "{text}");
    let spans = collector.wait_for("the alert's run span", |spans| {
        spans.iter().any(|s| s.name == "run RB-0031")
    });
    let run = spans.iter().find(|s| s.name == "run RB-0031").unwrap();
    assert_eq!(run.trace_id, trace, "{run:#?}");
    assert_eq!(run.parent, caller, "the run is the delivery's child");
    assert_eq!(run.attr("runbook.alert.name"), "AuthTokenValidationSlow");
    assert_eq!(run.attr("runbook.alert.fingerprint"), fingerprint);
    assert_eq!(run.attr("runbook.alert.starts_at"), "2026-12-04T05:00:00Z");
    assert_eq!(run.attr("runbook.trigger"), "auth-slow");
    assert_eq!(
        run.attr("runbook.incident"),
        format!("alert:AuthTokenValidationSlow:{fingerprint}:2026-12-04T05:00:00Z")
    );
    assert!(
        spans
            .iter()
            .any(|s| s.parent == run.span_id && s.name.starts_with("step ")),
        "its steps under it: {spans:#?}"
    );
    let run_id = run.attr("runbook.run_id").to_string();
    let shown = common::output(runbook().args(["show", &run_id, "--json", "--nats", &nats.url()]));
    assert_eq!(shown.json()["trace_id"], trace, "{}", shown.stdout);
    drop(worker);
}

/// Alertmanager's client certificate (mutual TLS) instead of a token:
/// `runbook serve --tls-cert` with `[alertmanager] client_ca_file`.
/// Debian's Alertmanager delivers over HTTPS with its certificate and one
/// run starts; a client with no certificate is refused (401), one whose
/// certificate another CA signed fails its handshake, SNS's route still
/// takes connections without one, and HTTP without TLS is refused at start.
#[test]
fn alertmanager_delivers_over_mutual_tls() {
    use common::prometheus::{Alertmanager, Prometheus};
    let nats = Nats::start(1);
    let dir = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, dir.path(), "w0");
    for name in ["server", "alertmanager", "rogue"] {
        issue(dir.path(), name);
    }
    let triggers = dir.path().join("triggers.toml");
    std::fs::write(
        &triggers,
        format!(
            "[alertmanager]\nclient_ca_file = \"alertmanager-ca.pem\"\n\n[[trigger]]\nname = \"auth-slow\"\nalertname = \"AuthTokenValidationSlow\"\nrunbook = {:?}\nsim = {:?}\nyes = true\n",
            root().join(RB0031).to_str().unwrap(),
            root().join(SIM).to_str().unwrap(),
        ),
    )
    .unwrap();
    // Without HTTPS a client certificate cannot come: refused at start.
    let plain = common::output(aws(runbook().args([
        "serve",
        "--triggers",
        triggers.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--nats",
        &nats.url(),
    ])));
    assert_eq!(plain.code, 2, "{}", plain.stderr);
    // `--check` says so too, before anything connects.
    let checked = common::output(runbook().args([
        "serve",
        "--triggers",
        triggers.to_str().unwrap(),
        "--check",
    ]));
    assert_eq!(checked.code, 2, "{}", checked.stderr);
    assert!(
        checked
            .stderr
            .contains("`[alertmanager] client_ca_file` asks for client certificates")
    );
    assert!(
        plain
            .stderr
            .contains("`[alertmanager] client_ca_file` asks for client certificates")
            && plain.stderr.contains("--tls-cert"),
        "{}",
        plain.stderr
    );
    let serve = Serve::start_tls(
        &nats,
        &triggers,
        dir.path(),
        &dir.path().join("server.pem"),
        &dir.path().join("server.key"),
    );
    let url = format!("https://127.0.0.1:{}/alertmanager", serve.port);
    let client = |identity: Option<&str>| {
        let ca = std::fs::read(dir.path().join("server-ca.pem")).unwrap();
        let mut b = reqwest::blocking::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .timeout(Duration::from_secs(10));
        if let Some(name) = identity {
            let mut pem = std::fs::read(dir.path().join(format!("{name}.pem"))).unwrap();
            pem.extend(std::fs::read(dir.path().join(format!("{name}.key"))).unwrap());
            b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    };
    let body = alert_payload("firing", "00000000000000aa", "2026-12-04T05:30:00Z");
    // No certificate: the handshake goes on, the delivery is refused.
    let none = client(None).post(&url).body(body.clone()).send().unwrap();
    assert_eq!(none.status().as_u16(), 401);
    assert!(none.text().unwrap().contains("no client certificate"));
    // Another CA's certificate: no handshake.
    let rogue = client(Some("rogue")).post(&url).body(body.clone()).send();
    assert!(rogue.is_err(), "{rogue:?}");
    // SNS's route takes connections without a certificate.
    let health = client(None)
        .get(format!("https://127.0.0.1:{}/healthz", serve.port))
        .send()
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(serve.counter("submitted"), 0);

    // Debian's Alertmanager, with the certificate our CA signed.
    let am = Alertmanager::start_tls(
        &url,
        &dir.path().join("server-ca.pem"),
        &dir.path().join("alertmanager.pem"),
        &dir.path().join("alertmanager.key"),
    );
    let rules = "groups:\n  - name: auth\n    interval: 1s\n    rules:\n      - alert: AuthTokenValidationSlow\n        expr: vector(1)\n        labels:\n          service: auth-service\n";
    let _prom = Prometheus::start_alerting(rules, &format!("127.0.0.1:{}", am.port));
    wait_until(
        "Alertmanager's delivery over mutual TLS",
        90,
        &[&worker],
        || serve.counter("submitted") >= 1,
    );
    assert_eq!(serve.counter("submitted"), 1, "{}", serve.log());
    eprintln!(
        "mutual TLS: Alertmanager delivered {} notification(s), {} run submitted",
        serve.counter("received"),
        serve.counter("submitted")
    );
}
