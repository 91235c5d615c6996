//! Live paging and messaging. `[notify]` in an environment maps each alias
//! to a backend:
//!
//! ```toml
//! [notify]
//! timeout_ms = 5000      # per attempt
//! max_attempts = 3       # bounded retries, on timeouts and 5xx/429
//!
//! [notify.targets.auth-team-oncall]
//! kind = "pagerduty"                    # Events API v2
//! routing_key_env = "PD_AUTH_ROUTING_KEY"
//!
//! [notify.targets.security-team]
//! kind = "sns"
//! topic_arn = "arn:aws:sns:us-east-1:123456789012:security"
//!
//! [notify.channels.incidents]
//! kind = "slack"                        # an incoming webhook
//! webhook_url_env = "SLACK_INCIDENTS_WEBHOOK"
//! ```
//!
//! Secrets (routing keys, webhook URLs, which carry their token) come from
//! the environment variables named, never from the file, and are never
//! printed.

use super::{NotifyBackend, sent, severity_name};
use crate::aws::{aws_error, bounded};
use crate::bindings::Error;
use crate::bindings::runbook::host::notify::{Sent, Severity};
use crate::capability::LiveContext;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PAGERDUTY: &str = "https://events.pagerduty.com/v2/enqueue";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub targets: BTreeMap<String, Endpoint>,
    #[serde(default)]
    pub channels: BTreeMap<String, Endpoint>,
    /// The target paged when a fleet run parks waiting for an approval
    /// (and when it escalates); one of `targets`.
    #[serde(default)]
    pub approvals: Option<String>,
}

fn default_timeout() -> u64 {
    5_000
}
fn default_attempts() -> u32 {
    3
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout(),
            max_attempts: default_attempts(),
            targets: BTreeMap::new(),
            channels: BTreeMap::new(),
            approvals: None,
        }
    }
}

/// Where one alias goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum Endpoint {
    /// PagerDuty Events API v2: trigger, acknowledge and resolve by dedup key.
    Pagerduty {
        /// The variable holding the routing key, or (`routing_key_secret`)
        /// the AWS Secrets Manager secret: one of them.
        #[serde(default)]
        routing_key_env: Option<String>,
        #[serde(default)]
        routing_key_secret: Option<String>,
        /// For a proxy or a test server; default PagerDuty's.
        #[serde(default)]
        url: Option<String>,
    },
    /// A Slack-compatible incoming webhook (`{"text": ...}`); its URL (a
    /// secret: it carries a token) from a variable or a Secrets Manager
    /// secret.
    Slack {
        #[serde(default)]
        webhook_url_env: Option<String>,
        #[serde(default)]
        webhook_url_secret: Option<String>,
    },
    /// An AWS SNS topic (`[aws]` gives region and credentials).
    Sns { topic_arn: String },
}

