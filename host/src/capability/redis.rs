//! `runbook:host/redis`: ping and INFO stats. Resource: the target alias.

use super::StepState;
use crate::bindings::Error;
use crate::bindings::runbook::host::redis::{self as wit, InfoStats, PingReply};
use crate::grants::{Access, Interface};
use serde_json::json;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

pub trait RedisBackend: Send + Sync {
    fn ping(&self, target: &str, deadline: Instant) -> Result<PingReply, Error>;
    fn info(&self, target: &str, deadline: Instant) -> Result<InfoStats, Error>;
}

impl wit::Host for StepState {
    fn ping(&mut self, target: String) -> Result<PingReply, Error> {
        self.call(
            Interface::Redis,
            "ping",
            Access::Read,
            &target,
            json!({ "target": target }),
            |b, d| b.redis.ping(&target, d),
        )
    }

    fn info(&mut self, target: String) -> Result<InfoStats, Error> {
        self.call(
            Interface::Redis,
            "info",
            Access::Read,
            &target,
            json!({ "target": target }),
            |b, d| b.redis.info(&target, d),
        )
    }
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
}

#[cfg(test)]
mod tests {
    use crate::bindings::Error;
    use crate::bindings::runbook::host::redis::Host;
    use crate::capability::testing::state;

    #[test]
    fn ping_granted_alias_only() {
        let mut st = state("redis = { read = [\"session-store\"] }");
        assert!(matches!(
            st.ping("session-store".into()).unwrap_err(),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            st.ping("cache".into()).unwrap_err(),
            Error::Denied(_)
        ));
        assert_eq!(
            st.shared.journal().calls[1].error.as_deref(),
            Some("denied")
        );
    }
}
