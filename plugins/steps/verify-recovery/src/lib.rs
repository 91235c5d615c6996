//! Verifies recovery: success rate above a minimum, latency below a maximum
//! and, when `redis_target` is given, Redis connections stable across two
//! readings. `recovered` or `not-recovered` (with what failed).
//! Inputs: `namespace`, `dimensions`, `success_metric`, `min_success`
//! (percent), `latency_metric`, `latency_statistic` (`p99`), `max_latency`,
//! `redis_target`, `max_connection_change` (percent, 10).

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, metrics, outcome, redis};

struct VerifyRecovery;

fn latest(inputs: &Inputs, metric: &str, statistic: &str) -> Result<Option<f64>, Error> {
    runbook_sdk::latest(&metrics::MetricQuery {
        namespace: inputs.str("namespace")?.to_string(),
        name: metric.to_string(),
        dimensions: inputs.dimensions("dimensions")?,
        statistic: statistic.to_string(),
        period_seconds: inputs.num_or("period_seconds", 60)?,
        window_seconds: inputs.num_or("window_seconds", 300)?,
    })
}

impl Step for VerifyRecovery {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let min_success: f64 = inputs.num("min_success")?;
        let max_latency: f64 = inputs.num("max_latency")?;
        let mut checks = Vec::new();
        let mut failed = Vec::new();

        let success = latest(&inputs, inputs.str("success_metric")?, "average")?;
        match success {
            Some(v) if v > min_success => checks.push(format!("success {v}% > {min_success}%")),
            Some(v) => failed.push(format!("success {v}% <= {min_success}%")),
            None => failed.push("no success-rate data".to_string()),
        }
        let statistic = inputs.opt("latency_statistic").unwrap_or("p99");
        match latest(&inputs, inputs.str("latency_metric")?, statistic)? {
            Some(v) if v < max_latency => {
                checks.push(format!("{statistic} {v}ms < {max_latency}ms"))
            }
            Some(v) => failed.push(format!("{statistic} {v}ms >= {max_latency}ms")),
            None => failed.push("no latency data".to_string()),
        }
        if let Some(target) = inputs.opt("redis_target") {
            let max_change: f64 = inputs.num_or("max_connection_change", 10.0)?;
            match (redis::info(target), redis::info(target)) {
                (Ok(a), Ok(b)) => {
                    let base = f64::from(a.connected_clients.max(1));
                    let change = (f64::from(b.connected_clients) - f64::from(a.connected_clients))
                        .abs()
                        / base
                        * 100.0;
                    let msg = format!(
                        "redis `{target}` connections {} -> {}",
                        a.connected_clients, b.connected_clients
                    );
                    if change <= max_change {
                        checks.push(msg)
                    } else {
                        failed.push(msg)
                    }
                }
                (Err(e), _) | (_, Err(e)) => failed.push(format!("redis `{target}`: {}", e.text())),
            }
        }
        if failed.is_empty() {
            outcome("recovered")
                .fact("checks", checks.join("; "))
                .summary(format!("recovered: {}", checks.join("; ")))
        } else {
            outcome("not-recovered")
                .fact("failed", failed.join("; "))
                .summary(format!("not recovered: {}", failed.join("; ")))
        }
    }
}

runbook_sdk::export_step!(VerifyRecovery);
