//! Who allows a mutation (flag set, rollback), decided per call before the
//! backend is touched. Live runs need approval; dry runs perform none.

use runbook_core::approval::{Decision, Policy, Rule, TIMEOUT, Tally, Verdict};
use runbook_core::whoami::who;
use runbook_policy::Approval;
use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

/// A step whose changes need approvals under a [`Rule`]: where the
/// change it waited for stands, from the journal's decisions. Neither
/// `--yes`, `--approve` nor the terminal decides for it.
#[derive(Debug)]
pub struct Gate {
    pub rule: Rule,
    pub tally: Tally,
    /// The digest of the change the decisions are for: only that change
    /// is decided by them (another change of the step waits for its own).
    pub intent: Option<String>,
    /// The decisions are for one change: the first one the step makes
    /// after it resumed (the one it waited for; a fresh preview that
    /// differs is blocked before it is decided on). Later changes of the
    /// step wait for decisions of their own.
    used: AtomicBool,
    /// Who approved it, with their groups (what the organisation's
    /// policies are told).
    voters: Vec<Approval>,
}

impl Gate {
    pub fn new(rule: Rule, tally: Tally, intent: Option<String>) -> Self {
        Self {
            rule,
            tally,
            intent,
            used: AtomicBool::new(false),
            voters: Vec::new(),
        }
    }

    pub fn with_voters(mut self, voters: Vec<Approval>) -> Self {
        self.voters = voters;
        self
    }

    fn decide(&self, change: String, intent: &str) -> Decision {
        let decided = |decision, how: &str, by: Option<String>| Decision {
            decision,
            how: Some(how.to_string()),
            by,
            change: change.clone(),
        };
        if self.intent.as_deref() != Some(intent) {
            return Decision {
                decision: Verdict::AwaitingApproval,
                how: None,
                by: None,
                change,
            };
        }
        match &self.tally {
            Tally::Approved(by) if !self.used.swap(true, SeqCst) => {
                decided(Verdict::Approved, "approvers", Some(by.join(", ")))
            }
            Tally::Denied(by) if !self.used.swap(true, SeqCst) => {
                let how = if by == TIMEOUT { TIMEOUT } else { "approvers" };
                decided(Verdict::Refused, how, Some(by.clone()))
            }
            _ => Decision {
                decision: Verdict::AwaitingApproval,
                how: None,
                by: None,
                change: change.clone(),
            },
        }
    }
}

pub struct Approver {
    policy: Policy,
    /// Simulated runs approve everything without asking.
    simulation: bool,
    /// Whether a person can be asked (stdin and stderr are a terminal).
    interactive: bool,
    /// Serialises prompts: one question on the terminal at a time.
    prompt: tokio::sync::Mutex<()>,
    /// Steps under an approval rule, by id.
    gates: BTreeMap<String, Gate>,
}

impl Approver {
    pub fn new(policy: Policy, simulation: bool, interactive: bool) -> Self {
        Self {
            policy,
            simulation,
            interactive,
            prompt: tokio::sync::Mutex::new(()),
            gates: BTreeMap::new(),
        }
    }

    /// The steps whose changes need approvals under a rule (live runs;
    /// a simulation or a dry run decides as before).
    pub fn with_gates(mut self, gates: BTreeMap<String, Gate>) -> Self {
        self.gates = gates;
        self
    }

    /// Whether changes are only recorded as what they would do.
    pub fn dry_run(&self) -> bool {
        self.policy == Policy::DryRun
    }

    /// Whether people decided `step`'s change with digest `intent`, not
    /// yet acted on: approved (`Ok`), or denied by whom (`Err`).
    pub fn decided(&self, step: &str, intent: &str) -> Option<Result<(), String>> {
        match self.gates.get(step) {
            Some(g) if g.intent.as_deref() == Some(intent) && !g.used.load(SeqCst) => {
                match &g.tally {
                    Tally::Approved(_) => Some(Ok(())),
                    Tally::Denied(by) => Some(Err(by.clone())),
                    Tally::Waiting { .. } => None,
                }
            }
            _ => None,
        }
    }

