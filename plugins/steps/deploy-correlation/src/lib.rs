//! Looks for a deployment of the service that started shortly before the
//! incident. `correlated` (with the suspect task definition) or
//! `uncorrelated`. Inputs: `cluster`, `service`, `lookback_minutes` (60):
//! how long before the incident start a deployment counts as a suspect.
//!
//! Never a suspect: a deployment an earlier run of the same incident made
//! (its rollback: the host marks it `made-by`), and one that no longer
//! runs (a rollback is done already): a rerun must not roll back the fix.

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, ecs, outcome};

struct DeployCorrelation;

const MINUTE_MS: u64 = 60_000;

impl Step for DeployCorrelation {
    fn run(ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let cluster = inputs.str("cluster")?;
        let service = inputs.str("service")?;
        let lookback: u64 = inputs.num_or("lookback_minutes", 60)?;
        // Without a known start, the step's own time stands in for it.
        let incident = ctx.incident_start_ms.unwrap_or(ctx.now_ms);
        let info = ecs::describe_service(cluster, service)?;
        let window_start = incident.saturating_sub(lookback * MINUTE_MS);
        let in_window: Vec<_> = info
            .deployments
            .iter()
            .filter(|d| d.created_at_ms >= window_start && d.created_at_ms <= ctx.now_ms)
            .collect();
        let own = in_window.iter().filter(|d| d.made_by.is_some()).count();
        let suspect = in_window
            .iter()
            .filter(|d| d.made_by.is_none())
            .max_by_key(|d| d.created_at_ms);
        match suspect {
            Some(d) if d.task_definition != info.task_definition => outcome("uncorrelated")
                .fact("task_definition", &info.task_definition)
                .fact("suspect", &d.task_definition)
                .fact("own_deployments", own)
                .summary(format!(
                    "`{service}` deployed `{}` shortly before the incident, but runs `{}` now: nothing left to roll back",
                    d.task_definition, info.task_definition
                )),
            Some(d) => {
                let before = if d.created_at_ms <= incident {
                    format!("{} min before", (incident - d.created_at_ms) / MINUTE_MS)
                } else {
                    format!("{} min after", (d.created_at_ms - incident) / MINUTE_MS)
                };
                outcome("correlated")
                    .fact("task_definition", &d.task_definition)
                    .fact("deployment", &d.id)
                    .summary(format!(
                        "`{service}` deployed `{}` {before} the incident started",
                        d.task_definition
                    ))
            }
            None => outcome("uncorrelated")
                .fact("task_definition", &info.task_definition)
                .fact("own_deployments", own)
                .summary(format!(
                    "no `{service}` deployment in the {lookback} min before the incident (running `{}`){}",
                    info.task_definition,
                    if own > 0 {
                        format!("; {own} made by this incident's earlier runs")
                    } else {
                        String::new()
                    }
                )),
        }
    }
}

runbook_sdk::export_step!(DeployCorrelation);
