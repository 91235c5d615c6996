//! The gate every privileged host call goes through: the grant checker
//! first, then the deadline, the call budget and the argument size, and
//! only then the backend. Each call is recorded, allowed or not, in the
//! step's [`crate::state::Trail`] and the audit log. Backends are
//! reachable from host functions only through here and through
//! [`crate::mutation`], which adds approval and durability for changes.

use crate::bindings::Error;
use crate::capability::Capability;
use crate::limits::{self, LimitExceeded};
use crate::state::StepState;
use runbook_core::approval::Decision;
use runbook_core::grants::{Access, Interface};
use runbook_journal::audit::CallRecord;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

impl StepState {
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
            Ok(backend) => match self.guarded(&start).await {
                Err(e) => Err(e),
                Ok(()) => call(backend, self.deadline()).await,
            },
        };
        self.record(start, &result, None)?;
        Ok(result)
    }

    /// Opens a call: asks the grant checker once, and refuses arguments
    /// past [`limits::MAX_ARG_BYTES`] (a trap: the step ends).
    pub(crate) fn start(
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
    pub(crate) fn admit<C: Capability>(&self, call: &Started) -> Result<Arc<C::Backend>, Error> {
        call.grant.clone().map_err(Error::Denied)?;
        self.before_deadline()?;
        self.backends.get::<C>().ok_or_else(|| {
            Error::Unavailable(format!("no backend is configured for `{}`", C::INTERFACE))
        })
    }

    /// A read the organisation's policies forbid is denied (people do
    /// not approve reads).
    async fn guarded(&mut self, call: &Started) -> Result<(), Error> {
        let Some(guard) = self.guard.clone() else {
            return Ok(());
        };
        let now = self.backends.clock().now_ms();
        let step = self.caller.step.clone();
        let answer = guard
            .ask_off_fiber(
                &step,
                call.interface,
                call.access,
                &call.resource,
                Vec::new(),
                // Changes are counted; a read is asked with none.
                (now, Default::default()),
            )
            .await;
        match answer.verdict {
            runbook_policy::Verdict::Allow => Ok(()),
            // People approve changes, not reads: forbidden either way.
            _ => Err(Error::Denied(format!(
                "reading `{}` is forbidden by policy {}",
                call.resource,
                answer
                    .policies
                    .iter()
                    .map(|p| guard.policies.describe(p))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    pub(crate) fn before_deadline(&self) -> Result<(), Error> {
        if Instant::now() >= self.deadline() {
            return Err(Error::Timeout("the step's deadline has passed".into()));
        }
        Ok(())
    }

    pub(crate) fn record<R: Serialize>(
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
            began: Some(call.started),
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
}

/// A call in progress.
pub(crate) struct Started {
    pub(crate) interface: Interface,
    pub(crate) operation: &'static str,
    pub(crate) access: Access,
    pub(crate) resource: String,
    pub(crate) args: serde_json::Value,
    /// The grant checker's answer, asked once per call.
    pub(crate) grant: Result<(), String>,
    pub(crate) at_ms: u64,
    pub(crate) started: Instant,
}
