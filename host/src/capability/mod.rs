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

/// What a step leaves behind as it runs. Shared with the runner, so a step
/// that has to be abandoned (blocked past its deadline) still reports what
/// it did.
#[derive(Debug, Default)]
pub struct Journal {
    pub calls: Vec<CallRecord>,
    pub logs: Vec<LogLine>,
    /// Set when a mutation needed an approval nobody could give: the run
    /// stops after this step.
    pub awaiting: Option<String>,
}

/// The part of a step's state the runner watches from outside the store.
#[derive(Debug)]
pub struct StepShared {
    pub journal: std::sync::Mutex<Journal>,
    deadline: std::sync::Mutex<Instant>,
    /// A person is being asked to approve a mutation: the step's clock is
    /// stopped and the runner must not give up on it.
    asking: std::sync::atomic::AtomicBool,
    /// The runner gave up on the step; anything it still tries is refused.
    abandoned: std::sync::atomic::AtomicBool,
}

impl StepShared {
    pub fn new(deadline: Instant) -> Arc<Self> {
        Arc::new(Self {
            journal: Default::default(),
            deadline: std::sync::Mutex::new(deadline),
            asking: Default::default(),
            abandoned: Default::default(),
        })
    }

    pub fn is_asking(&self) -> bool {
        self.asking.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Marks the step abandoned, unless a person is being asked right now
    /// (then the step is not stuck, it is waiting for them).
    pub fn abandon(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        if self.is_asking() {
            return false;
        }
        self.abandoned.store(true, SeqCst);
        // Re-check: an approval prompt may have begun in between.
        if self.is_asking() {
            self.abandoned.store(false, SeqCst);
            return false;
        }
        true
    }

    fn is_abandoned(&self) -> bool {
        self.abandoned.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The step's wall-clock deadline; host calls past it return `timeout`.
    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn extend(&self, by: std::time::Duration) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    pub fn journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Capability calls one step may make; a step calling in a loop is stopped
/// short of filling the host's memory and the audit log.
pub const MAX_CALLS: usize = 1000;

/// Per-step store data.
pub struct StepState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: crate::limits::StepLimiter,
    pub checker: GrantChecker,
    pub backends: Backends,
    pub caller: Caller,
    pub audit: Option<Arc<AuditLog>>,
    pub approver: Arc<crate::approval::Approver>,
    pub shared: Arc<StepShared>,
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
    pub fn deadline(&self) -> Instant {
        self.shared.deadline()
    }

    /// Every privileged read goes through here: grant check, then deadline,
    /// then the backend; each call is journaled and audited, allowed or not.
    pub(crate) fn call<R: Serialize>(
        &mut self,
        interface: Interface,
        operation: &str,
        access: Access,
        resource: &str,
        args: serde_json::Value,
        backend_call: impl FnOnce(&Backends, Instant) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let call = self.start(interface, operation, access, resource, args);
        let result = match self.admit(&call) {
            Err(e) => Err(e),
            Ok(()) => backend_call(&self.backends, self.deadline()),
        };
        self.record(call, &result, None);
        result
    }

    /// Every mutation goes through here: grant check, deadline, then
    /// `preview` says what would change and what the step would be told, the
    /// approver decides, and only an approved change reaches `apply`, which
    /// gets the previewed value: what was approved is what is done.
    pub(crate) fn mutate<R: Serialize>(
        &mut self,
        interface: Interface,
        operation: &str,
        resource: &str,
        args: serde_json::Value,
        preview: impl FnOnce(&Backends, Instant) -> Result<(String, R), Error>,
        apply: impl FnOnce(&Backends, Instant, &R) -> Result<R, Error>,
    ) -> Result<R, Error> {
        use crate::approval::Verdict;
        let call = self.start(interface, operation, Access::Mutate, resource, args);
        let previewed = self
            .admit(&call)
            .and_then(|()| preview(&self.backends, self.deadline()));
        let (change, would) = match previewed {
            Ok(p) => p,
            Err(e) => {
                let result = Err(e);
                self.record(call, &result, None);
                return result;
            }
        };
        use std::sync::atomic::Ordering::SeqCst;
        self.shared.asking.store(true, SeqCst);
        if self.shared.is_abandoned() {
            self.shared.asking.store(false, SeqCst);
            let result = Err(abandoned());
            self.record(call, &result, None);
            return result;
        }
        let asked = Instant::now();
        let decision = self.approver.decide(&self.caller.step, change);
        // Time spent waiting for a person is not the step's time.
        self.shared.extend(asked.elapsed());
        self.shared.asking.store(false, SeqCst);
        let result = match decision.decision {
            Verdict::Approved => self
                .before_deadline()
                .and_then(|()| apply(&self.backends, self.deadline(), &would)),
            Verdict::DryRun => Ok(would),
            Verdict::Refused => Err(Error::Denied(format!(
                "the operator refused to {}",
                decision.change
            ))),
            Verdict::AwaitingApproval => {
                self.shared.journal().awaiting = Some(decision.change.clone());
                Err(Error::Denied(format!(
                    "awaiting approval to {}",
                    decision.change
                )))
            }
        };
        self.record(call, &result, Some(decision));
        result
    }

    fn start<'a>(
        &self,
        interface: Interface,
        operation: &'a str,
        access: Access,
        resource: &'a str,
        args: serde_json::Value,
    ) -> Call<'a> {
        Call {
            interface,
            operation,
            access,
            resource,
            args,
            grant: self.checker.check(interface, access, resource),
            at_ms: self.backends.clock.now_ms(),
            started: Instant::now(),
        }
    }

