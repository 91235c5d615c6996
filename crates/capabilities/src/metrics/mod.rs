//! `runbook:host/metrics`: query a time series. Resource: `Namespace/Name`.
//! Simulated from a scenario's `[[metrics]]` (`sim.rs`); live from
//! CloudWatch `GetMetricData` (`cloudwatch.rs`), Prometheus's query API
//! (`prometheus.rs`) or recorded values replayed from a file
//! (`replay.rs`), as `[metrics]` in an environment says.

pub mod cloudwatch;
pub mod prometheus;
pub mod replay;
pub mod sim;

use crate::backends::Backed;
use crate::bindings::Error;
use crate::bindings::runbook::host::metrics as wit;
use crate::bindings::runbook::host::metrics::{Datapoint, MetricQuery};
use crate::capability::{Capability, LiveContext};
use crate::state::StepState;
use runbook_core::interface::Interface;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

#[async_trait::async_trait]
pub trait MetricsBackend: Send + Sync {
    async fn query(&self, q: &MetricQuery, deadline: Instant) -> Result<Vec<Datapoint>, Error>;
}

/// `[metrics]` in an environment: where metrics come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, tag = "source", rename_all = "kebab-case")]
pub enum Source {
    /// CloudWatch `GetMetricData` (the default).
    #[default]
    Cloudwatch,
    /// Recorded responses replayed from a file, for rehearsals and for
    /// emulators that cannot answer metric queries.
    Replay { path: PathBuf },
    /// Prometheus's HTTP API, each granted metric mapped to a Prometheus
    /// metric by the environment (`prometheus.rs`).
    Prometheus(Box<prometheus::Config>),
}

pub struct Cap;

impl Backed for Cap {
    const INTERFACE: Interface = Interface::Metrics;
    type Backend = dyn MetricsBackend;
}

impl Capability for Cap {
    type SimConfig = Vec<sim::SimMetric>;
    type LiveConfig = Source;

    fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
        // Components built against 0.1.0 get the same functions.
        crate::bindings::v0_1::runbook::host::metrics::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
    }

    fn check_sim(config: &Self::SimConfig) -> Result<(), String> {
        sim::check(config)
    }

    fn sim(config: &Self::SimConfig, world: &Arc<crate::sim::World>) -> Arc<Self::Backend> {
        Arc::new(sim::SimMetrics::new(config.clone(), world.clone()))
    }

    fn check_sim_world(config: &Self::SimConfig, world: &crate::sim::World) -> Result<(), String> {
        sim::check_world(config, world)
    }

    fn check_live(config: &mut Self::LiveConfig, base: &Path) -> Result<(), String> {
        match config {
            Source::Replay { path } if path.is_relative() => *path = base.join(&*path),
            Source::Prometheus(c) => c.check()?,
            _ => {}
        }
        Ok(())
    }

    fn live_provides(
        config: &Self::LiveConfig,
        name: &str,
    ) -> Result<(), crate::capability::Missing> {
        // Wildcard grants are checked per call.
        match config {
            Source::Prometheus(c) if !name.ends_with('*') && !c.series.contains_key(name) => {
                Err(crate::capability::Missing::new(
                    "which {source} does not map to a Prometheus metric",
                    format!(
                        "add `[metrics.series.\"{name}\"]` with `metric` and `kind` to `{{path}}`"
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    fn live_uses_aws(config: &Self::LiveConfig) -> bool {
        matches!(config, Source::Cloudwatch)
    }

    fn live_secrets(config: &Self::LiveConfig) -> Vec<(String, crate::secrets::SecretRef)> {
        match config {
            Source::Prometheus(c) => c
                .secret_ref()
                .map(|r| vec![("`metrics`".to_string(), r)])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn live(config: &Self::LiveConfig, ctx: &LiveContext) -> anyhow::Result<Arc<Self::Backend>> {
        Ok(match config {
            Source::Replay { path } => Arc::new(replay::Replay::load(path)?),
            Source::Prometheus(c) => Arc::new(prometheus::Prometheus::new(
                c.as_ref().clone(),
                &ctx.secrets,
            )?),
            Source::Cloudwatch => {
                let aws = ctx
                    .aws
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("CloudWatch needs the AWS settings"))?;
                let mut conf = aws_sdk_cloudwatch::config::Builder::from(&aws.sdk);
                if let Some(url) = aws.endpoint("cloudwatch") {
                    conf = conf.endpoint_url(url);
                }
                let client = aws_sdk_cloudwatch::Client::from_conf(conf.build());
                Arc::new(cloudwatch::CloudWatch::new(client, aws.operation_timeout()))
            }
        })
    }
}

impl wit::Host for StepState {
    async fn query(&mut self, q: MetricQuery) -> wasmtime::Result<Result<Vec<Datapoint>, Error>> {
        let resource = format!("{}/{}", q.namespace, q.name);
        // Validated here, once, for every backend; a `/` in the name would
        // make `Namespace/Name` ambiguous to the grant check.
        let valid = validate(&q);
        let args = serde_json::to_value(&q).unwrap_or_default();
        let name = resource.clone();
        self.read(Cap, "query", &resource, args, |b, deadline| async move {
            valid?;
            finite(&name, b.query(&q, deadline).await?)
        })
        .await
    }
}

/// The statistics a query may ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum Statistic {
    Average,
    Sum,
    Minimum,
    Maximum,
    SampleCount,
    /// `p99` → 99.0, `p99.9` → 99.9.
    Percentile(f64),
}

pub fn parse_statistic(raw: &str) -> Result<Statistic, String> {
    let s = raw.to_ascii_lowercase();
    Ok(match s.as_str() {
        "average" | "avg" => Statistic::Average,
        "sum" => Statistic::Sum,
        "minimum" | "min" => Statistic::Minimum,
        "maximum" | "max" => Statistic::Maximum,
        "sample-count" | "samplecount" => Statistic::SampleCount,
        _ => match s.strip_prefix('p').and_then(|p| p.parse::<f64>().ok()) {
            Some(p) if p > 0.0 && p < 100.0 => Statistic::Percentile(p),
            _ => {
                return Err(format!(
                    "unknown statistic `{raw}`: use average, sum, minimum, maximum, sample-count or a percentile like p99"
                ));
            }
        },
    })
}

/// Whether a recorded or simulated series answers query `q`: same
/// namespace, name, statistic (however spelled) and exactly the same
/// dimensions.
pub fn series_matches(
    namespace: &str,
    name: &str,
    dimensions: &std::collections::BTreeMap<String, String>,
    statistic: &str,
    q: &MetricQuery,
) -> bool {
    namespace == q.namespace
        && name == q.name
        && *dimensions
            == q.dimensions
                .iter()
                .map(|d| (d.name.clone(), d.value.clone()))
                .collect::<std::collections::BTreeMap<_, _>>()
        && parse_statistic(statistic).ok() == parse_statistic(&q.statistic).ok()
}

/// What every backend may take for granted about a query.
pub fn validate(q: &MetricQuery) -> Result<(), Error> {
    if q.name.is_empty() || q.namespace.is_empty() || q.name.contains('/') {
        return Err(Error::Invalid(format!(
            "metric `{}` in namespace `{}`: names must be non-empty and free of `/`",
            q.name, q.namespace
        )));
    }
    parse_statistic(&q.statistic).map_err(Error::Invalid)?;
    check_window(q)
}

/// Period and window must describe at least one and at most 1440 datapoints.
pub fn check_window(q: &MetricQuery) -> Result<(), Error> {
    if q.period_seconds == 0 || q.window_seconds < q.period_seconds {
        return Err(Error::Invalid(format!(
            "window {}s must be at least one period ({}s), and the period above 0",
            q.window_seconds, q.period_seconds
        )));
    }
    if q.window_seconds / q.period_seconds > 1440 {
        return Err(Error::Invalid(
            "a query may return at most 1440 datapoints".into(),
        ));
    }
    Ok(())
}

/// Non-finite values (NaN, infinities: a Prometheus division by zero, a
/// CloudWatch math expression) are the step's error here, where they
/// enter: no step compares against NaN by accident.
fn finite(metric: &str, points: Vec<Datapoint>) -> Result<Vec<Datapoint>, Error> {
    match points.iter().find(|p| !p.value.is_finite()) {
        None => Ok(points),
        Some(p) => Err(Error::Invalid(format!(
            "metric `{metric}` has a value that is not a number (`{}` at {} ms): nothing was concluded from it",
            p.value, p.timestamp_ms
        ))),
    }
}

/// `runbook:host@0.1.0`: the same functions, forwarded.
impl crate::bindings::v0_1::runbook::host::metrics::Host for StepState {
    async fn query(
        &mut self,
        q: crate::bindings::v0_1::runbook::host::metrics::MetricQuery,
    ) -> wasmtime::Result<
        Result<
            Vec<crate::bindings::v0_1::runbook::host::metrics::Datapoint>,
            crate::bindings::v0_1::runbook::host::types::Error,
        >,
    > {
        use crate::bindings::v0_1::runbook::host::metrics as old;
        // Field by field: no JSON between the versions (JSON has no NaN).
        let q = MetricQuery {
            namespace: q.namespace,
            name: q.name,
            dimensions: q
                .dimensions
                .into_iter()
                .map(|d| wit::Dimension {
                    name: d.name,
                    value: d.value,
                })
                .collect(),
            statistic: q.statistic,
            period_seconds: q.period_seconds,
            window_seconds: q.window_seconds,
        };
        let r = wit::Host::query(self, q).await?;
        let points = r.map(|points| {
            points
                .into_iter()
                .map(|p| old::Datapoint {
                    timestamp_ms: p.timestamp_ms,
                    value: p.value,
                })
                .collect()
        });
        Ok(points.map_err(crate::bindings::old_error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::runbook::host::metrics::Host;
    use crate::testing;
    use crate::testing::Counted;
    use crate::testing::state;

    fn query(ns: &str, name: &str, stat: &str) -> MetricQuery {
        MetricQuery {
            namespace: ns.into(),
            name: name.into(),
            dimensions: vec![],
            statistic: stat.into(),
            period_seconds: 60,
            window_seconds: 300,
        }
    }

    #[test]
    fn statistics_parse() {
        assert_eq!(parse_statistic("p99").unwrap(), Statistic::Percentile(99.0));
        assert_eq!(
            parse_statistic("P99.9").unwrap(),
            Statistic::Percentile(99.9)
        );
        assert_eq!(parse_statistic("Average").unwrap(), Statistic::Average);
        assert!(parse_statistic("p100").is_err());
        assert!(parse_statistic("median").is_err());
    }

    #[tokio::test]
    async fn granted_query_reaches_the_backend_and_others_are_denied() {
        let mut st = state("metrics = { read = [\"AuthService/*\"] }");
        let points = st
            .query(query("AuthService", "TokenValidationDuration", "p99"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(points.len(), 5);
        assert_eq!(points.last().unwrap().value, 1850.0);
        let denied = st
            .query(query("Billing", "Revenue", "sum"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(denied, Error::Denied(_)), "{denied:?}");
        let calls = &st.shared.trail().calls;
        assert_eq!(calls.len(), 2);
        assert!(calls[0].allowed && !calls[1].allowed);
    }

    struct Recording;

    #[async_trait::async_trait]
    impl MetricsBackend for Counted<Recording> {
        async fn query(&self, _: &MetricQuery, _: Instant) -> Result<Vec<Datapoint>, Error> {
            self.hit();
            Ok(Vec::new())
        }
    }

    /// A backend whose answer holds NaN and infinities (a Prometheus
    /// division by zero).
    struct NotANumber;

    #[async_trait::async_trait]
    impl MetricsBackend for NotANumber {
        async fn query(&self, _: &MetricQuery, _: Instant) -> Result<Vec<Datapoint>, Error> {
            Ok([1.0, f64::NAN, f64::INFINITY]
                .into_iter()
                .enumerate()
                .map(|(i, value)| Datapoint {
                    timestamp_ms: i as u64,
                    value,
                })
                .collect())
        }
    }

    /// Non-finite values are the step's error, in both contract versions,
    /// and never a panic (0.1.0 once converted through JSON).
    #[tokio::test]
    async fn a_value_that_is_not_a_number_is_an_error_not_a_panic() {
        use crate::bindings::v0_1::runbook::host::metrics as old;
        let mut st = testing::with_backend::<Cap>(
            "metrics = { read = [\"AuthService/*\"] }",
            Arc::new(NotANumber),
        );
        let err = st
            .query(query("AuthService", "latency", "p99"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("not a number")),
            "{err:?}"
        );
        let q = old::MetricQuery {
            namespace: "AuthService".into(),
            name: "latency".into(),
            dimensions: vec![],
            statistic: "p99".into(),
            period_seconds: 60,
            window_seconds: 300,
        };
        let err = old::Host::query(&mut st, q).await.unwrap().unwrap_err();
        assert!(
            matches!(&err, crate::bindings::v0_1::runbook::host::types::Error::Invalid(m) if m.contains("not a number")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_denied_call_never_reaches_the_backend() {
        let backend = Arc::new(Counted::new(Recording));
        let mut st = testing::with_backend::<Cap>(
            "metrics = { read = [\"AuthService/latency\"] }",
            backend.clone(),
        );
        let denied = st
            .query(query("AuthService", "other", "p99"))
            .await
            .unwrap();
        assert!(matches!(denied, Err(Error::Denied(_))));
        assert_eq!(backend.hits(), 0);
        st.query(query("AuthService", "latency", "p99"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(backend.hits(), 1);
    }

    #[tokio::test]
    async fn bad_window_is_invalid() {
        let mut st = state("metrics = { read = [\"*\"] }");
        let mut q = query("AuthService", "TokenValidationDuration", "p99");
        q.period_seconds = 0;
        assert!(matches!(
            st.query(q).await.unwrap().unwrap_err(),
            Error::Invalid(_)
        ));
    }

    #[tokio::test]
    async fn a_step_has_a_call_budget() {
        let mut st = state("metrics = { read = [\"*\"] }");
        for _ in 0..crate::limits::MAX_CALLS {
            st.query(query("AuthService", "TokenValidationDuration", "p99"))
                .await
                .unwrap()
                .unwrap();
        }
        let over = st
            .query(query("AuthService", "TokenValidationDuration", "p99"))
            .await
            .unwrap_err();
        let limit = over.downcast_ref::<crate::limits::LimitExceeded>().unwrap();
        assert_eq!(limit.limit, "calls");
        assert_eq!(st.shared.trail().calls.len(), crate::limits::MAX_CALLS);
    }

    #[tokio::test]
    async fn huge_arguments_end_the_step() {
        let mut st = state("metrics = { read = [\"*\"] }");
        let q = query("AuthService", &"x".repeat(10 << 20), "p99");
        let err = st.query(q).await.unwrap_err();
        let limit = err.downcast_ref::<crate::limits::LimitExceeded>().unwrap();
        assert_eq!(limit.limit, "arguments");
        assert!(st.shared.trail().calls.is_empty());
    }
}
