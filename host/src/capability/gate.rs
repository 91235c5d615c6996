//! The gate every privileged host call goes through: the grant checker
//! first, then the deadline, the call budget and the argument size, then
//! (for mutations) the approval, and only then the backend. Each call is
//! recorded, allowed or not, in the step's [`Trail`] and the audit log.
//! Backends are reachable from host functions only through here.

use super::limits::{self, LimitExceeded, StepLimiter};
use super::{Backends, Capability};
use crate::approval::{Approver, Decision, Verdict};
use crate::audit::{AuditLog, CallRecord, Caller};
use crate::bindings::Error;
use crate::grants::{Access, GrantChecker, Interface};
use crate::journal::Done;
use serde::Serialize;
use std::future::Future;
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
}

/// The part of a step's state the runner watches from outside the store.
#[derive(Debug)]
pub struct StepShared {
    trail: Mutex<Trail>,
    deadline: Mutex<Instant>,
    /// A person is being asked to approve a mutation: the step's clock is
    /// stopped and the runner must not give up on it.
    asking: AtomicBool,
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

    fn extend(&self, by: std::time::Duration) {
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
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: StepLimiter,
    checker: GrantChecker,
    backends: Backends,
    pub(crate) caller: Caller,
    audit: Option<Arc<AuditLog>>,
    approver: Arc<Approver>,
    pub(crate) shared: Arc<StepShared>,
    durable: Option<Durable>,
    budget: Arc<Budget>,
    /// The steps that ran before this one (`history.steps`).
    pub(crate) history: Arc<[crate::bindings::runbook::host::history::StepSummary]>,
    /// Mutation calls so far in this step, per interface, operation and
    /// resource: the key the journal replays them by.
    occurrences: std::collections::HashMap<(String, String, String), usize>,
    /// Leases this step took; released when it ends.
    leases: Vec<Box<dyn crate::journal::Lease>>,
}

/// How long a change waits for a lease another run holds (bounded by the
/// step's deadline).
const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a change must not go ahead: another run held `lease`'s resource
/// (and may have changed it) after this run started reading, so what this
/// run decided from is stale (two runs seeing one bad deploy roll it back
/// once, not twice).
fn changed_since(lease: &dyn crate::journal::Lease, durable: &Durable) -> Option<String> {
    let previous = lease.previous()?;
    if previous.holder.run_id == durable.holder.run_id || previous.released_ms < durable.since_ms {
        return None;
    }
    Some(format!(
        "{} held this resource to change it after this run started (until {}): what this run decided from may be stale, so nothing was changed; see `runbook show {}`",
        previous.holder.describe(),
        crate::time::rfc3339_millis(previous.released_ms),
        previous.holder.run_id
    ))
}

/// What makes a run's changes durable: its journal, where leases are
/// taken, and (on resume) what it already did.
#[derive(Clone)]
pub struct Durable {
    pub journal: Arc<crate::journal::Journal>,
    pub store: Arc<dyn crate::journal::Store>,
    pub replay: Arc<crate::journal::Replay>,
    pub holder: crate::journal::Holder,
    /// Take leases on what is changed (live runs; simulated resources
    /// belong to their run alone).
    pub leases: bool,
    /// When the run started reading (its first start, also when resumed):
    /// a resource another run changed since then is not changed again.
    pub since_ms: u64,
    /// Changes the incident's runs applied before this run (or this
    /// resumed run) started: what a step must not mistake for the cause.
    pub own_changes: Arc<[crate::journal::OwnChange]>,
    /// The live environment, which says what a resource name is (leases
    /// are on that); none in simulations.
    pub environment: Option<Arc<crate::environment::Environment>>,
}

impl StepState {
    /// This run's incident's own earlier changes (none without a journal).
    pub(crate) fn own_changes(&self) -> &[crate::journal::OwnChange] {
        self.durable
            .as_ref()
            .map(|d| &*d.own_changes)
            .unwrap_or_default()
    }
}

impl Durable {
    /// The journaled intent of `call` in `step`, for a reconciled result.
    fn journal_intent(&self, step: &str, call: &Started) -> Option<u64> {
        let lines = self.store.read_run(&self.journal.run_id).ok()?;
        lines
            .iter()
            .rev()
            .find(|l| {
                l["event"] == "intent"
                    && l["step"] == step
                    && l["operation"] == call.operation
                    && l["resource"] == call.resource.as_str()
            })
            .and_then(|l| l["seq"].as_u64())
    }
}

/// The changes one run may make (`max_mutations` in the runbook), shared
/// by its steps.
#[derive(Debug)]
pub struct Budget {
    pub allowed: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl Budget {
    pub fn new(allowed: usize, used: usize) -> Arc<Self> {
        Arc::new(Self {
            allowed,
            used: used.into(),
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }

    fn take(&self) -> Result<(), Error> {
        let before = self.used.fetch_add(1, SeqCst);
        if before >= self.allowed {
            self.used.fetch_sub(1, SeqCst);
            return Err(Error::Denied(format!(
                "the runbook allows at most {} change{} per run (`max_mutations`), and this run has made {before}",
                self.allowed,
                if self.allowed == 1 { "" } else { "s" }
            )));
        }
        Ok(())
    }

    fn give_back(&self) {
        self.used.fetch_sub(1, SeqCst);
    }
}

/// The approval of a change the journal shows was made before a resume.
fn replayed(why: &str) -> Decision {
    Decision {
        decision: Verdict::Approved,
        how: Some("journal".into()),
        by: None,
        change: why.to_string(),
    }
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
        }
    }

    pub fn deadline(&self) -> Instant {
        self.shared.deadline()
    }

    pub fn shared(&self) -> &Arc<StepShared> {
        &self.shared
    }

    /// Every privileged read: grant, deadline, budget, then the backend.
    pub(crate) async fn read<C, R, F, Fut>(
        &mut self,
        _capability: C,
        operation: &'static str,
        resource: &str,
        args: serde_json::Value,
        call: F,
    ) -> wasmtime::Result<Result<R, Error>>
    where
        C: Capability,
        R: Serialize + Send,
        F: FnOnce(Arc<C::Backend>, Instant) -> Fut + Send,
        Fut: Future<Output = Result<R, Error>> + Send,
    {
        let start = self.start(C::INTERFACE, operation, Access::Read, resource, args)?;
        let result = match self.admit::<C>(&start) {
            Err(e) => Err(e),
            Ok(backend) => call(backend, self.deadline()).await,
        };
        self.record(start, &result, None)?;
        Ok(result)
    }

    /// Every mutation: grant, deadline, budget; then `preview` says what
    /// would change and what the step would be told, the approver decides,
    /// and only an approved change reaches `apply`, which gets the
    /// previewed value: what was approved is what is done.
    ///
    /// In a durable run, before `apply`: the run's mutation budget is
    /// checked, a lease on the resource is taken (held until the step
    /// ends), and the intent is journaled (fsync'd); after it, its result.
    /// A step run again on resume gets a change it already made from the
    /// journal, and a change with an intent but no result is first looked
    /// for in the backend (`in_effect`), never issued twice.
    #[allow(
        clippy::too_many_arguments,
        reason = "each closure is one phase of a change"
    )]
    pub(crate) async fn mutate<C, R, P, PFut, A, AFut, V, VFut>(
        &mut self,
        _capability: C,
        operation: &'static str,
        resource: &str,
        args: serde_json::Value,
        preview: P,
        apply: A,
        in_effect: V,
    ) -> wasmtime::Result<Result<R, Error>>
    where
        C: Capability,
        R: Serialize + serde::de::DeserializeOwned + Clone + Send,
        P: FnOnce(Arc<C::Backend>, Instant) -> PFut + Send,
        PFut: Future<Output = Result<(String, R), Error>> + Send,
        A: FnOnce(Arc<C::Backend>, Instant, R) -> AFut + Send,
        AFut: Future<Output = Result<R, Error>> + Send,
        V: FnOnce(Arc<C::Backend>, Instant, R) -> VFut + Send,
        VFut: Future<Output = Result<bool, Error>> + Send,
    {
        let start = self.start(C::INTERFACE, operation, Access::Mutate, resource, args)?;
        let backend = match self.admit::<C>(&start) {
            Ok(b) => b,
            Err(e) => {
                let result = Err(e);
                self.record(start, &result, None)?;
                return Ok(result);
            }
        };
        // Made (or perhaps made) by this step before the run was resumed?
        match self.journaled(&start) {
            Some(Done::Applied(result)) => {
                if let Ok(r) = serde_json::from_value::<R>(result) {
                    let result = Ok(r);
                    self.record(
                        start,
                        &result,
                        Some(replayed("applied before the run was resumed")),
                    )?;
                    return Ok(result);
                }
            }
            Some(Done::Unknown { would }) => {
                if let Ok(would) = serde_json::from_value::<R>(would) {
                    let made = in_effect(backend.clone(), self.deadline(), would.clone()).await;
                    if let Ok(true) = made {
                        self.journal_result(
                            &start,
                            None,
                            &Ok::<_, Error>(would.clone()),
                            "reconciled",
                        );
                        let result = Ok(would);
                        self.record(
                            start,
                            &result,
                            Some(replayed("found in effect when the run was resumed")),
                        )?;
                        return Ok(result);
                    }
                }
            }
            None => {}
        }
        let (change, would) = match preview(backend.clone(), self.deadline()).await {
            Ok(p) => p,
            Err(e) => {
                let result = Err(e);
                self.record(start, &result, None)?;
                return Ok(result);
            }
        };
        self.shared.asking.store(true, SeqCst);
        let asked = Instant::now();
        let decision = self.approver.decide(&self.caller.step, change).await;
        // Time spent waiting for a person is not the step's time.
        self.shared.extend(asked.elapsed());
        self.shared.asking.store(false, SeqCst);
        let result = match decision.decision {
            Verdict::Approved => match self
                .before_applying(&start, &decision, &would, C::BLAST_RADIUS)
                .await
            {
                Ok(intent) => {
                    self.begin_applying(&start, &decision)?;
                    let result = apply(backend, self.deadline(), would).await;
                    self.journal_result(&start, intent, &result, "applied");
                    result
                }
                Err(e) => Err(e),
            },
            Verdict::DryRun => Ok(would),
            Verdict::Refused => Err(Error::Denied(format!(
                "the operator refused to {}",
                decision.change
            ))),
            Verdict::AwaitingApproval => {
                self.shared.trail().awaiting = Some(decision.change.clone());
                Err(Error::Denied(format!(
                    "awaiting approval to {}",
                    decision.change
                )))
            }
        };
        self.record(start, &result, Some(decision))?;
        Ok(result)
    }

