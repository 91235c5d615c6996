//! The host's side of the WIT contract: one module per capability, all the
//! same shape (wasmtime's `wasi-config`, Spin's `factor-*` crates), and
//! the gate every privileged call passes. Knows nothing of plans, runs or
//! commands (`runbook-engine` composes it); below it are only
//! `runbook-core` and `runbook-journal`.
//!
//! A capability module owns everything about its capability and
//! implements [`capability::Capability`]:
//!
//! - the WIT host impl for [`state::StepState`] and `add_to_linker`; every
//!   host function goes through `StepState::read` ([`gate`]) or
//!   `StepState::mutate` ([`mutation`]), the only way to its backend, which
//!   asks the grant checker first;
//! - its backend trait, its simulated backend and the scenario section that
//!   configures it (`sim.rs`), its live backend and environment section
//!   (`live.rs`);
//! - its tests, among them one proving a denied call never reaches the
//!   backend.
//!
//! The modules are declared, and dispatched to ([`registry`]), from the
//! registry line in `runbook_core::interface`: adding a capability is its
//! module, its WIT interface and one registry line. `log` and `history`
//! are not capabilities (they need no grant and have no backend) and are
//! linked for every step.
//!
//! # The step protocol
//!
//! A step is one fresh instance in its own [`wasmtime::Store`] whose data
//! is a [`state::StepState`]. The runner (in `runbook-engine`) drives it as
//! a future; host calls are `async`. What the step does is kept in its
//! [`state::StepShared`] (calls, logs, approvals), which the runner reads
//! when the step ends, however it ends: returned, trapped, or dropped at
//! its deadline. A dropped step's future is gone: nothing it started can
//! reach a backend or the audit log afterwards.
//!
//! # Layout
//! - [`bindings`]: the `bindgen!` of every contract version.
//! - [`capability`]: the [`capability::Capability`] trait; [`backends`]:
//!   the backends a run's steps reach and the clock; [`registry`]:
//!   dispatch over the registry, a step's linker.
//! - [`state`]: a step's store data and what it leaves behind; [`gate`]:
//!   every call's checks; [`mutation`]: the protocol of a change;
//!   [`durable`]: journal, leases and budget a change needs;
//!   [`approval`]: who approves; [`guardrails`]: the organisation's
//!   Cedar policies, asked after the grant; `brakes`: a halt in force and
//!   the policies' rate limits, right before a change is set out;
//!   [`limits`]: bounds on what a step hands the host.
//! - [`log`], [`history`]: linked for every step.
//! - the capability modules: `metrics`, `redis`, `feature_flags`, `ecs`,
//!   `notify` (from the registry); [`aws`]: settings they share;
//!   [`secrets`]: the secrets an environment names (variables or AWS
//!   Secrets Manager), read once per run.
//! - [`scenario`], [`environment`], [`sim`]: what backs the capabilities in
//!   a run, simulated (one shared [`sim::World`]) or live.

pub mod approval;
pub mod aws;
pub mod backends;
pub mod bindings;
pub(crate) mod brakes;
pub mod capability;
pub mod durable;
pub mod environment;
pub mod gate;
pub mod guardrails;
pub mod history;
pub mod limits;
pub mod log;
pub mod mutation;
pub mod registry;
pub mod scenario;
pub mod secrets;
pub mod sim;
pub mod state;

macro_rules! declare_capabilities {
    ($($section:ident: $variant:ident($wit:literal, $form:literal, parts $parts:literal, $($access:ident)+) => $module:ident,)*) => {
        $(pub mod $module;)*
    };
}
runbook_core::with_capabilities!(declare_capabilities);

#[cfg(test)]
pub(crate) mod testing;
