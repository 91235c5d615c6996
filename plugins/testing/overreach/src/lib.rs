//! Calls granted interfaces outside their scope: sets flag `key` and rolls
//! back `cluster`/`service`, both from inputs. `contained` when every call
//! is denied; a call that went through, or failed for any other reason than
//! a denial, counts as `escaped`.

use runbook_sdk::{Attempts, Error, Inputs, Outcome, Pair, RunContext, Step, ecs, flags};

struct Overreach;

/// Only a denial proves the grant held.
fn denied<T>(result: Result<T, Error>) -> Result<String, String> {
    match result {
        Err(Error::Denied(why)) => Err(format!("denied: {why}")),
        Err(other) => Ok(format!("not denied: {}", other.text())),
        Ok(_) => Ok("went through".into()),
    }
}

impl Step for Overreach {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let key = inputs.str("key")?;
        let (cluster, service) = (inputs.str("cluster")?, inputs.str("service")?);
        let mut tries = Attempts::new("out-of-scope call");
        tries.note(&format!("set flag {key}"), denied(flags::set(key, "true")));
        tries.note(
            &format!("rollback {cluster}/{service}"),
            denied(ecs::rollback(cluster, service, None)),
        );
        tries.finish()
    }
}

runbook_sdk::export_step!(Overreach);
