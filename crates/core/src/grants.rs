//! Capability grants and the one checker that answers every yes/no.
//!
//! A grant names, per interface, which resources a step may read and which it
//! may mutate. Resources are plain strings (`AuthService/TokenValidationDuration`,
//! `session-store`, `AUTH_STATELESS_FALLBACK`, `production/auth-service`);
//! a pattern matches one exactly or, ending in `*`, by prefix within its
//! last `/`-separated part (`*` alone matches everything). Nothing is
//! granted unless listed: an absent interface is not even linked.

pub use crate::interface::Interface;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    Read,
    Mutate,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Mutate => "mutate",
        })
    }
}

/// A resource name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Pattern(String);

impl Pattern {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() {
            return Err("an empty pattern grants nothing; remove it".into());
        }
        if raw.chars().any(char::is_whitespace) {
            return Err(format!("pattern `{raw}` contains whitespace"));
        }
        if raw.trim_end_matches('*').contains('*') || raw.ends_with("**") {
            return Err(format!(
                "pattern `{raw}`: `*` may appear only once, at the end"
            ));
        }
        Ok(Self(raw.to_string()))
    }

    fn prefix(&self) -> Option<&str> {
        self.0.strip_suffix('*')
    }

    /// `*` alone matches everything; otherwise a trailing `*` stays within
    /// one `/`-separated part, so `AuthService/*` does not reach namespace
    /// `AuthService/Other` nor `production/*` a cluster `production/x`.
    pub fn matches(&self, resource: &str) -> bool {
        within(self, &self.0, resource)
    }

    /// Whether every resource `other` matches is also matched by `self`.
    pub fn covers(&self, other: &Pattern) -> bool {
        match other.prefix() {
            Some(_) if self.0 == "*" => true,
            // A narrower wildcard must stay inside this one's last part.
            Some(theirs) => self.prefix().is_some() && within(self, &self.0, theirs),
            None => self.matches(&other.0),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn within(pattern: &Pattern, raw: &str, resource: &str) -> bool {
    match pattern.prefix() {
        Some("") => true,
        Some(prefix) => resource
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.contains('/')),
        None => raw == resource,
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Pattern::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one interface grants. Mutating a resource implies reading it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub read: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mutate: Vec<Pattern>,
}

impl Scope {
    fn allows(&self, access: Access, resource: &str) -> bool {
        let hit = |ps: &[Pattern]| ps.iter().any(|p| p.matches(resource));
        match access {
            Access::Read => hit(&self.read) || hit(&self.mutate),
            Access::Mutate => hit(&self.mutate),
        }
    }

    fn patterns(&self, access: Access) -> Vec<&Pattern> {
        match access {
            Access::Read => self.read.iter().chain(&self.mutate).collect(),
            Access::Mutate => self.mutate.iter().collect(),
        }
    }
}

macro_rules! define_grants {
    ($($section:ident: $variant:ident($wit:literal, $form:literal, parts $parts:literal, $($access:ident)+) => $module:ident,)*) => {
        /// Grants per interface, one optional scope per registered
        /// capability; `None` means the interface is not granted at all.
        #[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        pub struct Grants {
            $(
                #[serde(rename = $wit, default, skip_serializing_if = "Option::is_none")]
                $section: Option<Scope>,
            )*
        }

        impl Grants {
            pub fn scope(&self, interface: Interface) -> Option<&Scope> {
                match interface {
                    $(Interface::$variant => self.$section.as_ref(),)*
                }
            }

            fn scope_mut(&mut self, interface: Interface) -> &mut Option<Scope> {
                match interface {
                    $(Interface::$variant => &mut self.$section,)*
                }
            }
        }
    };
}
crate::with_capabilities!(define_grants);

impl Grants {
    /// A grant of `scope` on `interface`, and nothing else.
    pub fn only(interface: Interface, scope: Scope) -> Self {
        let mut g = Grants::default();
        *g.scope_mut(interface) = Some(scope);
        g
    }

    pub fn interfaces(&self) -> impl Iterator<Item = Interface> + '_ {
        Interface::ALL
            .iter()
            .copied()
            .filter(|i| self.scope(*i).is_some())
    }

    /// Checks what a manifest or step can express at all.
    pub fn validate(&self) -> Result<(), String> {
        for interface in self.interfaces() {
            let scope = self
                .scope(interface)
                .expect("listed interfaces have a scope");
            if !interface.can_mutate() && !scope.mutate.is_empty() {
                return Err(format!(
                    "`{interface}` has no mutating operations; remove its `mutate` list"
                ));
            }
            let parts = interface.resource_parts();
            if let Some(p) = scope
                .read
                .iter()
                .chain(&scope.mutate)
                .find(|p| p.as_str() != "*" && p.as_str().split('/').count() < parts)
            {
                return Err(format!(
                    "`{interface}` pattern `{p}` has too few parts: its resources are written {} (or `*`)",
                    interface.resource_form()
                ));
            }
            if scope.read.is_empty() && scope.mutate.is_empty() {
                return Err(format!(
                    "`{interface}` grants nothing; list resources under `read`{} or remove it",
                    if interface.can_mutate() {
                        "/`mutate`"
                    } else {
                        ""
                    }
                ));
            }
        }
        Ok(())
    }

    /// The grant a step ends up with: interfaces the step names are replaced
    /// by the step's scope, which must lie within the manifest's; the rest
    /// keep the manifest's scope. Errors name what would widen the grant.
    pub fn narrow(&self, step: &Grants) -> Result<Grants, String> {
        step.validate()?;
        let mut out = self.clone();
        for interface in step.interfaces() {
            let wanted = step
                .scope(interface)
                .expect("listed interfaces have a scope");
            let Some(granted) = self.scope(interface) else {
                return Err(format!(
                    "the step asks for `{interface}`, which the plugin's manifest does not grant"
                ));
            };
            for (access, patterns) in [
                (Access::Read, &wanted.read),
                (Access::Mutate, &wanted.mutate),
            ] {
                for p in patterns {
                    if !granted.patterns(access).iter().any(|g| g.covers(p)) {
                        return Err(format!(
                            "`{interface}` {access} `{p}` is wider than the manifest grants ({})",
                            list(&granted.patterns(access))
                        ));
                    }
                }
            }
            *out.scope_mut(interface) = Some(wanted.clone());
        }
        Ok(out)
    }

    /// One line per interface, for `check` and `inspect`.
    pub fn describe(&self) -> Vec<String> {
        self.interfaces()
            .map(|i| {
                let s = self.scope(i).expect("listed interfaces have a scope");
                let mut line = format!("{i}: read {}", list(&s.read.iter().collect::<Vec<_>>()));
                if !s.mutate.is_empty() {
                    line.push_str(&format!(
                        "; mutate {}",
                        list(&s.mutate.iter().collect::<Vec<_>>())
                    ));
                }
                line
            })
            .collect()
    }
}

