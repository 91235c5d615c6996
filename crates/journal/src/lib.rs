//! Durable runs: what a run leaves behind that survives the process, and
//! the store it is kept in. Depends on `runbook-core` only: no wasmtime,
//! no async runtime; a store that lives elsewhere (NATS JetStream, in
//! `runbook-fleet`) implements [`store::Store`].
//!
//! # Layout
//! - [`chain`]: hash-chained JSON lines, the format of journals and audit
//!   logs, and their verification.
//! - [`audit`]: the audit log, one chained line per capability call.
//! - [`store`]: the [`store::Store`] trait (journals, incidents, leases)
//!   and the rules every store shares; [`local`]: the store in a directory
//!   on this machine.
//! - [`log`]: one run's journal, open for appending.
//! - [`holder`]: who holds a run or a resource; [`lease`]: leases with
//!   fencing tokens.
//! - [`replay`]: a journal read back: finished or not, what resuming
//!   replays, an incident's own changes.
//!
//! Failpoints (`fail::fail_point!`) mark every write on the mutation path;
//! they are nothing unless the `failpoints` feature is on (tests only).

pub mod audit;
pub mod chain;
pub mod holder;
pub mod lease;
pub mod local;
pub mod log;
pub mod replay;
pub mod store;

/// Configures failpoints from `FAILPOINTS` (`name=action;...`, the `fail`
/// crate's syntax) in a binary built for tests; does nothing otherwise.
pub fn failpoints_from_env() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}
