//! `runbook:host/metrics`: query a time series. Resource: `Namespace/Name`.

use super::StepState;
use crate::bindings::Error;
use crate::bindings::runbook::host::metrics::{self as wit, Datapoint, MetricQuery};
use crate::grants::{Access, Interface};
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

pub trait MetricsBackend: Send + Sync {
    fn query(&self, q: &MetricQuery, deadline: Instant) -> Result<Vec<Datapoint>, Error>;
}

impl wit::Host for StepState {
    fn query(&mut self, q: MetricQuery) -> Result<Vec<Datapoint>, Error> {
        let resource = format!("{}/{}", q.namespace, q.name);
        // Validated here, once, for every backend; a `/` in the name would
        // make `Namespace/Name` ambiguous to the grant check.
        let valid = validate(&q);
        let args = serde_json::to_value(&q).unwrap_or_default();
        self.call(
            Interface::Metrics,
            "query",
            Access::Read,
            &resource,
            args,
            |b, deadline| valid.and_then(|()| b.metrics.query(&q, deadline)),
        )
    }
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::runbook::host::metrics::Host;
    use crate::capability::testing::state;

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

    #[test]
    fn granted_query_reaches_the_backend_and_others_are_denied() {
        let mut st = state("metrics = { read = [\"AuthService/*\"] }");
        let points = st
            .query(query("AuthService", "TokenValidationDuration", "p99"))
            .unwrap();
        assert_eq!(points.len(), 5);
        assert_eq!(points.last().unwrap().value, 1850.0);
        let denied = st.query(query("Billing", "Revenue", "sum")).unwrap_err();
        assert!(matches!(denied, Error::Denied(_)), "{denied:?}");
        let calls = &st.shared.journal().calls;
        assert_eq!(calls.len(), 2);
        assert!(calls[0].allowed && !calls[1].allowed);
    }

    #[test]
    fn bad_window_is_invalid() {
        let mut st = state("metrics = { read = [\"*\"] }");
        let mut q = query("AuthService", "TokenValidationDuration", "p99");
        q.period_seconds = 0;
        assert!(matches!(st.query(q).unwrap_err(), Error::Invalid(_)));
    }

    #[test]
    fn a_step_has_a_call_budget() {
        let mut st = state("metrics = { read = [\"*\"] }");
        for _ in 0..crate::capability::MAX_CALLS {
            st.query(query("AuthService", "TokenValidationDuration", "p99"))
                .unwrap();
        }
        let over = st
            .query(query("AuthService", "TokenValidationDuration", "p99"))
            .unwrap_err();
        assert!(
            matches!(&over, Error::Invalid(m) if m.contains("at most 1000")),
            "{over:?}"
        );
        // The first refusal is journaled, the rest are not.
        st.query(query("AuthService", "TokenValidationDuration", "p99"))
            .unwrap_err();
        assert_eq!(
            st.shared.journal().calls.len(),
            crate::capability::MAX_CALLS + 1
        );
    }
}