    /// What the journal of a resumed run says this call already did: the
    /// n-th call to this operation on this resource in this step.
    fn journaled(&mut self, call: &Started) -> Option<Done> {
        let key = (
            call.interface.wit_name().to_string(),
            call.operation.to_string(),
            call.resource.clone(),
        );
        let n = self.occurrences.entry(key.clone()).or_insert(0);
        let index = *n;
        *n += 1;
        let durable = self.durable.as_ref()?;
        durable
            .replay
            .mutations
            .get(&(self.caller.step.clone(), key.0, key.1, key.2, index))
            .cloned()
    }

    /// Deadline, the run's mutation budget, the lease, then the intent in
    /// the journal (its sequence number, to tie the result to it).
    async fn before_applying<R: Serialize>(
        &mut self,
        call: &Started,
        decision: &Decision,
        would: &R,
        counted: bool,
    ) -> Result<Option<u64>, Error> {
        self.before_deadline()?;
        let budget = counted.then(|| self.budget.clone());
        if let Some(b) = &budget {
            b.take()?;
        }
        let Some(durable) = self.durable.clone() else {
            return Ok(None);
        };
        let mut token = None;
        // Paging and messaging change no system: no lease to wait for.
        if durable.leases && counted {
            let what = durable
                .environment
                .as_ref()
                .and_then(|env| env.identity(call.interface, &call.resource))
                .unwrap_or_else(|| format!("{}:{}", call.interface, call.resource));
            let (store, holder) = (durable.store.clone(), durable.holder.clone());
            let wait = self
                .deadline()
                .saturating_duration_since(Instant::now())
                .min(LEASE_WAIT);
            let leased =
                tokio::task::spawn_blocking(move || store.lease(&what, &holder, wait)).await;
            match leased {
                Ok(Ok(lease)) => {
                    if let Some(stale) = changed_since(&*lease, &durable) {
                        if let Some(b) = &budget {
                            b.give_back();
                        }
                        self.shared.trail().blocked = Some(stale.clone());
                        return Err(Error::Unavailable(format!("blocked: {stale}")));
                    }
                    token = Some(lease.fencing_token());
                    self.leases.push(lease);
                }
                Ok(Err(held)) => {
                    if let Some(b) = &budget {
                        b.give_back();
                    }
                    self.shared.trail().blocked = Some(held.to_string());
                    return Err(Error::Unavailable(format!("blocked: {held}")));
                }
                Err(e) => {
                    if let Some(b) = &budget {
                        b.give_back();
                    }
                    return Err(Error::Unavailable(format!("taking the lease: {e}")));
                }
            }
        }
        // Nothing is changed that the journal does not have first.
        let written = durable.journal.try_record(
            "intent",
            serde_json::json!({
                "step": self.caller.step,
                "plugin": self.caller.plugin,
                "interface": call.interface,
                "operation": call.operation,
                "resource": call.resource,
                "args": call.args,
                "change": decision.change,
                "would": would,
                "approval": decision,
                "fencing_token": token,
            }),
        );
        match written {
            Ok(seq) => Ok(Some(seq)),
            Err(e) => {
                if let Some(b) = &budget {
                    b.give_back();
                }
                Err(Error::Unavailable(format!(
                    "the change's intent could not be written to the journal `{}`, so nothing was changed: {e:#}",
                    durable.journal.location()
                )))
            }
        }
    }

