//! `runbook:host/redis`: ping and INFO stats. Resource: the target alias.
//! Simulated from a scenario's `[redis.ALIAS]` (`sim.rs`); live against
//! the servers an environment's `[redis.ALIAS]` names (`live.rs`).

pub mod live;
pub mod sim;

use crate::backends::Backed;
use crate::bindings::runbook::host::redis as wit;
use crate::bindings::runbook::host::redis::{InfoStats, PingReply};
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
pub trait RedisBackend: Send + Sync {
    async fn ping(&self, target: &str, deadline: Instant) -> Result<PingReply, Error>;
    async fn info(&self, target: &str, deadline: Instant) -> Result<InfoStats, Error>;
}

pub struct Cap;

impl Backed for Cap {
    const INTERFACE: Interface = Interface::Redis;
    type Backend = dyn RedisBackend;
}

impl Capability for Cap {
    type SimConfig = BTreeMap<String, sim::SimRedis>;
    type LiveConfig = BTreeMap<String, live::RedisTarget>;

    fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
        // Components built against 0.1.0 get the same functions.
        crate::bindings::v0_1::runbook::host::redis::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
    }

    fn check_sim(config: &Self::SimConfig) -> Result<(), String> {
        sim::check(config)
    }

    fn sim(config: &Self::SimConfig, world: &Arc<crate::sim::World>) -> Arc<Self::Backend> {
        Arc::new(sim::SimRedisBackend::new(config.clone(), world.clone()))
    }

    fn sim_provides(config: &Self::SimConfig, name: &str) -> Result<(), Missing> {
        // Wildcard grants are checked per call.
        if name.ends_with('*') || config.contains_key(name) {
            return Ok(());
        }
        Err(Missing::new(
            "which {source} does not define",
            format!("add `[redis.{name}]` with a `status` to `{{path}}`"),
        ))
    }

    fn check_live(config: &mut Self::LiveConfig, base: &Path) -> Result<(), String> {
        for (alias, t) in config.iter_mut() {
            t.check(&format!("redis.{alias}"), base)?;
        }
        Ok(())
    }

    fn live_provides(config: &Self::LiveConfig, name: &str) -> Result<(), Missing> {
        // Wildcard grants are checked per call.
        if name.ends_with('*') || config.contains_key(name) {
            return Ok(());
        }
        Err(Missing::new(
            "which {source} does not define",
            format!("add `[redis.{name}]` with its `url` to `{{path}}`"),
        ))
    }

    fn live_secrets(config: &Self::LiveConfig) -> Vec<(String, crate::secrets::SecretRef)> {
        config
            .iter()
            .filter_map(|(alias, t)| Some((format!("`redis.{alias}`"), t.secret_ref()?)))
            .collect()
    }

    fn live(config: &Self::LiveConfig, ctx: &LiveContext) -> anyhow::Result<Arc<Self::Backend>> {
        let targets = config
            .iter()
            .map(|(alias, t)| {
                Ok((
                    alias.clone(),
                    t.resolved(&format!("`redis.{alias}`"), &ctx.secrets)?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Arc::new(live::Redis::new(targets)))
    }
}

impl wit::Host for StepState {
    async fn ping(&mut self, target: String) -> wasmtime::Result<Result<PingReply, Error>> {
        let args = json!({ "target": target });
        self.read(Cap, "ping", &target.clone(), args, |b, d| async move {
            b.ping(&target, d).await
        })
        .await
    }

    async fn info(&mut self, target: String) -> wasmtime::Result<Result<InfoStats, Error>> {
        let args = json!({ "target": target });
        self.read(Cap, "info", &target.clone(), args, |b, d| async move {
            b.info(&target, d).await
        })
        .await
    }
}

/// `runbook:host@0.1.0`: the same functions, forwarded.
impl crate::bindings::v0_1::runbook::host::redis::Host for StepState {
    async fn ping(
        &mut self,
        target: String,
    ) -> wasmtime::Result<
        Result<
            crate::bindings::v0_1::runbook::host::redis::PingReply,
            crate::bindings::v0_1::runbook::host::types::Error,
        >,
    > {
        Ok(forward(wit::Host::ping(self, target).await?))
    }

    async fn info(
        &mut self,
        target: String,
    ) -> wasmtime::Result<
        Result<
            crate::bindings::v0_1::runbook::host::redis::InfoStats,
            crate::bindings::v0_1::runbook::host::types::Error,
        >,
    > {
        Ok(forward(wit::Host::info(self, target).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::runbook::host::redis::Host;
    use crate::testing;
    use crate::testing::Counted;
    use crate::testing::state;

    #[tokio::test]
    async fn ping_granted_alias_only() {
        let mut st = state("redis = { read = [\"session-store\"] }");
        assert!(matches!(
            st.ping("session-store".into()).await.unwrap().unwrap_err(),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            st.ping("cache".into()).await.unwrap().unwrap_err(),
            Error::Denied(_)
        ));
        assert_eq!(st.shared.trail().calls[1].error.as_deref(), Some("denied"));
    }

    struct Recording;

    #[async_trait::async_trait]
    impl RedisBackend for Counted<Recording> {
        async fn ping(&self, _: &str, _: Instant) -> Result<PingReply, Error> {
            self.hit();
            Ok(PingReply {
                reply: "PONG".into(),
                latency_ms: 0.1,
            })
        }
        async fn info(&self, _: &str, _: Instant) -> Result<InfoStats, Error> {
            self.hit();
            Ok(InfoStats {
                connected_clients: 1,
                keyspace_hits: 0,
                keyspace_misses: 0,
            })
        }
    }

    #[tokio::test]
    async fn a_denied_call_never_reaches_the_backend() {
        let backend = Arc::new(Counted::new(Recording));
        let mut st =
            testing::with_backend::<Cap>("redis = { read = [\"session-store\"] }", backend.clone());
        assert!(matches!(
            st.ping("billing-db".into()).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert!(matches!(
            st.info("billing-db".into()).await.unwrap(),
            Err(Error::Denied(_))
        ));
        assert_eq!(backend.hits(), 0);
        st.ping("session-store".into()).await.unwrap().unwrap();
        assert_eq!(backend.hits(), 1);
    }
}
