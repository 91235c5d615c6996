//! Arguments of the fleet's commands (NATS JetStream).

use clap::Args;
use std::path::PathBuf;

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
    /// The incident's severity (`HIGH`, `MED`, `LOW`), as the
    /// organisation's policies see it (`context.incident.severity`).
    #[arg(long, value_name = "LEVEL")]
    pub severity: Option<String>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Runs at once in this process (a fleet run mostly waits for NATS
    /// and its backends: each has a thread and an instance slot).
    #[arg(long, default_value_t = 16, value_name = "N")]
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
    /// The triggers file: which alarm (name and state, or SNS topic) or
    /// Alertmanager alert (`alertname`, labels) starts which runbook,
    /// against which environment, under which incident key.
    #[arg(long, value_name = "FILE")]
    pub triggers: PathBuf,
    /// Where to take deliveries (`POST /sns`, `POST /alertmanager`; also
    /// `/healthz`, `/metrics`).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8088")]
    pub listen: std::net::SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM); with `--tls-key`.
    /// Needed for Alertmanager's client certificates
    /// (`[alertmanager] client_ca_file`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Check the triggers file (and every runbook and environment it
    /// names), print what it maps, and exit without serving.
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The parked run (`runbook runs` lists them).
    pub run_id: String,
    /// The step whose change is approved.
    pub step: String,
    /// Decide as this person of the approvers file (a step with an
    /// `approval:` rule counts only such decisions). Their token is read
    /// from `RUNBOOK_APPROVER_TOKEN`, or `--token-file`; never a flag.
    #[arg(long = "as", value_name = "PERSON")]
    pub person: Option<String>,
    /// The approvers file (default `RUNBOOK_APPROVERS`).
    #[arg(long, value_name = "FILE", requires = "person")]
    pub approvers: Option<PathBuf>,
    /// A file holding the token (instead of `RUNBOOK_APPROVER_TOKEN`).
    #[arg(long, value_name = "FILE", requires = "person")]
    pub token_file: Option<PathBuf>,
    /// Deny the change instead of approving it.
    #[arg(long, requires = "person")]
    pub deny: bool,
    /// The change decided on, by the digest `runbook approve` and
    /// `runbook show` print (`sha256:...`): refused if the run now waits
    /// for another.
    #[arg(long, value_name = "DIGEST", requires = "person")]
    pub intent: Option<String>,
    #[command(flatten)]
    pub state: super::StateArgs,
    /// Copies of each NATS stream this creates (at most the number of
    /// servers in the cluster); existing streams keep theirs.
    #[arg(long, value_name = "N", requires = "nats")]
    pub replicas: Option<usize>,
}

#[derive(Debug, Args)]
pub struct ApproverTokenArgs {
    /// The person's name in the approvers file (kebab-case).
    pub person: String,
}

#[derive(Debug, Args)]
pub struct ParkedArgs {
    /// The list as JSON (run id to its parked entry).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Where to listen: loopback unless `--tls-cert` is given.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    pub listen: std::net::SocketAddr,
    /// Who may sign in and decide (default `RUNBOOK_APPROVERS`).
    #[arg(long, value_name = "FILE")]
    pub approvers: Option<PathBuf>,
    /// Serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// A header naming the person, set by an authenticating reverse proxy
    /// (oauth2-proxy's `X-Forwarded-User`, say); believed only from
    /// `--trusted-proxy` addresses.
    #[arg(long, value_name = "NAME", requires = "trusted_proxy")]
    pub trusted_header: Option<String>,
    /// The proxy's address (repeatable).
    #[arg(long, value_name = "IP", requires = "trusted_header")]
    pub trusted_proxy: Vec<std::net::IpAddr>,
    /// Take Slack's Approve and Deny clicks at `/slack/interactions`,
    /// signed with the Slack app's signing secret this variable holds.
    #[arg(long, value_name = "VAR")]
    pub slack_signing_secret_env: Option<String>,
    /// Where Slack's `response_url`s may point (the message is updated
    /// there).
    #[arg(long, value_name = "URL", default_value = "https://hooks.slack.com/")]
    pub slack_response_base: String,
    #[command(flatten)]
    pub state: super::StateArgs,
}