fn list(patterns: &[&Pattern]) -> String {
    if patterns.is_empty() {
        return "nothing".into();
    }
    patterns
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The single place that answers "may this step do this?". Every privileged
/// host function calls [`GrantChecker::check`] before touching a backend.
#[derive(Debug, Clone)]
pub struct GrantChecker {
    grants: Grants,
}

impl GrantChecker {
    pub fn new(grants: Grants) -> Self {
        Self { grants }
    }

    pub fn check(
        &self,
        interface: Interface,
        access: Access,
        resource: &str,
    ) -> Result<(), String> {
        match self.grants.scope(interface) {
            Some(scope) if scope.allows(access, resource) => Ok(()),
            Some(scope) => Err(format!(
                "{access} of `{resource}` via `{interface}` is not granted (granted: {})",
                list(&scope.patterns(access))
            )),
            None => Err(format!("`{interface}` is not granted to this step")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    fn flags(read: &[&str], mutate: &[&str]) -> Grants {
        Grants {
            flags: Some(Scope {
                read: read.iter().map(|s| pat(s)).collect(),
                mutate: mutate.iter().map(|s| pat(s)).collect(),
            }),
            ..Grants::default()
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        assert!(pat("AUTH_*").matches("AUTH_STATELESS_FALLBACK"));
        assert!(!pat("AUTH_*").matches("BILLING_X"));
        assert!(pat("a").matches("a"));
        assert!(!pat("a").matches("ab"));
        assert!(pat("*").matches("anything"));
        assert!(Pattern::parse("a*b").is_err());
        assert!(Pattern::parse("a**").is_err());
        assert!(Pattern::parse("").is_err());
    }

    #[test]
    fn coverage_is_subset() {
        assert!(pat("*").covers(&pat("AUTH_*")));
        assert!(pat("AUTH_*").covers(&pat("AUTH_X")));
        assert!(pat("AUTH_*").covers(&pat("AUTH_X*")));
        assert!(!pat("AUTH_X").covers(&pat("AUTH_*")));
        assert!(!pat("AUTH_X*").covers(&pat("AUTH_*")));
        assert!(pat("AuthService/*").covers(&pat("AuthService/auth.*")));
        assert!(!pat("AuthService/*").covers(&pat("AuthService/Other/*")));
    }

    #[test]
    fn a_wildcard_stays_within_its_part() {
        assert!(pat("AuthService/*").matches("AuthService/latency"));
        assert!(!pat("AuthService/*").matches("AuthService/Other/latency"));
        assert!(!pat("production/*").matches("production/x/auth"));
        assert!(pat("*").matches("AuthService/Other/latency"));
        assert!(pat("AWS/ElastiCache/*").matches("AWS/ElastiCache/CurrConnections"));
    }

    #[test]
    fn checker_denies_by_default_and_by_scope() {
        let c = GrantChecker::new(flags(&["*"], &["AUTH_STATELESS_FALLBACK"]));
        assert!(
            c.check(Interface::FeatureFlags, Access::Read, "ANY")
                .is_ok()
        );
        assert!(
            c.check(
                Interface::FeatureFlags,
                Access::Mutate,
                "AUTH_STATELESS_FALLBACK"
            )
            .is_ok()
        );
        let denied = c
            .check(Interface::FeatureFlags, Access::Mutate, "OTHER")
            .unwrap_err();
        assert_eq!(
            denied,
            "mutate of `OTHER` via `feature-flags` is not granted (granted: `AUTH_STATELESS_FALLBACK`)"
        );
        assert_eq!(
            c.check(Interface::Ecs, Access::Read, "production/auth-service")
                .unwrap_err(),
            "`ecs` is not granted to this step"
        );
    }

    #[test]
    fn mutate_implies_read() {
        let c = GrantChecker::new(flags(&[], &["K"]));
        assert!(c.check(Interface::FeatureFlags, Access::Read, "K").is_ok());
    }

    #[test]
    fn narrowing_never_widens() {
        let manifest = flags(&["*"], &["AUTH_*"]);
        let ok = manifest.narrow(&flags(&["AUTH_X"], &["AUTH_X"])).unwrap();
        assert_eq!(ok, flags(&["AUTH_X"], &["AUTH_X"]));
        let err = manifest.narrow(&flags(&[], &["BILLING"])).unwrap_err();
        assert!(err.contains("mutate `BILLING` is wider"), "{err}");
        let ecs = Grants {
            ecs: Some(Scope {
                read: vec![pat("*")],
                mutate: vec![],
            }),
            ..Grants::default()
        };
        assert!(
            manifest
                .narrow(&ecs)
                .unwrap_err()
                .contains("does not grant")
        );
    }

    #[test]
    fn read_only_interfaces_reject_mutate() {
        let g = Grants {
            metrics: Some(Scope {
                read: vec![pat("*")],
                mutate: vec![pat("*")],
            }),
            ..Grants::default()
        };
        assert!(g.validate().unwrap_err().contains("no mutating operations"));
    }
}
