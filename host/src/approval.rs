//! Who allows a mutation (flag set, rollback), decided per call before the
//! backend is touched. Live runs need approval; dry runs perform none.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::{BufRead, IsTerminal, Write};

/// How mutations are handled in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Policy {
    /// Everything is approved up front (`--yes`, and simulations).
    All,
    /// Only these steps (`--approve STEP`); others are asked for, or stop
    /// the run when nobody can be asked.
    Steps(BTreeSet<String>),
    /// Nothing is performed: each mutation is recorded as what it would do.
    DryRun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Approved,
    DryRun,
    Refused,
    AwaitingApproval,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Decision {
    pub decision: Verdict,
    /// `--yes`, `--approve`, `interactive`, `simulation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub how: Option<String>,
    /// `$USER` when a person approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// What the mutation does, e.g. "set `K` from `false` to `true`".
    pub change: String,
}

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

/// Who is approving: `$USER`, `$LOGNAME`, else the name of this process's
/// uid in `/etc/passwd`, else `uid N`.
pub fn who() -> String {
    use std::os::unix::fs::MetadataExt;
    if let Some(name) = ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
    {
        return name;
    }
    let uid = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX);
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)? == uid.to_string()).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
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
