//! Arguments of the commands that check and review runbooks and plugins
//! before anything runs, and where plugins are looked for.

use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The runbook to check.
    pub runbook: PathBuf,
    /// Also check that this environment file defines every alias the
    /// steps' grants name.
    #[arg(long, value_name = "FILE")]
    pub env: Option<PathBuf>,
    /// Also check that the approvers file (default `RUNBOOK_APPROVERS`)
    /// can meet every step's approval rule.
    #[arg(long, value_name = "FILE")]
    pub approvers: Option<PathBuf>,
    #[command(flatten)]
    pub sources: Sources,
}

#[derive(Debug, Args)]
pub struct PoliciesArgs {
    /// The policy directory (default `RUNBOOK_POLICIES`).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// Print the Cedar schema policies are written against instead (no
    /// directory needed).
    #[arg(long)]
    pub schema: bool,
    /// A trust file: the directory's signatures are checked against its
    /// `policy-signatures`.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CalendarArgs {
    /// The policy directory whose `calendars.toml` to read (default
    /// `RUNBOOK_POLICIES`).
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// The state at this time (RFC 3339) instead of now.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Runbooks, or directories whose executable runbooks are all locked
    /// (the lock then holds exactly those). Default: `runbooks`.
    pub paths: Vec<PathBuf>,
    /// Write nothing; fail (exit 2) if the lock is missing or differs from
    /// what it would record now, naming each difference.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub search: Search,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Runbooks, or directories of runbooks. Default: `runbooks`.
    pub paths: Vec<PathBuf>,
    /// Compare with the `runbook.lock` committed at this git revision (a
    /// branch, tag or commit) instead of the one on disk.
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
    /// The review as one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub search: Search,
}

#[derive(Debug, Args)]
pub struct VerifyLogArgs {
    /// A run journal (`runs/RUN_ID.jsonl` in the state directory) or an
    /// audit log.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A plugin directory, its `plugin.toml`, or the name of a built-in
    /// plugin.
    pub plugin: PathBuf,
    /// Extra directories to find component files in.
    #[arg(long, value_name = "DIR")]
    pub components: Vec<PathBuf>,
    /// Also compile the component (and cache it), proving it loads;
    /// otherwise it is only read.
    #[arg(long)]
    pub compile: bool,
}

#[derive(Debug, Args)]
pub struct PluginsArgs {
    /// List what this runbook would use (its `plugins/` directory too).
    pub runbook: Option<PathBuf>,
    /// A Markdown catalogue instead, from the manifests: each plugin's
    /// outcomes, inputs, the resources they name and its grant; then the
    /// capabilities.
    #[arg(long)]
    pub markdown: bool,
    /// A directory of plugins, searched before the built-in ones
    /// (repeatable).
    #[arg(long, value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
    /// Extra directories to find component files in.
    #[arg(long, value_name = "DIR")]
    pub components: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path and name of the key files, without extension.
    pub name: PathBuf,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The plugin's directory or its `plugin.toml`.
    #[arg(required_unless_present = "policies", conflicts_with = "policies")]
    pub plugin: Option<PathBuf>,
    /// Sign this policy directory (`*.cedar`, `calendars.toml`) instead:
    /// checked first, as a run would load it.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
    /// The secret key (from `runbook keygen` or `minisign -G -W`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Extra directories to find the component file in.
    #[arg(long, value_name = "DIR")]
    pub components: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct Sources {
    #[command(flatten)]
    pub search: Search,
    /// Refuse to run anything that differs from `runbook.lock` beside the
    /// runbook (a component, a grant, a limit, a resource an input names).
    #[arg(long)]
    pub locked: bool,
}

/// Where plugins are looked for.
#[derive(Debug, Args)]
pub struct Search {
    /// A directory of plugins (`NAME/plugin.toml`, or one level deeper),
    /// searched before the built-in ones; repeatable, first match wins.
    /// Default: `plugins/` beside the runbook, if there is one.
    #[arg(long, value_name = "DIR")]
    pub plugins: Vec<PathBuf>,
    /// Extra directories to find component files in (also
    /// `RUNBOOK_COMPONENTS`, colon-separated).
    #[arg(long, value_name = "DIR")]
    pub components: Vec<PathBuf>,
    /// A trust file: which keys may sign which plugins, and whether a
    /// plugin from a directory must be signed to run. Default: `trust.toml`
    /// beside the runbook, if there is one.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// A policy directory (Cedar `*.cedar` files and `calendars.toml`):
    /// the organisation's guardrails, reported by `check` and `review`
    /// and asked before every change. Default: `RUNBOOK_POLICIES`.
    #[arg(long, value_name = "DIR")]
    pub policies: Option<PathBuf>,
}

impl Search {
    /// The engine's form of the same flags.
    pub fn to_engine(&self) -> runbook_engine::sources::Search {
        runbook_engine::sources::Search {
            plugins: self.plugins.clone(),
            components: self.components.clone(),
            trust: self.trust.clone(),
            policies: self.policies.clone(),
        }
    }
}
