//! The triggers file: which alarm starts which runbook, against which
//! backend, under which incident key. `runbook serve` reads it once at
//! start (and `--check` only reads it), so a bad file is refused before
//! any alarm arrives.
//!
//! ```toml
//! # Only notifications from these SNS topics are accepted at all;
//! # subscription confirmations from any other topic are refused.
//! topics = ["arn:aws:sns:us-east-1:123456789012:auth-alarms"]
//!
//! [[trigger]]
//! name = "auth-5xx"                      # in logs and errors
//! alarm = "auth-service-5xx-rate"        # CloudWatch `AlarmName`
//! state = "ALARM"                        # `NewStateValue` (default ALARM)
//! runbook = "RB-0031-auth-service-degradation.md"
//! env = "environments/production.toml"   # or sim = "scenarios/…"
//! incident = "{region}:{alarm}:{state_change_time}"   # the default
//! approve = ["scale-out"]                # approved up front; others park
//! approval_timeout = 900                 # seconds a parked run waits
//! ```
//!
//! Alertmanager's webhook (`POST /alertmanager`) is taken when the file
//! has `[alertmanager]` with the credentials its receiver sends; a trigger
//! with `alertname` (and optionally `labels`, all of which must match)
//! takes firing alerts:
//!
//! ```toml
//! [alertmanager]
//! bearer_token_file = "alertmanager.token"  # or basic_user + basic_password_file
//!
//! [[trigger]]
//! name = "auth-slow"
//! alertname = "AuthTokenValidationSlow"
//! labels = { service = "auth-service" }
//! runbook = "RB-0031-auth-service-degradation.md"
//! env = "environments/production.toml"
//! incident = "alert:{alertname}:{fingerprint}:{starts_at}"   # the default
//! ```
//!
//! Paths are relative to the triggers file. The first trigger that
//! matches a notification wins; one that matches none is answered and
//! dropped. A trigger with `topic` and no `alarm` matches any message on
//! that topic (its incident key should then use `{message_id}` or the
//! subject).

use anyhow::Result;
use runbook_core::error::hinted;
use runbook_core::trace::{TraceOrigin, TraceParent};
use serde::Deserialize;
use std::path::{Path, PathBuf};

const HINT: &str = "see `runbook serve --help`; `runbook serve --triggers FILE --check` checks a triggers file without serving";

/// The default incident key: one run per alarm transition, however
/// often SNS delivers it (its `StateChangeTime` stays the same).
pub const DEFAULT_INCIDENT: &str = "{region}:{alarm}:{state_change_time}";

/// The default incident key of an alert: one run per alert (its labels'
/// fingerprint) and firing (`startsAt`), however often Alertmanager
/// re-sends it and whichever group it comes in.
/// (`alert:` keeps it apart from an SNS alarm's key.)
pub const DEFAULT_ALERT_INCIDENT: &str = "alert:{alertname}:{fingerprint}:{starts_at}";

/// What tells one alarm from the next: a key must name one.
const TIME_OR_MESSAGE: &[&str] = &["{state_change_time}", "{state_change_hour}", "{message_id}"];
/// What tells one firing of an alert from the next; alerts of one rule
/// evaluation share a `startsAt`, so the fingerprint is needed too.
const ALERT_TIME: &[&str] = &["{starts_at}"];
const ALERT_WHICH: &str = "{fingerprint}";

/// What an incident key template may name.
const PLACEHOLDERS: &[&str] = &[
    "alarm",
    "state",
    "region",
    "account",
    "topic",
    "message_id",
    "state_change_time",
    "state_change_hour",
    "trigger",
];

/// What an alert trigger's incident key may name.
const ALERT_PLACEHOLDERS: &[&str] = &["alertname", "fingerprint", "starts_at", "trigger"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default)]
    pub topics: Vec<String>,
    /// Who may send Alertmanager's webhook; without it, none is taken.
    pub alertmanager: Option<crate::alertmanager::Auth>,
    #[serde(rename = "trigger", default)]
    pub triggers: Vec<Trigger>,
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub name: String,
    /// An Alertmanager alert's `alertname` label: this trigger takes
    /// alerts, not SNS notifications.
    pub alertname: Option<String>,
    /// Further labels the alert must carry, each with this value.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub alarm: Option<String>,
    pub state: Option<String>,
    pub topic: Option<String>,
    pub runbook: PathBuf,
    pub env: Option<PathBuf>,
    pub sim: Option<PathBuf>,
    pub incident: Option<String>,
    #[serde(default)]
    pub yes: bool,
    #[serde(default)]
    pub approve: Vec<String>,
    pub approval_timeout: Option<u64>,
}

