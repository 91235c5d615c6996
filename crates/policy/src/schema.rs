//! The Cedar schema every policy is validated against: what a policy can
//! name. It is made from the capability registry, so a new capability's
//! actions and resource type are here without a second list.
//!
//! - principals: a `Step` (in its `Runbook`; its `plugin` a `Plugin`
//!   with digest, signers and origin) asks to read or change; `Person`s
//!   (in `Group`s, from the approvers file) are the approvals a change has;
//! - actions: `"<interface>:read"` in `"read"`, `"<interface>:mutate"` in
//!   `"mutate"`;
//! - resources: one entity type per capability (`Flag`, `Service`,
//!   `Metric`, `RedisTarget`, `NotifyTarget`), each with its `name`;
//! - context: the time (UTC), the change calendars, the approvals the
//!   change has, the run's starter, the incident and the run, and the
//!   changes counted over the last hour and day (`recent.resource.hour`:
//!   of this resource by any runbook; `recent.runbook.day`: by this
//!   runbook of any resource), fleet-wide in a fleet;
//! - what people do: a `Person` (in the groups of the approvers file) may
//!   `"run"` or `"resume"` a `Runbook`, or `"approve"` a change of one of
//!   its steps. Every action has the same context, so a policy that
//!   names no action still validates: for a person's act `approvals` is
//!   none and `recent` zero; `step` and `change` are set for a step's
//!   questions (`step`) and an approval (both).

use runbook_core::grants::{Access, Interface};

/// The namespace of every type and action.
pub const NAMESPACE: &str = "Runbook";

/// A capability's resources as a Cedar entity type (the name policies
/// write: `resource is Runbook::Flag`).
pub fn resource_type(interface: Interface) -> &'static str {
    match interface {
        Interface::Metrics => "Metric",
        Interface::Redis => "RedisTarget",
        Interface::FeatureFlags => "Flag",
        Interface::Ecs => "Service",
        Interface::Notify => "NotifyTarget",
    }
}

/// The action of `access` on `interface`: `feature-flags:mutate`.
pub fn action_name(interface: Interface, access: Access) -> String {
    let access = match access {
        Access::Read => "read",
        Access::Mutate => "mutate",
    };
    format!("{}:{access}", interface.wit_name())
}

/// The schema, in Cedar's schema syntax.
pub fn text() -> String {
    let mut s = String::new();
    s.push_str(&format!("namespace {NAMESPACE} {{\n"));
    s.push_str(
        r#"  entity Group in [Group];
  entity Person in [Group];
  entity Runbook = { "service": String, "title": String };
  entity Plugin = { "digest": String, "signers": Set<String>, "origin": String };
  entity Step in [Runbook] = { "id": String, "runbook": Runbook, "plugin": Plugin };
  type Approvals = { "count": Long, "people": Set<Person>, "groups": Set<Group> };
  type Change = {
    "time": { "unix_seconds": Long, "hour": Long, "minute": Long, "weekday": String },
    "calendars": { "open": Set<String>, "closed": Set<String> },
    "approvals": Approvals,
    "starter": String,
    "incident": { "key": String, "service": String, "severity": String, "start_unix_seconds": Long },
    "run": { "id": String, "mode": String },
    "recent": { "resource": Window, "runbook": Window },
    "step": String,
    "change": String,
  };
  type Window = { "hour": Long, "day": Long };
  action "read";
  action "mutate";
  action "run", "resume", "approve" appliesTo { principal: [Person], resource: [Runbook], context: Change };
"#,
    );
    for &interface in Interface::ALL {
        let ty = resource_type(interface);
        s.push_str(&format!(
            "  entity {ty} = {{ \"name\": String, \"capability\": String }};\n"
        ));
        let mut accesses = vec![Access::Read];
        if interface.can_mutate() {
            accesses.push(Access::Mutate);
        }
        for access in accesses {
            let group = match access {
                Access::Read => "read",
                Access::Mutate => "mutate",
            };
            s.push_str(&format!(
                "  action \"{}\" in [\"{group}\"] appliesTo {{ principal: [Step], resource: [{ty}], context: Change }};\n",
                action_name(interface, access)
            ));
        }
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_is_one_cedar_accepts() {
        let (schema, warnings) =
            cedar_policy::Schema::from_cedarschema_str(&super::text()).expect("schema parses");
        assert_eq!(warnings.count(), 0);
        let actions: Vec<String> = schema
            .actions()
            .map(|a| a.id().unescaped().to_string())
            .collect();
        assert!(
            actions.contains(&"feature-flags:mutate".to_string()),
            "{actions:?}"
        );
        assert!(actions.contains(&"metrics:read".to_string()));
        assert!(!actions.contains(&"metrics:mutate".to_string()));
    }
}
