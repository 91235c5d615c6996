//! Simulated metrics: each `[[metrics]]` series of a scenario has a value,
//! and `effects` that change it once remediation took hold (a flag set, a
//! rollback finished). A query returns the value for each period of its
//! window.

use super::{MetricsBackend, parse_statistic, series_matches};
use crate::bindings::Error;
use crate::bindings::runbook::host::metrics::{Datapoint, MetricQuery};
use crate::ecs::sim::SimEcs;
use crate::feature_flags::sim::SimFlags;
use crate::sim::World;
use runbook_core::interface::Interface;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// How long a simulated query takes, so timestamps in the report advance.
const CALL_MS: u64 = 80;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMetric {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    pub statistic: String,
    pub value: f64,
    /// Applied in order; the last one whose condition holds sets the value.
    #[serde(default)]
    pub effects: Vec<Effect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    pub when: Condition,
    pub value: f64,
}

/// `{ flag = "KEY", equals = "true" }` or
/// `{ service = "cluster/service", task_definition = "family:rev" }` (the
/// service runs that task definition and its rollout has finished).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub flag: Option<String>,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub task_definition: Option<String>,
}

/// Values a scenario may give: finite, and within what CloudWatch stores.
const MAX_VALUE: f64 = 1e15;

pub fn check(series: &[SimMetric]) -> Result<(), String> {
    for m in series {
        let at = format!("metric `{}/{}`", m.namespace, m.name);
        parse_statistic(&m.statistic).map_err(|why| format!("{at}: {why}"))?;
        for v in std::iter::once(m.value).chain(m.effects.iter().map(|e| e.value)) {
            if !v.is_finite() || v.abs() > MAX_VALUE {
                return Err(format!(
                    "{at}: value `{v}` must be a finite number of at most {MAX_VALUE:e}"
                ));
            }
        }
        for e in &m.effects {
            match (
                &e.when.flag,
                &e.when.equals,
                &e.when.service,
                &e.when.task_definition,
            ) {
                (Some(_), Some(_), None, None) | (None, None, Some(_), Some(_)) => {}
                _ => {
                    return Err(format!(
                        "{at}: effect: `when` needs either `flag` and `equals`, or `service` and `task_definition`"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// An effect naming a service must name one the scenario has.
pub fn check_world(series: &[SimMetric], world: &World) -> Result<(), String> {
    let ecs = world.get::<SimEcs>(Interface::Ecs);
    for m in series {
        for e in &m.effects {
            if let Some(svc) = &e.when.service
                && !ecs.as_ref().is_some_and(|ecs| ecs.has(svc))
            {
                return Err(format!(
                    "metric `{}/{}`: effect: `when.service` names `{svc}`, which is not under `[ecs]`",
                    m.namespace, m.name
                ));
            }
        }
    }
    Ok(())
}

pub struct SimMetrics {
    series: Vec<SimMetric>,
    world: Arc<World>,
}

impl SimMetrics {
    pub fn new(series: Vec<SimMetric>, world: Arc<World>) -> Self {
        Self { series, world }
    }

    fn holds(&self, c: &Condition) -> bool {
        if let (Some(flag), Some(equals)) = (&c.flag, &c.equals) {
            return self
                .world
                .get::<SimFlags>(Interface::FeatureFlags)
                .is_some_and(|f| f.value(flag).as_ref() == Some(equals));
        }
        if let (Some(svc), Some(td)) = (&c.service, &c.task_definition) {
            return self
                .world
                .get::<SimEcs>(Interface::Ecs)
                .is_some_and(|e| e.runs_stable(svc, td, self.world.now_ms()));
        }
        false
    }
}

#[async_trait::async_trait]
impl MetricsBackend for SimMetrics {
    async fn query(&self, q: &MetricQuery, _deadline: Instant) -> Result<Vec<Datapoint>, Error> {
        let now = self.world.advance(CALL_MS);
        let series = self
            .series
            .iter()
            .find(|m| series_matches(&m.namespace, &m.name, &m.dimensions, &m.statistic, q));
        let Some(series) = series else {
            // Like CloudWatch: an unknown metric is just one without data.
            return Ok(Vec::new());
        };
        let value = series
            .effects
            .iter()
            .rfind(|e| self.holds(&e.when))
            .map_or(series.value, |e| e.value);
        let period_ms = u64::from(q.period_seconds) * 1000;
        let points = u64::from(q.window_seconds / q.period_seconds);
        let end = now - now % period_ms;
        Ok((0..points)
            .rev()
            .map(|i| Datapoint {
                timestamp_ms: end.saturating_sub((i + 1) * period_ms),
                value,
            })
            .collect())
    }
}
