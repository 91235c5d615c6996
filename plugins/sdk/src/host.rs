//! One module per capability, named as plugins use them. In a component
//! each function calls the host; in a native `cargo test` it is answered
//! by the [`crate::testing::FakeHost`] the test installed.

/// Calls the host in a component, the fake host in a native test.
macro_rules! call {
    ($wasm:expr, $fake:expr) => {{
        #[cfg(target_arch = "wasm32")]
        {
            $wasm
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::with($fake)
        }
    }};
}

pub mod metrics {
    //! Read time series metrics. Needs a `metrics` grant.
    use crate::Error;
    pub use crate::bindings::runbook::host::metrics::{Datapoint, Dimension, MetricQuery};

    /// Datapoints oldest first; empty when the window has no data.
    pub fn query(q: &MetricQuery) -> Result<Vec<Datapoint>, Error> {
        call!(crate::bindings::runbook::host::metrics::query(q), |h| h
            .metrics_query(q))
    }
}

pub mod redis {
    //! Health of Redis servers, by alias. Needs a `redis` grant.
    use crate::Error;
    pub use crate::bindings::runbook::host::redis::{InfoStats, PingReply};

    pub fn ping(target: &str) -> Result<PingReply, Error> {
        call!(crate::bindings::runbook::host::redis::ping(target), |h| h
            .redis_ping(target))
    }

    pub fn info(target: &str) -> Result<InfoStats, Error> {
        call!(crate::bindings::runbook::host::redis::info(target), |h| h
            .redis_info(target))
    }
}

pub mod flags {
    //! Feature flags. `set` is a mutation. Needs a `feature-flags` grant.
    use crate::Error;

    /// `None` when the flag is not set.
    pub fn get(key: &str) -> Result<Option<String>, Error> {
        call!(
            crate::bindings::runbook::host::feature_flags::get(key),
            |h| h.flag_get(key)
        )
    }

    /// Returns the previous value.
    pub fn set(key: &str, value: &str) -> Result<Option<String>, Error> {
        call!(
            crate::bindings::runbook::host::feature_flags::set(key, value),
            |h| h.flag_set(key, value)
        )
    }
}

pub mod ecs {
    //! Container services. `rollback` is a mutation. Needs an `ecs` grant.
    use crate::Error;
    pub use crate::bindings::runbook::host::ecs::{Deployment, RollbackResult, ServiceInfo};

    pub fn describe_service(cluster: &str, service: &str) -> Result<ServiceInfo, Error> {
        call!(
            crate::bindings::runbook::host::ecs::describe_service(cluster, service),
            |h| h.ecs_describe(cluster, service)
        )
    }

    /// To `revision`, or to the newest one older than the current.
    pub fn rollback(
        cluster: &str,
        service: &str,
        revision: Option<u32>,
    ) -> Result<RollbackResult, Error> {
        call!(
            crate::bindings::runbook::host::ecs::rollback(cluster, service, revision),
            |h| h.ecs_rollback(cluster, service, revision)
        )
    }

    pub fn wait_stable(
        cluster: &str,
        service: &str,
        timeout_seconds: u32,
    ) -> Result<ServiceInfo, Error> {
        call!(
            crate::bindings::runbook::host::ecs::wait_stable(cluster, service, timeout_seconds),
            |h| h.ecs_wait_stable(cluster, service, timeout_seconds)
        )
    }
}

pub mod notify {
    //! Paging and messaging people. Every function is a mutation. Needs a
    //! `notify` grant (`page/TARGET`, `channel/NAME`).
    use crate::Error;
    pub use crate::bindings::runbook::host::notify::{Sent, Severity};

    pub fn page(
        target: &str,
        summary: &str,
        severity: Severity,
        dedup_key: &str,
    ) -> Result<Sent, Error> {
        call!(
            crate::bindings::runbook::host::notify::page(target, summary, severity, dedup_key),
            |h| h.notify("page", target, summary, Some(dedup_key), Some(severity))
        )
    }

    pub fn resolve(target: &str, dedup_key: &str) -> Result<Sent, Error> {
        call!(
            crate::bindings::runbook::host::notify::resolve(target, dedup_key),
            |h| h.notify("resolve", target, "", Some(dedup_key), None)
        )
    }

    pub fn message(channel: &str, text: &str) -> Result<Sent, Error> {
        call!(
            crate::bindings::runbook::host::notify::message(channel, text),
            |h| h.notify("message", channel, text, None, None)
        )
    }
}

pub mod history {
    //! What the run did before this step. Always available.
    pub use crate::bindings::runbook::host::history::StepSummary;

    pub fn steps() -> Vec<StepSummary> {
        call!(crate::bindings::runbook::host::history::steps(), |h| h
            .history
            .clone())
    }
}

pub mod log {
    //! Messages into the run's timeline. Always available.
    use crate::Pair;
    pub use crate::bindings::runbook::host::log::Level;

    pub fn log(level: Level, message: &str, fields: &[Pair]) {
        call!(
            crate::bindings::runbook::host::log::log(level, message, fields),
            |h| h.logs.push((level, message.to_string(), fields.to_vec()))
        )
    }
}
