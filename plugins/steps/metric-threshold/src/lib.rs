//! `healthy` when the latest value of a statistic is within the threshold,
//! `degraded` when it is past it, `no-data` when the window is empty.
//! Inputs: `namespace`, `metric`, `statistic` (default `p99`), `threshold`,
//! `direction` (`above` is bad, the default, or `below`), `dimensions`
//! (`Name=Value,...`), `period_seconds` (60), `window_seconds` (300), `unit`,
//! `fact` (also report this fact, `true` when degraded, for later steps).

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, metrics, outcome};

struct MetricThreshold;

impl Step for MetricThreshold {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let threshold: f64 = inputs.num("threshold")?;
        let bad_when_below = match inputs.opt("direction").unwrap_or("above") {
            "above" => false,
            "below" => true,
            other => {
                return Err(Error::Invalid(format!(
                    "input `direction` must be `above` or `below`, not `{other}`"
                )));
            }
        };
        let unit = inputs.opt("unit").unwrap_or("");
        let query = metrics::MetricQuery {
            namespace: inputs.str("namespace")?.to_string(),
            name: inputs.str("metric")?.to_string(),
            dimensions: inputs.dimensions("dimensions")?,
            statistic: inputs.opt("statistic").unwrap_or("p99").to_string(),
            period_seconds: inputs.num_or("period_seconds", 60)?,
            window_seconds: inputs.num_or("window_seconds", 300)?,
        };
        let what = format!("{} {}", query.name, query.statistic);
        let Some(value) = runbook_sdk::latest(&query)? else {
            return outcome("no-data")
                .fact("metric", &query.name)
                .summary(format!(
                    "{what}: no datapoints in the last {}s",
                    query.window_seconds
                ));
        };
        let bad = if bad_when_below {
            value < threshold
        } else {
            value > threshold
        };
        let (label, cmp) = match (bad, bad_when_below) {
            (true, false) => ("degraded", ">"),
            (true, true) => ("degraded", "<"),
            (false, false) => ("healthy", "<="),
            (false, true) => ("healthy", ">="),
        };
        let mut out = outcome(label)
            .fact("value", value)
            .fact("threshold", threshold);
        if let Some(fact) = inputs.opt("fact") {
            out = out.fact(fact, bad);
        }
        out.summary(format!("{what} is {value}{unit} ({cmp} {threshold}{unit})"))
    }
}

runbook_sdk::export_step!(MetricThreshold);

#[cfg(test)]
mod tests {
    use super::MetricThreshold;
    use runbook_sdk::testing::FakeHost;

    const INPUTS: [(&str, &str); 3] = [
        ("namespace", "AuthService"),
        ("metric", "latency"),
        ("threshold", "500"),
    ];

    #[test]
    fn past_the_threshold_is_degraded() {
        let ran = FakeHost::new()
            .metric("AuthService", "latency", &[120.0, 1850.0])
            .run::<MetricThreshold>(&INPUTS);
        assert_eq!(ran.outcome().label, "degraded");
        assert_eq!(ran.fact("value"), Some("1850"));
    }

    #[test]
    fn within_it_is_healthy_and_no_data_is_said() {
        let ran = FakeHost::new()
            .metric("AuthService", "latency", &[140.0])
            .run::<MetricThreshold>(&INPUTS);
        assert_eq!(ran.outcome().label, "healthy");
        let ran = FakeHost::new().run::<MetricThreshold>(&INPUTS);
        assert_eq!(ran.outcome().label, "no-data");
    }

    #[test]
    fn a_bad_input_is_invalid() {
        let ran = FakeHost::new().run::<MetricThreshold>(&[("threshold", "lots")]);
        assert_eq!(ran.result.unwrap_err().kind(), "invalid");
    }
}

#[cfg(test)]
mod host_checks {
    use super::MetricThreshold;
    use runbook_sdk::testing::FakeHost;

    /// The fake host refuses what the real one refuses.
    #[test]
    fn a_window_shorter_than_a_period_is_invalid_as_on_the_host() {
        let ran = FakeHost::new()
            .metric("A", "m", &[1.0])
            .run::<MetricThreshold>(&[
                ("namespace", "A"),
                ("metric", "m"),
                ("threshold", "5"),
                ("period_seconds", "60"),
                ("window_seconds", "30"),
            ]);
        assert_eq!(ran.result.unwrap_err().kind(), "invalid");
    }

    /// A series for one statistic and dimensions is not another's data.
    #[test]
    fn other_dimensions_find_no_data() {
        let host =
            FakeHost::new().metric_exactly("A", "m", "p99", &[("Service", "auth")], &[900.0]);
        let ran = host.clone().run::<MetricThreshold>(&[
            ("namespace", "A"),
            ("metric", "m"),
            ("threshold", "500"),
            ("dimensions", "Service=auth"),
        ]);
        assert_eq!(ran.outcome().label, "degraded");
        let ran = host.run::<MetricThreshold>(&[
            ("namespace", "A"),
            ("metric", "m"),
            ("threshold", "500"),
            ("dimensions", "Service=billing"),
        ]);
        assert_eq!(ran.outcome().label, "no-data");
    }
}
