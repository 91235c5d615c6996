//! Metrics from Prometheus's HTTP API (`/api/v1/query`, `/api/v1/query_range`).
//!
//! Grants stay by metric identity (`Namespace/Name`), as for CloudWatch.
//! The environment maps each identity to a Prometheus metric and its kind;
//! the host builds the PromQL from that mapping, the query's statistic,
//! period and dimensions. A plugin never writes PromQL, so a grant for
//! `AuthService/latency` cannot be stretched into a query over anything else:
//!
//! ```toml
//! [metrics]
//! source = "prometheus"
//! url = "http://prometheus.internal:9090"
//! bearer_token_env = "PROMETHEUS_TOKEN"   # or basic_user + basic_password_env
//! timeout_ms = 5000                       # per attempt
//! max_attempts = 3                        # retries on timeouts, 429, 5xx
//!
//! [metrics.series."AuthService/auth-service.token.validation.duration"]
//! metric = "auth_token_validation_duration_seconds"
//! kind = "histogram"                      # histogram | gauge | counter
//! scale = 1000.0                          # seconds → milliseconds
//! labels = { Service = "service" }        # dimension → label
//! matchers = { job = "auth-service" }     # fixed label values (optional)
//! ```
//!
//! What a statistic becomes (`SEL` the selector, `P` the period):
//!
//! | kind | statistic | PromQL |
//! |---|---|---|
//! | histogram | `pNN` | `histogram_quantile(0.NN, sum by (le) (rate(M_bucket{SEL}[P])))` |
//! | histogram | `average` | `sum(rate(M_sum{SEL}[P])) / sum(rate(M_count{SEL}[P]))` |
//! | histogram | `sum` / `sample-count` | `sum(increase(M_sum{SEL}[P]))` / `sum(increase(M_count{SEL}[P]))` |
//! | gauge | `average` / `minimum` / `maximum` | `avg(avg_over_time(M{SEL}[P]))`, `min(min_over_time(…))`, `max(max_over_time(…))` |
//! | gauge | `sum` / `sample-count` / `pNN` | `sum(sum_over_time(…))`, `sum(count_over_time(…))`, `max(quantile_over_time(0.NN, …))` |
//! | counter | `sum` / `average` | `sum(increase(M{SEL}[P]))` (per period), `sum(rate(M{SEL}[P]))` (per second) |
//!
//! A window of several periods is a range query with one point per whole
//! period, the last ending now; a window of one period is an instant
//! query. A point's timestamp is its period's start, as CloudWatch's. A
//! query without one of the mapped dimensions aggregates over every series
//! of the metric (as CloudWatch's metric without that dimension would be). What Prometheus
//! answers that is not a number is never passed on: `NaN` (a rate over no
//! samples, a quantile of an empty histogram) is a point without data, and
//! a series with no points is no data; `±Inf` (a quantile above the highest
//! bucket) is the step's `invalid` error naming the metric.

use super::{MetricsBackend, Statistic, parse_statistic};
use crate::aws::bounded;
use crate::bindings::Error;
use crate::bindings::runbook::host::metrics::{Datapoint, MetricQuery};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The largest answer read; a range query of 1440 points is about 60 KB.
const MAX_BODY: usize = 4 << 20;

/// `[metrics]` with `source = "prometheus"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The server's base URL (`http` or `https`), without credentials.
    pub url: String,
    /// The variable holding a bearer token, if the server wants one.
    #[serde(default)]
    pub bearer_token_env: Option<String>,
    /// Basic authentication: the user, and the variable holding the password.
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password_env: Option<String>,
    /// Either credential from AWS Secrets Manager instead of a variable
    /// (`NAME` or `NAME#KEY`): `crate::secrets`.
    #[serde(default)]
    pub bearer_token_secret: Option<String>,
    #[serde(default)]
    pub basic_password_secret: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Metric identity (`Namespace/Name`, as grants name it) → what it is
    /// in Prometheus.
    #[serde(default)]
    pub series: BTreeMap<String, Series>,
}

fn default_timeout() -> u64 {
    5_000
}
fn default_attempts() -> u32 {
    3
}
fn one() -> f64 {
    1.0
}

/// One metric identity in Prometheus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    /// The metric's name; for a histogram, without `_bucket`, `_sum`, `_count`.
    pub metric: String,
    pub kind: Kind,
    /// Each value is multiplied by this (e.g. 1000 for seconds → ms).
    #[serde(default = "one")]
    pub scale: f64,
    /// A query's dimension name → the label it selects on. A dimension not
    /// listed here is refused, never dropped.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Label values every query of this metric selects.
    #[serde(default)]
    pub matchers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Histogram,
    Gauge,
    Counter,
}

