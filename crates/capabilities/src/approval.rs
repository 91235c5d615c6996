//! Who allows a mutation (flag set, rollback), decided per call before the
//! backend is touched. Live runs need approval; dry runs perform none.

use runbook_core::approval::{Decision, Policy, Verdict};
use runbook_core::whoami::who;
use std::io::{BufRead, IsTerminal, Write};

pub struct Approver {
    policy: Policy,
    /// Simulated runs approve everything without asking.
    simulation: bool,
    /// Whether a person can be asked (stdin and stderr are a terminal).
    interactive: bool,
    /// Serialises prompts: one question on the terminal at a time.
    prompt: tokio::sync::Mutex<()>,
}

impl Approver {
    pub fn new(policy: Policy, simulation: bool, interactive: bool) -> Self {
        Self {
            policy,
            simulation,
            interactive,
            prompt: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether this process can ask a person: stdin and stderr are a terminal.
    pub fn terminal() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }

    pub async fn decide(&self, step: &str, change: String) -> Decision {
        let user = || Some(who());
        let decided = |decision, how: Option<&'static str>, by| Decision {
            decision,
            how: how.map(str::to_string),
            by,
            change: change.clone(),
        };
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