/// What a notification says, as far as triggers care.
#[derive(Debug, Default, Clone)]
pub struct Alarm {
    pub topic: String,
    pub message_id: String,
    /// CloudWatch's fields, when the message is an alarm's.
    pub name: Option<String>,
    pub state: Option<String>,
    pub region: Option<String>,
    pub account: Option<String>,
    pub state_change_time: Option<String>,
    /// The alert, when this came from Alertmanager.
    pub alert: Option<crate::alertmanager::Alert>,
    /// The delivery's W3C `traceparent`, when it had one: the run joins
    /// that trace.
    pub traceparent: Option<TraceParent>,
}

impl Alarm {
    /// Reads CloudWatch's alarm notification out of an SNS `Message`
    /// (anything else leaves the alarm fields empty). The region and
    /// account come from `AlarmArn`: the `Region` field is a display name.
    pub fn from_message(topic: &str, message_id: &str, message: &str) -> Self {
        let mut alarm = Alarm {
            topic: topic.into(),
            message_id: message_id.into(),
            ..Default::default()
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(message) else {
            return alarm;
        };
        let text = |k: &str| v[k].as_str().map(str::to_string);
        alarm.name = text("AlarmName");
        alarm.state = text("NewStateValue");
        alarm.state_change_time = text("StateChangeTime");
        alarm.account = text("AWSAccountId");
        if let Some(arn) = v["AlarmArn"].as_str() {
            let parts: Vec<&str> = arn.split(':').collect();
            if parts.len() > 4 {
                alarm.region = Some(parts[3].to_string()).filter(|r| !r.is_empty());
                alarm.account = alarm.account.or(Some(parts[4].to_string()));
            }
        }
        alarm
    }
}

impl Alarm {
    /// An Alertmanager alert, as triggers see it.
    pub fn from_alert(alert: &crate::alertmanager::Alert) -> Self {
        Alarm {
            alert: Some(alert.clone()),
            ..Default::default()
        }
    }

    /// What the run's trace says started it: the alert's identity (or the
    /// alarm's), the trigger, and the delivery's trace to join.
    pub fn trace_origin(&self, trigger: &str) -> TraceOrigin {
        let origin = TraceOrigin {
            parent: self.traceparent,
            ..TraceOrigin::default()
        }
        .with("trigger", trigger);
        match &self.alert {
            Some(a) => origin
                .with("alert.name", a.name())
                .with("alert.fingerprint", &a.fingerprint)
                .with("alert.starts_at", &a.starts_at),
            None => {
                let origin = origin
                    .with("alarm.topic", &self.topic)
                    .with("alarm.message_id", &self.message_id);
                match &self.name {
                    Some(name) => origin.with("alarm.name", name),
                    None => origin,
                }
            }
        }
    }
}

impl Triggers {
    pub fn load(path: &Path) -> Result<Self> {
        let text = runbook_core::files::read_text(path, "triggers file")?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut t = Self::parse(&text, path)?;
        t.path = path.to_path_buf();
        if let Some(auth) = &mut t.alertmanager {
            auth.load(&base).map_err(|e| {
                hinted(
                    format!("invalid triggers file `{}`: {e:#}", path.display()),
                    "the file holds the secret Alertmanager's `http_config` sends (`authorization.credentials_file`, `basic_auth.password_file`), readable by its owner only",
                )
            })?;
        }
        for trigger in &mut t.triggers {
            for p in [
                Some(&mut trigger.runbook),
                trigger.env.as_mut(),
                trigger.sim.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        // Every trigger's files read and its runbook parsed now, not when
        // its alarm fires.
        for trigger in &t.triggers {
            trigger.request("check", &Alarm::default()).map_err(|e| {
                hinted(
                    format!(
                        "invalid triggers file `{}`: trigger `{}`: {e:#}",
                        path.display(),
                        trigger.name
                    ),
                    "fix the path (relative to the triggers file) or the file it names",
                )
            })?;
        }
        Ok(t)
    }

    /// The file's text, parsed and checked on its own (no file it names
    /// is read): what [`Triggers::load`] starts from, and a fuzz target.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        runbook_core::parse::parse_toml(text, path, "triggers file", HINT, |t: &mut Triggers| {
            t.check()
        })
    }

