//! Finds which services see auth failures: for each service, the sum of a
//! per-service error metric (e.g. 401/403 responses) against a baseline.
//! `contained` when at most `max_impacted` (0) services are over it,
//! `widespread` otherwise. Inputs: `namespace`, `metric`, `services`
//! (comma list), `dimension` (`Service`), `baseline`, `statistic` (`sum`),
//! `period_seconds` (60), `window_seconds` (300), `max_impacted` (0).

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, metrics, outcome};

struct DownstreamImpact;

impl Step for DownstreamImpact {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let baseline: f64 = inputs.num("baseline")?;
        let max_impacted: usize = inputs.num_or("max_impacted", 0)?;
        let dimension = inputs.opt("dimension").unwrap_or("Service");
        let mut impacted = Vec::new();
        let mut checked = 0;
        for service in inputs.list("services")? {
            let query = metrics::MetricQuery {
                namespace: inputs.str("namespace")?.to_string(),
                name: inputs.str("metric")?.to_string(),
                dimensions: vec![metrics::Dimension {
                    name: dimension.to_string(),
                    value: service.clone(),
                }],
                statistic: inputs.opt("statistic").unwrap_or("sum").to_string(),
                period_seconds: inputs.num_or("period_seconds", 60)?,
                window_seconds: inputs.num_or("window_seconds", 300)?,
            };
            checked += 1;
            let value = runbook_sdk::latest(&query)?.unwrap_or(0.0);
            if value > baseline {
                impacted.push(format!("{service} ({value})"));
            }
        }
        let label = if impacted.len() > max_impacted {
            "widespread"
        } else {
            "contained"
        };
        let list = if impacted.is_empty() {
            "none".to_string()
        } else {
            impacted.join(", ")
        };
        outcome(label)
            .fact("impacted", &list)
            .fact("impacted_count", impacted.len())
            .summary(format!(
                "{} of {checked} services above baseline {baseline}: {list}",
                impacted.len()
            ))
    }
}

runbook_sdk::export_step!(DownstreamImpact);
