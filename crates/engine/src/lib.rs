//! Loads, plans and runs runbooks: everything between a request and a
//! report. Built on `runbook-core` (what things are), `runbook-journal`
//! (what survives a run) and `runbook-capabilities` (what a step may
//! call); knows nothing of NATS or the command line, which sit above it.
//!
//! The front doors all come in through [`Engine`]: the CLI's `run` and
//! `resume` and the fleet's workers with a typed request, getting an
//! [`Outcome`] (with its [`report::Report`]); `test`, `step` and `bench`
//! with a checked plan run without a journal, getting its report.
//!
//! # Layout
//! - [`api`]: [`Engine`]: run, resume, run a prepared plan; [`request`]:
//!   what is asked and what comes back, the [`Watch`] told each step;
//!   [`approvals`]: steps under an approval rule (M of N): their gates,
//!   and a person's decision recorded in a parked run's journal.
//! - [`start`]: what a run is made of before its first step, and the
//!   journal's first line; [`backend`]: simulated or live backends;
//!   [`sources`]: where plugins come from.
//! - [`plan`]: everything validated and linked before any step runs;
//!   [`lock`]: a plan against `runbook.lock`.
//! - [`run`]: executes a plan, routing by outcome; [`step`]: one fresh
//!   sandboxed instance per step, as a future with its deadline, its
//!   poll time counted by `busy`;
//!   [`run_config`]: what a run is given; [`capture`]: a guest's output.
//! - [`report`], [`postmortem`]: what a run leaves behind, as a report and
//!   a Markdown timeline; [`telemetry`]: its OpenTelemetry trace (off
//!   unless an OTLP endpoint is set); [`rebuild`]: a report from a journal;
//!   [`expect`]: a run against its scenario's `[expect]`.
//! - [`runtime`]: wasmtime engine, instance pool, epoch ticker, linkers
//!   and instance templates; [`engine_config`]: its configuration, shared
//!   with the build script; [`cache`]: the compiled-component cache and
//!   why it can be trusted; [`plugin`]: a component read, digest-checked,
//!   compiled; [`builtin`]: the step plugins embedded in the binary.
//! - [`oci`]: plugins pushed to and pulled from OCI registries.
//! - [`bench`]: many runs in one process, measured; [`fuzzing`]: the
//!   parsers' fuzz targets.

pub mod api;
pub mod approvals;
pub mod backend;
pub mod bench;
pub mod builtin;
mod busy;
pub mod cache;
pub mod capture;
pub mod engine_config;
pub mod expect;
pub mod fuzzing;
pub mod guard;
pub mod lock;
pub mod oci;
pub mod plan;
pub mod plugin;
pub mod postmortem;
pub mod rebuild;
pub mod report;
pub mod request;
pub mod run;
pub mod run_config;
pub mod runtime;
pub mod sources;
pub mod start;
pub mod step;
pub mod telemetry;

pub use api::Engine;
pub use backend::BackendChoice;
pub use request::{Approvals, Outcome, Ran, ResumeRequest, RunRequest, Unwatched, Watch};
