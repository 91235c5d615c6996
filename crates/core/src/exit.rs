//! The `runbook` binary's exit status, one type for every command.

/// Documented in the CLI help of `run`: 0 resolved, 1 escalated, 2 invalid
/// input (nothing ran), 3 a step ended in a way the runbook does not
/// route, 4 stopped before a mutation nobody approved, 5 blocked by
/// another run (of the same incident, or holding what had to change), 8
/// the run's journal was altered (not resumed), 9 the journal could not be
/// written (the run stopped before its next change), 10 a halt stopped
/// the run before a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// A run resolved; any other command succeeded.
    Ok = 0,
    /// A run was escalated: the report says who to page.
    Escalated = 1,
    /// Input was refused before anything ran (or a check failed).
    Invalid = 2,
    /// A step ended in a way the runbook does not route.
    Failed = 3,
    /// A run stopped before a mutation nobody approved.
    AwaitingApproval = 4,
    /// Another run holds the incident, or what this run had to change: the
    /// message names it (who, where, since when).
    Blocked = 5,
    /// `review`: something may now be touched that could not before.
    Widened = 6,
    /// A simulated run (or `test`) did not take its scenario's expected
    /// path or end in its expected status.
    Unexpected = 7,
    /// `resume`: the run's journal was altered (a line edited, removed,
    /// duplicated or reordered); nothing was resumed.
    Untrusted = 8,
    /// The run's journal could not be written: the run stopped before its
    /// next change (`resume` continues it from what the journal holds).
    Unrecorded = 9,
    /// A halt (`runbook halt`) stopped the run before a change; `runbook
    /// resume-all` lifts it and continues the run.
    Halted = 10,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}