    fn check(&self) -> Result<(), String> {
        let alerts = self
            .triggers
            .iter()
            .filter(|t| t.alertname.is_some())
            .count();
        if (self.triggers.len() > alerts || self.alertmanager.is_none()) && self.topics.is_empty() {
            return Err(
                "`topics` is empty: name the SNS topic ARNs whose notifications may start runs"
                    .into(),
            );
        }
        match &self.alertmanager {
            Some(auth) => {
                auth.check()?;
                if alerts == 0 {
                    return Err("`[alertmanager]` is given but no trigger names an `alertname`: no alert would start a run".into());
                }
            }
            None => {
                if let Some(t) = self.triggers.iter().find(|t| t.alertname.is_some()) {
                    return Err(format!(
                        "trigger `{}` names an `alertname`, but the file has no `[alertmanager]` with the credentials Alertmanager sends, so no alert is taken",
                        t.name
                    ));
                }
            }
        }
        for topic in &self.topics {
            if !is_topic_arn(topic) {
                return Err(format!(
                    "`topics`: `{topic}` is not an SNS topic ARN (`arn:aws:sns:REGION:ACCOUNT:NAME`)"
                ));
            }
        }
        if self.triggers.is_empty() {
            return Err("no `[[trigger]]`: nothing would ever start a run".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for t in &self.triggers {
            let at = format!("trigger `{}`", t.name);
            if t.name.trim().is_empty() {
                return Err("a trigger has an empty `name`".into());
            }
            if !names.insert(t.name.as_str()) {
                return Err(format!("{at} is named twice"));
            }
            if t.alertname.is_some() {
                if t.alarm.is_some() || t.state.is_some() || t.topic.is_some() {
                    return Err(format!(
                        "{at}: `alertname` (an Alertmanager alert) and `alarm`, `state` or `topic` (an SNS notification) do not go together"
                    ));
                }
            } else if !t.labels.is_empty() {
                return Err(format!("{at}: `labels` needs `alertname`"));
            } else if t.alarm.is_none() && t.topic.is_none() {
                return Err(format!(
                    "{at} names neither `alarm` nor `topic`: it would match every notification"
                ));
            }
            if t.state.is_some() && t.alarm.is_none() {
                return Err(format!("{at}: `state` needs `alarm`"));
            }
            if let Some(s) = &t.state
                && !["ALARM", "OK", "INSUFFICIENT_DATA"].contains(&s.as_str())
            {
                return Err(format!(
                    "{at}: `state` is `{s}`; CloudWatch states are `ALARM`, `OK` and `INSUFFICIENT_DATA`"
                ));
            }
            if let Some(topic) = &t.topic
                && !self.topics.contains(topic)
            {
                return Err(format!(
                    "{at}: its `topic` `{topic}` is not among `topics`, so nothing from it is accepted"
                ));
            }
            match (&t.env, &t.sim) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => return Err(format!("{at}: give exactly one of `env` (live) or `sim`")),
            }
            check_template(t.template(), t.alertname.is_some())
                .map_err(|why| format!("{at}: `incident`: {why}"))?;
            if t.alertname.is_none() && t.alarm.is_none() && t.incident.is_none() {
                return Err(format!(
                    "{at} matches a topic, not an alarm: give it an `incident` key (e.g. `{{topic}}:{{message_id}}`)"
                ));
            }
        }
        Ok(())
    }

    /// The first trigger that `alarm` matches (its index).
    pub fn find(&self, alarm: &Alarm) -> Option<usize> {
        self.triggers.iter().position(|t| t.matches(alarm))
    }

    pub fn accepts_topic(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == topic)
    }
}

fn is_topic_arn(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[2] == "sns"
        && parts[1..].iter().all(|p| !p.is_empty())
}

/// A piece of an incident key template.
enum Piece<'t> {
    Text(&'t str),
    Field(&'t str),
}

/// Gives `each` the pieces of `template` in order; a `{` without its `}`
/// is an error.
fn walk<'t>(
    template: &'t str,
    mut each: impl FnMut(Piece<'t>) -> Result<(), String>,
) -> Result<(), String> {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("`{template}` has a `{{` without its `}}`"));
        };
        each(Piece::Text(&rest[..open]))?;
        each(Piece::Field(&rest[open + 1..open + close]))?;
        rest = &rest[open + close + 1..];
    }
    each(Piece::Text(rest))
}

