//! What a plugin's manifest promises about its use, checked against every
//! step before anything runs: the inputs it takes (name, type, required or
//! default), which inputs name a capability resource (so a step's grant
//! is proven to cover what its inputs point at), and the outcome labels it
//! can return (so a route to a misspelt label is caught by `check`).
//!
//! ```toml
//! outcomes = ["set", "unchanged"]
//!
//! [inputs.key]
//! type = "string"
//! description = "the flag to set"
//!
//! [[resources]]          # the step's grant must cover this, for this access
//! interface = "feature-flags"
//! access = "mutate"
//! name = "{key}"         # input values fill the `{...}` placeholders
//! ```

use crate::grants::{Access, GrantChecker, Grants, Interface};
use crate::ids::Name;
use crate::runbook::{LABEL_ERROR, LABEL_LIMIT, StepDef};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An input's type; every value reaches the plugin as a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InputType {
    String,
    /// A decimal number, e.g. `99.5`.
    Number,
    /// A whole number, e.g. `600`.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// Comma-separated words, e.g. `orders, payments`.
    List,
    /// `Name=Value,...`, e.g. `Service=auth-service`.
    Dimensions,
}

impl InputType {
    fn check(self, value: &str) -> Result<(), String> {
        let ok = match self {
            InputType::String | InputType::List => true,
            InputType::Number => value.trim().parse::<f64>().is_ok_and(f64::is_finite),
            InputType::Integer => value.trim().parse::<u64>().is_ok(),
            InputType::Boolean => matches!(value.trim(), "true" | "false"),
            InputType::Dimensions => value.split(',').filter(|s| !s.trim().is_empty()).all(|kv| {
                kv.split_once('=')
                    .is_some_and(|(k, _)| !k.trim().is_empty())
            }),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            InputType::Number => "a number".into(),
            InputType::Integer => "a whole number".into(),
            InputType::Boolean => "`true` or `false`".into(),
            InputType::Dimensions => "`Name=Value,...`".into(),
            InputType::String | InputType::List => unreachable!("always valid"),
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    #[serde(rename = "type")]
    pub kind: InputType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Used when the step does not give the input; without a default the
    /// input is required unless `optional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

impl InputSpec {
    /// `required`, `optional` or ``default `…` ``, for listings.
    pub fn need(&self) -> String {
        match (&self.default, self.optional) {
            (Some(d), _) => format!("default `{d}`"),
            (None, true) => "optional".into(),
            (None, false) => "required".into(),
        }
    }

    /// The type as the manifest writes it (`string`, `dimensions`, …).
    pub fn kind_name(&self) -> String {
        serde_json::to_value(self.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// A resource the plugin reaches, named by its inputs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceUse {
    pub interface: Interface,
    pub access: Access,
    /// The resource, with `{input}` placeholders, e.g. `{cluster}/{service}`.
    pub name: String,
}

/// The manifest's declarations. All optional: a manifest that declares
/// nothing is not checked against its steps (and `check` says so).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Contract {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Vec<Name>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<BTreeMap<String, InputSpec>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceUse>,
}

impl Contract {
    /// What the manifest itself must get right.
    pub fn validate(&self) -> Result<(), String> {
        for r in &self.resources {
            for name in placeholders(&r.name)? {
                let declared = self.inputs.as_ref().is_some_and(|i| i.contains_key(name));
                if !declared {
                    return Err(format!(
                        "resource `{}` uses input `{name}`, which `[inputs]` does not declare",
                        r.name
                    ));
                }
            }
            if r.access == Access::Mutate && !r.interface.can_mutate() {
                return Err(format!(
                    "resource `{}`: `{}` has no mutating operations",
                    r.name, r.interface
                ));
            }
        }
        if let Some(outcomes) = &self.outcomes
            && let Some(o) = outcomes
                .iter()
                .find(|o| o.as_str() == LABEL_ERROR || o.as_str() == LABEL_LIMIT)
        {
            return Err(format!(
                "outcome `{o}` is the host's own; list only the labels the plugin returns"
            ));
        }
        Ok(())
    }

    /// Whether the plugin may return `label` (the host's own labels always).
    fn returns(&self, label: &str) -> bool {
        label == LABEL_ERROR
            || label == LABEL_LIMIT
            || self
                .outcomes
                .as_ref()
                .is_none_or(|o| o.iter().any(|l| l.as_str() == label))
    }

    /// Checks a step against the contract: its inputs are declared and well
    /// typed, required ones are given, its routes name labels the plugin
    /// returns, and its grant covers every resource its inputs name.
    /// Errors complete "step `x` of `rb.md` …".
    pub fn check_step(&self, plugin: &str, step: &StepDef, grants: &Grants) -> Result<(), String> {
        let given: BTreeMap<String, String> = step.input_pairs().into_iter().collect();
        if let Some(inputs) = &self.inputs {
            let known = || {
                inputs
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            for (key, value) in &given {
                let Some(spec) = inputs.get(key) else {
                    return Err(format!(
                        "gives input `{key}`, which plugin `{plugin}` does not take (it takes {})",
                        known()
                    ));
                };
                spec.kind.check(value).map_err(|want| {
                    format!(
                        "gives input `{key}` as `{value}`, but plugin `{plugin}` expects {want}"
                    )
                })?;
            }
            for (key, spec) in inputs {
                if !given.contains_key(key) && spec.default.is_none() && !spec.optional {
                    return Err(format!(
                        "lacks input `{key}`, which plugin `{plugin}` requires{}",
                        spec.description
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        if let Some(outcomes) = &self.outcomes {
            for label in step.on.keys() {
                if !self.returns(label) {
                    return Err(format!(
                        "routes outcome `{label}`, which plugin `{plugin}` never returns (it returns {}, and the host `{LABEL_ERROR}` and `{LABEL_LIMIT}`)",
                        outcomes
                            .iter()
                            .map(|o| format!("`{o}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        let checker = GrantChecker::new(grants.clone());
        for r in self.named_resources(step) {
            if let Err(why) = checker.check(r.interface, r.access, &r.name) {
                return Err(format!(
                    "names {} `{}` through its inputs, for {}, but {why}",
                    r.interface, r.name, r.access
                ));
            }
        }
        Ok(())
    }

    /// The resources `step`'s inputs (or their defaults) name, placeholders
    /// filled; a resource named by an input the step leaves out is not used.
    pub fn named_resources(&self, step: &StepDef) -> Vec<ResourceUse> {
        let given: BTreeMap<String, String> = step.input_pairs().into_iter().collect();
        let value = |name: &str| {
            given.get(name).cloned().or_else(|| {
                self.inputs
                    .as_ref()
                    .and_then(|i| i.get(name))
                    .and_then(|s| s.default.clone())
            })
        };
        self.resources
            .iter()
            .filter_map(|r| {
                Some(ResourceUse {
                    interface: r.interface,
                    access: r.access,
                    name: render(&r.name, value)?,
                })
            })
            .collect()
    }
}

/// The `{name}` placeholders of a template.
fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| format!("resource `{template}`: `{{` is never closed"))?;
        out.push(&after[..close]);
        rest = &after[close + 1..];
    }
    Ok(out)
}

/// `template` with each `{name}` replaced by `value(name)`; `None` when an
/// input is missing.
fn render(template: &str, value: impl Fn(&str) -> Option<String>) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        out.push_str(value(&after[..close])?.trim());
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_from_inputs() {
        let v = |n: &str| match n {
            "cluster" => Some("production".to_string()),
            "service" => Some(" auth ".to_string()),
            _ => None,
        };
        assert_eq!(
            render("{cluster}/{service}", v).as_deref(),
            Some("production/auth")
        );
        assert_eq!(render("{missing}", v), None);
        assert_eq!(placeholders("{a}/{b}").unwrap(), ["a", "b"]);
        assert!(placeholders("{a").is_err());
    }

    #[test]
    fn input_types() {
        assert!(InputType::Number.check("99.5").is_ok());
        assert!(InputType::Number.check("inf").is_err());
        assert!(InputType::Integer.check("-1").is_err());
        assert!(InputType::Dimensions.check("Service=auth,Env=prod").is_ok());
        assert!(InputType::Dimensions.check("Service").is_err());
        assert!(InputType::Boolean.check("yes").is_err());
    }
}
