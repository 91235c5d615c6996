//! Runs incident runbooks whose steps are sandboxed WebAssembly components.
//!
//! # Layout
//! - [`runbook`]: Markdown runbooks with YAML front matter and `steps`.
//! - [`manifest`]: a plugin's `plugin.toml`: component, digest, limits, grants.
//! - [`grants`]: grant scopes and the [`grants::GrantChecker`], the one yes/no.
//! - [`plugin`]: a component read, digest-checked, compiled, imports listed.
//! - [`builtin`]: the step plugins embedded in the binary, precompiled.
//! - [`plan`]: everything validated and linked before any step runs.
//! - [`run`]: executes a plan, one fresh sandboxed instance per step.
//! - [`capability`]: host side of each WIT interface, one module each.
//! - [`sim`] and [`scenario`]: the simulated backends and their input.
//! - [`live`] and [`environment`]: real backends (CloudWatch, Redis, flag
//!   stores, ECS) and the file that says where they are.
//! - [`approval`]: who allows a mutation; dry runs.
//! - [`engine`]: wasmtime engine, epoch ticker, compiled-component cache;
//!   [`engine_config`]: its configuration, shared with the build script.
//! - [`audit`], [`report`]: what a run leaves behind.
//! - [`cli`], [`commands`]: the `runbook` binary's arguments and commands.

pub mod approval;
pub mod audit;
pub mod bindings;
pub mod builtin;
pub mod capability;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod engine_config;
pub mod environment;
pub mod error;
pub mod grants;
pub mod ids;
pub mod limits;
pub mod live;
pub mod manifest;
pub mod plan;
pub mod plugin;
pub mod report;
pub mod run;
pub mod runbook;
pub mod scenario;
pub mod sim;