/// Names PromQL reads as keywords or functions' modifiers where a metric
/// name would go.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
];

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !KEYWORDS.contains(&s.to_ascii_lowercase().as_str())
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Config {
    /// Everything that can be known wrong before a run: the URL, the
    /// limits, the credentials' variables (named, set, never echoed) and
    /// every series' names.
    pub fn check(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| format!("`metrics.url` is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "`metrics.url` must be `http://` or `https://`, not `{}:`",
                url.scheme()
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("`metrics.url` must not carry credentials: use `basic_user` and `basic_password_env`, or `bearer_token_env`".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("`metrics.url` is the server's base URL, without `?` or `#`".into());
        }
        crate::environment::check_attempts("metrics", self.timeout_ms, self.max_attempts)?;
        let bearer = crate::secrets::SecretRef::either(
            "`metrics`",
            "bearer_token",
            self.bearer_token_env.as_ref(),
            self.bearer_token_secret.as_ref(),
        )?;
        let basic = crate::secrets::SecretRef::either(
            "`metrics`",
            "basic_password",
            self.basic_password_env.as_ref(),
            self.basic_password_secret.as_ref(),
        )?;
        if bearer.is_some() && self.basic_user.is_some() {
            return Err("`metrics` has both `bearer_token_env` and `basic_user`: use one".into());
        }
        if self.basic_user.is_some() != basic.is_some() {
            return Err("`metrics.basic_user` and `metrics.basic_password_env` go together".into());
        }
        for (field, var) in [
            ("bearer_token_env", &self.bearer_token_env),
            ("basic_password_env", &self.basic_password_env),
        ] {
            let Some(var) = var else { continue };
            // Never echo the value: it may be the secret, pasted in.
            if !crate::environment::is_conventional_variable(var) {
                return Err(format!(
                    "`metrics.{field}` must name an environment variable (upper case, like `PROMETHEUS_TOKEN`), not hold the secret itself"
                ));
            }
            if std::env::var_os(var).is_none() {
                return Err(format!(
                    "`metrics.{field}` names `{var}`, which is not set: export it before the run"
                ));
            }
        }
        for (key, s) in &self.series {
            let at = format!("`metrics.series.\"{key}\"`");
            match key.rsplit_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {}
                _ => {
                    return Err(format!(
                        "{at}: a series is named `Namespace/Name`, as grants name metrics"
                    ));
                }
            }
            if !is_metric_name(&s.metric) {
                return Err(format!(
                    "{at}: `{}` is not a Prometheus metric name",
                    s.metric
                ));
            }
            if !s.scale.is_finite() || s.scale == 0.0 {
                return Err(format!(
                    "{at}: `scale` must be a finite number other than 0"
                ));
            }
            for label in s.labels.values().chain(s.matchers.keys()) {
                if !is_label_name(label) {
                    return Err(format!("{at}: `{label}` is not a label name"));
                }
                if s.kind == Kind::Histogram && label == "le" {
                    return Err(format!(
                        "{at}: `le` is the histogram's bucket label; a query cannot select on it"
                    ));
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for label in s.labels.values() {
                if !seen.insert(label) || s.matchers.contains_key(label) {
                    return Err(format!(
                        "{at}: label `{label}` is selected twice (by two dimensions, or by a dimension and `matchers`)"
                    ));
                }
            }
            for value in s.matchers.values() {
                if value.chars().any(char::is_control) {
                    return Err(format!(
                        "{at}: a `matchers` value holds a control character"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A PromQL string literal.
fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `0.99` for p99, `0.999` for p99.9; a percentile finer than eight
/// decimals of a quantile is refused rather than rounded to another.
fn quantile(key: &str, p: f64) -> Result<String, Error> {
    let q = p / 100.0;
    let s = format!("{q:.8}");
    let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 1.0 && (v - q).abs() < 1e-9 => Ok(s),
        _ => Err(Error::Invalid(format!(
            "metric `{key}`: percentile p{p} is finer than Prometheus is asked for here (at most six decimals)"
        ))),
    }
}

/// The PromQL for query `q` of the series `key` maps to.
pub fn promql(key: &str, s: &Series, q: &MetricQuery) -> Result<String, Error> {
    let statistic = parse_statistic(&q.statistic).map_err(Error::Invalid)?;
    let mut selected: Vec<String> = s
        .matchers
        .iter()
        .map(|(label, value)| format!("{label}={}", quote(value)))
        .collect();
    for d in &q.dimensions {
        let Some(label) = s.labels.get(&d.name) else {
            let known: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            return Err(Error::Invalid(format!(
                "metric `{key}` has no label for dimension `{}` (the environment maps {}): nothing was queried",
                d.name,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        // An empty value would also match series without the label.
        if d.value.is_empty() || d.value.chars().any(char::is_control) {
            return Err(Error::Invalid(format!(
                "dimension `{}` of metric `{key}` is empty or holds a control character",
                d.name
            )));
        }
        selected.push(format!("{label}={}", quote(&d.value)));
    }
    let sel = format!("{{{}}}", selected.join(","));
    let range = format!("[{}s]", q.period_seconds);
    let m = &s.metric;
    let unsupported = |what: &str| {
        Err(Error::Invalid(format!(
            "metric `{key}` is a Prometheus {what}, which has no `{}`",
            q.statistic
        )))
    };
    Ok(match (s.kind, statistic) {
        (Kind::Histogram, Statistic::Percentile(p)) => format!(
            "histogram_quantile({}, sum by (le) (rate({m}_bucket{sel}{range})))",
            quantile(key, p)?
        ),
        (Kind::Histogram, Statistic::Average) => {
            format!("sum(rate({m}_sum{sel}{range})) / sum(rate({m}_count{sel}{range}))")
        }
        (Kind::Histogram, Statistic::Sum) => format!("sum(increase({m}_sum{sel}{range}))"),
        (Kind::Histogram, Statistic::SampleCount) => {
            format!("sum(increase({m}_count{sel}{range}))")
        }
        (Kind::Histogram, _) => return unsupported("histogram"),
        (Kind::Gauge, Statistic::Average) => format!("avg(avg_over_time({m}{sel}{range}))"),
        (Kind::Gauge, Statistic::Minimum) => format!("min(min_over_time({m}{sel}{range}))"),
        (Kind::Gauge, Statistic::Maximum) => format!("max(max_over_time({m}{sel}{range}))"),
        (Kind::Gauge, Statistic::Sum) => format!("sum(sum_over_time({m}{sel}{range}))"),
        (Kind::Gauge, Statistic::SampleCount) => {
            format!("sum(count_over_time({m}{sel}{range}))")
        }
        (Kind::Gauge, Statistic::Percentile(p)) => {
            format!(
                "max(quantile_over_time({}, {m}{sel}{range}))",
                quantile(key, p)?
            )
        }
        (Kind::Counter, Statistic::Sum) => format!("sum(increase({m}{sel}{range}))"),
        (Kind::Counter, Statistic::Average) => format!("sum(rate({m}{sel}{range}))"),
        (Kind::Counter, _) => return unsupported("counter"),
    })
}

pub struct Prometheus {
    config: Config,
    http: reqwest::Client,
    /// The bearer token or basic password, read once for the run.
    credential: Option<crate::secrets::Secret>,
}

impl Config {
    /// How its credential is named, if it has one (checked at load).
    pub fn secret_ref(&self) -> Option<crate::secrets::SecretRef> {
        let pick = |field, env: &Option<String>, secret: &Option<String>| {
            crate::secrets::SecretRef::either("", field, env.as_ref(), secret.as_ref())
                .ok()
                .flatten()
        };
        pick(
            "bearer_token",
            &self.bearer_token_env,
            &self.bearer_token_secret,
        )
        .or_else(|| {
            pick(
                "basic_password",
                &self.basic_password_env,
                &self.basic_password_secret,
            )
        })
    }
}

impl Prometheus {
    pub fn new(config: Config, secrets: &crate::secrets::Secrets) -> anyhow::Result<Self> {
        let credential = match config.secret_ref() {
            Some(r) => Some(secrets.resolve("`metrics`", &r)?),
            None => None,
        };
        let http = reqwest::Client::builder()
            // The query and its credentials go to `url`, nowhere else.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.timeout_ms.min(3_000)))
            .build()?;
        Ok(Self {
            config,
            http,
            credential,
        })
    }

    /// Every attempt and the pauses between them, and a second to spare.
    fn total(&self) -> Duration {
        let pauses: u64 = (1..self.config.max_attempts).map(backoff_ms).sum();
        Duration::from_millis(self.config.timeout_ms)
            .saturating_mul(self.config.max_attempts)
            .saturating_add(Duration::from_millis(pauses + 1_000))
    }

    fn request(&self, url: reqwest::Url) -> Result<reqwest::RequestBuilder, Error> {
        let req = self.http.get(url);
        Ok(match (&self.config.basic_user, &self.credential) {
            (Some(user), Some(password)) => req.basic_auth(user, Some(password.expose())),
            (None, Some(token)) => req.bearer_auth(token.expose()),
            _ => req,
        })
    }

    /// GETs `path` with `params`, retrying timeouts, refused connections,
    /// 429 and 5xx with backoff up to `max_attempts`; the answer's body, at
    /// most [`MAX_BODY`] bytes.
    async fn get(
        &self,
        what: &str,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Vec<u8>, Error> {
        let mut url = reqwest::Url::parse(&self.config.url)
            .map_err(|e| Error::Invalid(format!("{what}: `metrics.url` ({e})")))?;
        {
            let base = url.path().trim_end_matches('/').to_string();
            url.set_path(&format!("{base}{path}"));
            let mut pairs = url.query_pairs_mut();
            for (k, v) in params {
                pairs.append_pair(k, v);
            }
        }
        let mut last = String::new();
        let mut timed_out = false;
        for attempt in 0..self.config.max_attempts {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(backoff_ms(attempt))).await;
            }
            match self.request(url.clone())?.send().await {
                Ok(r) if r.status().is_success() => return read_capped(what, r).await,
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {
                    last = format!("answered {}", r.status());
                }
                Ok(r) if matches!(r.status().as_u16(), 401 | 403) => {
                    return Err(Error::Unavailable(format!(
                        "{what}: Prometheus refused the credentials ({})",
                        r.status()
                    )));
                }
                Ok(r) => {
                    // 400 `bad_data`, 422 `execution`: the query is wrong.
                    let status = r.status();
                    let body = read_capped(what, r).await.unwrap_or_default();
                    let why = serde_json::from_slice::<Answer>(&body)
                        .ok()
                        .and_then(|a| a.error)
                        .unwrap_or_default();
                    return Err(Error::Invalid(format!(
                        "{what}: Prometheus refused the query: {status} {}",
                        crate::limits::clip(why, 300)
                    )));
                }
                Err(e) if e.is_timeout() => last = "no answer in time".into(),
                Err(e) if e.is_connect() => last = "could not connect".into(),
                Err(e) => last = format!("request failed ({})", e.without_url()),
            }
            timed_out = last == "no answer in time";
        }
        let why = format!("{what}: {last} after {} attempts", self.config.max_attempts);
        Err(if timed_out {
            Error::Timeout(why)
        } else {
            Error::Unavailable(why)
        })
    }
}

/// The pause before attempt `attempt` (1, 2, …).
fn backoff_ms(attempt: u32) -> u64 {
    200 << attempt.min(4)
}

async fn read_capped(what: &str, mut r: reqwest::Response) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(Error::Invalid(format!(
                        "{what}: Prometheus's answer is larger than {} MiB: nothing was concluded from it",
                        MAX_BODY >> 20
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "{what}: the answer broke off ({})",
                    e.without_url()
                )));
            }
        }
    }
}

/// Prometheus's answer envelope; fields this host does not read (warnings,
/// native histograms) are allowed, the shape of what it reads is not.
#[derive(Debug, Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "resultType", content = "result", rename_all = "lowercase")]
enum Data {
    Matrix(Vec<RangeSeries>),
    Vector(Vec<InstantSample>),
    Scalar((f64, String)),
    String(serde::de::IgnoredAny),
}

#[derive(Debug, Deserialize)]
struct RangeSeries {
    #[serde(default)]
    values: Vec<(f64, String)>,
    /// Native histograms' points: not numbers this host passes on.
    #[serde(default)]
    histograms: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
struct InstantSample {
    #[serde(default)]
    value: Option<(f64, String)>,
    #[serde(default)]
    histogram: Option<serde::de::IgnoredAny>,
}

/// The datapoints in a successful answer, scaled, oldest first.
pub fn datapoints(
    what: &str,
    body: &[u8],
    scale: f64,
    period_ms: u64,
) -> Result<Vec<Datapoint>, Error> {
    let answer: Answer = serde_json::from_slice(body).map_err(|e| {
        Error::Invalid(format!(
            "{what}: Prometheus's answer is not one this host reads ({e})"
        ))
    })?;
    if answer.status != "success" {
        return Err(Error::Unavailable(format!(
            "{what}: Prometheus answered `{}`: {}",
            answer.status,
            crate::limits::clip(answer.error.unwrap_or_default(), 300)
        )));
    }
    let samples: Vec<(f64, String)> = match answer.data {
        None => Vec::new(),
        Some(Data::Matrix(series)) if series.len() > 1 => {
            return Err(several(what, series.len()));
        }
        Some(Data::Vector(samples)) if samples.len() > 1 => {
            return Err(several(what, samples.len()));
        }
        Some(Data::Matrix(series)) if series.iter().any(|s| s.histograms.is_some()) => {
            return Err(native(what));
        }
        Some(Data::Vector(samples)) if samples.iter().any(|s| s.histogram.is_some()) => {
            return Err(native(what));
        }
        Some(Data::Matrix(series)) => series.into_iter().flat_map(|s| s.values).collect(),
        Some(Data::Vector(samples)) => samples.into_iter().filter_map(|s| s.value).collect(),
        Some(Data::Scalar(v)) => vec![v],
        Some(Data::String(_)) => {
            return Err(Error::Invalid(format!(
                "{what}: Prometheus answered a string, not numbers"
            )));
        }
    };
    let mut points = Vec::with_capacity(samples.len());
    for (t, raw) in samples {
        let value: f64 = match raw.as_str() {
            // A rate over no samples, the quantile of an empty histogram:
            // there was nothing to measure at this time.
            "NaN" => continue,
            _ => raw.parse().map_err(|_| {
                Error::Invalid(format!(
                    "{what}: `{}` is not a number",
                    crate::limits::clip(raw.clone(), 40)
                ))
            })?,
        };
        if !value.is_finite() {
            return Err(Error::Invalid(format!(
                "{what}: Prometheus answered `{raw}` (for a histogram quantile: above the highest bucket's `le`): nothing was concluded from it"
            )));
        }
        let value = value * scale;
        if !value.is_finite() || !t.is_finite() || t < 0.0 {
            return Err(Error::Invalid(format!(
                "{what}: a point out of range (`{raw}` at {t})"
            )));
        }
        // Prometheus stamps a point at the end of its `[P]` look-back; the
        // contract's timestamp is the period's start.
        points.push(Datapoint {
            timestamp_ms: ((t * 1000.0).round() as u64).saturating_sub(period_ms),
            value,
        });
    }
    points.sort_by_key(|p| p.timestamp_ms);
    Ok(points)
}

fn native(what: &str) -> Error {
    Error::Invalid(format!(
        "{what}: Prometheus answered a native histogram, not numbers: map the metric as `kind = \"histogram\"` with classic buckets"
    ))
}

fn several(what: &str, n: usize) -> Error {
    Error::Invalid(format!(
        "{what}: the query matched {n} series, not one: map more of the query's dimensions to labels, or add `matchers`"
    ))
}

#[async_trait::async_trait]
impl MetricsBackend for Prometheus {
    async fn query(&self, q: &MetricQuery, deadline: Instant) -> Result<Vec<Datapoint>, Error> {
        let key = format!("{}/{}", q.namespace, q.name);
        let series = self.config.series.get(&key).ok_or_else(|| {
            Error::NotFound(format!(
                "metric `{key}` is not mapped to a Prometheus metric in the environment (`[metrics.series.\"{key}\"]`)"
            ))
        })?;
        let expr = promql(&key, series, q)?;
        let what = format!("prometheus `{key}`");
        let end_ms = runbook_core::time::now_ms();
        let secs = |ms: u64| format!("{:.3}", ms as f64 / 1000.0);
        // As many whole periods as the window holds, the last ending now.
        let periods = u64::from(q.window_seconds / q.period_seconds);
        let period_ms = u64::from(q.period_seconds) * 1000;
        let (path, params) = if periods <= 1 {
            (
                "/api/v1/query",
                vec![("query", expr), ("time", secs(end_ms))],
            )
        } else {
            let start_ms = end_ms.saturating_sub((periods - 1) * period_ms);
            (
                "/api/v1/query_range",
                vec![
                    ("query", expr),
                    ("start", secs(start_ms)),
                    ("end", secs(end_ms)),
                    ("step", format!("{}s", q.period_seconds)),
                ],
            )
        };
        bounded(&what, self.total(), deadline, async {
            let body = self.get(&what, path, &params).await?;
            datapoints(&what, &body, series.scale, period_ms)
        })
        .await
    }
}

#[cfg(test)]
#[path = "prometheus_tests.rs"]
mod tests;
