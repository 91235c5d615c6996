//! Sets a feature flag. `set` when it changed, `unchanged` when it already had
//! the value. Inputs: `key`, `value`.

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, flags, outcome};

struct SetFlag;

impl Step for SetFlag {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let key = inputs.str("key")?;
        let value = inputs.str("value")?;
        let before = flags::get(key)?;
        if before.as_deref() == Some(value) {
            return outcome("unchanged")
                .fact("key", key)
                .fact("value", value)
                .summary(format!("`{key}` was already `{value}`"));
        }
        let previous = flags::set(key, value)?;
        let previous = previous.unwrap_or_else(|| "(unset)".to_string());
        outcome("set")
            .fact("key", key)
            .fact("value", value)
            .fact("previous", &previous)
            .summary(format!("set `{key}` to `{value}` (was `{previous}`)"))
    }
}

runbook_sdk::export_step!(SetFlag);
