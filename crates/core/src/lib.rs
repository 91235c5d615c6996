//! The bottom layer: what runbooks, plugins and runs are, as plain data,
//! and how they are read and checked. No wasmtime, no async runtime, no
//! network; every other crate may use this one and it uses none of them.
//!
//! # Layout
//! - [`runbook`]: Markdown runbooks with YAML front matter and `steps`.
//! - [`manifest`]: a plugin's `plugin.toml`: component, digest, limits,
//!   grants; [`contract`]: its declared inputs, resources and outcomes,
//!   proven against every step.
//! - [`interface`]: the registry of capability interfaces, one line each
//!   ([`with_capabilities!`] feeds it to every crate that builds
//!   per-capability code).
//! - [`grants`]: grant scopes and the [`grants::GrantChecker`], the one
//!   yes/no.
//! - [`lock`]: `runbook.lock`'s types; [`review`]: the capability diff
//!   between two locks; [`signing`]: plugin signatures and the trust file.
//! - [`approval`]: approval policies, per-step rules (M of N), votes
//!   and their tally, as recorded; [`approvers`]: the approvers file
//!   (people, groups, Argon2id token hashes); [`recent`]: counts of
//!   recent changes, for rate limits.
//! - [`exit`]: the binary's exit statuses, one type for every command.
//! - [`files`], [`parse`], [`error`]: reading input safely, TOML files
//!   with errors that name them, errors with hints; [`hash`], [`time`],
//!   [`ids`], [`whoami`]: digests, time, names, who and where;
//!   [`trace`]: a W3C `traceparent` and where a run's trace comes from.

pub mod approval;
pub mod approvers;
pub mod contract;
pub mod error;
pub mod exit;
pub mod files;
pub mod grants;
pub mod hash;
pub mod ids;
pub mod interface;
pub mod lock;
pub mod manifest;
pub mod parse;
pub mod recent;
pub mod review;
pub mod runbook;
pub mod signing;
pub mod time;
pub mod trace;
pub mod whoami;
