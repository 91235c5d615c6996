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

#[cfg(test)]
mod tests {
    use super::SetFlag;
    use runbook_sdk::testing::FakeHost;

    #[test]
    fn sets_a_flag_and_reports_the_previous_value() {
        let ran = FakeHost::new()
            .flag("AUTH_STATELESS_FALLBACK", "false")
            .run::<SetFlag>(&[("key", "AUTH_STATELESS_FALLBACK"), ("value", "true")]);
        assert_eq!(ran.outcome().label, "set");
        assert_eq!(ran.fact("previous"), Some("false"));
        assert_eq!(ran.host.flags["AUTH_STATELESS_FALLBACK"], "true");
        assert_eq!(
            ran.host.calls,
            [
                "feature-flags.get AUTH_STATELESS_FALLBACK",
                "feature-flags.set AUTH_STATELESS_FALLBACK"
            ]
        );
    }

    #[test]
    fn leaves_a_flag_that_has_the_value() {
        let ran = FakeHost::new()
            .flag("K", "true")
            .run::<SetFlag>(&[("key", "K"), ("value", "true")]);
        assert_eq!(ran.outcome().label, "unchanged");
        assert_eq!(ran.host.calls, ["feature-flags.get K"]);
    }

    #[test]
    fn a_denied_flag_is_an_error_not_a_panic() {
        let ran = FakeHost::new()
            .deny("feature-flags")
            .run::<SetFlag>(&[("key", "K"), ("value", "true")]);
        let err = ran.result.unwrap_err();
        assert_eq!(err.kind(), "denied");
    }
}