fn check_template(template: &str, alert: bool) -> Result<(), String> {
    let (known, times) = if alert {
        (ALERT_PLACEHOLDERS, ALERT_TIME)
    } else {
        (PLACEHOLDERS, TIME_OR_MESSAGE)
    };
    let mut named = false;
    walk(template, |piece| {
        let Piece::Field(name) = piece else {
            return Ok(());
        };
        if !known.contains(&name) {
            return Err(format!(
                "`{{{name}}}` is not known; use {}",
                known
                    .iter()
                    .map(|p| format!("`{{{p}}}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        named = true;
        Ok(())
    })?;
    // An incident that has had its run takes no other: a key that stays
    // the same from one alarm to the next would swallow every later one.
    if alert && !template.contains(ALERT_WHICH) {
        return Err(format!(
            "`{template}` does not name `{ALERT_WHICH}`: alerts of one rule that fire together share a `{{starts_at}}`, and would be one incident with one run"
        ));
    }
    if !named || !times.iter().any(|p| template.contains(p)) {
        return Err(format!(
            "`{template}` names no time or message: every later alarm would be the same incident, which has had its run, and start nothing; include {}",
            times
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

impl Trigger {
    /// Its incident key template (the default for its kind if none).
    pub fn template(&self) -> &str {
        self.incident
            .as_deref()
            .unwrap_or(if self.alertname.is_some() {
                DEFAULT_ALERT_INCIDENT
            } else {
                DEFAULT_INCIDENT
            })
    }

    fn matches(&self, a: &Alarm) -> bool {
        match (&self.alertname, &a.alert) {
            (Some(name), Some(alert)) => {
                return alert.name() == name
                    && self
                        .labels
                        .iter()
                        .all(|(k, v)| alert.labels.get(k) == Some(v));
            }
            (None, None) => {}
            _ => return false,
        }
        if self.topic.as_ref().is_some_and(|t| *t != a.topic) {
            return false;
        }
        if let Some(name) = &self.alarm {
            return a.name.as_ref() == Some(name)
                && a.state.as_deref() == Some(self.state.as_deref().unwrap_or("ALARM"));
        }
        true
    }

    /// The incident key for `alarm`.
    pub fn incident(&self, a: &Alarm) -> String {
        let template = self.template();
        let hour = a
            .state_change_time
            .as_deref()
            .map(|t| t.get(..13).unwrap_or(t).to_string());
        let value = |name: &str| -> String {
            match name {
                "alarm" => a.name.clone(),
                "state" => a.state.clone(),
                "region" => a.region.clone(),
                "account" => a.account.clone(),
                "topic" => Some(a.topic.clone()),
                "message_id" => Some(a.message_id.clone()),
                // Without one, each message is its own incident rather
                // than every later alarm being this one.
                "state_change_time" => a
                    .state_change_time
                    .clone()
                    .or_else(|| Some(a.message_id.clone())),
                "state_change_hour" => hour.clone().or_else(|| Some(a.message_id.clone())),
                "trigger" => Some(self.name.clone()),
                "alertname" => a.alert.as_ref().map(|x| x.name().to_string()),
                "fingerprint" => a.alert.as_ref().map(|x| x.fingerprint.clone()),
                "starts_at" => a.alert.as_ref().map(|x| x.starts_at.clone()),
                _ => None,
            }
            .unwrap_or_else(|| "-".into())
        };
        let mut out = String::new();
        // Checked at load: the walk does not fail here.
        let _ = walk(template, |piece| {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(name) => out.push_str(&value(name)),
            }
            Ok(())
        });
        out
    }

    /// The run request this trigger makes for `alarm`.
    pub fn request(&self, by: &str, alarm: &Alarm) -> Result<super::request::RunRequest> {
        let mut r = super::request::RunRequest::new(
            &self.runbook,
            self.sim.as_deref(),
            self.env.as_deref(),
            Some(self.incident(alarm)),
        )?;
        r.yes = self.yes;
        r.approve = self.approve.clone();
        r.approval_timeout_s = self.approval_timeout;
        // An alert's `severity` label, for the policies (upper case, as
        // `run --severity` takes it).
        r.severity = alarm
            .alert
            .as_ref()
            .and_then(|a| a.labels.get("severity"))
            .map(|s| s.to_uppercase());
        r.incident_start = match &alarm.alert {
            // Alertmanager writes RFC 3339 in UTC (`…Z`); a sender with an
            // offset gets a run without an incident start, said so.
            Some(alert) => match runbook_core::time::Timestamp::parse(&alert.starts_at) {
                Ok(_) => Some(alert.starts_at.clone()),
                Err(why) => {
                    tracing::warn!(trigger = self.name, %why, "the alert's `startsAt` is not a UTC time: its run has no incident start");
                    None
                }
            },
            None => alarm.state_change_time.as_deref().and_then(rfc3339_utc),
        };
        r.submitted_by = format!("{by} (trigger `{}`)", self.name);
        r.trace = alarm.trace_origin(&self.name);
        Ok(r)
    }
}

/// CloudWatch's `StateChangeTime` (`2026-11-27T15:04:05.000+0000`, always
/// UTC) as the RFC 3339 `--incident-start` takes; `None` if it is not such
/// a time (the run then goes without one).
fn rfc3339_utc(t: &str) -> Option<String> {
    let utc = format!("{}Z", t.strip_suffix("+0000")?);
    runbook_core::time::Timestamp::parse(&utc).ok().map(|_| utc)
}

#[cfg(test)]
#[path = "triggers_tests.rs"]
mod tests;