    /// Who approved `step`'s change with digest `intent`, when its rule
    /// is met (nobody otherwise): what the policies are asked with.
    pub fn approved(&self, step: &str, intent: &str) -> Vec<Approval> {
        match self.gates.get(step) {
            Some(g)
                if g.intent.as_deref() == Some(intent) && matches!(g.tally, Tally::Approved(_)) =>
            {
                g.voters.clone()
            }
            _ => Vec::new(),
        }
    }

    /// Whether this process can ask a person: stdin and stderr are a terminal.
    pub fn terminal() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    /// Decides on `change` of `step`; `intent` is its digest
    /// ([`runbook_core::approval::intent_digest`] of what an `awaiting`
    /// line would record), which a step under a rule is decided by.
    pub async fn decide(&self, step: &str, change: String, intent: &str) -> Decision {
        let user = || Some(who());
        let decided = |decision, how: Option<&'static str>, by| Decision {
            decision,
            how: how.map(str::to_string),
            by,
            change: change.clone(),
        };
        if let Some(gate) = self.gates.get(step)
            && !self.simulation
            && self.policy != Policy::DryRun
        {
            return gate.decide(change, intent);
        }
        match &self.policy {
            Policy::DryRun => decided(Verdict::DryRun, None, None),
            Policy::All if self.simulation => decided(Verdict::Approved, Some("simulation"), None),
            Policy::All => decided(Verdict::Approved, Some("--yes"), user()),
            Policy::Steps(steps) if steps.contains(step) => {
                decided(Verdict::Approved, Some("--approve"), user())
            }
            Policy::Steps(_) if self.simulation => {
                decided(Verdict::Approved, Some("simulation"), None)
            }
            Policy::Steps(_) if self.interactive => {
                let _guard = self.prompt.lock().await;
                let (s, c) = (step.to_string(), change.clone());
                // Reading the terminal blocks: off the async workers.
                let yes = tokio::task::spawn_blocking(move || ask(&s, &c))
                    .await
                    .unwrap_or(false);
                if yes {
                    decided(Verdict::Approved, Some("interactive"), user())
                } else {
                    decided(Verdict::Refused, Some("interactive"), user())
                }
            }
            Policy::Steps(_) => decided(Verdict::AwaitingApproval, None, None),
        }
    }
}

fn ask(step: &str, change: &str) -> bool {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\nstep `{step}` will {change}\napprove? [y/N] ");
    let _ = err.flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "YES")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> Rule {
        serde_json::from_str(r#"{"approvals": 2}"#).unwrap()
    }

    #[tokio::test]
    async fn decisions_go_to_the_change_they_were_given_for_once() {
        let approved = Tally::Approved(vec!["alice".into(), "bob".into()]);
        let gate = Gate::new(rule(), approved, Some("sha256:b".into()));
        let approver =
            Approver::new(Policy::All, false, false).with_gates([("s".to_string(), gate)].into());
        // Another change of the step (its first, say, which waits too):
        // not decided by the approvals of the one after it.
        let a = approver.decide("s", "to A".into(), "sha256:a").await;
        assert_eq!(a.decision, Verdict::AwaitingApproval);
        let b = approver.decide("s", "to B".into(), "sha256:b").await;
        assert_eq!(b.decision, Verdict::Approved);
        assert_eq!(b.by.as_deref(), Some("alice, bob"));
        // Once: the same change again waits for decisions of its own.
        let again = approver.decide("s", "to B".into(), "sha256:b").await;
        assert_eq!(again.decision, Verdict::AwaitingApproval);
        // `--yes` (Policy::All) decides the steps without a rule.
        let other = approver.decide("t", "to C".into(), "sha256:c").await;
        assert_eq!(other.decision, Verdict::Approved);
    }

    #[tokio::test]
    async fn a_step_with_a_rule_and_nothing_decided_waits_whatever_the_flags() {
        let waiting = Tally::Waiting {
            have: vec![],
            need: 2,
        };
        let approver = Approver::new(Policy::All, false, true)
            .with_gates([("s".to_string(), Gate::new(rule(), waiting, None))].into());
        let d = approver.decide("s", "to A".into(), "sha256:a").await;
        assert_eq!(d.decision, Verdict::AwaitingApproval);
    }
}