impl NotifyConfig {
    pub fn check(&self) -> Result<(), String> {
        crate::environment::check_attempts("notify", self.timeout_ms, self.max_attempts)?;
        if let Some(alias) = &self.approvals
            && !self.targets.contains_key(alias)
        {
            return Err(format!(
                "`notify.approvals` names `{alias}`, which is not among `[notify.targets]`: add `[notify.targets.{alias}]` or name one of them"
            ));
        }
        for (section, map) in [("targets", &self.targets), ("channels", &self.channels)] {
            for (alias, e) in map {
                let at = format!("`notify.{section}.{alias}`");
                let (var, _) = match e {
                    Endpoint::Pagerduty {
                        routing_key_env,
                        routing_key_secret,
                        ..
                    } => (
                        routing_key_env.as_ref(),
                        crate::secrets::SecretRef::either(
                            &at,
                            "routing_key",
                            routing_key_env.as_ref(),
                            routing_key_secret.as_ref(),
                        )?
                        .ok_or_else(|| {
                            format!("{at}: name the routing key with `routing_key_env` (an environment variable) or `routing_key_secret` (an AWS Secrets Manager secret)")
                        })?,
                    ),
                    Endpoint::Slack {
                        webhook_url_env,
                        webhook_url_secret,
                    } => (
                        webhook_url_env.as_ref(),
                        crate::secrets::SecretRef::either(
                            &at,
                            "webhook_url",
                            webhook_url_env.as_ref(),
                            webhook_url_secret.as_ref(),
                        )?
                        .ok_or_else(|| {
                            format!("{at}: name the webhook URL with `webhook_url_env` (an environment variable) or `webhook_url_secret` (an AWS Secrets Manager secret)")
                        })?,
                    ),
                    Endpoint::Sns { .. } => continue,
                };
                // Never echo the value: it may be the secret, pasted in.
                if let Some(var) = var
                    && !(!var.is_empty()
                        && var.len() <= 128
                        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    return Err(format!(
                        "`notify.{section}.{alias}`: the `*_env` field must name an environment variable, not hold the secret itself"
                    ));
                }
                // Found out now, not when the page is due.
                // Named only when it looks like a variable's name
                // (`PD_ROUTING_KEY`): a token of letters and digits passes
                // the check above and must not be printed either.
                if let Some(var) = var
                    && std::env::var_os(var).is_none()
                {
                    let named = if crate::environment::is_conventional_variable(var) {
                        format!("`{var}`")
                    } else {
                        "a variable".to_string()
                    };
                    return Err(format!(
                        "`notify.{section}.{alias}` names {named}, which is not set: export it (with the routing key or webhook URL) before the run"
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn uses_sns(&self) -> bool {
        self.targets
            .values()
            .chain(self.channels.values())
            .any(|e| matches!(e, Endpoint::Sns { .. }))
    }
}

impl Endpoint {
    /// How its secret (routing key, webhook URL) is named; `None` for SNS.
    pub fn secret_ref(&self) -> Option<crate::secrets::SecretRef> {
        let (field, env, secret) = match self {
            Endpoint::Pagerduty {
                routing_key_env,
                routing_key_secret,
                ..
            } => ("routing_key", routing_key_env, routing_key_secret),
            Endpoint::Slack {
                webhook_url_env,
                webhook_url_secret,
            } => ("webhook_url", webhook_url_env, webhook_url_secret),
            Endpoint::Sns { .. } => return None,
        };
        crate::secrets::SecretRef::either("", field, env.as_ref(), secret.as_ref())
            .ok()
            .flatten()
    }
}

impl NotifyConfig {
    /// Every secret its endpoints name, and where.
    pub fn secrets(&self) -> Vec<(String, crate::secrets::SecretRef)> {
        [("targets", &self.targets), ("channels", &self.channels)]
            .into_iter()
            .flat_map(|(section, map)| {
                map.iter().filter_map(move |(alias, e)| {
                    Some((format!("`notify.{section}.{alias}`"), e.secret_ref()?))
                })
            })
            .collect()
    }
}

pub struct Notify {
    config: NotifyConfig,
    http: reqwest::Client,
    sns: Option<aws_sdk_sns::Client>,
    /// Routing keys and webhook URLs, read once for the run.
    keys: BTreeMap<crate::secrets::SecretRef, crate::secrets::Secret>,
}

impl Notify {
    pub fn new(config: NotifyConfig, ctx: &LiveContext) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(3_000)))
            .build()?;
        let sns = match &ctx.aws {
            Some(aws) if config.uses_sns() => {
                let mut conf = aws_sdk_sns::config::Builder::from(&aws.sdk);
                if let Some(url) = aws.endpoint("sns") {
                    conf = conf.endpoint_url(url);
                }
                Some(aws_sdk_sns::Client::from_conf(conf.build()))
            }
            _ => None,
        };
        let mut keys = BTreeMap::new();
        for (at, r) in config.secrets() {
            let value = ctx.secrets.resolve(&at, &r)?;
            keys.insert(r, value);
        }
        Ok(Self {
            config,
            http,
            sns,
            keys,
        })
    }

    fn secret(&self, alias: &str, endpoint: &Endpoint) -> Result<String, Error> {
        endpoint
            .secret_ref()
            .and_then(|r| self.keys.get(&r))
            .map(|s| s.expose().to_string())
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "`{alias}`: its routing key or webhook URL was not read for this run"
                ))
            })
    }

    fn total(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
            .saturating_mul(self.config.max_attempts)
            .saturating_add(Duration::from_secs(1))
    }

    /// POSTs `body` to `url`, retrying timeouts, 429 and 5xx with backoff
    /// up to `max_attempts`; the URL is never in an error (it may carry a
    /// token).
    async fn post(&self, alias: &str, url: &str, body: serde_json::Value) -> Result<String, Error> {
        let mut last = String::new();
        for attempt in 0..self.config.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt.min(4))).await;
            }
            match self.http.post(url).json(&body).send().await {
                Ok(r) if r.status().is_success() => return Ok(r.text().await.unwrap_or_default()),
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    last = format!("answered {}", r.status());
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(Error::Invalid(format!(
                        "`{alias}` refused: {status} {}",
                        crate::limits::clip(text, 200)
                    )));
                }
                Err(e) if e.is_timeout() => last = "no answer in time".into(),
                Err(e) if e.is_connect() => last = "connection refused".into(),
                Err(e) => last = format!("request failed ({})", e.without_url()),
            }
        }
        Err(Error::Unavailable(format!(
            "`{alias}`: {last} after {} attempts",
            self.config.max_attempts
        )))
    }

    async fn pagerduty(
        &self,
        alias: &str,
        endpoint: &Endpoint,
        url: Option<&str>,
        action: &str,
        dedup_key: &str,
        payload: Option<serde_json::Value>,
    ) -> Result<Sent, Error> {
        let key = self.secret(alias, endpoint)?;
        let mut body = serde_json::json!({
            "routing_key": key,
            "event_action": action,
            "dedup_key": dedup_key,
        });
        if let Some(p) = payload {
            body["payload"] = p;
        }
        let answer = self.post(alias, url.unwrap_or(PAGERDUTY), body).await?;
        let status = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_string))
            .unwrap_or_else(|| "accepted".into());
        let status = match action {
            "trigger" => "triggered",
            "resolve" => "resolved",
            _ => &status,
        };
        Ok(sent(alias, status, Some(dedup_key)))
    }

    async fn sns(&self, alias: &str, topic: &str, subject: &str, text: &str) -> Result<(), Error> {
        let client = self.sns.as_ref().ok_or_else(|| {
            Error::Unavailable(format!("`{alias}`: SNS needs the `[aws]` settings"))
        })?;
        let what = format!("sns `{alias}`");
        let subject: String = subject.chars().take(100).collect();
        client
            .publish()
            .topic_arn(topic)
            .subject(subject)
            .message(text)
            .send()
            .await
            .map_err(|e| aws_error(&what, e))?;
        Ok(())
    }

    async fn slack(&self, alias: &str, endpoint: &Endpoint, text: &str) -> Result<(), Error> {
        let url = self.secret(alias, endpoint)?;
        self.post(alias, &url, serde_json::json!({ "text": text }))
            .await
            .map(|_| ())
    }

    /// Asks for a decision on a parked change (`[notify] approvals`): on
    /// Slack a message with Approve and Deny buttons whose value names
    /// the run, the step and the change's digest (the console's
    /// `/slack/interactions` takes the click); on another target a page.
    pub async fn approval_request(
        &self,
        target: &str,
        summary: &str,
        value: &str,
        dedup_key: &str,
        deadline: Instant,
    ) -> Result<Sent, Error> {
        match self.target(target)? {
            e @ Endpoint::Slack { .. } => {
                let what = format!("page `{target}`");
                bounded(&what, self.total(), deadline, async {
                    let url = self.secret(target, e)?;
                    self.post(target, &url, approval_message(summary, value, dedup_key))
                        .await?;
                    Ok(sent(target, "posted", Some(dedup_key)))
                })
                .await
            }
            _ => {
                self.page(target, summary, Severity::Warning, dedup_key, deadline)
                    .await
            }
        }
    }

    fn target(&self, alias: &str) -> Result<&Endpoint, Error> {
        self.config.targets.get(alias).ok_or_else(|| {
            Error::NotFound(format!(
                "page target `{alias}` is not defined in the environment"
            ))
        })
    }
}

