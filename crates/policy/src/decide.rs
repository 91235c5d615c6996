//! One question to the policies: may this step do this to this resource,
//! now, with these approvals? The answer is allow, forbid, or forbid
//! unless people approve (and which rule of approvals would do: the
//! policies asked again as if `k` people, or one of a group they name,
//! had approved). A policy that cannot be evaluated forbids: a guardrail
//! that errs fails closed.

use crate::load::{GRANTS, Policies};
use crate::schema::{NAMESPACE, action_name, resource_type};
use cedar_policy::{Authorizer, Decision, Entities, Request};
use runbook_core::approval::{MAX_APPROVALS, Rule};
use runbook_core::grants::{Access, Interface};
use runbook_core::recent::Recent;
use serde::Serialize;
use serde_json::{Value, json};

/// What a step is, for policies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepFacts {
    pub runbook_id: String,
    pub title: String,
    pub service: String,
    pub step_id: String,
    pub plugin: String,
    pub plugin_digest: String,
    /// The trusted keys that signed the plugin (none: built in, or unsigned).
    pub signers: Vec<String>,
    /// `builtin`, a directory, or an OCI reference.
    pub origin: String,
}

/// What a run is, for policies.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunFacts {
    pub run_id: String,
    pub mode: String,
    pub incident: String,
    pub severity: String,
    pub starter: String,
    /// When the incident started (ms since the epoch), when known.
    pub incident_start_ms: Option<u64>,
}

/// Someone who approved the change asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub person: String,
    pub groups: Vec<String>,
}

pub struct Question<'a> {
    pub step: &'a StepFacts,
    pub run: &'a RunFacts,
    pub interface: Interface,
    pub access: Access,
    pub resource: &'a str,
    pub approvals: &'a [Approval],
    pub now_ms: u64,
    /// Changes counted recently (zero unless the policies read them).
    pub recent: Recent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "decision")]
