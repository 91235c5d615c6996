//! What a run's approval policy is and what was decided about a change:
//! the data every layer records. Who decides (the terminal, a flag) is
//! `runbook_capabilities::approval`. A step may carry a [`Rule`] (M of N
//! approvers, not the run's starter, a timeout); each person's decision
//! is a [`Vote`] in the journal, bound to the change by its
//! [`intent_digest`], and [`tally`] says where the change stands.

use crate::ids::Name;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

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

/// Who must approve a step's change, from a runbook's `approval:`
/// (copied into the journal's `run-start`, so an approval is always
/// judged by the rule the run started with).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// How many different people must approve (M).
    #[serde(default = "one")]
    pub approvals: u32,
    /// The people and groups (of the approvers file) who may; empty:
    /// anyone in the approvers file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Name>,
    /// Whether the person who started the run may approve its changes.
    #[serde(default)]
    pub starter_may_approve: bool,
    /// How long a parked change waits (`15m`, `2h`); then `on_timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

fn one() -> u32 {
    1
}

/// What happens to a change nobody approved in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnTimeout {
    /// The run ends `escalated` (its escalation is paged).
    #[default]
    Escalate,
    /// The change is refused and the step goes on without it.
    Deny,
}

/// The most approvals a rule may ask for.
pub const MAX_APPROVALS: u32 = 10;

impl Rule {
    pub fn validate(&self) -> Result<(), String> {
        if self.approvals == 0 || self.approvals > MAX_APPROVALS {
            return Err(format!(
                "`approvals` is {}; ask for 1 to {MAX_APPROVALS} different people",
                self.approvals
            ));
        }
        let mut seen = BTreeSet::new();
        if let Some(twice) = self.from.iter().find(|n| !seen.insert(n.as_str())) {
            return Err(format!("`from` names `{twice}` twice"));
        }
        if let Some(raw) = &self.timeout {
            let t = humantime::parse_duration(raw)
                .map_err(|e| format!("`timeout` `{raw}` is not a duration like `15m`: {e}"))?;
            if t < std::time::Duration::from_secs(5)
                || t > std::time::Duration::from_secs(7 * 86_400)
            {
                return Err(format!(
                    "`timeout` is `{raw}`; give between 5 seconds and 7 days"
                ));
            }
        }
        Ok(())
    }

    /// This step's rule together with the one the organisation's policies
    /// ask for: the larger number of approvals, from this rule's people
    /// when it names any (else the policies'), the starter only when both
    /// allow it, this rule's time. Whatever the policies ask beyond it
    /// (someone of their group) is theirs to check: they are asked again,
    /// with who approved, before the change is made, and a change the
    /// approvals do not lift is refused.
    pub fn and_policy(&self, policy: &Rule) -> Rule {
        Rule {
            approvals: self.approvals.max(policy.approvals),
            from: if self.from.is_empty() {
                policy.from.clone()
            } else {
                self.from.clone()
            },
            starter_may_approve: self.starter_may_approve && policy.starter_may_approve,
            timeout: self.timeout.clone(),
            on_timeout: self.on_timeout,
        }
    }

    /// The timeout, if the rule has one (validated at load).
    pub fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }

    /// Whether `person` (with `groups`, and the logins they are known
    /// by) may decide under this rule, and if not why.
    pub fn may_decide(
        &self,
        person: &str,
        groups: &[String],
        logins: &[String],
        starter: Option<&str>,
    ) -> Result<(), String> {
        if !self.starter_may_approve
            && let Some(starter) = starter
            && (person == starter || logins.iter().any(|l| l == starter))
        {
            return Err(format!(
                "`{person}` started this run, and this step's changes need someone else's approval"
            ));
        }
        if !self.from.is_empty()
            && !self
                .from
                .iter()
                .any(|f| f.as_str() == person || groups.iter().any(|g| g == f.as_str()))
        {
            let from: Vec<String> = self.from.iter().map(|f| format!("`{f}`")).collect();
            return Err(format!(
                "`{person}` is not one of {} who may approve this step",
                from.join(", ")
            ));
        }
        Ok(())
    }

    /// One line for people: `2 approvals from `sre`; not the run's
    /// starter; 15m, then escalate`.
    pub fn describe(&self) -> String {
        let who = if self.from.is_empty() {
            "anyone in the approvers file".to_string()
        } else {
            let from: Vec<String> = self.from.iter().map(|f| format!("`{f}`")).collect();
            from.join(", ")
        };
        let n = match self.approvals {
            1 => "1 approval".to_string(),
            n => format!("{n} approvals"),
        };
        let starter = if self.starter_may_approve {
            "the run's starter may approve"
        } else {
            "not the run's starter"
        };
        let timeout = match &self.timeout {
            Some(t) => format!(
                "{t}, then {}",
                match self.on_timeout {
                    OnTimeout::Escalate => "escalate",
                    OnTimeout::Deny => "deny",
                }
            ),
            None => "no timeout of its own".to_string(),
        };
        format!("{n} from {who}; {starter}; {timeout}")
    }
}

/// What one person decided about a parked change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Choice {
    Approve,
    Deny,
}

/// One decision, as the journal records it (`approval` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub step: String,
    /// The digest of the change decided on ([`intent_digest`]).
    pub intent: String,
    pub decision: Choice,
    /// The person (an approvers-file name), or `timeout`.
    pub by: String,
    /// Their groups and logins when they decided.
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub logins: Vec<String>,
    /// How they were known: `token`, `header`, `slack`, `timeout`.
    pub how: String,
    /// Where from: a host name or an address.
    pub from: String,
    pub at_ms: u64,
}

/// The person a timeout decides as.
pub const TIMEOUT: &str = "timeout";

