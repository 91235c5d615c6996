//! Step states for the capability modules' unit tests.

use crate::approval::Approver;
use crate::backends::Backends;
use crate::capability::Capability;
use crate::state::{StepSetup, StepShared, StepState};
use runbook_core::approval::Policy;
use runbook_core::grants::{GrantChecker, Grants};
use runbook_journal::audit::Caller;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

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

/// A step state over the simulated backends, with `grants` (TOML);
/// mutations approved as in a simulation.
pub fn state(grants: &str) -> StepState {
    with_policy(grants, Policy::All, true)
}

/// The same, with mutations decided by `policy`; `simulation` as a
/// simulated run would say it. Nobody can be asked.
pub fn with_policy(grants: &str, policy: Policy, simulation: bool) -> StepState {
    let scenario: crate::scenario::Scenario =
        toml::from_str(SCENARIO).expect("test scenario parses");
    let backends = scenario.backends().expect("test scenario is valid");
    build(grants, backends, Approver::new(policy, simulation, false))
}

/// A step state whose only backend is `backend`, for capability `C`.
pub fn with_backend<C: Capability>(grants: &str, backend: Arc<C::Backend>) -> StepState {
    with_backend_and_policy::<C>(grants, backend, Policy::All)
}

/// The same, with mutations decided by `policy` in a live run where
/// nobody can be asked.
pub fn with_backend_and_policy<C: Capability>(
    grants: &str,
    backend: Arc<C::Backend>,
    policy: Policy,
) -> StepState {
    let clock = crate::sim::World::new(0, None);
    let backends = Backends::builder(clock).with::<C>(backend).build();
    let simulation = policy == Policy::All;
    build(grants, backends, Approver::new(policy, simulation, false))
}

fn build(grants: &str, backends: Backends, approver: Approver) -> StepState {
    let grants: Grants = toml::from_str(grants).expect("test grants parse");
    StepState::new(StepSetup {
        wasi: wasmtime_wasi::WasiCtx::builder().build(),
        memory_bytes: 64 << 20,
        checker: GrantChecker::new(grants),
        backends,
        caller: Caller {
            run_id: "test".into(),
            step: "step".into(),
            plugin: "plugin".into(),
            plugin_digest: "0".repeat(64),
        },
        audit: None,
        approver: Arc::new(approver),
        shared: StepShared::new(Instant::now() + Duration::from_secs(60)),
        durable: None,
        budget: crate::durable::Budget::new(100, 0),
        history: Arc::from(Vec::new()),
        guard: None,
    })
}

/// A backend wrapper that counts the calls that reached it.
pub struct Counted<T> {
    _inner: T,
    hits: AtomicUsize,
}

impl<T> Counted<T> {
    pub fn new(inner: T) -> Self {
        Self {
            _inner: inner,
            hits: AtomicUsize::new(0),
        }
    }

    pub fn hit(&self) {
        self.hits.fetch_add(1, SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(SeqCst)
    }
}
