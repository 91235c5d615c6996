//! Arguments of the commands that run runbooks and show what runs did.

use super::reviewing::Search;
use super::reviewing::Sources;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The runbook (Markdown with YAML front matter).
    pub runbook: PathBuf,
    /// Run against the simulated backends, as this scenario describes them.
    #[arg(long, value_name = "SCENARIO", conflicts_with = "env")]
    pub sim: Option<PathBuf>,
    /// Run against real backends, as this environment file maps them.
    #[arg(long, value_name = "FILE")]
    pub env: Option<PathBuf>,
    /// Approve every mutation (flag set, rollback, page, message) without
    /// asking.
    #[arg(long, conflicts_with = "dry_run")]
    pub yes: bool,
    /// Approve the mutations of this step (repeatable).
    #[arg(long, value_name = "STEP")]
    pub approve: Vec<String>,
    /// Read for real but perform no mutation: each is recorded as what it
    /// would do, and later steps see what it would have reported.
    #[arg(long)]
    pub dry_run: bool,
    /// When the incident started (RFC 3339), for steps that correlate
    /// changes with it. Simulations take it from the scenario.
    #[arg(long, value_name = "TIME")]
    pub incident_start: Option<String>,
    /// The incident's severity (`HIGH`, `MED`, `LOW`), as the
    /// organisation's policies see it (`context.incident.severity`).
    #[arg(long, value_name = "LEVEL")]
    pub severity: Option<String>,
    /// Print the report as one JSON document instead of the timeline.
    #[arg(long)]
    pub json: bool,
    /// Append one JSON line per capability call to FILE.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// When the run ends, write its postmortem timeline to FILE (Markdown:
    /// detection, actions with times and approvers, verification,
    /// escalation, where the records are).
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// The incident this run belongs to. Default for live runs: the
    /// runbook id, the environment file's name and `--incident-start`; a
    /// simulated run is an incident of its own. A second run of an
    /// incident is refused while its first is unfinished, and shows the
    /// finished result unless `--new`.
    #[arg(long, value_name = "ID")]
    pub incident: Option<String>,
    /// Start a new run even though the incident's last run finished.
    #[arg(long)]
    pub new: bool,
    #[command(flatten)]
    pub state: StateArgs,
    /// Where compiled components are cached (default `RUNBOOK_CACHE_DIR`,
    /// else `~/.cache/runbook`).
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every component afresh and keep nothing on disk.
    #[arg(long)]
    pub no_cache: bool,
    #[command(flatten)]
    pub sources: Sources,
}

/// Where journals and leases are kept.
#[derive(Debug, Args)]
pub struct StateArgs {
    /// Default: `RUNBOOK_STATE_DIR`, else `$XDG_STATE_HOME/runbook`, else
    /// `~/.local/state/runbook`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Keep journals and leases in NATS JetStream, shared with a fleet's
    /// workers and other machines' CLIs (default `RUNBOOK_NATS_URL`; a
    /// cluster's servers comma-separated). `--state-dir` wins.
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
}

#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The run to continue (`runbook runs` lists them).
    pub run_id: String,
    /// Approve every mutation (flag set, rollback, page, message) without
    /// asking.
    #[arg(long)]
    pub yes: bool,
    /// Approve the mutations of this step (repeatable).
    #[arg(long, value_name = "STEP")]
    pub approve: Vec<String>,
    /// Print the report as one JSON document instead of the timeline.
    #[arg(long)]
    pub json: bool,
    /// Append one JSON line per capability call to FILE.
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub run_id: String,
    /// The report as one JSON document.
    #[arg(long)]
    pub json: bool,
    /// The postmortem timeline, as Markdown.
    #[arg(long, conflicts_with = "json")]
    pub markdown: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    /// How many, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON object per run and line (run, started, runbook, status,
    /// incident, holder, and `applied`: "STEP RESOURCE" of each change it
    /// made), for tools.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The runbook.
    pub runbook: PathBuf,
    /// Scenarios to run (default: every scenario with an `[expect]` in
    /// `scenarios/` beside the runbook).
    #[arg(long = "sim", value_name = "SCENARIO")]
    pub scenarios: Vec<PathBuf>,
    /// The results as one JSON document.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sources: Sources,
}

#[derive(Debug, Args)]
pub struct StepArgs {
    /// The plugin (from `--plugins` directories, or built in).
    pub plugin: String,
    /// An input, `KEY=VALUE` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub input: Vec<String>,
    /// The simulated world it runs against.
    #[arg(long, value_name = "SCENARIO")]
    pub sim: PathBuf,
    /// The step's report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub search: Search,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The runbook.
    pub runbook: PathBuf,
    /// The scenario every run is simulated against (each run gets a fresh
    /// simulated world).
    #[arg(long, value_name = "SCENARIO")]
    pub sim: PathBuf,
    /// How many runs.
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// How many runs are in flight at once.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Steps instantiated at once (pooled instance slots).
    #[arg(long, default_value_t = 256)]
    pub instances: u32,
    /// Emit the figures as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sources: Sources,
}

#[derive(Debug, Args)]
pub struct HaltArgs {
    /// Halt every runbook's runs.
    #[arg(long, conflicts_with = "runbook")]
    pub all: bool,
    /// Halt this runbook's runs (its id: `RB-0031`).
    #[arg(long, value_name = "ID")]
    pub runbook: Option<String>,
    /// Why, for the record and for the runs it stops.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// The halts and the runs they stopped, as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

#[derive(Debug, Args)]
pub struct ResumeAllArgs {
    /// Lift only this runbook's halt (default: every halt).
    #[arg(long, value_name = "ID")]
    pub runbook: Option<String>,
    /// Lift, and leave the runs it stopped for `runbook resume` one by one.
    #[arg(long)]
    pub lift_only: bool,
    /// Why, for the record.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub state: StateArgs,
}