pub enum Verdict {
    Allow,
    Forbid,
    /// Forbidden now; allowed once people approve under `rule`.
    NeedsApprovals {
        rule: Rule,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The policies that decided it (the forbids; for an allow, the
    /// permits).
    pub policies: Vec<String>,
    /// The context it was decided in (journaled with the decision).
    pub context: Value,
}

impl Policies {
    /// Asks the policies `q`. Cedar checks the stack it has left (100
    /// KiB): not from a wasmtime fiber (`Guard::ask_off_fiber`).
    pub fn decide(&self, q: &Question<'_>) -> Answer {
        let context = self.context(q, q.approvals.len() as u64, &approvals_of(q.approvals));
        let (decision, policies) = self.ask(q, &context, q.approvals);
        let verdict = match decision {
            Decision::Allow => Verdict::Allow,
            Decision::Deny => match self.would_allow(q) {
                Some(rule) => Verdict::NeedsApprovals { rule },
                None => Verdict::Forbid,
            },
        };
        Answer {
            verdict,
            policies,
            context,
        }
    }

    /// The least rule of approvals under which `q` would be allowed:
    /// `k` people of anyone's (k from 1), else `k` from the groups the
    /// policies name; none if approvals do not lift it.
    fn would_allow(&self, q: &Question<'_>) -> Option<Rule> {
        for k in 1..=MAX_APPROVALS {
            let context = self.context(q, u64::from(k), &json!({ "people": [], "groups": [] }));
            if self.ask(q, &context, &[]).0 == Decision::Allow {
                return Some(rule(k, Vec::new()));
            }
        }
        for k in 1..=MAX_APPROVALS {
            let from: Vec<String> = self
                .groups
                .iter()
                .filter(|g| {
                    let groups = json!({ "people": [], "groups": [group_ref(g)] });
                    let context = self.context(q, u64::from(k), &groups);
                    self.ask(q, &context, &[]).0 == Decision::Allow
                })
                .cloned()
                .collect();
            if !from.is_empty() {
                return Some(rule(k, from));
            }
        }
        None
    }

    fn ask(
        &self,
        q: &Question<'_>,
        context: &Value,
        approvals: &[Approval],
    ) -> (Decision, Vec<String>) {
        let forbidden = |why: String| (Decision::Deny, vec![why]);
        // Built from values, not parsed from JSON: Cedar's JSON forms cost
        // ~40 µs each here. They are ours and match the schema by
        // construction (`values_match_the_schema` checks it).
        let action = self.types.action(&action_name(q.interface, q.access));
        let resource = self.types.uid(resource_type(q.interface), q.resource);
        let principal = self.types.uid("Step", &step_id(q.step));
        let entities = match self.entities(q, approvals) {
            Ok(e) => e,
            Err(e) => return forbidden(format!("entities: {e}")),
        };
        let context = match self.types.context(context) {
            Ok(c) => c,
            Err(e) => return forbidden(format!("context: {e}")),
        };
        let request = match Request::new(principal, action, resource, context, None) {
            Ok(r) => r,
            Err(e) => return forbidden(format!("request: {e}")),
        };
        self.authorize(&request, &entities)
    }

    /// Cedar's decision on `request` and the policies that made it (the
    /// grants' permit only for an allow). A policy that erred may have
    /// been a forbid: the answer is then deny, naming it (fail closed).
    pub(crate) fn authorize(
        &self,
        request: &Request,
        entities: &Entities,
    ) -> (Decision, Vec<String>) {
        let response = Authorizer::new().is_authorized(request, &self.set, entities);
        let erred: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(e) => format!(
                    "{} could not be evaluated: {}",
                    self.describe(e.policy_id().as_ref()),
                    e.inner()
                ),
            })
            .collect();
        if !erred.is_empty() {
            return (Decision::Deny, erred);
        }
        let mut reasons: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|p| p.to_string())
            .filter(|p| p != GRANTS || response.decision() == Decision::Allow)
            .collect();
        reasons.sort();
        (response.decision(), reasons)
    }

    fn context(&self, q: &Question<'_>, count: u64, approvals: &Value) -> Value {
        let mut c = self.common_context(q.now_ms, q.run, &q.step.service);
        c["approvals"] = json!({
            "count": count as i64,
            "people": approvals["people"],
            "groups": approvals["groups"],
        });
        c["recent"] = json!({
            "resource": { "hour": q.recent.resource.hour as i64, "day": q.recent.resource.day as i64 },
            "runbook": { "hour": q.recent.runbook.hour as i64, "day": q.recent.runbook.day as i64 },
        });
        c["step"] = q.step.step_id.clone().into();
        c
    }

    /// What every question's context has: the time, the calendars, the
    /// incident and the run.
    pub(crate) fn common_context(&self, t: u64, run: &RunFacts, service: &str) -> Value {
        let minute = crate::calendar::minute_of_week(t);
        let states = self.calendars.at(t);
        let (closed, open): (Vec<_>, Vec<_>) = states.into_iter().partition(|s| s.closed);
        json!({
            "time": {
                "unix_seconds": (t / 1000) as i64,
                "hour": ((minute % 1440) / 60) as i64,
                "minute": (minute % 60) as i64,
                "weekday": crate::calendar::weekday_name(t),
            },
            "calendars": {
                "open": open.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                "closed": closed.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            },
            "incident": {
                "key": run.incident,
                "service": service,
                "severity": run.severity,
                "start_unix_seconds": run.incident_start_ms.map_or(0, |ms| (ms / 1000) as i64),
            },
            "run": { "id": run.run_id, "mode": run.mode },
            "approvals": { "count": 0, "people": [], "groups": [] },
            "starter": run.starter,
            "recent": {
                "resource": { "hour": 0, "day": 0 },
                "runbook": { "hour": 0, "day": 0 },
            },
            "step": "",
            "change": "",
        })
    }

    /// The entities a question is about, in Cedar's JSON entity form
    /// (what `values_match_the_schema` checks against the schema).
    pub(crate) fn entities_json(&self, q: &Question<'_>, approvals: &[Approval]) -> Vec<Value> {
        let mut list = vec![
            json!({ "uid": eref("Runbook", &q.step.runbook_id),
                    "attrs": { "service": q.step.service, "title": q.step.title }, "parents": [] }),
            json!({ "uid": eref("Plugin", &q.step.plugin),
                    "attrs": { "digest": q.step.plugin_digest, "signers": q.step.signers, "origin": q.step.origin },
                    "parents": [] }),
            json!({ "uid": eref("Step", &step_id(q.step)),
                    "attrs": { "id": q.step.step_id,
                               "runbook": { "__entity": eref("Runbook", &q.step.runbook_id) },
                               "plugin": { "__entity": eref("Plugin", &q.step.plugin) } },
                    "parents": [eref("Runbook", &q.step.runbook_id)] }),
            json!({ "uid": eref(resource_type(q.interface), q.resource),
                    "attrs": { "name": q.resource, "capability": q.interface.wit_name() }, "parents": [] }),
        ];
        for a in approvals {
            list.push(json!({ "uid": eref("Person", &a.person), "attrs": {},
                              "parents": a.groups.iter().map(|g| eref("Group", g)).collect::<Vec<_>>() }));
        }
        list
    }

    fn entities(&self, q: &Question<'_>, approvals: &[Approval]) -> Result<Entities, String> {
        let list = self
            .entities_json(q, approvals)
            .iter()
            .map(|e| self.types.entity(e))
            .collect::<Result<Vec<_>, _>>()?;
        Entities::from_entities(list.into_iter().chain(self.actions.iter().cloned()), None)
            .map_err(|e| e.to_string())
    }
}

