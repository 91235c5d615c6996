//! Slack approvals: a parked change under an approval rule is posted to a
//! Slack channel with Approve and Deny buttons (`[notify] approvals` names
//! a Slack target); a click comes back to `POST /slack/interactions`.
//! It is believed only when Slack signed it (`v0` HMAC-SHA256 of the
//! timestamp and the body with the app's signing secret, compared in
//! constant time), its timestamp is within five minutes, and its signature
//! has not been seen before; the clicking Slack user is a person of the
//! approvers file (`slack = "U…"`). The decision is `approvals::cast`,
//! the same as the page's and `runbook approve`'s, and the message is
//! updated at Slack's `response_url` (only under the configured base).

use crate::Counters;
use crate::auth::DECISIONS;
use crate::decisions::record;
use anyhow::Result;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runbook_core::approval::{Choice, Tally};
use runbook_engine::approvals::Ballot;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far a request's timestamp may be from now.
pub const SKEW: Duration = Duration::from_secs(300);
/// Signatures remembered (against replays) at most.
const MAX_SEEN: usize = 100_000;

/// What the console needs to take Slack's clicks.
pub struct Slack {
    /// The app's signing secret (from the variable `--slack-signing-secret-env` names).
    secret: Vec<u8>,
    /// Where `response_url`s may point (Slack's; a test server's).
    pub response_base: String,
    seen: Mutex<BTreeMap<String, Instant>>,
    pub http: reqwest::Client,
}

impl Slack {
    pub fn new(secret: String, response_base: String) -> Result<Self> {
        anyhow::ensure!(
            secret.len() >= 16,
            "the Slack signing secret is shorter than 16 characters: is it the app's signing secret?"
        );
        Ok(Self {
            secret: secret.into_bytes(),
            response_base,
            seen: Mutex::new(BTreeMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// Whether Slack signed `body` at `timestamp` (`X-Slack-Request-Timestamp`,
    /// `X-Slack-Signature`), recently, and for the first time; why not.
    pub fn verify(
        &self,
        timestamp: &str,
        signature: &str,
        body: &[u8],
        now_s: u64,
    ) -> Result<(), &'static str> {
        let ts: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| "no request timestamp")?;
        if now_s.abs_diff(ts) > SKEW.as_secs() {
            return Err("the request's timestamp is more than five minutes from now");
        }
        let expected = self.sign(timestamp.trim(), body);
        use subtle::ConstantTimeEq;
        if expected.len() != signature.len()
            || !bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
        {
            return Err("the request's signature is not Slack's");
        }
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|_, at| now.duration_since(*at) < 2 * SKEW);
        if seen.len() >= MAX_SEEN {
            return Err("too many requests to remember; try again later");
        }
        if seen.insert(signature.to_string(), now).is_some() {
            return Err("the request was already taken (a replay)");
        }
        Ok(())
    }

    /// `v0=` and the hex HMAC-SHA256 of `v0:TIMESTAMP:BODY`.
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        sign(&self.secret, timestamp, body)
    }

    /// Whether the message may be updated at `url`.
    pub fn may_answer(&self, url: &str) -> bool {
        url.starts_with(&self.response_base) && url.len() <= 2048
    }
}

/// Slack's request signature: `v0=` and the hex HMAC-SHA256 of
/// `v0:TIMESTAMP:BODY` under the signing secret.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let mut out = String::from("v0=");
    for b in bytes.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The form Slack posts: `payload`, JSON.
#[derive(Deserialize)]
pub struct Form {
    pub payload: String,
}

/// What the console reads of an interaction (the rest is ignored).
#[derive(Deserialize)]
pub struct Interaction {
    #[serde(rename = "type")]
    pub kind: String,
    pub user: User,
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub response_url: Option<String>,
}

#[derive(Deserialize)]
pub struct User {
    pub id: String,
}

#[derive(Deserialize)]
pub struct Action {
    pub action_id: String,
    #[serde(default)]
    pub value: String,
}

/// The button's value: run, step and the change's digest.
pub fn parse_value(value: &str) -> Option<(String, String, String)> {
    let mut parts = value.split(' ');
    let (run, step, intent) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none()
        && runbook_journal::store::is_run_id(run)
        && runbook_core::ids::Name::parse(step).is_ok()
        && intent.starts_with("sha256:")
        && intent.len() == 71)
        .then(|| (run.to_string(), step.to_string(), intent.to_string()))
}

