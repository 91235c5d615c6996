//! The `runbook` command: argument parsing and one module per subcommand,
//! on top of every other crate. Nothing here runs a runbook itself: `run`,
//! `resume`, `test`, `step` and `bench` ask [`runbook_engine::Engine`],
//! the fleet's commands ask `runbook_fleet`.
//!
//! # Layout
//! - [`cli`]: the arguments (clap derive; the `///` docs are the help),
//!   the commands' groups in `--help`.
//! - [`commands`]: what each subcommand does, returning its exit status;
//!   `main.rs` prints errors with their hint.
//! - [`color`], [`progress`]: colors where `--color` and the terminal
//!   allow, progress on long work where a terminal is attached.

pub mod cli;
pub mod color;
pub mod commands;
pub mod progress;
