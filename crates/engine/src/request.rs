//! What the front doors ask the engine for (a run, a resumed run) and
//! what they get back, as types: the CLI and the fleet's workers build
//! these, never a command line.

use crate::backend::BackendChoice;
use crate::expect::Expectation;
use crate::report::{Report, StepReport};
use crate::sources::Search;
use anyhow::Result;
use runbook_core::approval::Policy;
use runbook_core::exit::Exit;
use runbook_core::trace::TraceOrigin;
use std::path::PathBuf;

/// Which changes are approved up front, and whether anyone may be asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Approvals {
    /// Every change (`--yes`).
    pub all: bool,
    /// The changes of these steps (`--approve STEP`).
    pub steps: Vec<String>,
    /// Nothing is changed; each change is recorded as what it would do
    /// (`--dry-run`).
    pub dry_run: bool,
    /// A person at this terminal may be asked for the rest.
    pub interactive: bool,
    /// Who asked for the run (a person's login; a fleet request's
    /// submitter); by default this process's user. A step whose rule
    /// says so may not be approved by them.
    pub starter: Option<String>,
    /// The incident's severity (`--severity HIGH`), as the organisation's
    /// policies see it; recorded in `run-start`.
    pub severity: Option<String>,
}

impl Approvals {
    pub fn policy(&self) -> Policy {
        if self.dry_run {
            Policy::DryRun
        } else if self.all {
            Policy::All
        } else {
            Policy::Steps(self.steps.iter().cloned().collect())
        }
    }
}

/// A run of a runbook for an incident (`runbook run`, a worker's request).
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The runbook file.
    pub runbook: PathBuf,
    pub backend: BackendChoice,
    /// Where plugins are looked for, and the trust file.
    pub search: Search,
    /// Refuse anything that differs from `runbook.lock` beside the runbook.
    pub locked: bool,
    /// The incident the run belongs to; by default one of its own for a
    /// simulation, else the runbook, the environment and the start time.
    pub incident: Option<String>,
    /// When the incident started (RFC 3339; live runs).
    pub incident_start: Option<String>,
    pub approvals: Approvals,
    /// Append one JSON line per capability call here.
    pub audit_log: Option<PathBuf>,
    /// Start a new run even when the incident's last run has ended.
    pub new: bool,
    /// The caller's trace and what started the run (traced runs only).
    pub trace: TraceOrigin,
}

impl RunRequest {
    /// A run of `runbook` against `backend` with defaults for the rest:
    /// plugins beside the runbook, nothing approved, nobody asked.
    pub fn new(runbook: impl Into<PathBuf>, backend: BackendChoice) -> Self {
        Self {
            runbook: runbook.into(),
            backend,
            search: Search::default(),
            locked: false,
            incident: None,
            incident_start: None,
            approvals: Approvals::default(),
            audit_log: None,
            new: false,
            trace: TraceOrigin::default(),
        }
    }
}

/// A stopped run, continued (`runbook resume`, a worker after an approval
/// or a dead worker).
#[derive(Debug, Clone)]
pub struct ResumeRequest {
    pub run_id: String,
    /// Approvals given now (a resumed run is never a dry run).
    pub approvals: Approvals,
    pub audit_log: Option<PathBuf>,
    /// Used when the run's `run-start` recorded no trace (it started
    /// with tracing off); else the run goes on in the trace it began.
    pub trace: TraceOrigin,
}

/// What became of a request.
pub enum Outcome {
    /// The run went (or went on) until it ended or stopped.
    Ran(Box<Ran>),
    /// Nothing ran: the incident's last run had ended (`run` without
    /// `new`); this is its report.
    Handled {
        incident: String,
        run_id: String,
        report: Report,
    },
    /// Nothing ran: the run had already finished (`resume`).
    Finished { run_id: String, report: Report },
    /// Nothing ran: another run holds the incident, or another process
    /// the run. The error names who, where and since when.
    Blocked(anyhow::Error),
}

/// A run that went.
pub struct Ran {
    pub report: Report,
    /// How the run compared with its scenario's `[expect]`, when it has
    /// one about this runbook (never for a dry run).
    pub expectation: Option<Expectation>,
    /// A step the scenario's `[expect]` names that this runbook lacks:
    /// the expectation is about another runbook and is not held against
    /// this one.
    pub foreign_step: Option<String>,
    /// What a postmortem timeline of the run says besides its report
    /// (for a run started here; a resumed run's is its first start's).
    pub postmortem: crate::postmortem::Context,
}

impl Outcome {
    /// The process exit status the outcome stands for.
    pub fn exit(&self) -> Exit {
        match self {
            Outcome::Ran(r) if r.expectation.as_ref().is_some_and(|e| !e.met) => Exit::Unexpected,
            Outcome::Ran(r) => r.report.status.exit(),
            Outcome::Handled { report, .. } | Outcome::Finished { report, .. } => {
                report.status.exit()
            }
            Outcome::Blocked(_) => Exit::Blocked,
        }
    }
}

/// Told what a run does as it goes: the CLI prints the timeline, a worker
/// watches nothing.
pub trait Watch: Send + Sync {
    /// Before the first step: the run's header.
    fn started(&self, _runbook_id: &str, _title: &str, _mode: &str, _run_id: &str) -> Result<()> {
        Ok(())
    }
    /// As each step ends (also each step a resumed run replays).
    fn step(&self, _report: &StepReport) {}
}

/// Watches nothing.
pub struct Unwatched;

impl Watch for Unwatched {}
