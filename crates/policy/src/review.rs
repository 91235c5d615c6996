//! What the policies would say about a step before it runs (`runbook
//! check`, `runbook review`): each resource the step may change, asked
//! at every hour of the coming week and at each severity, with nobody's
//! approval. Forbidden at all of them, allowed at all of them, or it
//! depends on the context (the calendars, the time, the severity): which
//! of those, said plainly. The run asks again before the change itself,
//! with the context of that moment.

use crate::decide::{Question, RunFacts, StepFacts, Verdict};
use crate::load::Policies;
use runbook_core::approval::Rule;
use runbook_core::grants::{Access, Grants};
use std::collections::BTreeSet;

/// The severities a review tries (an incident's severity is known only
/// when it is run).
pub const SEVERITIES: [&str; 4] = ["HIGH", "MED", "LOW", ""];
const HOUR_MS: u64 = 3_600_000;
const HOURS: u64 = 7 * 24;
/// The most changes a review tries when looking for a rate limit.
const RATE_PROBE: u64 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Forbidden whatever the context, approvals or not.
    Forbidden,
    /// Forbidden unless people approve, whatever the context.
    NeedsApprovals(Rule),
    /// Allowed at some times or severities, not at others.
    DependsOnContext(String),
}

#[derive(Debug, Clone)]
pub struct Finding {
    pub step: String,
    /// The action asked about: `feature-flags:mutate`, `redis:read`.
    pub action: String,
    /// The resource (or the grant's pattern) asked about.
    pub resource: String,
    pub kind: Kind,
    /// The policies that forbade it, each with its file and line.
    pub policies: Vec<String>,
}

impl Finding {
    /// One line for people, the step not named.
    pub fn describe_for_step(&self) -> String {
        format!(
            "`{}` on `{}` {} (policy {})",
            self.action,
            self.resource,
            self.what(),
            self.policies.join(", ")
        )
    }

    /// The finding's kind, for machines: `forbidden`, `needs-approvals`,
    /// `depends-on-context`.
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Forbidden => "forbidden",
            Kind::NeedsApprovals(_) => "needs-approvals",
            Kind::DependsOnContext(_) => "depends-on-context",
        }
    }

    fn what(&self) -> String {
        match &self.kind {
            Kind::Forbidden => "forbidden".to_string(),
            Kind::NeedsApprovals(rule) => format!("needs approvals: {}", rule.describe()),
            Kind::DependsOnContext(how) => format!("depends on context: {how}"),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        format!("step `{}`: {}", self.step, self.describe_for_step())
    }
}

impl Policies {
    /// The findings for one step's grants, from `now_ms` on.
    pub fn review(&self, step: &StepFacts, grants: &Grants, now_ms: u64) -> Vec<Finding> {
        let run = RunFacts {
            mode: "live".into(),
            ..RunFacts::default()
        };
        let mut findings = Vec::new();
        for interface in grants.interfaces() {
            let Some(scope) = grants.scope(interface) else {
                continue;
            };
            let asked = scope
                .read
                .iter()
                .map(|p| (Access::Read, p))
                .chain(scope.mutate.iter().map(|p| (Access::Mutate, p)));
            for (access, pattern) in asked {
                let resource = pattern.as_str();
                let mut denied: Vec<(u64, &str, Verdict)> = Vec::new();
                let mut allowed = 0usize;
                let mut policies = BTreeSet::new();
                let mut cache = std::collections::HashMap::new();
                for h in 0..HOURS {
                    // Now, then each whole hour: a window that opens on
                    // the hour is reported at its hour.
                    let t = match h {
                        0 => now_ms,
                        h => now_ms - now_ms % HOUR_MS + h * HOUR_MS,
                    };
                    for severity in SEVERITIES {
                        let run = RunFacts {
                            severity: severity.to_string(),
                            ..run.clone()
                        };
                        let q = Question {
                            step,
                            run: &run,
                            interface,
                            access,
                            resource,
                            approvals: &[],
                            now_ms: t,
                            recent: Default::default(),
                        };
                        let answer = self.decide_cached(&q, &mut cache);
                        // People approve changes, not reads.
                        let verdict = match (access, answer.0) {
                            (Access::Read, Verdict::NeedsApprovals { .. }) => Verdict::Forbid,
                            (_, v) => v,
                        };
                        match verdict {
                            Verdict::Allow => allowed += 1,
                            v => {
                                policies.extend(answer.1);
                                denied.push((t, severity, v));
                            }
                        }
                    }
                }
                if denied.is_empty() {
                    // Allowed whenever nothing was changed lately: a rate
                    // limit, if the policies keep one, is said with the
                    // count it starts at.
                    if let Some(found) =
                        self.rate_limit(step, &run, (interface, access), resource, now_ms)
                    {
                        findings.push(found);
                    }
                    continue;
                }
                let kind = if allowed == 0 {
                    let first = &denied[0].2;
                    if denied.iter().all(|d| &d.2 == first) {
                        match first {
                            Verdict::NeedsApprovals { rule } => Kind::NeedsApprovals(rule.clone()),
                            _ => Kind::Forbidden,
                        }
                    } else {
                        Kind::DependsOnContext("forbidden at every time and severity tried; approvals lift it at some of them".into())
                    }
                } else {
                    Kind::DependsOnContext(self.how_it_depends(&denied, now_ms))
                };
                findings.push(Finding {
                    step: step.step_id.clone(),
                    action: crate::schema::action_name(interface, access),
                    resource: resource.to_string(),
                    kind,
                    policies: policies.iter().map(|p| self.describe(p)).collect(),
                });
            }
        }
        findings
    }

