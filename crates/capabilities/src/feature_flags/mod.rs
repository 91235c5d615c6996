//! `runbook:host/feature-flags`: read and set flags. Resource: the flag key.
//! `set` is a mutation. Simulated from a scenario's `[flags]` (`sim.rs`);
//! live in a JSON file, a Redis hash or SSM Parameter Store, as an
//! environment's `[flags]` says (`live.rs`).

pub mod live;
pub mod sim;

use crate::backends::Backed;
use crate::bindings::runbook::host::feature_flags as wit;
use crate::bindings::{Error, forward};
use crate::capability::{Capability, LiveContext, Missing};
use crate::state::StepState;
use runbook_core::interface::Interface;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

#[async_trait::async_trait]
pub trait FlagsBackend: Send + Sync {
    async fn get(&self, key: &str, deadline: Instant) -> Result<Option<String>, Error>;
    /// Returns the previous value.
    async fn set(&self, key: &str, value: &str, deadline: Instant)
    -> Result<Option<String>, Error>;
}

pub struct Cap;

impl Backed for Cap {
    const INTERFACE: Interface = Interface::FeatureFlags;
    type Backend = dyn FlagsBackend;
}

impl Capability for Cap {
    type SimConfig = BTreeMap<String, String>;
    type LiveConfig = Option<live::FlagStore>;

    fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
        // Components built against 0.1.0 get the same functions.
        crate::bindings::v0_1::runbook::host::feature_flags::add_to_linker::<_, HasSelf<_>>(
            linker,
            |s| s,
        )
    }

    fn sim(config: &Self::SimConfig, world: &Arc<crate::sim::World>) -> Arc<Self::Backend> {
        let flags = Arc::new(sim::SimFlags::new(config.clone(), world.clone()));
        world.put(Interface::FeatureFlags, flags.clone());
        flags
    }

    fn check_live(config: &mut Self::LiveConfig, base: &Path) -> Result<(), String> {
        match config {
            Some(live::FlagStore::File { path }) if path.is_relative() => {
                *path = base.join(&*path);
                Ok(())
            }
            Some(live::FlagStore::Redis { target, .. }) => target.check("flags", base),
            _ => Ok(()),
        }
    }

    fn live_provides(config: &Self::LiveConfig, _name: &str) -> Result<(), Missing> {
        match config {
            Some(_) => Ok(()),
            None => Err(Missing::new(
                "but {source} has no `[flags]` store",
                "add `[flags]` with `store = \"file\"` and a `path` (or `redis` / `ssm`) to `{path}`",
            )),
        }
    }

    fn live_uses_aws(config: &Self::LiveConfig) -> bool {
        matches!(config, Some(live::FlagStore::Ssm { .. }))
    }

    fn live_secrets(config: &Self::LiveConfig) -> Vec<(String, crate::secrets::SecretRef)> {
        match config {
            Some(live::FlagStore::Redis { target, .. }) => target
                .secret_ref()
                .map(|r| vec![("`flags`".to_string(), r)])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    fn live(config: &Self::LiveConfig, ctx: &LiveContext) -> anyhow::Result<Arc<Self::Backend>> {
        live::backend(config.as_ref(), ctx)
    }
}

impl wit::Host for StepState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<String>, Error>> {
        let args = json!({ "key": key });
        self.read(Cap, "get", &key.clone(), args, |b, d| async move {
            b.get(&key, d).await
        })
        .await
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<Option<String>, Error>> {
        let args = json!({ "key": key, "value": value });
        let resource = key.clone();
        let (k, v) = (key.clone(), value.clone());
        let preview = |b: Arc<dyn FlagsBackend>, d| async move {
            let now = b.get(&k, d).await?;
            let shown = now.as_deref().unwrap_or("(unset)");
            Ok((format!("set flag `{k}` from `{shown}` to `{v}`"), now))
        };
        let (k, v) = (key.clone(), value.clone());
        // What was approved is a change from the previewed value: if the
        // flag moved meanwhile (another run), nothing is changed.
        let apply = |b: Arc<dyn FlagsBackend>, d, approved: Option<String>| async move {
            let now = b.get(&k, d).await?;
            if now != approved {
                return Err(Error::Invalid(format!(
                    "flag `{k}` is `{}`, not `{}` as when setting it to `{v}` was approved; nothing was changed",
                    now.as_deref().unwrap_or("(unset)"),
                    approved.as_deref().unwrap_or("(unset)")
                )));
            }
            b.set(&k, &v, d).await
        };
        let in_effect = |b: Arc<dyn FlagsBackend>, d, _| async move {
            Ok(b.get(&key, d).await?.as_deref() == Some(value.as_str()))
        };
        self.mutate(Cap, "set", &resource, args, preview, apply, in_effect)
            .await
    }
}

/// `runbook:host@0.1.0`: the same functions, forwarded.
impl crate::bindings::v0_1::runbook::host::feature_flags::Host for StepState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, crate::bindings::v0_1::runbook::host::types::Error>>
    {
        Ok(forward(wit::Host::get(self, key).await?))
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
    ) -> wasmtime::Result<Result<Option<String>, crate::bindings::v0_1::runbook::host::types::Error>>
    {
        Ok(forward(wit::Host::set(self, key, value).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::runbook::host::feature_flags::Host;
    use crate::testing;
    use crate::testing::Counted;
    use crate::testing::state;

    #[tokio::test]
    async fn set_needs_mutate_on_that_key() {
        let mut st =
            state("feature-flags = { read = [\"*\"], mutate = [\"AUTH_STATELESS_FALLBACK\"] }");
        let get = async |st: &mut StepState, k: &str| st.get(k.into()).await.unwrap().unwrap();
        assert_eq!(
            get(&mut st, "AUTH_STATELESS_FALLBACK").await.as_deref(),
            Some("false")
        );
        let prev = st
            .set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(prev.as_deref(), Some("false"));
        assert_eq!(
            get(&mut st, "AUTH_STATELESS_FALLBACK").await.as_deref(),
            Some("true")
        );
        let denied = st
            .set("BILLING_KILL_SWITCH".into(), "true".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(denied, Error::Denied(_)));
        // The denied write never reached the store.
        assert_eq!(get(&mut st, "BILLING_KILL_SWITCH").await, None);
    }

    #[tokio::test]
    async fn unapproved_and_dry_run_sets_never_reach_the_store() {
        use crate::testing::with_policy;
        use runbook_core::approval::Policy;
        let grants = "feature-flags = { read = [\"*\"], mutate = [\"*\"] }";
        let get = async |st: &mut StepState| {
            st.get("AUTH_STATELESS_FALLBACK".into())
                .await
                .unwrap()
                .unwrap()
        };
        // Live run, nobody to ask, step not approved: held.
        let mut st = with_policy(grants, Policy::Steps(Default::default()), false);
        let held = st
            .set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&held, Error::Denied(m) if m.starts_with("awaiting approval to set flag")),
            "{held:?}"
        );
        assert_eq!(get(&mut st).await.as_deref(), Some("false"));
        assert!(st.shared.trail().awaiting.is_some());
        // Dry run: the step is told what it would have been told.
        let mut st = with_policy(grants, Policy::DryRun, false);
        let previous = st
            .set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(previous.as_deref(), Some("false"));
        assert_eq!(get(&mut st).await.as_deref(), Some("false"));
        // Approved for this step by name.
        let mut st = with_policy(grants, Policy::Steps(["step".to_string()].into()), false);
        st.set("AUTH_STATELESS_FALLBACK".into(), "true".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(get(&mut st).await.as_deref(), Some("true"));
    }

    struct Recording;

    #[async_trait::async_trait]
    impl FlagsBackend for Counted<Recording> {
        async fn get(&self, _: &str, _: Instant) -> Result<Option<String>, Error> {
            self.hit();
            Ok(None)
        }
        async fn set(&self, _: &str, _: &str, _: Instant) -> Result<Option<String>, Error> {
            self.hit();
            Ok(None)
        }
    }

    #[tokio::test]
    async fn a_denied_call_never_reaches_the_backend() {
        let backend = Arc::new(Counted::new(Recording));
        let mut st = testing::with_backend::<Cap>(
            "feature-flags = { read = [\"AUTH_*\"], mutate = [\"AUTH_X\"] }",
            backend.clone(),
        );
        assert!(matches!(
            st.get("BILLING".into()).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert!(matches!(
            st.set("AUTH_Y".into(), "1".into()).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert_eq!(backend.hits(), 0);
        st.set("AUTH_X".into(), "1".into()).await.unwrap().unwrap();
        // The preview read, the check before the write, and the write.
        assert_eq!(backend.hits(), 3);
    }
}
