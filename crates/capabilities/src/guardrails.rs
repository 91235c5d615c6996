//! The organisation's guardrails (`runbook_policy`) at the moment of a
//! call: the gate asks them after the grant for a read, and the mutation
//! protocol before the approver for a change (with the approvals the
//! change has), journaling each change's decision, the policies that made
//! it and its context.

use runbook_core::grants::{Access, Interface};
use runbook_core::recent::Recent;
use runbook_journal::recent::Counted;
use runbook_journal::store::Store;
use runbook_policy::{Answer, Approval, Policies, Question, RunFacts, StepFacts, Verdict};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A run's policies, with what they are told about the run and its steps.
pub struct Guard {
    pub policies: Arc<Policies>,
    pub run: RunFacts,
    steps: BTreeMap<String, StepFacts>,
    /// Where changes are counted for policies that read `context.recent`:
    /// the run's store (every run sharing it), else this process.
    counts: Counts,
}

enum Counts {
    Store(Arc<dyn Store>),
    Here(Mutex<serde_json::Value>),
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("policies", &self.policies)
            .finish()
    }
}

impl Guard {
    /// `store`: the run's, where its changes are counted with every other
    /// run's (none: counted in this process only).
    pub fn new(
        policies: Arc<Policies>,
        run: RunFacts,
        steps: Vec<StepFacts>,
        store: Option<Arc<dyn Store>>,
    ) -> Self {
        Self {
            policies,
            run,
            steps: steps.into_iter().map(|s| (s.step_id.clone(), s)).collect(),
            counts: match store {
                Some(s) => Counts::Store(s),
                None => Counts::Here(Mutex::new(serde_json::Value::Null)),
            },
        }
    }

    /// The change as it is counted, if the policies read counts.
    pub fn counted(
        &self,
        step: &str,
        interface: Interface,
        resource: &str,
        now_ms: u64,
    ) -> Option<Counted> {
        if !self.policies.reads_recent {
            return None;
        }
        Some(Counted {
            // `live`, `simulation` (the scenario or environment named
            // after it is not what sets them apart).
            mode: self
                .run
                .mode
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            resource: format!("{}:{resource}", interface.wit_name()),
            runbook: self
                .steps
                .get(step)
                .map(|s| s.runbook_id.clone())
                .unwrap_or_default(),
            at_ms: now_ms,
        })
    }

    /// The counts for `c` now (off the guest's fiber: a store reads files
    /// or NATS).
    pub async fn recent(self: &Arc<Self>, c: Counted) -> Result<Recent, String> {
        let guard = self.clone();
        tokio::task::spawn_blocking(move || match &guard.counts {
            Counts::Store(store) => {
                runbook_journal::recent::read(&**store, &c).map_err(|e| format!("{e:#}"))
            }
            Counts::Here(ledger) => Ok(runbook_journal::recent::recent(
                &ledger.lock().unwrap_or_else(|e| e.into_inner()),
                &c,
            )),
        })
        .await
        .unwrap_or_else(|e| Err(format!("counting changes: {e}")))
    }

    /// Asks the policies about a change once more, with the counts as
    /// they are, and counts it if they allow it: one write no other run
    /// sharing the store can come between (on a thread of tokio's
    /// blocking pool, whose stack Cedar can measure). A count that cannot
    /// be read or written forbids.
    pub async fn count(
        self: &Arc<Self>,
        step: &str,
        (interface, resource): (Interface, &str),
        approvals: Vec<Approval>,
        (c, now_ms): (Counted, u64),
    ) -> Answer {
        let (guard, step, resource) = (self.clone(), step.to_string(), resource.to_string());
        let asked = tokio::task::spawn_blocking(move || {
            let mut last = None;
            let mut allow = |recent: &Recent| {
                let a = guard.ask(
                    &step,
                    (interface, Access::Mutate, &resource),
                    &approvals,
                    (now_ms, *recent),
                );
                let yes = a.verdict == Verdict::Allow;
                last = Some(a);
                yes
            };
            let counted = match &guard.counts {
                Counts::Store(store) => runbook_journal::recent::count(&**store, &c, &mut allow)
                    .map(|_| ())
                    .map_err(|e| format!("{e:#}")),
                Counts::Here(ledger) => {
                    let mut ledger = ledger.lock().unwrap_or_else(|e| e.into_inner());
                    if allow(&runbook_journal::recent::recent(&ledger, &c)) {
                        runbook_journal::recent::record(&mut ledger, &c);
                    }
                    Ok(())
                }
            };
            match (counted, last) {
                (Ok(()), Some(a)) => a,
                (Err(e), _) => forbidden(format!(
                    "the changes counted for rate limits could not be read or written: {e}"
                )),
                (Ok(()), None) => forbidden("the policies were not asked".to_string()),
            }
        });
        asked
            .await
            .unwrap_or_else(|e| forbidden(format!("counting the change: {e}")))
    }

    /// The policies' answer for `step` doing `access` on `resource` now.
    /// A step the guard was not told of is forbidden (fail closed).
    pub fn ask(
        &self,
        step: &str,
        (interface, access, resource): (Interface, Access, &str),
        approvals: &[Approval],
        (now_ms, recent): (u64, Recent),
    ) -> Answer {
        let Some(facts) = self.steps.get(step) else {
            return forbidden(format!(
                "step `{step}` is not in the plan the policies were given"
            ));
        };
        self.policies.decide(&Question {
            step: facts,
            run: &self.run,
            interface,
            access,
            resource,
            approvals,
            now_ms,
            recent,
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
        (now_ms, recent): (u64, Recent),
    ) -> Answer {
        let (guard, step, resource) = (self.clone(), step.to_string(), resource.to_string());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(guard.ask(
                &step,
                (interface, access, &resource),
                &approvals,
                (now_ms, recent),
            ));
        });
        let sent = askers()
            .lock()
            .map(|s| s.send(job).is_ok())
            .unwrap_or(false);
        let answer = match sent {
            true => rx.await.ok(),
            false => None,
        };
        answer.unwrap_or_else(|| forbidden("the policies could not be asked".to_string()))
    }

    /// Why a change or read is refused, for the step and its report.
    pub fn refusal(&self, answer: &Answer, what: &str) -> String {
        let by: Vec<String> = answer
            .policies
            .iter()
            .map(|p| self.policies.describe(p))
            .collect();
        let said = match &answer.verdict {
            Verdict::NeedsApprovals { rule } => format!(
                "{what} needs approvals under policy {}: {}",
                by.join(", "),
                rule.describe()
            ),
            _ => format!("{what} is forbidden by policy {}", by.join(", ")),
        };
        // Under policies that read the counts, the counts it was decided on.
        let r = &answer.context["recent"];
        match (self.policies.reads_recent, r.is_object()) {
            (true, true) => format!(
                "{said} (counted across the runs sharing the store: {} change(s) of it in the last hour, {} in the last day; {} and {} by the runbook)",
                r["resource"]["hour"],
                r["resource"]["day"],
                r["runbook"]["hour"],
                r["runbook"]["day"]
            ),
            _ => said,
        }
    }
}

/// Forbidden, for `why` (a guardrail that cannot answer fails closed).
fn forbidden(why: String) -> Answer {
    Answer {
        verdict: Verdict::Forbid,
        policies: vec![why],
        context: serde_json::Value::Null,
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