    /// The fewest changes counted (of the resource in the last hour and
    /// day, and by the runbook) at which the policies stop allowing it,
    /// up to [`RATE_PROBE`].
    fn rate_limit(
        &self,
        step: &StepFacts,
        run: &RunFacts,
        (interface, access): (runbook_core::grants::Interface, Access),
        resource: &str,
        now_ms: u64,
    ) -> Option<Finding> {
        if !self.reads_recent || access != Access::Mutate {
            return None;
        }
        (1..=RATE_PROBE).find_map(|n| {
            let w = runbook_core::recent::Window { hour: n, day: n };
            let answer = self.decide(&Question {
                step,
                run,
                interface,
                access,
                resource,
                approvals: &[],
                now_ms,
                recent: runbook_core::recent::Recent {
                    resource: w,
                    runbook: w,
                },
            });
            (answer.verdict != Verdict::Allow).then(|| Finding {
                step: step.step_id.clone(),
                action: crate::schema::action_name(interface, access),
                resource: resource.to_string(),
                kind: Kind::DependsOnContext(format!(
                    "a rate limit: {} once {n} change{} of it (or by the runbook) {} counted in the last hour or day, across every run sharing the store",
                    match answer.verdict {
                        Verdict::NeedsApprovals { rule } => format!("needs approvals ({})", rule.describe()),
                        _ => "forbidden".to_string(),
                    },
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "was" } else { "were" },
                )),
                policies: answer.policies.iter().map(|p| self.describe(p)).collect(),
            })
        })
    }

    /// Answers for one hour and severity, remembered by what the
    /// policies can see of them.
    fn decide_cached(
        &self,
        q: &Question<'_>,
        cache: &mut std::collections::HashMap<String, (Verdict, Vec<String>)>,
    ) -> (Verdict, Vec<String>) {
        let t = q.now_ms;
        let key = format!(
            "{:?}|{}|{}",
            self.calendars
                .at(t)
                .iter()
                .map(|s| s.closed)
                .collect::<Vec<_>>(),
            crate::calendar::minute_of_week(t) / 60,
            q.run.severity
        );
        cache
            .entry(key)
            .or_insert_with(|| {
                let a = self.decide(q);
                (a.verdict, a.policies)
            })
            .clone()
    }

    fn how_it_depends(&self, denied: &[(u64, &str, Verdict)], now_ms: u64) -> String {
        let mut parts = Vec::new();
        // A calendar the policies read that was closed whenever it was
        // forbidden.
        let calendars: Vec<String> = self
            .calendars_used
            .iter()
            .filter(|c| {
                denied.iter().all(|(t, _, _)| {
                    self.calendars
                        .at(*t)
                        .iter()
                        .any(|s| &s.name == *c && s.closed)
                })
            })
            .map(|c| format!("`{c}`"))
            .collect();
        if !calendars.is_empty() {
            parts.push(format!(
                "forbidden while {} is closed",
                calendars.join(" and ")
            ));
        }
        let severities: BTreeSet<&str> = denied.iter().map(|(_, s, _)| *s).collect();
        if severities.len() < SEVERITIES.len() {
            let named: Vec<String> = severities
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        "no severity".to_string()
                    } else {
                        format!("`{s}`")
                    }
                })
                .collect();
            parts.push(format!("forbidden at severity {}", named.join(", ")));
        }
        if parts.is_empty() {
            parts.push("forbidden at some times of the week".to_string());
        }
        let lifted = denied.iter().find_map(|(_, _, v)| match v {
            Verdict::NeedsApprovals { rule } => Some(rule.describe()),
            _ => None,
        });
        let mut text = parts.join("; ");
        if let Some(rule) = lifted {
            text.push_str(&format!("; approvals lift it: {rule}"));
        }
        match denied.first() {
            Some((t, _, _)) if *t == now_ms => text.push_str("; so now"),
            Some((t, _, _)) => text.push_str(&format!(
                "; next at {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_millis(*t)
                )
            )),
            None => {}
        }
        text
    }
}
