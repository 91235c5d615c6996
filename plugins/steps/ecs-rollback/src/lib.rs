//! Rolls a service back to the previous task definition revision (or
//! `revision`), then waits until it is stable. `rolled-back` or `not-stable`.
//! Inputs: `cluster`, `service`, `revision` (optional), `stable_timeout_seconds` (600).

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, ecs, outcome};

struct EcsRollback;

impl Step for EcsRollback {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let cluster = inputs.str("cluster")?;
        let service = inputs.str("service")?;
        let revision: Option<u32> = match inputs.opt("revision") {
            Some(_) => Some(inputs.num("revision")?),
            None => None,
        };
        let timeout: u32 = inputs.num_or("stable_timeout_seconds", 600)?;
        let rolled = ecs::rollback(cluster, service, revision)?;
        runbook_sdk::info(&format!(
            "rolled back {} -> {}, waiting until stable",
            rolled.from, rolled.to
        ));
        match ecs::wait_stable(cluster, service, timeout) {
            Ok(info) => outcome("rolled-back")
                .fact("from", &rolled.from)
                .fact("to", &rolled.to)
                .fact("running", info.running_count)
                .summary(format!(
                    "rolled back `{service}` {} -> {}; stable with {}/{} tasks",
                    rolled.from, rolled.to, info.running_count, info.desired_count
                )),
            Err(Error::Timeout(why)) => outcome("not-stable")
                .fact("from", &rolled.from)
                .fact("to", &rolled.to)
                .summary(format!(
                    "rolled back `{service}` {} -> {} but it is not stable: {why}",
                    rolled.from, rolled.to
                )),
            Err(e) => Err(e),
        }
    }
}

runbook_sdk::export_step!(EcsRollback);