fn rule(approvals: u32, from: Vec<String>) -> Rule {
    Rule {
        approvals,
        from: from
            .iter()
            .filter_map(|g| runbook_core::ids::Name::parse(g).ok())
            .collect(),
        starter_may_approve: false,
        timeout: None,
        on_timeout: Default::default(),
    }
}

fn approvals_of(approvals: &[Approval]) -> Value {
    let mut groups: Vec<&String> = approvals.iter().flat_map(|a| &a.groups).collect();
    groups.sort();
    groups.dedup();
    json!({
        "people": approvals.iter().map(|a| json!({ "__entity": eref("Person", &a.person) })).collect::<Vec<_>>(),
        "groups": groups.into_iter().map(|g| group_ref(g)).collect::<Vec<_>>(),
    })
}

fn group_ref(g: &str) -> Value {
    json!({ "__entity": eref("Group", g) })
}

fn step_id(s: &StepFacts) -> String {
    format!("{}/{}", s.runbook_id, s.step_id)
}

pub(crate) fn eref(ty: &str, id: &str) -> Value {
    json!({ "type": format!("{NAMESPACE}::{ty}"), "id": id })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: &str = r#"
@id("auth-flags-two-approvals")
forbid (principal, action == Runbook::Action::"feature-flags:mutate", resource is Runbook::Flag)
when { resource.name like "AUTH_*" }
unless { context.approvals.count >= 2 };

@id("friday-freeze")
forbid (principal, action == Runbook::Action::"ecs:mutate", resource)
when { context.calendars.closed.contains("friday-freeze") }
unless { context.approvals.groups.contains(Runbook::Group::"incident-commander") };
"#;

    const CALENDAR: &str = r#"
[[calendar]]
name = "friday-freeze"
closed = [{ weekday = "fri", from = "12:00", to = "24:00" }]
"#;

    fn policies() -> (tempfile::TempDir, Policies) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("org.cedar"), AUTH).unwrap();
        std::fs::write(dir.path().join("calendars.toml"), CALENDAR).unwrap();
        let p = Policies::load(dir.path()).unwrap();
        (dir, p)
    }

    fn ask(
        p: &Policies,
        interface: Interface,
        resource: &str,
        approvals: &[Approval],
        now: &str,
    ) -> Answer {
        let step = StepFacts {
            runbook_id: "RB-0031".into(),
            step_id: "set-fallback".into(),
            plugin: "flag-set".into(),
            ..StepFacts::default()
        };
        let run = RunFacts::default();
        let now_ms = humantime::parse_rfc3339(now)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        p.decide(&Question {
            step: &step,
            run: &run,
            interface,
            access: Access::Mutate,
            resource,
            approvals,
            now_ms,
            recent: Default::default(),
        })
    }

    fn person(name: &str, groups: &[&str]) -> Approval {
        Approval {
            person: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn an_auth_flag_needs_two_approvals_and_others_do_not() {
        let (_d, p) = policies();
        let thursday = "2026-12-03T10:00:00Z";
        let a = ask(
            &p,
            Interface::FeatureFlags,
            "AUTH_SESSION_FALLBACK",
            &[],
            thursday,
        );
        assert_eq!(
            a.verdict,
            Verdict::NeedsApprovals {
                rule: rule(2, vec![])
            }
        );
        assert_eq!(a.policies, vec!["auth-flags-two-approvals".to_string()]);
        let one = [person("alice", &[])];
        let a = ask(
            &p,
            Interface::FeatureFlags,
            "AUTH_SESSION_FALLBACK",
            &one,
            thursday,
        );
        assert!(matches!(a.verdict, Verdict::NeedsApprovals { .. }));
        let two = [person("alice", &[]), person("bob", &["sre"])];
        let a = ask(
            &p,
            Interface::FeatureFlags,
            "AUTH_SESSION_FALLBACK",
            &two,
            thursday,
        );
        assert_eq!(a.verdict, Verdict::Allow);
        assert_eq!(a.context["approvals"]["count"], 2);
        let a = ask(&p, Interface::FeatureFlags, "CHECKOUT_V2", &[], thursday);
        assert_eq!(a.verdict, Verdict::Allow);
        let step = StepFacts {
            runbook_id: "RB-0031".into(),
            title: "Auth Service Degradation".into(),
            service: "auth-service".into(),
            step_id: "check-latency".into(),
            plugin: "metric-threshold".into(),
            plugin_digest: "a16b".into(),
            signers: vec![],
            origin: "builtin".into(),
        };
        let a = p.decide(&Question {
            step: &step,
            run: &RunFacts::default(),
            interface: Interface::Metrics,
            access: Access::Read,
            resource: "AuthService/auth-service.token.validation.duration",
            approvals: &[],
            now_ms: 0,
            recent: Default::default(),
        });
        assert_eq!(a.verdict, Verdict::Allow, "{:?}", a.policies);
    }

    #[test]
    fn the_freeze_holds_a_rollback_unless_the_commander_approves() {
        let (_d, p) = policies();
        let friday = "2026-12-04T15:00:00Z";
        let a = ask(&p, Interface::Ecs, "production/auth-service", &[], friday);
        assert_eq!(
            a.verdict,
            Verdict::NeedsApprovals {
                rule: rule(1, vec!["incident-commander".into()])
            }
        );
        assert_eq!(a.context["calendars"]["closed"], json!(["friday-freeze"]));
        // Two people who are not the commander do not lift it.
        let two = [person("alice", &["sre"]), person("bob", &["sre"])];
        let a = ask(&p, Interface::Ecs, "production/auth-service", &two, friday);
        assert!(matches!(a.verdict, Verdict::NeedsApprovals { .. }));
        let ic = [person("carol", &["incident-commander"])];
        assert_eq!(
            ask(&p, Interface::Ecs, "production/auth-service", &ic, friday).verdict,
            Verdict::Allow
        );
        // Outside the window: allowed.
        let a = ask(
            &p,
            Interface::Ecs,
            "production/auth-service",
            &[],
            "2026-12-04T11:00:00Z",
        );
        assert_eq!(a.verdict, Verdict::Allow);
    }

    /// A forbid on an action group (`action in "mutate"`, `"read"`)
    /// applies to each action in it.
    #[test]
    fn a_forbid_on_an_action_group_applies_to_its_actions() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("groups.cedar"),
            "@id(\"no-changes\")\nforbid (principal, action in Runbook::Action::\"mutate\", resource);\n@id(\"no-secret-reads\")\nforbid (principal, action in [Runbook::Action::\"read\"], resource) when { resource.name like \"secret*\" };\n",
        )
        .unwrap();
        let p = Policies::load(dir.path()).unwrap();
        let now = "2026-12-03T10:00:00Z";
        let a = ask(&p, Interface::Ecs, "production/auth-service", &[], now);
        assert_eq!(a.verdict, Verdict::Forbid);
        assert_eq!(a.policies, vec!["no-changes".to_string()]);
        assert_eq!(
            ask(&p, Interface::FeatureFlags, "X", &[], now).verdict,
            Verdict::Forbid
        );
        let step = StepFacts::default();
        let run = RunFacts::default();
        let read = |resource| {
            p.decide(&Question {
                step: &step,
                run: &run,
                interface: Interface::Redis,
                access: Access::Read,
                resource,
                approvals: &[],
                now_ms: 1_764_000_000_000,
                recent: Default::default(),
            })
            .verdict
        };
        assert_eq!(read("secret-store"), Verdict::Forbid);
        assert_eq!(read("session-store"), Verdict::Allow);
    }

    #[test]
    fn a_forbid_no_approval_lifts_is_a_forbid() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("never.cedar"),
            "@id(\"no-prod-flags\")\nforbid (principal, action == Runbook::Action::\"feature-flags:mutate\", resource) when { resource.name like \"PROD_*\" };\n",
        )
        .unwrap();
        let p = Policies::load(dir.path()).unwrap();
        let a = ask(
            &p,
            Interface::FeatureFlags,
            "PROD_KILL",
            &[],
            "2026-12-03T10:00:00Z",
        );
        assert_eq!(a.verdict, Verdict::Forbid);
        assert_eq!(a.policies, vec!["no-prod-flags".to_string()]);
    }
}

