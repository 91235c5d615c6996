//! `runbook:host/feature-flags`: read and set flags. Resource: the flag key.
//! `set` is a mutation.

use super::{Backends, StepState};
use crate::bindings::Error;
use crate::bindings::runbook::host::feature_flags as wit;
use crate::grants::{Access, Interface};
use serde_json::json;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

pub trait FlagsBackend: Send + Sync {
    fn get(&self, key: &str, deadline: Instant) -> Result<Option<String>, Error>;
    /// Returns the previous value.
    fn set(&self, key: &str, value: &str, deadline: Instant) -> Result<Option<String>, Error>;
}

impl wit::Host for StepState {
    fn get(&mut self, key: String) -> Result<Option<String>, Error> {
        self.call(
            Interface::FeatureFlags,
            "get",
            Access::Read,
            &key,
            json!({ "key": key }),
            |b, d| b.flags.get(&key, d),
        )
    }

    fn set(&mut self, key: String, value: String) -> Result<Option<String>, Error> {
        let args = json!({ "key": key, "value": value });
        let preview = |b: &Backends, d| {
            let now = b.flags.get(&key, d)?;
            let shown = now.as_deref().unwrap_or("(unset)");
            Ok((format!("set flag `{key}` from `{shown}` to `{value}`"), now))
        };
        self.mutate(
            Interface::FeatureFlags,
            "set",
            &key,
            args,
            preview,
            |b, d, _| b.flags.set(&key, &value, d),
        )
    }
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

#[cfg(test)]
mod tests {
    use crate::bindings::Error;
    use crate::bindings::runbook::host::feature_flags::Host;
    use crate::capability::testing::state;

    #[test]
    fn set_needs_mutate_on_that_key() {
        let mut st =
            state("feature-flags = { read = [\"*\"], mutate = [\"AUTH_STATELESS_FALLBACK\"] }");
        assert_eq!(
            st.get("AUTH_STATELESS_FALLBACK".into()).unwrap().as_deref(),
            Some("false")
        );
        let prev = st
            .set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .unwrap();
        assert_eq!(prev.as_deref(), Some("false"));
        assert_eq!(
            st.get("AUTH_STATELESS_FALLBACK".into()).unwrap().as_deref(),
            Some("true")
        );
        let denied = st
            .set("BILLING_KILL_SWITCH".into(), "true".into())
            .unwrap_err();
        assert!(matches!(denied, Error::Denied(_)));
        // The denied write never reached the store.
        assert_eq!(st.get("BILLING_KILL_SWITCH".into()).unwrap(), None);
    }

    #[test]
    fn unapproved_and_dry_run_sets_never_reach_the_store() {
        use crate::approval::Policy;
        use crate::capability::testing::with_policy;
        let grants = "feature-flags = { read = [\"*\"], mutate = [\"*\"] }";
        // Live run, nobody to ask, step not approved: held.
        let mut st = with_policy(grants, Policy::Steps(Default::default()), false);
        let held = st
            .set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .unwrap_err();
        assert!(
            matches!(&held, Error::Denied(m) if m.starts_with("awaiting approval to set flag")),
            "{held:?}"
        );
        assert_eq!(
            st.get("AUTH_STATELESS_FALLBACK".into()).unwrap().as_deref(),
            Some("false")
        );
        assert!(st.shared.journal().awaiting.is_some());
        // Dry run: the step is told what it would have been told.
        let mut st = with_policy(grants, Policy::DryRun, false);
        let previous = st
            .set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .unwrap();
        assert_eq!(previous.as_deref(), Some("false"));
        assert_eq!(
            st.get("AUTH_STATELESS_FALLBACK".into()).unwrap().as_deref(),
            Some("false")
        );
        // Approved for this step by name.
        let mut st = with_policy(grants, Policy::Steps(["step".to_string()].into()), false);
        st.set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .unwrap();
        assert_eq!(
            st.get("AUTH_STATELESS_FALLBACK".into()).unwrap().as_deref(),
            Some("true")
        );
    }
}
