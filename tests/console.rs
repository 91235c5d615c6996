//! The responder console (`runbook console`) as a person uses it: headless
//! Chromium (Debian's `chromium` and `chromium-driver`, which
//! `scripts/test` installs) driven over WebDriver, against a fleet run of
//! RB-0031 parked at its rollback under a rule of two approvers from
//! `sre` (nats-server, a `runbook worker`, moto, redis-server). The run
//! list, the parked run's page with the change it waits for, two people
//! approving in turn, the timeline going on to `resolved`; and the
//! requests a browser would not send (no session, a forged form, a body
//! too large, too many sign-ins) refused with nothing recorded.

mod common;

use common::fleet::{Nats, Worker, aws, one_at_a_time, submit_command, wait_until};
use common::live::*;
use common::{output, runbook};
use fantoccini::{Client, ClientBuilder, Locator};
use runbook_journal::store::Store;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process killed when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `runbook console` on a free port over `store` (`--nats URL` or
/// `--state-dir DIR`, and more): its address and process.
fn console(store: &[&str], approvers: &Path, log: &Path) -> (String, Killed) {
    console_with(store, &[], approvers, log)
}

/// [`console`] with `env` set.
fn console_with(
    args: &[&str],
    env: &[(&str, &str)],
    approvers: &Path,
    log: &Path,
) -> (String, Killed) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = aws(runbook()
        .args(["console", "--listen", &addr])
        .args(args)
        .arg("--approvers")
        .arg(approvers)
        .envs(env.iter().copied()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap())
    .spawn()
    .unwrap();
    let base = format!("http://{addr}");
    let client = http();
    wait_for("the console's /healthz", || {
        client
            .get(format!("{base}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    (base, Killed(child))
}

/// `runbook submit` of `runbook` (with `--yes`) by the approvers' run
/// starter, waited for (bounded) until it parks: the run and its step.
fn submit_and_park(
    nats: &Nats,
    worker: &Worker,
    runbook_path: &str,
    env: &str,
    incident: &str,
) -> (String, String) {
    let submitted = output(
        submit_command(nats, runbook_path, env, incident, &["--yes"])
            .env("USER", common::approvers::STARTER),
    );
    assert_eq!(submitted.code, 0, "{}", submitted.stderr);
    let store = nats.store();
    let waiting = || {
        let run = store.incident_runs(incident).ok()?.first()?.clone();
        let lines = store.read_run(&run).ok()?;
        runbook_fleet::parked::waiting_step(&lines).map(|(s, _)| (run, s))
    };
    wait_until("the run to park", 90, &[worker], || waiting().is_some());
    waiting().unwrap()
}

/// A client that follows no redirects and keeps no cookies.
fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Debian's chromedriver on a free port.
fn chromedriver(log: &Path) -> (u16, Killed) {
    let port = free_port();
    let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect(
            "chromedriver is not installed: `scripts/test` installs Debian's `chromium-driver`",
        );
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("chromedriver", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (port, Killed(child))
}

async fn browser(port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,1300"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("connecting to chromedriver")
}

/// The page's text.
async fn text(b: &Client) -> String {
    b.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (bounded) until the page's text holds `what`, reloading by
/// itself (the page's own script) or not.
async fn until_text(b: &Client, what: &str, secs: u64) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let t = b.find(Locator::Css("body")).await;
        if let Ok(el) = t
            && let Ok(t) = el.text().await
            && t.contains(what)
        {
            return t;
        }
        assert!(
            Instant::now() < until,
            "the page never said `{what}`:\n{}",
            text(b).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Signs `who` in on the sign-in page, going to `next` after.
async fn sign_in(b: &Client, base: &str, next: &str, who: &str, token: &str) {
    b.goto(&format!("{base}/login?next={next}")).await.unwrap();
    b.find(Locator::Css("#person"))
        .await
        .unwrap()
        .send_keys(who)
        .await
        .unwrap();
    b.find(Locator::Css("#token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    b.find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    until_text(b, &format!("signed in as {who}"), 20).await;
}

async fn shot(b: &Client, name: &str) -> PathBuf {
    let dir = common::root().join("target").join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, b.screenshot().await.unwrap()).unwrap();
    path
}

#[test]
fn two_people_approve_a_parked_rollback_in_the_browser_and_the_run_resolves() {
    let _serial = one_at_a_time();
    let took = Instant::now();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    let worker = Worker::start(&nats, logs.path(), "w");
    let store = nats.store();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let rb = common::approvers::ruled(live.dir.path(), "approvals: 2\nfrom: [sre]");
    let people = common::approvers::people(live.dir.path());
    let incident = format!("console-{}", common::now_nanos());
    let (run, step) = submit_and_park(&nats, &worker, &rb, &live.env(), &incident);
    assert_eq!(step, "rollback");
    // Recovered once it goes on: the worker's replayed metrics start over.
    std::fs::write(
        live.dir.path().join("metrics.toml"),
        recorded(121.0, 121.0, 99.9),
    )
    .unwrap();
    let url = nats.url();
    let (base, _console) = console(
        &["--nats", &url],
        &people.file,
        &logs.path().join("console.log"),
    );

    // What a browser would not send: refused, nothing recorded.
    let client = http();
    let decide = format!("{base}/runs/{run}/decide");
    let form = [
        ("csrf", "x"),
        ("step", "rollback"),
        ("intent", "sha256:0"),
        ("choice", "approve"),
    ];
    let r = client.post(&decide).form(&form).send().unwrap();
    assert_eq!(r.status(), 401, "no session");
    let login = |who: &str, token: &str| {
        client
            .post(format!("{base}/login"))
            .form(&[("person", who), ("token", token), ("next", "/")])
            .send()
            .unwrap()
    };
    let alice = login("alice", &people.tokens["alice"]);
    assert_eq!(alice.status(), 303);
    let cookie = alice.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let forged = client
        .post(&decide)
        .header("cookie", &session)
        .form(&form)
        .send()
        .unwrap();
    assert_eq!(
        forged.status(),
        403,
        "a form without the session's CSRF token"
    );
    assert!(forged.text().unwrap().contains("CSRF token does not match"));
    let big = "a".repeat(64 * 1024);
    // A client of its own: the server answers before reading the body
    // and closes the connection, which a pooled client would reuse.
    let oversized = http()
        .post(&decide)
        .header("cookie", &session)
        .form(&[("csrf", big.as_str())])
        .send()
        .unwrap();
    assert_eq!(oversized.status(), 413);
    // The page itself: no token, the CSRF token only in its own forms,
    // headers that keep it out of frames and caches.
    let page = client
        .get(format!("{base}/runs/{run}"))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    let page = page.text().unwrap();
    for t in people.tokens.values() {
        assert!(!page.contains(t.as_str()), "a token on the page");
    }
    assert!(page.contains("Approve as alice"), "{page}");
    let lines = store.read_run(&run).unwrap();
    assert!(
        !lines.iter().any(|l| l["event"] == "approval"),
        "something was recorded"
    );

    // In the browser.
    let logs_dir = logs.path().to_path_buf();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let clicked_ms = rt.block_on(async {
        let (driver_port, _driver) = chromedriver(&logs_dir.join("chromedriver.log"));
        let b = browser(driver_port).await;
        // Nothing is shown to nobody: the console asks who is there.
        b.goto(&base).await.unwrap();
        until_text(&b, "Name (as in the approvers file)", 20).await;
        sign_in(&b, &base, "/", "alice", &people.tokens["alice"]).await;
        let list = until_text(&b, &run, 20).await;
        assert!(list.contains("awaiting-approval"), "{list}");
        b.find(Locator::Css(&format!("a[href='/runs/{run}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let parked = until_text(&b, "Waiting for approval", 20).await;
        assert!(
            parked.contains(&format!("{family}:3 → {family}:2")),
            "{parked}"
        );
        assert!(parked.contains("production/auth-service"), "{parked}");
        assert!(parked.contains("ecs-rollback"), "{parked}");
        assert!(parked.contains("2 approvals from `sre`"), "{parked}");
        assert!(parked.contains("0 of 2 approvals"), "{parked}");
        assert!(parked.contains("Approve as alice"), "{parked}");
        shot(&b, "parked.png").await;
        b.find(Locator::Css("button.approve"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until_text(&b, "1 of 2 approvals", 20).await;
        b.find(Locator::Css("form.inline button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until_text(&b, "Sign in", 20).await;

        sign_in(
            &b,
            &base,
            &format!("/runs/{run}"),
            "bob",
            &people.tokens["bob"],
        )
        .await;
        assert!(text(&b).await.contains("1 of 2 approvals (alice)"));
        let clicked = runbook_core::time::now_ms();
        b.find(Locator::Css("button.approve"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        until_text(&b, "a worker continues the run", 20).await;
        // The page follows the journal by itself.
        until_text(&b, "resolved", 120).await;
        let done = text(&b).await;
        assert!(done.contains("verify-rollback → recovered"), "{done}");
        shot(&b, "resolved.png").await;
        b.close().await.unwrap();
        clicked
    });

    // Five sign-ins as one person from one address a minute, then 429
    // (even with the right token); another person is not locked out.
    let codes: Vec<u16> = (0..5)
        .map(|_| login("erin", "rbk_wrong").status().as_u16())
        .collect();
    assert_eq!(codes, [401, 401, 401, 401, 401]);
    assert_eq!(login("erin", &people.tokens["erin"]).status(), 429);
    assert_eq!(login("bob", &people.tokens["bob"]).status(), 303);
    // Pages need someone signed in.
    let anonymous = client.get(format!("{base}/runs/{run}")).send().unwrap();
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        client
            .get(format!("{base}/runs/{run}/events"))
            .send()
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let lines = store.read_run(&run).unwrap();
    let votes: Vec<&Value> = lines.iter().filter(|l| l["event"] == "approval").collect();
    assert_eq!(votes.len(), 2, "{votes:?}");
    assert_eq!(votes[0]["vote"]["by"], "alice");
    assert_eq!(votes[1]["vote"]["by"], "bob");
    assert_eq!(votes[1]["vote"]["how"], "token");
    assert_eq!(votes[1]["vote"]["from"], "127.0.0.1");
    let ms = |l: &Value| runbook_journal::approvals::line_ms(l);
    let at = votes[1].get("seq").and_then(Value::as_u64).unwrap();
    let next_step = lines
        .iter()
        .find(|l| l["event"] == "step-start" && l["seq"].as_u64().is_some_and(|s| s > at))
        .expect("a step started after the second approval");
    eprintln!(
        "console (JetStream): approval click to the next step's start {} ms ({} ms from the decision's journal line); browser test {:.1} s",
        ms(next_step).saturating_sub(clicked_ms),
        ms(next_step).saturating_sub(ms(votes[1])),
        took.elapsed().as_secs_f64()
    );
}

/// The form's CSRF token on a page.
fn csrf_of(page: &str) -> String {
    let needle = "name=\"csrf\" value=\"";
    let at = page.find(needle).expect("a form with a CSRF token") + needle.len();
    page[at..at + 64].to_string()
}

/// A run of a state directory: decided in the console (one person signed
/// in with a token, one named by a trusted proxy's header), it continues
/// in the console's own process and resolves.
#[test]
fn a_decided_run_of_a_state_directory_continues_in_the_console() {
    let moto = Moto::start();
    let redis = RedisServer::start();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    let rb = common::approvers::ruled(live.dir.path(), "approvals: 2\nfrom: [sre]");
    let people = common::approvers::people(live.dir.path());
    let state = live.dir.path().join("state");
    let st = state.to_str().unwrap();
    let first = output(
        live.command_for(&rb, &["--yes", "--state-dir", st])
            .env("USER", common::approvers::STARTER),
    );
    assert_eq!(first.code, 4, "{}\n{}", first.stdout, first.stderr);
    let run = first.json()["run_id"].as_str().unwrap().to_string();
    std::fs::write(
        live.dir.path().join("metrics.toml"),
        recorded(121.0, 121.0, 99.9),
    )
    .unwrap();
    let log = live.dir.path().join("console.log");
    let (base, _console) = console(
        &[
            "--state-dir",
            st,
            "--trusted-header",
            "X-Forwarded-User",
            "--trusted-proxy",
            "127.0.0.1",
        ],
        &people.file,
        &log,
    );
    let client = http();
    let page_url = format!("{base}/runs/{run}");
    let decide = format!("{base}/runs/{run}/decide");

    // alice signs in with her token.
    let signed = client
        .post(format!("{base}/login"))
        .form(&[
            ("person", "alice"),
            ("token", people.tokens["alice"].as_str()),
            ("next", "/"),
        ])
        .send()
        .unwrap();
    assert_eq!(signed.status(), 303);
    let alice = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = client
        .get(&page_url)
        .header("cookie", &alice)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let intent = {
        let needle = "name=\"intent\" value=\"";
        let at = page.find(needle).unwrap() + needle.len();
        page[at..at + 71].to_string()
    };
    let form = |csrf: &str, choice: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("step".to_string(), "rollback".to_string()),
            ("intent".to_string(), intent.clone()),
            ("choice".to_string(), choice.to_string()),
        ]
    };
    let r = client
        .post(&decide)
        .header("cookie", &alice)
        .form(&form(&csrf_of(&page), "approve"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    // A stale page's form (a change since: none here, so a forged digest).
    let stale = {
        let mut f = form(&csrf_of(&page), "approve");
        f[2].1 = format!("sha256:{}", "0".repeat(64));
        f
    };
    let r = client
        .post(&decide)
        .header("cookie", &alice)
        .form(&stale)
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);

    // bob is named by the trusted proxy; a name the approvers file does
    // not have signs nobody in.
    let nobody = client
        .get(&page_url)
        .header("x-forwarded-user", "mallory")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!nobody.contains("signed in as"), "{nobody}");
    let via_proxy = client
        .get(&page_url)
        .header("x-forwarded-user", "bob")
        .send()
        .unwrap();
    let bob = via_proxy.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = via_proxy.text().unwrap();
    assert!(page.contains("signed in as <strong>bob</strong>"), "{page}");
    assert!(page.contains("1 of 2 approvals (alice)"), "{page}");
    let clicked = runbook_core::time::now_ms();
    let r = client
        .post(&decide)
        .header("cookie", &bob)
        .header("x-forwarded-user", "bob")
        .form(&form(&csrf_of(&page), "approve"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let said = client
        .get(&page_url)
        .header("cookie", &bob)
        .header("x-forwarded-user", "bob")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(said.contains("decided: the run continues"), "{said}");

    let journal = |run: &str| -> Vec<Value> {
        std::fs::read_to_string(state.join("runs").join(format!("{run}.jsonl")))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    let until = Instant::now() + Duration::from_secs(60);
    let lines = loop {
        let lines = journal(&run);
        if runbook_journal::replay::finished(&lines)
            .is_some_and(|e| e["status"] != "awaiting-approval")
        {
            break lines;
        }
        assert!(
            Instant::now() < until,
            "the run did not go on:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        runbook_journal::replay::finished(&lines).unwrap()["status"],
        "resolved"
    );
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let votes: Vec<&Value> = lines.iter().filter(|l| l["event"] == "approval").collect();
    assert_eq!(votes.len(), 2, "{votes:?}");
    // Counted like a worker's.
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("runbook_console_decisions_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("runbook_console_decisions_refused_total 1"),
        "{metrics}"
    );
    assert_eq!(
        (
            votes[0]["vote"]["by"].as_str(),
            votes[0]["vote"]["how"].as_str()
        ),
        (Some("alice"), Some("token"))
    );
    assert_eq!(
        (
            votes[1]["vote"]["by"].as_str(),
            votes[1]["vote"]["how"].as_str()
        ),
        (Some("bob"), Some("header"))
    );
    let at = votes[1]["seq"].as_u64().unwrap();
    let next = lines
        .iter()
        .find(|l| l["event"] == "step-start" && l["seq"].as_u64().is_some_and(|s| s > at))
        .expect("a step started after the second approval");
    let ms = runbook_journal::approvals::line_ms;
    eprintln!(
        "console (state directory): approval click to the next step's start {} ms ({} ms from the decision's journal line)",
        ms(next).saturating_sub(clicked),
        ms(next).saturating_sub(ms(votes[1]))
    );
}

/// A Slack interaction as Slack posts it: `payload=JSON`, signed with
/// `secret` at `ts` (unless `signature` is given).
fn slack_post(
    base: &str,
    secret: &str,
    ts: u64,
    payload: &Value,
    signature: Option<&str>,
) -> (u16, String) {
    let body = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let ts = ts.to_string();
    let signed = runbook_console::slack::sign(secret.as_bytes(), &ts, body.as_bytes());
    let r = http()
        .post(format!("{base}/slack/interactions"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", &ts)
        .header("x-slack-signature", signature.unwrap_or(&signed))
        .body(body)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

/// Slack approvals on a fleet: the parked rollback is posted to Slack
/// (a local server standing in for Slack) with Approve and Deny buttons;
/// clicks come back signed as Slack signs them. A bad signature, a stale
/// timestamp, a replay, a Slack user who is nobody, and the run's own
/// starter are refused with nothing recorded; two approvers' clicks let
/// the run go on, the message updated at each.
#[test]
fn slack_buttons_decide_a_parked_change_when_slack_signed_the_click() {
    let _serial = one_at_a_time();
    let moto = Moto::start();
    let redis = RedisServer::start();
    let nats = Nats::start(1);
    let logs = tempfile::tempdir().unwrap();
    let slack_api = Hook::start(200);
    let worker = Worker::start_with(
        &nats,
        logs.path(),
        "w",
        &[(
            "RUNBOOK_TEST_SLACK_APPROVALS",
            &format!("{}/slack/approvals", slack_api.uri()),
        )],
    );
    let store = nats.store();
    let (live, (cluster, service, family)) = bad_deploy_service(&moto, &redis);
    live.set_notify(&format!(
        "[notify]\napprovals = \"approvers\"\n\n[notify.targets.approvers]\nkind = \"slack\"\nwebhook_url_env = \"RUNBOOK_TEST_SLACK_APPROVALS\"\n\n{}",
        notify_section()
    ));
    let rb = common::approvers::ruled(live.dir.path(), "approvals: 2\nfrom: [sre]");
    let people = common::approvers::people(live.dir.path());
    let incident = format!("slack-{}", common::now_nanos());
    let (run, _) = submit_and_park(&nats, &worker, &rb, &live.env(), &incident);
    slack_api.wait_for("/slack/approvals", 1);
    let asked = slack_api.bodies("/slack/approvals")[0].clone();
    let buttons = &asked["blocks"][1]["elements"];
    assert_eq!(buttons[0]["action_id"], "approve", "{asked:#}");
    assert_eq!(buttons[1]["action_id"], "deny", "{asked:#}");
    let value = buttons[0]["value"].as_str().unwrap().to_string();
    assert!(
        value.starts_with(&format!("{run} rollback sha256:")),
        "{value}"
    );
    assert!(
        asked["text"]
            .as_str()
            .unwrap()
            .contains(&format!("{family}:3 → {family}:2")),
        "{asked:#}"
    );
    std::fs::write(
        live.dir.path().join("metrics.toml"),
        recorded(121.0, 121.0, 99.9),
    )
    .unwrap();

    let secret = "slack-signing-secret-0123456789abcdef";
    let url = nats.url();
    let log = logs.path().join("console.log");
    let respond = format!("{}/slack/respond", slack_api.uri());
    let (base, _console) = console_with(
        &[
            "--nats",
            &url,
            "--slack-signing-secret-env",
            "RUNBOOK_TEST_SLACK_SECRET",
            "--slack-response-base",
            &slack_api.uri(),
        ],
        &[("RUNBOOK_TEST_SLACK_SECRET", secret)],
        &people.file,
        &log,
    );
    let click = |user: &str, action: &str| {
        serde_json::json!({
            "type": "block_actions",
            "user": { "id": user },
            "actions": [{ "action_id": action, "value": value }],
            "response_url": respond,
        })
    };
    let now = || runbook_core::time::now_ms() / 1000;
    let alice = common::approvers::slack_id("alice");

    // Refused, nothing recorded.
    let (code, text) = slack_post(
        &base,
        "not-the-secret-0123456789",
        now(),
        &click(&alice, "approve"),
        None,
    );
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("signature is not Slack's"), "{text}");
    let (code, text) = slack_post(&base, secret, now() - 600, &click(&alice, "approve"), None);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("more than five minutes"), "{text}");
    let (code, text) = slack_post(&base, secret, now(), &click("UMALLORY", "approve"), None);
    assert_eq!(code, 403, "{text}");
    let dave = common::approvers::slack_id("dave");
    let (code, text) = slack_post(&base, secret, now(), &click(&dave, "approve"), None);
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("`dave` started this run"), "{text}");
    let lines = store.read_run(&run).unwrap();
    assert!(
        !lines.iter().any(|l| l["event"] == "approval"),
        "something was recorded"
    );

    // alice approves; the same request again is a replay.
    let ts = now();
    let body = click(&alice, "approve");
    let (code, text) = slack_post(&base, secret, ts, &body, None);
    assert_eq!(code, 200, "{text}");
    let (code, text) = slack_post(&base, secret, ts, &body, None);
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("replay"), "{text}");
    slack_api.wait_for("/slack/respond", 1);
    let updated = slack_api.bodies("/slack/respond");
    let first = updated
        .iter()
        .find(|b| b["replace_original"] == true)
        .unwrap_or_else(|| panic!("{updated:#?}"));
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .contains("alice approved: 1 of 2 approvals"),
        "{first:#}"
    );
    assert_eq!(
        first["blocks"][1]["elements"][0]["action_id"], "approve",
        "{first:#}"
    );

    let bob = common::approvers::slack_id("bob");
    let (code, text) = slack_post(&base, secret, now(), &click(&bob, "approve"), None);
    assert_eq!(code, 200, "{text}");
    wait_until("the approved run to end", 120, &[&worker], || {
        let lines = store.read_run(&run).unwrap_or_default();
        runbook_journal::replay::finished(&lines).is_some_and(|e| e["status"] == "resolved")
    });
    assert_eq!(
        service_task_definition(&moto, &cluster, &service),
        format!("{family}:2")
    );
    let last = slack_api.bodies("/slack/respond").last().cloned().unwrap();
    assert!(
        last["text"]
            .as_str()
            .unwrap()
            .contains("bob approved: decided: a worker continues the run"),
        "{last:#}"
    );
    assert!(
        last["blocks"].is_null(),
        "the buttons stay after the decision: {last:#}"
    );
    let lines = store.read_run(&run).unwrap();
    let votes: Vec<&Value> = lines.iter().filter(|l| l["event"] == "approval").collect();
    assert_eq!(votes.len(), 2, "{votes:?}");
    assert_eq!(votes[0]["vote"]["how"], "slack");
    assert_eq!(votes[0]["vote"]["from"], format!("slack:{alice}"));
    assert_eq!(votes[1]["vote"]["by"], "bob");
}

/// Over HTTPS (`--tls-cert`, `--tls-key`: a certificate from a CA of the
/// test's own, made by `openssl`): sign-in works, the session cookie is
/// `Secure`, and the person is known on the next page; plain HTTP to the
/// port gets nothing. Without HTTPS, only loopback.
#[test]
fn the_console_serves_https_and_refuses_a_public_address_without_it() {
    let dir = tempfile::tempdir().unwrap();
    common::tls::issue(dir.path(), "console");
    let people = common::approvers::people(dir.path());
    let state = dir.path().join("state");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let child = runbook()
        .args(["console", "--listen", &addr, "--approvers"])
        .arg(&people.file)
        .arg("--state-dir")
        .arg(&state)
        .arg("--tls-cert")
        .arg(dir.path().join("console.pem"))
        .arg("--tls-key")
        .arg(dir.path().join("console.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("console.log")).unwrap())
        .spawn()
        .unwrap();
    let _console = Killed(child);
    let ca = std::fs::read(dir.path().join("console-ca.pem")).unwrap();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .build()
        .unwrap();
    let base = format!("https://{addr}");
    wait_for("the console over HTTPS", || {
        client
            .get(format!("{base}/healthz"))
            .send()
            .is_ok_and(|r| r.status() == 200)
    });
    let signed = client
        .post(format!("{base}/login"))
        .form(&[
            ("person", "alice"),
            ("token", people.tokens["alice"].as_str()),
            ("next", "/"),
        ])
        .send()
        .unwrap();
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("; Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let list = client
        .get(format!("{base}/"))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(list.status(), 200);
    assert!(
        list.text()
            .unwrap()
            .contains("signed in as <strong>alice</strong>")
    );
    assert!(http().get(format!("http://{addr}/healthz")).send().is_err());

    let public = output(runbook().args([
        "console",
        "--listen",
        "0.0.0.0:0",
        "--approvers",
        people.file.to_str().unwrap(),
    ]));
    assert_eq!(public.code, 2, "{}", public.stderr);
    assert!(public.stderr.contains("without HTTPS"), "{}", public.stderr);
}
