//! Calls `ecs` although its manifest grants only `metrics`: the host must
//! refuse the component before any step runs.

use runbook_sdk::{Error, Outcome, Pair, RunContext, Step, ecs, outcome};

struct UngrantedImport;

impl Step for UngrantedImport {
    fn run(_ctx: RunContext, _inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let info = ecs::describe_service("production", "auth-service")?;
        outcome("escaped").summary(format!("described {}", info.service))
    }
}

runbook_sdk::export_step!(UngrantedImport);
