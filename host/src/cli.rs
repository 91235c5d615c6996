//! Command-line arguments. The `///` docs are the help text.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Run incident runbooks whose steps are sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "runbook", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a runbook. Exit status: 0 resolved, 1 escalated, 2 invalid input
    /// (nothing ran), 3 a step ended in a way the runbook does not route,
    /// 4 stopped before a mutation nobody approved, 5 blocked by another
    /// run (of the same incident, or holding what had to change), 7 the
    /// run did not take the path its scenario's `[expect]` names.
    Run(RunArgs),
    /// Continue a run that crashed, was stopped, or waits for an approval:
    /// ended steps are not run again, and a change whose result the
    /// journal lacks is looked for in the backend before anything is
    /// issued again. Exit status as for `run`.
    Resume(ResumeArgs),
    /// Show a run's report from its journal (also of a run that crashed).
    Show(ShowArgs),
    /// Ask the fleet's workers (over NATS JetStream) to run a runbook for
    /// an incident. The incident key deduplicates: the same key submitted
    /// again (an alarm that fires five times) is one run.
    Submit(SubmitArgs),
    /// Pull run requests from NATS JetStream and run them, several at once.
    /// A request is acknowledged when its run has ended; a worker that dies
    /// has its runs continued elsewhere from their journals. Stops on
    /// SIGTERM: runs in hand finish within `--grace`, the rest are handed
    /// back.
    Worker(WorkerArgs),
    /// Approve the change a parked fleet run waits for, and queue the run
    /// to continue (from any machine that reaches the NATS).
    Approve(ApproveArgs),
    /// Take CloudWatch alarms delivered by SNS over HTTP (`POST /sns`) and
    /// submit the runs a triggers file maps them to. Messages are checked
    /// as AWS documents (signature version 2, certificate from an SNS host
    /// of AWS), subscriptions confirmed, and only the file's `topics` are
    /// accepted. 503 asks SNS to deliver again (NATS away).
    Serve(ServeArgs),
    /// List recent runs and how they ended.
    Runs(RunsArgs),
    /// Check a journal or audit log's chain and name the first line that
    /// was altered, removed or reordered (exit 3 if any).
    VerifyLog(VerifyLogArgs),
    /// Validate a runbook, its plugins' manifests, components and grants
    /// without running anything.
    Check(CheckArgs),
    /// Run a runbook against each of its scenarios (default: those with an
    /// `[expect]` in `scenarios/` beside it) and check that each takes its
    /// expected path and ends in its expected status. Exit status: 0 all
    /// did, 7 one did not (with where it went instead), 2 invalid input.
    Test(TestArgs),
    /// Run one plugin alone against a simulated scenario, with the inputs
    /// given, under its manifest's grant, and print what it did. Plugins
    /// come from `--plugins` (there is no runbook to look beside), then the
    /// built-in ones. Exit status 0 when it returned one of its declared
    /// outcomes.
    Step(StepArgs),
    /// Show a plugin's imports, grants, limits and digest side by side.
    Inspect(InspectArgs),
    /// List the plugins a runbook can use: those in plugin directories,
    /// then the ones built into this binary, with their digests.
    Plugins(PluginsArgs),
    /// Write `runbook.lock` beside the runbooks: per step, the plugin, its
    /// version and component digest, the effective grants, the limits and
    /// the resources its inputs name. `--locked` refuses anything else.
    Lock(LockArgs),
    /// Print what a change lets the runbooks' steps do that they could not
    /// before (widened, first), what changed with the same reach, and what
    /// was given up, compared with `runbook.lock` or the lock at a git
    /// revision. Exit status: 0 nothing widened, 6 something widened.
    Review(ReviewArgs),
    /// Create a minisign key pair for signing plugins: NAME.key (secret,
    /// mode 0600, unencrypted) and NAME.pub.
    Keygen(KeygenArgs),
    /// Sign a plugin: its name, version, component digest and manifest
    /// together, into `signatures/KEYID.minisig` beside the manifest.
    Sign(SignArgs),
    /// Store plugins in an OCI registry and fetch them by digest.
    Plugin(PluginArgs),
    /// Scaffold a step plugin outside this repository: source, manifest
    /// (inputs, outcomes, grants), a runbook and scenarios that exercise
    /// it, and tests.
    New(NewArgs),
    /// Build a plugin (`DIR`, default `.` or every `plugins/*`) with the
    /// right toolchain and flags; the component goes beside its manifest.
    Build(BuildArgs),
    /// Execute many runs of a runbook at once against a simulated scenario,
    /// in this one process, and report steps/s, runs/s, the cost of a step
    /// (p50/p99) and peak memory.
    Bench(BenchArgs),
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
pub struct VerifyLogArgs {
    /// A run journal (`runs/RUN_ID.jsonl` in the state directory) or an
    /// audit log.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The runbook to check.
    pub runbook: PathBuf,
    /// Also check that this environment file defines every alias the
    /// steps' grants name.
    #[arg(long, value_name = "FILE")]
    pub env: Option<PathBuf>,
    #[command(flatten)]
    pub sources: Sources,
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
pub struct KeygenArgs {
    /// Path and name of the key files, without extension.
    pub name: PathBuf,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The plugin's directory or its `plugin.toml`.
    pub plugin: PathBuf,
    /// The secret key (from `runbook keygen` or `minisign -G -W`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Extra directories to find the component file in.
    #[arg(long, value_name = "DIR")]
    pub components: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PluginArgs {
    #[command(subcommand)]
    pub action: PluginAction,
}

#[derive(Debug, Subcommand)]
pub enum PluginAction {
    /// Push a plugin (component, manifest, signatures) to REF
    /// (`REGISTRY/REPOSITORY:TAG`) and print its digest.
    Push(PushArgs),
    /// Pull a plugin by digest (`REGISTRY/REPOSITORY@sha256:…`), check it,
    /// and install it in the plugin store as `STORE/NAME/`; run with
    /// `--plugins STORE`.
    Pull(PullArgs),
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The plugin's directory or its `plugin.toml`.
    pub plugin: PathBuf,
    /// Where to push it, e.g. `registry.example.com/runbook/set-flag:0.1.0`.
    pub reference: String,
    /// Extra directories to find the component file in.
    #[arg(long, value_name = "DIR")]
    pub components: Vec<PathBuf>,
    /// Speak plain HTTP to the registry (always so for localhost and
    /// 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// `REGISTRY/REPOSITORY@sha256:DIGEST`.
    pub reference: String,
    /// The plugin store (default `RUNBOOK_PLUGIN_STORE`, else
    /// `$XDG_DATA_HOME/runbook/plugins`, else `~/.local/share/runbook/plugins`).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
    /// Check the plugin's signatures against this trust file before
    /// installing it.
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Speak plain HTTP to the registry (always so for localhost and
    /// 127.0.0.1).
    #[arg(long)]
    pub plain_http: bool,
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
pub struct NewArgs {
    /// The plugin's name, e.g. `check-error-budget`.
    pub name: String,
    /// The language to write it in.
    #[arg(long, value_enum)]
    pub lang: crate::kit::Lang,
    /// Where (default: `./NAME`).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The plugin's directory (with `plugin.toml`).
    pub dir: Option<PathBuf>,
}

/// Which NATS, for the fleet's commands.
#[derive(Debug, Args)]
pub struct NatsArgs {
    /// The NATS server(s), comma-separated for a cluster (default
    /// `RUNBOOK_NATS_URL`).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Copies of each stream when this creates them (at most the number of
    /// servers in the cluster); existing streams keep theirs.
    #[arg(long, value_name = "N")]
    pub replicas: Option<usize>,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    pub runbook: PathBuf,
    /// The live environment the run uses (as `runbook run --env`).
    #[arg(long, value_name = "FILE", required_unless_present = "sim")]
    pub env: Option<PathBuf>,
    /// A simulated scenario instead (rehearsals, load tests).
    #[arg(long, value_name = "SCENARIO", conflicts_with = "env")]
    pub sim: Option<PathBuf>,
    /// The incident key (default: the runbook and the environment's name,
    /// as `runbook run` makes it; a new one for each `--sim` submission).
    #[arg(long, value_name = "ID")]
    pub incident: Option<String>,
    /// When the incident started (RFC 3339), as for `runbook run`.
    #[arg(long, value_name = "TIME")]
    pub incident_start: Option<String>,
    /// Approve every mutation up front.
    #[arg(long)]
    pub yes: bool,
    /// Approve this step's mutations up front (repeatable); others park
    /// the run until `runbook approve`.
    #[arg(long, value_name = "STEP")]
    pub approve: Vec<String>,
    /// How long a parked run waits for an approval before it escalates
    /// (default: the worker's `--approval-timeout`).
    #[arg(long, value_name = "SECONDS")]
    pub approval_timeout: Option<u64>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Runs at once in this process.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub concurrency: usize,
    /// Serve `/healthz` and `/metrics` here (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub health: Option<std::net::SocketAddr>,
    /// How long a request waits for word from its worker before it is
    /// delivered to another (a live worker renews it every third of this).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub ack_wait: u64,
    /// On SIGTERM, how long runs in hand may take to finish before they
    /// are handed back.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub grace: u64,
    /// How long a parked run waits for `runbook approve` before it
    /// escalates.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    pub approval_timeout: u64,
    /// Where compiled components are cached (default `RUNBOOK_CACHE_DIR`,
    /// else `~/.cache/runbook`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The triggers file: which alarm (name and state, or SNS topic)
    /// starts which runbook, against which environment, under which
    /// incident key.
    #[arg(long, value_name = "FILE")]
    pub triggers: PathBuf,
    /// Where to take deliveries (`POST /sns`; also `/healthz`, `/metrics`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8088")]
    pub listen: std::net::SocketAddr,
    /// Check the triggers file (and every runbook and environment it
    /// names), print what it maps, and exit without serving.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The parked run (`runbook runs --nats URL` lists them).
    pub run_id: String,
    /// The step whose change is approved.
    pub step: String,
    #[command(flatten)]
    pub nats: NatsArgs,
}
