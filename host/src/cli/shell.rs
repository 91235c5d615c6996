//! Arguments of the commands that fit `runbook` into a shell.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `runbook.1` and a page per command (`runbook-run.1`, ...)
    /// into this directory instead of printing `runbook.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