/// Where a parked change stands under its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tally {
    /// Enough different people approved it: who.
    Approved(Vec<String>),
    /// Someone (or the timeout) denied it.
    Denied(String),
    /// Who approved so far, of how many needed.
    Waiting { have: Vec<String>, need: u32 },
}

/// Counts `votes` for the change with digest `intent` under `rule`:
/// only votes for that very change, from people the rule allows, each
/// person once. One eligible denial denies it.
pub fn tally(rule: &Rule, starter: Option<&str>, intent: &str, votes: &[Vote]) -> Tally {
    let mut have: Vec<String> = Vec::new();
    for v in votes.iter().filter(|v| v.intent == intent) {
        let eligible = v.by == TIMEOUT
            || rule
                .may_decide(&v.by, &v.groups, &v.logins, starter)
                .is_ok();
        if !eligible {
            continue;
        }
        match v.decision {
            Choice::Deny => return Tally::Denied(v.by.clone()),
            Choice::Approve if !have.contains(&v.by) && v.by != TIMEOUT => have.push(v.by.clone()),
            Choice::Approve => {}
        }
    }
    if have.len() as u64 >= u64::from(rule.approvals) {
        Tally::Approved(have)
    } else {
        Tally::Waiting {
            have,
            need: rule.approvals,
        }
    }
}

/// The digest that names a parked change: its `awaiting` journal line's
/// step, call and preview. A decision names it, so a decision for a
/// change that is no longer the one pending is refused.
pub fn intent_digest(awaiting: &serde_json::Value) -> String {
    let what = serde_json::json!({
        "step": awaiting["step"],
        "interface": awaiting["interface"],
        "operation": awaiting["operation"],
        "resource": awaiting["resource"],
        "index": awaiting["index"],
        "change": awaiting["change"],
        "would": awaiting["would"],
    });
    let bytes = serde_json::to_vec(&what).unwrap_or_default();
    format!("sha256:{}", crate::hash::sha256_hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(approvals: u32, from: &[&str]) -> Rule {
        Rule {
            approvals,
            from: from.iter().map(|f| Name::parse(f).unwrap()).collect(),
            starter_may_approve: false,
            timeout: None,
            on_timeout: OnTimeout::Escalate,
        }
    }

    fn vote(by: &str, groups: &[&str], intent: &str, decision: Choice) -> Vote {
        Vote {
            step: "rollback".into(),
            intent: intent.into(),
            decision,
            by: by.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            logins: Vec::new(),
            how: "token".into(),
            from: "here".into(),
            at_ms: 1,
        }
    }

    #[test]
    fn two_different_people_of_the_group_approve_the_change_pending() {
        let r = rule(2, &["sre"]);
        let yes = Choice::Approve;
        let votes = [
            vote("alice", &["sre"], "i1", yes),
            // Twice: counted once.
            vote("alice", &["sre"], "i1", yes),
            // Not of the group.
            vote("carol", &["db"], "i1", yes),
            // The run's starter.
            vote("dave", &["sre"], "i1", yes),
            // For another change.
            vote("erin", &["sre"], "i0", yes),
        ];
        assert_eq!(
            tally(&r, Some("dave"), "i1", &votes),
            Tally::Waiting {
                have: vec!["alice".into()],
                need: 2
            }
        );
        let mut more = votes.to_vec();
        more.push(vote("bob", &["sre"], "i1", yes));
        assert_eq!(
            tally(&r, Some("dave"), "i1", &more),
            Tally::Approved(vec!["alice".into(), "bob".into()])
        );
        // One eligible denial denies it; an ineligible one does nothing.
        more.push(vote("carol", &["db"], "i1", Choice::Deny));
        assert!(matches!(
            tally(&r, Some("dave"), "i1", &more),
            Tally::Approved(_)
        ));
        more.push(vote("frank", &["sre"], "i1", Choice::Deny));
        assert_eq!(
            tally(&r, Some("dave"), "i1", &more),
            Tally::Denied("frank".into())
        );
    }

    #[test]
    fn a_starter_known_by_another_login_may_not_approve() {
        let r = rule(1, &[]);
        let err = r
            .may_decide("dave", &[], &["dsmith".into()], Some("dsmith"))
            .unwrap_err();
        assert!(err.contains("started this run"), "{err}");
        let allowed = Rule {
            starter_may_approve: true,
            ..r
        };
        assert!(allowed.may_decide("dave", &[], &[], Some("dave")).is_ok());
    }

    #[test]
    fn rules_out_of_range_are_refused() {
        assert!(rule(0, &[]).validate().is_err());
        assert!(rule(11, &[]).validate().is_err());
        assert!(rule(2, &["sre", "sre"]).validate().is_err());
        let short = Rule {
            timeout: Some("1s".into()),
            ..rule(1, &[])
        };
        assert!(short.validate().unwrap_err().contains("between 5 seconds"));
        let odd = Rule {
            timeout: Some("soon".into()),
            ..rule(1, &[])
        };
        assert!(odd.validate().unwrap_err().contains("not a duration"));
    }

    #[test]
    fn the_intent_digest_names_the_previewed_change() {
        let line = serde_json::json!({
            "event": "awaiting", "step": "rollback", "interface": "ecs",
            "operation": "rollback", "resource": "production/auth-service",
            "index": 0, "change": "roll back", "would": { "to": "x:2" }, "seq": 7,
        });
        let d = intent_digest(&line);
        assert!(d.starts_with("sha256:") && d.len() == 71, "{d}");
        // The line's place in the journal is not part of it; the preview is.
        let mut later = line.clone();
        later["seq"] = 9.into();
        assert_eq!(intent_digest(&later), d);
        later["would"]["to"] = "x:1".into();
        assert_ne!(intent_digest(&later), d);
    }
}
