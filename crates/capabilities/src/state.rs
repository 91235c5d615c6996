//! A step's state: the store data every host call of the step sees (its
//! WASI context, grant checker, backends, approver, durability), what the
//! runner watches from outside the store ([`StepShared`]), and what the
//! step leaves behind ([`Trail`]), kept within the limits on it.

use crate::approval::Approver;
use crate::backends::Backends;
use crate::durable::{Budget, Durable};
use crate::limits::{self, LimitExceeded, StepLimiter};
use runbook_core::grants::GrantChecker;
use runbook_journal::audit::{AuditLog, CallRecord, Caller};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// A structured log line from a step.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<(String, String)>,
}

/// What a step leaves behind as it runs, kept outside its store so the
/// runner has it however the step ends.
#[derive(Debug, Default)]
pub struct Trail {
    pub calls: Vec<CallRecord>,
    pub logs: Vec<LogLine>,
    /// Set when a mutation needed an approval nobody could give: the run
    /// stops after this step.
    pub awaiting: Option<String>,
    /// When the organisation's policies held that change: which, and the
    /// approvals that would lift it.
    pub held_by: Option<String>,
    /// Bytes of calls and log lines kept for this step (the report, and the
    /// audit log when there is one).
    pub kept_bytes: usize,
    /// The index in `calls` of a mutation being applied right now: if the
    /// step is stopped before it returns, its record stays, marked
    /// interrupted, since the change may have reached the backend.
    pub applying: Option<usize>,
    /// The limit the step crossed, if it crossed one in a host call.
    pub limit: Option<LimitExceeded>,
    /// Another run holds what this step had to change: the run stops.
    pub blocked: Option<String>,
    /// A halt (`runbook halt`) stopped this step before a change: the run
    /// stops, resumable once the halt is lifted.
    pub halted: Option<String>,
}

/// The part of a step's state the runner watches from outside the store.
#[derive(Debug)]
pub struct StepShared {
    trail: Mutex<Trail>,
    deadline: Mutex<Instant>,
    /// A person is being asked to approve a mutation: the step's clock is
    /// stopped and the runner must not give up on it.
    pub(crate) asking: AtomicBool,
    /// The step is inside a host call (set by the store's call hook), so a
    /// deadline that passes now passes "blocked in a host call".
    in_host: AtomicBool,
}

impl StepShared {
    pub fn new(deadline: Instant) -> Arc<Self> {
        Arc::new(Self {
            trail: Default::default(),
            deadline: Mutex::new(deadline),
            asking: Default::default(),
            in_host: Default::default(),
        })
    }

    pub fn is_asking(&self) -> bool {
        self.asking.load(SeqCst)
    }

    pub fn in_host(&self) -> bool {
        self.in_host.load(SeqCst)
    }

    pub fn set_in_host(&self, yes: bool) {
        self.in_host.store(yes, SeqCst);
    }

    /// The step's wall-clock deadline; it moves while a person is asked.
    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn extend(&self, by: std::time::Duration) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    pub fn trail(&self) -> MutexGuard<'_, Trail> {
        self.trail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what the step left behind.
    pub fn take_trail(&self) -> Trail {
        std::mem::take(&mut *self.trail())
    }
}

/// Per-step store data.
pub struct StepState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: StepLimiter,
    pub(crate) checker: GrantChecker,
    pub(crate) backends: Backends,
    pub(crate) caller: Caller,
    pub(crate) audit: Option<Arc<AuditLog>>,
    pub(crate) approver: Arc<Approver>,
    pub(crate) shared: Arc<StepShared>,
    pub(crate) durable: Option<Durable>,
    pub(crate) budget: Arc<Budget>,
    /// The steps that ran before this one (`history.steps`).
    pub(crate) history: Arc<[crate::bindings::runbook::host::history::StepSummary]>,
    /// Mutation calls so far in this step, per interface, operation and
    /// resource: the key the journal replays them by.
    pub(crate) occurrences: std::collections::HashMap<(String, String, String), usize>,
    /// Leases this step took; released when it ends.
    pub(crate) leases: Vec<Box<dyn runbook_journal::lease::Lease>>,
    /// The organisation's policies, when the run has them.
    pub(crate) guard: Option<Arc<crate::guardrails::Guard>>,
}

/// Everything a [`StepState`] is made of.
pub struct StepSetup {
    pub wasi: WasiCtx,
    pub memory_bytes: usize,
    pub checker: GrantChecker,
    pub backends: Backends,
    pub caller: Caller,
    pub audit: Option<Arc<AuditLog>>,
    pub approver: Arc<Approver>,
    pub shared: Arc<StepShared>,
    pub durable: Option<Durable>,
    pub budget: Arc<Budget>,
    pub history: Arc<[crate::bindings::runbook::host::history::StepSummary]>,
    pub guard: Option<Arc<crate::guardrails::Guard>>,
}

/// Entries a step may hold in its WASI resource table (streams, pollables).
const MAX_RESOURCES: usize = 10_000;

impl StepState {
    pub fn new(s: StepSetup) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self {
            wasi: s.wasi,
            table,
            limiter: StepLimiter::new(s.memory_bytes),
            checker: s.checker,
            backends: s.backends,
            caller: s.caller,
            audit: s.audit,
            approver: s.approver,
            shared: s.shared,
            durable: s.durable,
            budget: s.budget,
            history: s.history,
            occurrences: Default::default(),
            leases: Vec::new(),
            guard: s.guard,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.shared.deadline()
    }

    pub fn shared(&self) -> &Arc<StepShared> {
        &self.shared
    }

    /// What bounds the step's memories and tables (wasmtime's
    /// `Store::limiter`).
    pub fn limiter(&mut self) -> &mut StepLimiter {
        &mut self.limiter
    }

    /// The memory (bytes) the step asked for past what its manifest
    /// allows, if it did.
    pub fn memory_refused(&self) -> Option<usize> {
        self.limiter.memory_refused
    }

    /// This run's incident's own earlier changes (none without a journal).
    pub(crate) fn own_changes(&self) -> &[runbook_journal::replay::OwnChange] {
        self.durable
            .as_ref()
            .map(|d| &*d.own_changes)
            .unwrap_or_default()
    }

    /// Notes the limit crossed, so the report names it, and returns the
    /// trap that ends the step.
    pub(crate) fn limit(&self, limit: LimitExceeded) -> wasmtime::Error {
        let mut trail = self.shared.trail();
        if trail.limit.is_none() {
            trail.limit = Some(limit.clone());
        }
        limit.trap()
    }

    /// Keeps `size` bytes more for this step, by `put`; past
    /// [`limits::MAX_KEPT_BYTES`] the step ends.
    pub(crate) fn keep(&self, size: usize, put: impl FnOnce(&mut Trail)) -> wasmtime::Result<()> {
        let over = {
            let mut trail = self.shared.trail();
            put(&mut trail);
            trail.kept_bytes += size;
            trail.kept_bytes > limits::MAX_KEPT_BYTES
        };
        if over {
            return Err(self.limit(LimitExceeded::new(
                "record",
                format!(
                    "the step's calls and log lines came to more than {} KiB",
                    limits::MAX_KEPT_BYTES / 1024
                ),
            )));
        }
        Ok(())
    }
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
