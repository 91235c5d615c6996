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
//!   replays, an incident's own changes; [`approvals`]: a parked run's
//!   pending change, its rule, its starter and the decisions on it.
//! - [`halt`]: the kill switch (`runbook halt`, `resume-all`) and the
//!   values every process of a store shares; [`recent`]: changes counted
//!   for rate limits, each counted in the write that allows it.
//!
//! Failpoints (`fail::fail_point!`) mark every write on the mutation path;
//! they are nothing unless the `failpoints` feature is on (tests only).

pub mod approvals;
pub mod audit;
pub mod chain;
pub mod halt;
pub mod holder;
pub mod lease;
pub mod local;
pub mod log;
pub mod recent;
pub mod replay;
pub mod store;

/// Configures failpoints from `FAILPOINTS` (`name=action;...`, the `fail`
/// crate's syntax) in a binary built for tests; does nothing otherwise.
pub fn failpoints_from_env() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Evaluates failpoint `name` for code outside this crate that cannot
/// return from inside `fail_point!` (async blocks, `Result` types of its
/// own): the argument of `return(ARG)` when set so (`None` otherwise);
/// `panic` and `sleep(MS)` act here. Always `None` unless the
/// `failpoints` feature is on.
#[allow(unused_mut, reason = "mutated only when failpoints are compiled in")]
pub fn failpoint(name: &str) -> Option<String> {
    let _ = name; // (unused when failpoints are compiled out)
    let mut got = None;
    let mut eval = || {
        fail::fail_point!(name, |arg: Option<String>| {
            got = Some(arg.unwrap_or_default());
        });
    };
    eval();
    got
}

/// Sets failpoint `name` to `actions` (the `fail` crate's syntax) in this
/// process, for tests that drive the library in-process; an error unless
/// the `failpoints` feature is on.
pub fn set_failpoint(name: &str, actions: &str) -> Result<(), String> {
    #[cfg(feature = "failpoints")]
    return fail::cfg(name, actions);
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = (name, actions);
        Err("failpoints are not compiled in (feature `failpoints`)".into())
    }
}

/// Clears failpoint `name` in this process (nothing without the feature).
pub fn clear_failpoint(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::remove(name);
    let _ = name;
}
