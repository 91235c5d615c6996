//! Runs incident runbooks whose steps are sandboxed WebAssembly components.
//!
//! # Layout
//! - [`runbook`]: Markdown runbooks with YAML front matter and `steps`.
//! - [`manifest`]: a plugin's `plugin.toml`: component, digest, limits, grants;
//!   [`contract`]: its declared inputs, resources and outcomes, proven
//!   against every step.
//! - [`interface`]: the registry of capability interfaces, one line each.
//! - [`grants`]: grant scopes and the [`grants::GrantChecker`], the one yes/no.
//! - [`capability`]: one module per capability (WIT host impl, simulated and
//!   live backends, their configuration, tests), the gate every host call
//!   passes, and the limits on what a step may hand the host.
//! - [`plugin`]: a component read, digest-checked, compiled, imports listed.
//! - [`builtin`]: the step plugins embedded in the binary, precompiled.
//! - [`plan`]: everything validated and linked before any step runs.
//! - [`run`]: executes a plan, one fresh sandboxed instance per step, as a
//!   future with its deadline.
//! - [`scenario`], [`environment`]: what backs the capabilities in a run,
//!   simulated or live.
//! - [`approval`]: who allows a mutation; dry runs.
//! - [`bench`]: many runs in one process, measured (`runbook bench`).
//! - [`engine`]: wasmtime engine, instance pool, epoch ticker,
//!   [`cache`]: the compiled-component cache and why it can be trusted;
//!   [`engine_config`]: its configuration,
//!   shared with the build script.
//! - [`journal`]: durable runs: the run journal, incidents, leases, and
//!   the store they live in; [`chain`]: the hash-chained JSON lines of
//!   journals and the audit log.
//! - [`audit`], [`report`], [`capture`]: what a run leaves behind;
//!   [`postmortem`]: its Markdown timeline.
//! - [`files`], [`time`], [`ids`], [`error`]: reading input safely, time,
//!   names, errors with hints; [`fuzzing`]: the parsers' fuzz targets.
//! - [`lock`]: `runbook.lock`, what each step runs and may touch;
//!   [`review`]: the capability diff between two locks; [`signing`]:
//!   plugin signatures and the trust file; [`oci`]: plugins pushed to and
//!   pulled from OCI registries.
//! - [`kit`]: the plugin authoring kit (`new`, `build`: templates,
//!   per-plugin worlds, the guest toolchains).
//! - [`fleet`]: runs over NATS JetStream: `submit`, workers, shared
//!   journals and leases, approvals without a terminal.
//! - [`cli`], [`commands`], [`exit`]: the `runbook` binary.

pub mod approval;
pub mod audit;
pub mod bench;
pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod capability;
pub mod capture;
pub mod chain;
pub mod cli;
pub mod commands;
pub mod contract;
pub mod engine;
pub mod engine_config;
pub mod environment;
pub mod error;
pub mod exit;
pub mod files;
pub mod fleet;
pub mod fuzzing;
pub mod grants;
pub mod ids;
pub mod interface;
pub mod journal;
pub mod kit;
pub mod lock;
pub mod manifest;
pub mod oci;
pub mod plan;
pub mod plugin;
pub mod postmortem;
pub mod report;
pub mod review;
pub mod run;
pub mod runbook;
pub mod scenario;
pub mod signing;
pub mod time;
