//! `{{name}}`: is an error budget burning? Reads the latest value of one
//! metric (errors per minute) and compares it with the budget.
//! Outcomes: `within-budget`, `burning`, `no-data`.

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, metrics, outcome};

struct Plugin;

impl Step for Plugin {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let budget: f64 = inputs.num("budget")?;
        let query = metrics::MetricQuery {
            namespace: inputs.str("namespace")?.to_string(),
            name: inputs.str("metric")?.to_string(),
            dimensions: inputs.dimensions("dimensions")?,
            statistic: "sum".to_string(),
            period_seconds: 60,
            window_seconds: 300,
        };
        let Some(spent) = runbook_sdk::latest(&query)? else {
            return outcome("no-data").summary(format!("{}: no data in 5 minutes", query.name));
        };
        let label = if spent > budget { "burning" } else { "within-budget" };
        outcome(label)
            .fact("spent", spent)
            .fact("budget", budget)
            .summary(format!("{} is {spent} a minute; the budget is {budget}", query.name))
    }
}

runbook_sdk::export_step!(Plugin);

/// `cargo test` runs these natively, against a fake host.
#[cfg(test)]
mod tests {
    use super::Plugin;
    use runbook_sdk::testing::FakeHost;

    const INPUTS: [(&str, &str); 3] = [("namespace", "Example"), ("metric", "errors"), ("budget", "100")];

    #[test]
    fn over_budget_is_burning() {
        let ran = FakeHost::new()
            .metric("Example", "errors", &[20.0, 250.0])
            .run::<Plugin>(&INPUTS);
        assert_eq!(ran.outcome().label, "burning");
        assert_eq!(ran.fact("spent"), Some("250"));
        assert_eq!(ran.host.calls, ["metrics.query Example/errors"]);
    }

    #[test]
    fn under_budget_is_within_it_and_no_data_is_said() {
        let ran = FakeHost::new().metric("Example", "errors", &[12.0]).run::<Plugin>(&INPUTS);
        assert_eq!(ran.outcome().label, "within-budget");
        let ran = FakeHost::new().run::<Plugin>(&INPUTS);
        assert_eq!(ran.outcome().label, "no-data");
    }
}
