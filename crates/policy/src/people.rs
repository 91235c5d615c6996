//! Questions about what a person does, not a step: may this person run
//! this runbook, resume a run of it, approve a change of one of its
//! steps? Asked when a run starts (`run`), when one is continued
//! (`resume`) and when a decision is cast (`approve`). The answer is
//! allow or forbid (people are not asked to approve people); a policy
//! that cannot be evaluated forbids.

use crate::decide::{Answer, Approval, RunFacts, Verdict, eref};
use crate::load::Policies;
use cedar_policy::{Decision, Entities, Request};
use serde_json::{Value, json};

/// What a person asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Run,
    Resume,
    Approve,
}

impl Act {
    pub fn name(self) -> &'static str {
        match self {
            Act::Run => "run",
            Act::Resume => "resume",
            Act::Approve => "approve",
        }
    }
}

/// The runbook a person's act is about.
#[derive(Debug, Clone, Default)]
pub struct RunbookFacts {
    pub id: String,
    pub title: String,
    pub service: String,
}

pub struct PersonQuestion<'a> {
    /// Who, and the groups the approvers file puts them in (none when
    /// they are not in it).
    pub person: &'a Approval,
    pub act: Act,
    pub runbook: &'a RunbookFacts,
    pub run: &'a RunFacts,
    /// `approve`: the step and the change decided on; else empty.
    pub step: &'a str,
    pub change: &'a str,
    pub now_ms: u64,
}

impl Policies {
    /// May `q.person` do `q.act`? Allow or forbid, with the policies
    /// that decided it.
    pub fn may(&self, q: &PersonQuestion<'_>) -> Answer {
        let context = self.person_context(q);
        let forbidden = |why: String| Answer {
            verdict: Verdict::Forbid,
            policies: vec![why],
            context: context.clone(),
        };
        let built = (|| -> Result<(Entities, cedar_policy::Context), String> {
            let mut list = vec![
                self.types.entity(&json!({
                    "uid": eref("Runbook", &q.runbook.id),
                    "attrs": { "service": q.runbook.service, "title": q.runbook.title },
                    "parents": [],
                }))?,
                self.types.entity(&json!({
                    "uid": eref("Person", &q.person.person),
                    "attrs": {},
                    "parents": q.person.groups.iter().map(|g| eref("Group", g)).collect::<Vec<_>>(),
                }))?,
            ];
            list.extend(self.actions.iter().cloned());
            let entities = Entities::from_entities(list, None).map_err(|e| e.to_string())?;
            Ok((entities, self.types.context(&context)?))
        })();
        let (entities, cedar_context) = match built {
            Ok(b) => b,
            Err(e) => return forbidden(format!("the question could not be put: {e}")),
        };
        let request = match Request::new(
            self.types.uid("Person", &q.person.person),
            self.types.action(q.act.name()),
            self.types.uid("Runbook", &q.runbook.id),
            cedar_context,
            None,
        ) {
            Ok(r) => r,
            Err(e) => return forbidden(format!("request: {e}")),
        };
        let (decision, policies) = self.authorize(&request, &entities);
        Answer {
            verdict: match decision {
                Decision::Allow => Verdict::Allow,
                Decision::Deny => Verdict::Forbid,
            },
            policies,
            context,
        }
    }

    /// Why `q` is refused, for people.
    pub fn person_refusal(&self, q: &PersonQuestion<'_>, answer: &Answer) -> String {
        let by: Vec<String> = answer.policies.iter().map(|p| self.describe(p)).collect();
        let what = match q.act {
            Act::Run => format!("running `{}`", q.runbook.id),
            Act::Resume => format!("resuming run `{}` of `{}`", q.run.run_id, q.runbook.id),
            Act::Approve => format!(
                "deciding on step `{}` of run `{}` ({})",
                q.step, q.run.run_id, q.change
            ),
        };
        format!(
            "policy {} forbids `{}` {what}",
            by.join(", "),
            q.person.person
        )
    }

    fn person_context(&self, q: &PersonQuestion<'_>) -> Value {
        let mut c = self.common_context(q.now_ms, q.run, &q.runbook.service);
        c["step"] = q.step.into();
        c["change"] = q.change.into();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: &str = r#"
@id("only-commanders-approve-rollbacks")
forbid (principal, action == Runbook::Action::"approve", resource)
when { context.step == "rollback" }
unless { principal in Runbook::Group::"incident-commander" };

@id("no-runs-in-the-freeze")
forbid (principal, action == Runbook::Action::"run", resource == Runbook::Runbook::"RB-0031")
when { context.calendars.closed.contains("freeze") };
"#;

    #[test]
    fn people_are_asked_what_they_may_do() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("people.cedar"), POLICIES).unwrap();
        std::fs::write(
            dir.path().join("calendars.toml"),
            "[[calendar]]\nname = \"freeze\"\nclosed = [{ weekday = \"fri\", from = \"00:00\", to = \"24:00\" }]\n",
        )
        .unwrap();
        let p = Policies::load(dir.path()).unwrap();
        let runbook = RunbookFacts {
            id: "RB-0031".into(),
            ..RunbookFacts::default()
        };
        let run = RunFacts::default();
        let person = |name: &str, groups: &[&str]| Approval {
            person: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let ask = |who: &Approval, act: Act, step: &str, now_ms: u64| {
            p.may(&PersonQuestion {
                person: who,
                act,
                runbook: &runbook,
                run: &run,
                step,
                change: "roll back",
                now_ms,
            })
        };
        // 2026-12-03 is a Thursday, 2026-12-04 a Friday.
        let thursday = 1_796_292_000_000;
        let friday = thursday + 86_400_000;
        let (alice, ivan) = (
            person("alice", &["sre"]),
            person("ivan", &["incident-commander"]),
        );
        let a = ask(&alice, Act::Approve, "rollback", thursday);
        assert_eq!(a.verdict, Verdict::Forbid);
        assert_eq!(a.policies, ["only-commanders-approve-rollbacks"]);
        let said = p.person_refusal(
            &PersonQuestion {
                person: &alice,
                act: Act::Approve,
                runbook: &runbook,
                run: &run,
                step: "rollback",
                change: "roll back",
                now_ms: thursday,
            },
            &a,
        );
        assert!(
            said.starts_with("policy `only-commanders-approve-rollbacks` (people.cedar, line 3) forbids `alice` deciding on step `rollback`"),
            "{said}"
        );
        assert_eq!(
            ask(&ivan, Act::Approve, "rollback", thursday).verdict,
            Verdict::Allow
        );
        assert_eq!(
            ask(&alice, Act::Approve, "enable-fallback", thursday).verdict,
            Verdict::Allow
        );
        assert_eq!(ask(&alice, Act::Run, "", thursday).verdict, Verdict::Allow);
        assert_eq!(ask(&alice, Act::Run, "", friday).verdict, Verdict::Forbid);
        assert_eq!(ask(&alice, Act::Resume, "", friday).verdict, Verdict::Allow);
    }
}