/// A click on a Slack approval message's button (`POST
/// /slack/interactions`), believed only when Slack signed it
/// ([`crate::slack`]); the message is updated with where the change
/// stands, a refusal told only to the person who clicked.
pub async fn click(
    State(c): State<std::sync::Arc<crate::Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(slack) = &c.slack else {
        return (
            StatusCode::NOT_FOUND,
            "Slack approvals are not set up here (`--slack-signing-secret-env`)\n",
        )
            .into_response();
    };
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let now_s = runbook_core::time::now_ms() / 1000;
    let signed = slack.verify(
        &header("x-slack-request-timestamp"),
        &header("x-slack-signature"),
        &body,
        now_s,
    );
    if let Err(why) = signed {
        Counters::bump(&c.counters.decisions_refused);
        return (
            StatusCode::UNAUTHORIZED,
            format!("{why}: nothing was recorded\n"),
        )
            .into_response();
    }
    let bad = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            format!("{why}: nothing was recorded\n"),
        )
            .into_response()
    };
    let Ok(form) = serde_urlencoded::from_bytes::<crate::slack::Form>(&body) else {
        return bad("not a Slack interaction (no `payload`)");
    };
    let Ok(click) = serde_json::from_str::<crate::slack::Interaction>(&form.payload) else {
        return bad("the interaction's `payload` is not one Slack sends");
    };
    if click.kind != "block_actions" {
        return (StatusCode::OK, "").into_response();
    }
    let Some(action) = click.actions.first() else {
        return bad("no action in the interaction");
    };
    let choice = match action.action_id.as_str() {
        "approve" => Choice::Approve,
        "deny" => Choice::Deny,
        _ => return bad("not a runbook approval button"),
    };
    let Some((run, step, intent)) = crate::slack::parse_value(&action.value) else {
        return bad("the button does not name a run, a step and a change");
    };
    let answer_at = click.response_url.clone().filter(|u| slack.may_answer(u));
    let tell = |text: String, replace: bool, blocks: Option<serde_json::Value>| {
        let (c, url) = (c.clone(), answer_at.clone());
        async move {
            let (Some(slack), Some(url)) = (&c.slack, url) else {
                return;
            };
            let mut body = serde_json::json!({ "text": text, "replace_original": replace });
            if !replace {
                body["response_type"] = "ephemeral".into();
            }
            if let Some(b) = blocks {
                body["blocks"] = b;
            }
            if let Err(e) = slack.http.post(&url).json(&body).send().await {
                tracing::warn!("updating the Slack message: {}", e.without_url());
            }
        }
    };
    let Some(person) = c.approvers.by_slack(&click.user.id).cloned() else {
        Counters::bump(&c.counters.decisions_refused);
        tell(
            format!(
                "Slack user `{}` is nobody of the approvers file: nothing was recorded",
                click.user.id
            ),
            false,
            None,
        )
        .await;
        return (
            StatusCode::FORBIDDEN,
            "not an approver: nothing was recorded\n",
        )
            .into_response();
    };
    if !c
        .limits
        .allow(&format!("decide:{}", person.name), DECISIONS)
    {
        Counters::bump(&c.counters.rate_limited);
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many decisions in a minute\n",
        )
            .into_response();
    }
    let who = person.name.clone();
    let ballot = Ballot {
        run_id: run.clone(),
        step: step.clone(),
        choice,
        intent: Some(intent.clone()),
        how: "slack".into(),
        from: format!("slack:{}", click.user.id),
    };
    match record(&c, person, ballot).await {
        Ok((recorded, next)) => {
            let verb = match choice {
                Choice::Approve => "approved",
                Choice::Deny => "denied",
            };
            let text = format!("{} — {who} {verb}: {next}", recorded.pending.change);
            // Still waiting: the buttons stay for the next approver.
            let blocks = matches!(recorded.tally, Tally::Waiting { .. }).then(|| {
                runbook_capabilities::notify::live::approval_message(
                    &text,
                    &action.value,
                    &format!("runbook-approval-{run}-{step}"),
                )["blocks"]
                    .clone()
            });
            tell(text, true, blocks).await;
            (StatusCode::OK, "").into_response()
        }
        Err(why) => {
            Counters::bump(&c.counters.decisions_refused);
            tell(why.clone(), false, None).await;
            (StatusCode::CONFLICT, format!("{why}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slack() -> Slack {
        Slack::new(
            "8f742231b10e8888abcd99yyyzzz85a5".into(),
            "http://127.0.0.1".into(),
        )
        .unwrap()
    }

    #[test]
    fn slacks_documented_example_verifies() {
        // From Slack's "Verifying requests from Slack" page.
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign(b"8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn stale_forged_and_replayed_requests_are_refused() {
        let s = slack();
        let body = b"payload=%7B%7D";
        let now = 1_800_000_000;
        let good = s.sign("1800000000", body);
        assert_eq!(
            s.verify("1799999000", &s.sign("1799999000", body), body, now)
                .unwrap_err(),
            "the request's timestamp is more than five minutes from now"
        );
        assert_eq!(
            s.verify("1800000000", "v0=00", body, now).unwrap_err(),
            "the request's signature is not Slack's"
        );
        assert!(s.verify("1800000000", &good, body, now).is_ok());
        assert_eq!(
            s.verify("1800000000", &good, body, now).unwrap_err(),
            "the request was already taken (a replay)"
        );
        assert!(parse_value("abc123 rollback sha256:x").is_none());
        let intent = format!("sha256:{}", "a".repeat(64));
        assert!(parse_value(&format!("abc123 rollback {intent}")).is_some());
        assert!(parse_value(&format!("../x rollback {intent}")).is_none());
    }
}