    /// Grant, deadline and call budget, in that order.
    fn admit(&self, call: &Call<'_>) -> Result<(), Error> {
        if self.shared.is_abandoned() {
            return Err(abandoned());
        }
        call.grant.clone().map_err(Error::Denied)?;
        self.before_deadline()?;
        if self.shared.journal().calls.len() >= MAX_CALLS {
            return Err(Error::Invalid(format!(
                "a step may make at most {MAX_CALLS} capability calls"
            )));
        }
        Ok(())
    }

    fn before_deadline(&self) -> Result<(), Error> {
        if self.shared.is_abandoned() {
            return Err(abandoned());
        }
        if Instant::now() >= self.deadline() {
            return Err(Error::Timeout("the step's deadline has passed".into()));
        }
        Ok(())
    }

    fn record<R: Serialize>(
        &mut self,
        call: Call<'_>,
        result: &Result<R, Error>,
        approval: Option<crate::approval::Decision>,
    ) {
        // Past the budget only the first refusal is kept.
        if self.shared.journal().calls.len() > MAX_CALLS {
            return;
        }
        let record = CallRecord {
            interface: call.interface,
            operation: call.operation.to_string(),
            access: call.access,
            resource: call.resource.to_string(),
            args: call.args,
            allowed: call.grant.is_ok(),
            result: match result {
                Ok(r) => serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
                Err(e) => serde_json::Value::String(e.text()),
            },
            error: result.as_ref().err().map(|e| e.kind().to_string()),
            approval,
            at_ms: call.at_ms,
            duration_us: call.started.elapsed().as_micros() as u64,
        };
        // The file write happens outside the journal lock, which the
        // runner takes to collect a step it gave up on.
        if let Some(audit) = &self.audit {
            audit.record(&self.caller, &record);
        }
        self.shared.journal().calls.push(record);
    }
}

fn abandoned() -> Error {
    Error::Timeout("the step ran past its deadline and was abandoned".into())
}

struct Call<'a> {
    interface: Interface,
    operation: &'a str,
    access: Access,
    resource: &'a str,
    args: serde_json::Value,
    /// The grant checker's answer, asked once per call.
    grant: Result<(), String>,
    at_ms: u64,
    started: Instant,
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
        with_policy(grants, crate::approval::Policy::All, true)
    }

    /// The same, with mutations decided by `policy`; `simulation` as a
    /// simulated run would say it. Nobody can be asked.
    pub fn with_policy(
        grants: &str,
        policy: crate::approval::Policy,
        simulation: bool,
    ) -> StepState {
        let grants: Grants = toml::from_str(grants).expect("test grants parse");
        let scenario: crate::scenario::Scenario =
            toml::from_str(SCENARIO).expect("test scenario parses");
        StepState {
            wasi: wasmtime_wasi::WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: crate::limits::StepLimiter::new(64 << 20),
            checker: GrantChecker::new(grants),
            backends: crate::sim::Sim::new(scenario).backends(),
            caller: Caller {
                run_id: "test".into(),
                step: "step".into(),
                plugin: "plugin".into(),
                plugin_digest: "0".repeat(64),
            },
            audit: None,
            approver: Arc::new(crate::approval::Approver::new(policy, simulation, false)),
            shared: StepShared::new(Instant::now() + std::time::Duration::from_secs(60)),
        }
    }
}
