//! The organisation's guardrails (`runbook_policy`) at the moment of a
//! call: the gate asks them after the grant for a read, and the mutation
//! protocol before the approver for a change (with the approvals the
//! change has), journaling each change's decision, the policies that made
//! it and its context.

use runbook_core::grants::{Access, Interface};
use runbook_policy::{Answer, Approval, Policies, Question, RunFacts, StepFacts, Verdict};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A run's policies, with what they are told about the run and its steps.
pub struct Guard {
    pub policies: Arc<Policies>,
    pub run: RunFacts,
    steps: BTreeMap<String, StepFacts>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("policies", &self.policies)
            .finish()
    }
}

impl Guard {
    pub fn new(policies: Arc<Policies>, run: RunFacts, steps: Vec<StepFacts>) -> Self {
        Self {
            policies,
            run,
            steps: steps.into_iter().map(|s| (s.step_id.clone(), s)).collect(),
        }
    }

    /// The policies' answer for `step` doing `access` on `resource` now.
    /// A step the guard was not told of is forbidden (fail closed).
    pub fn ask(
        &self,
        step: &str,
        interface: Interface,
        access: Access,
        resource: &str,
        approvals: &[Approval],
        now_ms: u64,
    ) -> Answer {
        let Some(facts) = self.steps.get(step) else {
            return Answer {
                verdict: Verdict::Forbid,
                policies: vec![format!(
                    "step `{step}` is not in the plan the policies were given"
                )],
                context: serde_json::Value::Null,
            };
        };
        self.policies.decide(&Question {
            step: facts,
            run: &self.run,
            interface,
            access,
            resource,
            approvals,
            now_ms,
        })
    }

    /// [`Self::ask`] on one of a few threads kept for it: a host call
    /// runs on the guest's fiber, whose stack Cedar's evaluator cannot
    /// measure (it refuses: "recursion limit reached"). A stack segment
    /// per question (`stacker::grow`) costs an mmap and, worse, an munmap
    /// that stops every other thread; a thread per question, tokio's
    /// blocking pool, hundreds of threads under load. A guard that cannot
    /// be asked forbids.
    pub async fn ask_off_fiber(
        self: &Arc<Self>,
        step: &str,
        interface: Interface,
        access: Access,
        resource: &str,
        approvals: Vec<Approval>,
        now_ms: u64,
    ) -> Answer {
        let (guard, step, resource) = (self.clone(), step.to_string(), resource.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(guard.ask(&step, interface, access, &resource, &approvals, now_ms));
        });
        let sent = askers()
            .lock()
            .map(|s| s.send(job).is_ok())
            .unwrap_or(false);
        let answer = match sent {
            true => rx.await.ok(),
            false => None,
        };
        answer.unwrap_or_else(|| Answer {
            verdict: Verdict::Forbid,
            policies: vec!["the policies could not be asked".to_string()],
            context: serde_json::Value::Null,
        })
    }

    /// Why a change or read is refused, for the step and its report.
    pub fn refusal(&self, answer: &Answer, what: &str) -> String {
        let by: Vec<String> = answer
            .policies
            .iter()
            .map(|p| self.policies.describe(p))
            .collect();
        match &answer.verdict {
            Verdict::NeedsApprovals { rule } => format!(
                "{what} needs approvals under policy {}: {}",
                by.join(", "),
                rule.describe()
            ),
            _ => format!("{what} is forbidden by policy {}", by.join(", ")),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The threads questions are asked on (as many as the machine has
/// cores, at most 4), started on first use and kept.
fn askers() -> &'static std::sync::Mutex<std::sync::mpsc::Sender<Job>> {
    static ASKERS: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> =
        std::sync::OnceLock::new();
    ASKERS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        for i in 0..n {
            let rx = rx.clone();
            let _ = std::thread::Builder::new()
                .name(format!("policy-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(r) => r.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
        }
        std::sync::Mutex::new(tx)
    })
}