#[cfg(test)]
mod schema_check {
    use super::*;
    use cedar_policy::Context;

    /// The values `ask` builds without the schema are the ones the
    /// schema describes: Cedar's own schema-checked JSON parsers accept
    /// them, for every capability and access, with approvals.
    #[test]
    fn values_match_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.cedar"), "@id(\"x\")\nforbid (principal, action, resource) when { context.starter == \"nobody\" };\n").unwrap();
        let p = Policies::load(dir.path()).unwrap();
        let schema = crate::load::schema();
        let step = StepFacts {
            runbook_id: "RB-0031".into(),
            step_id: "s".into(),
            plugin: "p".into(),
            signers: vec!["k".into()],
            ..StepFacts::default()
        };
        let run = RunFacts::default();
        let approvals = [Approval {
            person: "alice".into(),
            groups: vec!["sre".into()],
        }];
        for &interface in Interface::ALL {
            let mut accesses = vec![Access::Read];
            if interface.can_mutate() {
                accesses.push(Access::Mutate);
            }
            for access in accesses {
                let q = Question {
                    step: &step,
                    run: &run,
                    interface,
                    access,
                    resource: "r",
                    approvals: &approvals,
                    now_ms: 1_764_000_000_000,
                    recent: Default::default(),
                };
                let action = p.types.action(&action_name(interface, access));
                Entities::from_json_value(
                    Value::Array(p.entities_json(&q, &approvals)),
                    Some(&schema),
                )
                .unwrap_or_else(|e| panic!("{interface:?} {access:?}: entities: {e}"));
                let context = p.context(&q, 1, &approvals_of(&approvals));
                let context = Context::from_json_value(context, Some((&schema, &action)))
                    .unwrap_or_else(|e| panic!("{interface:?} {access:?}: context: {e}"));
                Request::new(
                    p.types.uid("Step", "RB-0031/s"),
                    action,
                    p.types.uid(resource_type(interface), "r"),
                    context,
                    Some(&schema),
                )
                .unwrap_or_else(|e| panic!("{interface:?} {access:?}: request: {e}"));
                assert_eq!(p.decide(&q).verdict, Verdict::Allow);
            }
        }
    }
}
