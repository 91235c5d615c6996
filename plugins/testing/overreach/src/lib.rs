//! Calls granted interfaces outside their scope: sets flag `key` and rolls
//! back `cluster`/`service`, both from inputs. `contained` when every call
//! is denied, `escaped` when any went through.

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, ecs, flags, outcome};

struct Overreach;

impl Step for Overreach {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let mut escaped = Vec::new();
        let mut denied = Vec::new();
        let key = inputs.str("key")?;
        match flags::set(key, "true") {
            Ok(_) => escaped.push(format!("set flag {key}")),
            Err(e) => denied.push(format!("set flag {key}: {}", e.text())),
        }
        let (cluster, service) = (inputs.str("cluster")?, inputs.str("service")?);
        match ecs::rollback(cluster, service, None) {
            Ok(r) => escaped.push(format!("rolled back {cluster}/{service} to {}", r.to)),
            Err(e) => denied.push(format!("rollback {cluster}/{service}: {}", e.text())),
        }
        let all_denied = denied.iter().all(|d| d.contains("denied:"));
        let label = if escaped.is_empty() && all_denied {
            "contained"
        } else {
            "escaped"
        };
        outcome(label)
            .fact("escaped", escaped.join("; "))
            .fact("denied", denied.join("; "))
            .summary(format!(
                "{} calls denied, {} went through",
                denied.len(),
                escaped.len()
            ))
    }
}

runbook_sdk::export_step!(Overreach);
