//! Host side of the capability interfaces. Each module has the same shape:
//! the backend trait it needs, the `Host` impl (grant check first), and
//! `add_to_linker`. [`StepState`] is the per-step store data they share.

pub mod ecs;
pub mod feature_flags;
pub mod log;
pub mod metrics;
pub mod redis;

pub use ecs::EcsBackend;
pub use feature_flags::FlagsBackend;
pub use metrics::MetricsBackend;
pub use redis::RedisBackend;

use crate::audit::{AuditLog, CallRecord};
use crate::bindings::Error;
use crate::grants::{Access, GrantChecker, Interface};
use anyhow::Result;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What the host reads the time from: simulated or real.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
    fn incident_start_ms(&self) -> Option<u64>;
}

/// Where each capability is served from. Which backend stands behind an
/// interface is runtime configuration; what a step may ask of it is the
/// grant's business.
#[derive(Clone)]
pub struct Backends {
    pub metrics: Arc<dyn MetricsBackend>,
    pub redis: Arc<dyn RedisBackend>,
    pub flags: Arc<dyn FlagsBackend>,
    pub ecs: Arc<dyn EcsBackend>,
    pub clock: Arc<dyn Clock>,
}

/// Who is calling, for the journal and the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub run_id: String,
    pub step: String,
    pub plugin: String,
    pub plugin_digest: String,
}

/// A structured log line from a step.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// Per-step store data.
pub struct StepState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: crate::limits::StepLimiter,
    pub checker: GrantChecker,
    pub backends: Backends,
    /// The step's wall-clock deadline; host calls past it return `timeout`.
    pub deadline: Instant,
    pub caller: Caller,
    pub audit: Option<Arc<AuditLog>>,
    pub calls: Vec<CallRecord>,
    pub logs: Vec<LogLine>,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl crate::bindings::runbook::host::types::Host for StepState {}

impl StepState {
    /// Every privileged host function goes through here: grant check, then
    /// deadline, then the backend; each call is journaled and audited,
    /// allowed or not.
    pub(crate) fn call<R: Serialize>(
        &mut self,
        interface: Interface,
        operation: &str,
        access: Access,
        resource: &str,
        args: serde_json::Value,
        backend_call: impl FnOnce(&Backends, Instant) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let started = Instant::now();
        let sim_time = self.backends.clock.now_ms();
        let checked = self.checker.check(interface, access, resource);
        let allowed = checked.is_ok();
        let result = match checked {
            Err(why) => Err(Error::Denied(why)),
            Ok(()) if Instant::now() >= self.deadline => {
                Err(Error::Timeout("the step's deadline has passed".into()))
            }
            Ok(()) => backend_call(&self.backends, self.deadline),
        };
        let record = CallRecord {
            interface,
            operation: operation.to_string(),
            access,
            resource: resource.to_string(),
            args,
            allowed,
            result: match &result {
                Ok(r) => serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
                Err(e) => serde_json::Value::String(e.text()),
            },
            error: result.as_ref().err().map(|e| e.kind().to_string()),
            at_ms: sim_time,
            duration_us: started.elapsed().as_micros() as u64,
        };
        if let Some(audit) = &self.audit {
            audit.record(&self.caller, &record);
        }
        self.calls.push(record);
        result
    }
}

/// A linker with WASI (empty: no files, network, env or args), `log`, and
/// exactly the granted capability interfaces. A component importing
/// anything else fails to instantiate against it.
pub fn linker_for(
    engine: &wasmtime::Engine,
    granted: impl Iterator<Item = Interface>,
) -> Result<Linker<StepState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    crate::bindings::runbook::host::types::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |s| s,
    )?;
    log::add_to_linker(&mut linker)?;
    for interface in granted {
        match interface {
            Interface::Metrics => metrics::add_to_linker(&mut linker)?,
            Interface::Redis => redis::add_to_linker(&mut linker)?,
            Interface::FeatureFlags => feature_flags::add_to_linker(&mut linker)?,
            Interface::Ecs => ecs::add_to_linker(&mut linker)?,
        }
    }
    Ok(linker)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::grants::Grants;

    const SCENARIO: &str = r#"
description = "unit tests"
start = "2026-11-26T03:00:00Z"
flags = { AUTH_STATELESS_FALLBACK = "false" }

[[metrics]]
namespace = "AuthService"
name = "TokenValidationDuration"
statistic = "p99"
value = 1850.0

[redis.session-store]
status = "down"

[ecs."production/auth-service"]
family = "auth-service"
revisions = [40, 41, 42]
desired = 4
deployments = [{ revision = 42, created_at = "2026-11-26T02:40:00Z" }]
"#;

    /// A step state over the simulated backend, with `grants` (TOML).
    pub fn state(grants: &str) -> StepState {
        let grants: Grants = toml::from_str(grants).expect("test grants parse");
        let scenario: crate::scenario::Scenario =
            toml::from_str(SCENARIO).expect("test scenario parses");
        StepState {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: crate::limits::StepLimiter::new(64 << 20),
            checker: GrantChecker::new(grants),
            backends: crate::sim::Sim::new(scenario).backends(),
            deadline: Instant::now() + std::time::Duration::from_secs(60),
            caller: Caller {
                run_id: "test".into(),
                step: "step".into(),
                plugin: "plugin".into(),
                plugin_digest: "0".repeat(64),
            },
            audit: None,
            calls: Vec::new(),
            logs: Vec::new(),
        }
    }
}
