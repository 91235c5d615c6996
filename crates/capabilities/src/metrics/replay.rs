//! Recorded metric responses, replayed in order: each query of a series
//! returns its next recorded value (the last one repeats). For rehearsing a
//! runbook against real Redis/ECS/flags where no metrics service can answer
//! (emulators cannot compute percentiles).

use super::{MetricsBackend, parse_statistic, series_matches};
use crate::bindings::Error;
use crate::bindings::runbook::host::metrics::{Datapoint, MetricQuery};
use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    series: Vec<Series>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Series {
    namespace: String,
    name: String,
    #[serde(default)]
    dimensions: BTreeMap<String, String>,
    statistic: String,
    values: Vec<f64>,
}

pub struct Replay {
    series: Vec<Series>,
    served: Mutex<Vec<usize>>,
}

const HINT: &str =
    "a replay file lists `[[series]]` with namespace, name, dimensions, statistic and `values`";

fn check(file: &mut File) -> Result<(), String> {
    for s in &file.series {
        let at = format!("`{}/{}`", s.namespace, s.name);
        parse_statistic(&s.statistic).map_err(|why| format!("{at}: {why}"))?;
        if s.values.is_empty() {
            return Err(format!("{at} has no values"));
        }
        if let Some(v) = s.values.iter().find(|v| !v.is_finite()) {
            return Err(format!("{at}: value `{v}` is not a finite number"));
        }
    }
    Ok(())
}

impl Replay {
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_file(runbook_core::parse::load_toml(
            path,
            "metric replay",
            HINT,
            check,
        )?)
    }

    /// Recorded values from `text`; `path` names them in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        Self::from_file(runbook_core::parse::parse_toml(
            text,
            path,
            "metric replay",
            HINT,
            check,
        )?)
    }

    fn from_file(file: File) -> Result<Self> {
        let served = Mutex::new(vec![0; file.series.len()]);
        Ok(Self {
            series: file.series,
            served,
        })
    }
}

#[async_trait::async_trait]
impl MetricsBackend for Replay {
    async fn query(&self, q: &MetricQuery, _deadline: Instant) -> Result<Vec<Datapoint>, Error> {
        let Some(i) = self
            .series
            .iter()
            .position(|s| series_matches(&s.namespace, &s.name, &s.dimensions, &s.statistic, q))
        else {
            return Ok(Vec::new());
        };
        let mut served = self.served.lock().unwrap_or_else(|e| e.into_inner());
        let values = &self.series[i].values;
        let value = values[served[i].min(values.len() - 1)];
        served[i] += 1;
        let now = runbook_core::time::now_ms();
        Ok(vec![Datapoint {
            timestamp_ms: now - now % (u64::from(q.period_seconds) * 1000),
            value,
        }])
    }
}