    /// The result of a change, journaled against its intent.
    fn journal_result<R: Serialize>(
        &self,
        call: &Started,
        intent: Option<u64>,
        result: &Result<R, Error>,
        how: &str,
    ) {
        let Some(durable) = &self.durable else {
            return;
        };
        let intent = intent.or_else(|| {
            // Reconciled on resume: the intent is the journaled one.
            durable.journal_intent(&self.caller.step, call)
        });
        let (event, fields) = match result {
            Ok(r) => (
                "applied",
                serde_json::json!({ "result": serde_json::to_value(r).unwrap_or_default(), "how": how }),
            ),
            Err(e) => (
                "failed",
                serde_json::json!({ "error": e.kind(), "message": e.text() }),
            ),
        };
        let mut fields = fields;
        fields["intent"] = intent.into();
        fields["step"] = self.caller.step.clone().into();
        fields["resource"] = call.resource.clone().into();
        durable.journal.record(event, fields);
    }

    /// Opens a call: asks the grant checker once, and refuses arguments
    /// past [`limits::MAX_ARG_BYTES`] (a trap: the step ends).
    fn start(
        &self,
        interface: Interface,
        operation: &'static str,
        access: Access,
        resource: &str,
        args: serde_json::Value,
    ) -> wasmtime::Result<Started> {
        let size = limits::string_bytes(&args) + resource.len();
        if size > limits::MAX_ARG_BYTES {
            return Err(self.limit(LimitExceeded::new(
                "arguments",
                format!(
                    "a `{interface}.{operation}` call passed {size} bytes of arguments; at most {} are allowed",
                    limits::MAX_ARG_BYTES
                ),
            )));
        }
        if self.shared.trail().calls.len() >= limits::MAX_CALLS {
            return Err(self.limit(LimitExceeded::new(
                "calls",
                format!(
                    "a step may make at most {} capability calls",
                    limits::MAX_CALLS
                ),
            )));
        }
        Ok(Started {
            interface,
            operation,
            access,
            resource: limits::clip(resource.to_string(), limits::RECORD_STRING),
            args: limits::clip_json(args),
            grant: self.checker.check(interface, access, resource),
            at_ms: self.backends.clock().now_ms(),
            started: Instant::now(),
        })
    }