/// The Slack message asking for a decision: the change, and Approve and
/// Deny buttons carrying `value` (`RUN STEP DIGEST`).
pub fn approval_message(summary: &str, value: &str, dedup_key: &str) -> serde_json::Value {
    let text = crate::limits::clip(summary.to_string(), 2900);
    let button = |id: &str, label: &str, style: &str| {
        serde_json::json!({
            "type": "button",
            "action_id": id,
            "style": style,
            "text": { "type": "plain_text", "text": label },
            "value": value,
        })
    };
    serde_json::json!({
        "text": text,
        "blocks": [
            { "type": "section", "text": { "type": "mrkdwn", "text": text } },
            {
                "type": "actions",
                "block_id": "runbook-approval",
                "elements": [button("approve", "Approve", "primary"), button("deny", "Deny", "danger")],
            },
            { "type": "context", "elements": [{ "type": "mrkdwn", "text": format!("dedup key `{dedup_key}`") }] },
        ],
    })
}

#[async_trait::async_trait]
impl NotifyBackend for Notify {
    async fn page(
        &self,
        target: &str,
        summary: &str,
        severity: Severity,
        dedup_key: &str,
        deadline: Instant,
    ) -> Result<Sent, Error> {
        let what = format!("page `{target}`");
        bounded(&what, self.total(), deadline, async {
            match self.target(target)? {
                e @ Endpoint::Pagerduty { url, .. } => {
                    let payload = serde_json::json!({
                        "summary": crate::limits::clip(summary.to_string(), 1024),
                        "source": "runbook",
                        "severity": severity_name(severity),
                    });
                    self.pagerduty(
                        target,
                        e,
                        url.as_deref(),
                        "trigger",
                        dedup_key,
                        Some(payload),
                    )
                    .await
                }
                e @ Endpoint::Slack { .. } => {
                    let text = format!(
                        "[{}] {summary} (dedup key `{dedup_key}`)",
                        severity_name(severity)
                    );
                    self.slack(target, e, &text).await?;
                    Ok(sent(target, "posted", Some(dedup_key)))
                }
                Endpoint::Sns { topic_arn } => {
                    let subject = format!("[{}] page: {summary}", severity_name(severity));
                    let text = format!("{summary}\n\ndedup key: {dedup_key}");
                    self.sns(target, topic_arn, &subject, &text).await?;
                    Ok(sent(target, "published", Some(dedup_key)))
                }
            }
        })
        .await
    }

