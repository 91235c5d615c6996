//! Guardrails a security team writes once, in Cedar, for every runbook,
//! plugin and run.
//!
//! - `schema`: what a policy can name (from the capability registry).
//! - `load`: a policy directory read and validated whole ([`Policies`]).
//! - `calendar`: change calendars (closed windows, OPEN otherwise).
//! - `decide`: one question before a change: allow, forbid, or forbid
//!   unless people approve (and under which rule).
//! - `people`: what a person may do: run a runbook, resume a run,
//!   approve a change.
//! - `review`: the same questions asked before anything runs, over a
//!   step's grants, for `check` and `review`.
//! - `values`: Cedar values built without Cedar's JSON parsers.
//!
//! Grants say what a step may touch; policies only take away (a
//! built-in `grants` policy permits what was granted), so a policy
//! directory can narrow a reviewed runbook but never widen it.

pub mod calendar;
pub mod decide;
pub mod load;
pub mod people;
pub mod review;
pub mod schema;
pub mod values;

pub use decide::{Answer, Approval, Question, RunFacts, StepFacts, Verdict};
pub use load::Policies;
pub use people::{Act, PersonQuestion, RunbookFacts};