    /// Grant, then deadline; the backend only when both allow.
    fn admit<C: Capability>(&self, call: &Started) -> Result<Arc<C::Backend>, Error> {
        call.grant.clone().map_err(Error::Denied)?;
        self.before_deadline()?;
        self.backends.get::<C>().ok_or_else(|| {
            Error::Unavailable(format!("no backend is configured for `{}`", C::INTERFACE))
        })
    }

    fn before_deadline(&self) -> Result<(), Error> {
        if Instant::now() >= self.deadline() {
            return Err(Error::Timeout("the step's deadline has passed".into()));
        }
        Ok(())
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

    /// Before an approved change is applied: the audit log gets the intent,
    /// and the step's trail a record that says "interrupted" until the
    /// change returns, so a step stopped mid-change leaves the mark.
    fn begin_applying(&mut self, call: &Started, decision: &Decision) -> wasmtime::Result<()> {
        if let Some(audit) = &self.audit {
            audit.event(
                &self.caller.run_id,
                "intent",
                serde_json::json!({
                    "step": self.caller.step,
                    "plugin": self.caller.plugin,
                    "plugin_digest": self.caller.plugin_digest,
                    "interface": call.interface,
                    "operation": call.operation,
                    "resource": call.resource,
                    "change": decision.change,
                    "approval": decision,
                }),
            );
        }
        let pending = CallRecord {
            interface: call.interface,
            operation: call.operation.to_string(),
            access: call.access,
            resource: call.resource.clone(),
            args: call.args.clone(),
            allowed: true,
            result: serde_json::Value::String(
                "interrupted: the step was stopped while the change was being applied; it may or may not have taken effect"
                    .into(),
            ),
            error: Some("interrupted".into()),
            approval: Some(decision.clone()),
            at_ms: call.at_ms,
            duration_us: 0,
        };
        let mut trail = self.shared.trail();
        trail.applying = Some(trail.calls.len());
        trail.calls.push(pending);
        Ok(())
    }

    fn record<R: Serialize>(
        &mut self,
        call: Started,
        result: &Result<R, Error>,
        approval: Option<Decision>,
    ) -> wasmtime::Result<()> {
        let record = CallRecord {
            interface: call.interface,
            operation: call.operation.to_string(),
            access: call.access,
            resource: call.resource,
            args: call.args,
            allowed: call.grant.is_ok(),
            result: limits::clip_json(match result {
                Ok(r) => serde_json::to_value(r).unwrap_or(serde_json::Value::Null),
                Err(e) => serde_json::Value::String(e.text()),
            }),
            error: result.as_ref().err().map(|e| e.kind().to_string()),
            approval,
            at_ms: call.at_ms,
            duration_us: call.started.elapsed().as_micros() as u64,
        };
        let size = match &self.audit {
            Some(audit) => audit.record(&self.caller, &record),
            // What the record weighs, near enough, without serialising it.
            None => {
                limits::string_bytes(&record.args)
                    + limits::string_bytes(&record.result)
                    + record.resource.len()
                    + 256
            }
        };
        self.keep(size, |trail| match trail.applying.take() {
            Some(i) => trail.calls[i] = record,
            None => trail.calls.push(record),
        })
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

/// A call in progress.
struct Started {
    interface: Interface,
    operation: &'static str,
    access: Access,
    resource: String,
    args: serde_json::Value,
    /// The grant checker's answer, asked once per call.
    grant: Result<(), String>,
    at_ms: u64,
    started: Instant,
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