    async fn resolve(
        &self,
        target: &str,
        dedup_key: &str,
        deadline: Instant,
    ) -> Result<Sent, Error> {
        let what = format!("resolve `{target}`");
        bounded(&what, self.total(), deadline, async {
            match self.target(target)? {
                e @ Endpoint::Pagerduty { url, .. } => {
                    self.pagerduty(target, e, url.as_deref(), "resolve", dedup_key, None)
                        .await
                }
                e @ Endpoint::Slack { .. } => {
                    self.slack(target, e, &format!("resolved: `{dedup_key}`"))
                        .await?;
                    Ok(sent(target, "posted", Some(dedup_key)))
                }
                Endpoint::Sns { topic_arn } => {
                    let text = format!("resolved: {dedup_key}");
                    self.sns(target, topic_arn, &text, &text).await?;
                    Ok(sent(target, "published", Some(dedup_key)))
                }
            }
        })
        .await
    }

    async fn message(&self, channel: &str, text: &str, deadline: Instant) -> Result<Sent, Error> {
        let what = format!("message `{channel}`");
        bounded(&what, self.total(), deadline, async {
            let endpoint = self.config.channels.get(channel).ok_or_else(|| {
                Error::NotFound(format!(
                    "channel `{channel}` is not defined in the environment"
                ))
            })?;
            let status = match endpoint {
                e @ Endpoint::Slack { .. } => {
                    self.slack(channel, e, text).await?;
                    "posted"
                }
                Endpoint::Sns { topic_arn } => {
                    let subject: String = text.lines().next().unwrap_or_default().to_string();
                    self.sns(channel, topic_arn, &subject, text).await?;
                    "published"
                }
                Endpoint::Pagerduty { .. } => {
                    return Err(Error::Invalid(format!(
                        "channel `{channel}` is a PagerDuty service: page it instead"
                    )));
                }
            };
            Ok(sent(channel, status, None))
        })
        .await
    }
}
