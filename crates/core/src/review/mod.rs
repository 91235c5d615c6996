//! The capability diff between two locks: per runbook step and per
//! plugin, what may now be touched that could not before (widened), what
//! changed without widening (a new component digest, a version), and what
//! was given up (narrowed). `runbook review` prints it for a pull request;
//! `--locked` refuses a plan with any change at all.

use crate::lock::{LockFile, LockedPlugin, LockedRunbook, LockedStep, LockedTrust};
use serde::Serialize;
use std::fmt;

mod grants;
mod markdown;

pub use grants::grants_diff;
use grants::{describe, limits_diff, list, mutates};
pub use markdown::markdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// Something may now be read, changed or used that could not before.
    Widened,
    /// Different code or metadata, the same reach.
    Changed,
    /// Less than before.
    Narrowed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub kind: Kind,
    /// The runbook's id and file, for a step's change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runbook: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub plugin: String,
    /// What changed, in words, values in backticks.
    pub what: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind_word())?;
        match (&self.runbook, &self.step) {
            (Some(r), Some(s)) => write!(f, "{r} step `{s}` (`{}`): ", self.plugin)?,
            (Some(r), None) => write!(f, "{r}: ")?,
            _ => write!(f, "plugin `{}`: ", self.plugin)?,
        }
        f.write_str(&self.what)
    }
}

impl Change {
    fn kind_word(&self) -> &'static str {
        match self.kind {
            Kind::Widened => "widened",
            Kind::Changed => "changed",
            Kind::Narrowed => "narrowed",
        }
    }
}

/// Every difference from `base` to `now`, widenings first.
pub fn diff(base: &LockFile, now: &LockFile) -> Vec<Change> {
    let mut out = Vec::new();
    for p in &now.plugins {
        match base.plugin(p.name.as_str()) {
            None => out.push(plugin_change(
                Kind::Widened,
                p,
                format!(
                    "new plugin, version `{}`, sha256 `{}`; manifest grants {}",
                    p.version,
                    short(&p.sha256),
                    describe(&p.grants)
                ),
            )),
            Some(old) => plugin_diff(old, p, &mut out),
        }
    }
    for old in &base.plugins {
        if now.plugin(old.name.as_str()).is_none() {
            out.push(plugin_change(
                Kind::Narrowed,
                old,
                "no runbook uses it any more".into(),
            ));
        }
    }
    for r in &now.runbooks {
        match base.runbook(&r.file) {
            None => {
                out.push(runbook_change(
                    Kind::Widened,
                    r,
                    format!("new runbook, {} steps", r.steps.len()),
                ));
                for s in &r.steps {
                    step_added(r, s, &mut out);
                }
            }
            Some(old) => runbook_diff(old, r, &mut out),
        }
    }
    for old in &base.runbooks {
        if now.runbook(&old.file).is_none() {
            out.push(runbook_change(
                Kind::Narrowed,
                old,
                "runbook removed".into(),
            ));
        }
    }
    trust_diff(
        base.trust.as_ref().unwrap_or(&LockedTrust::default()),
        now.trust.as_ref().unwrap_or(&LockedTrust::default()),
        &mut out,
    );
    out.sort_by_key(|c| c.kind);
    out
}

/// The trust file: who may sign what, and how many signatures it takes.
/// No trust file is one that trusts nobody and asks for nothing.
fn trust_diff(old: &LockedTrust, new: &LockedTrust, out: &mut Vec<Change>) {
    let mut push = |kind, what: String| {
        out.push(Change {
            kind,
            runbook: Some("trust file".into()),
            step: None,
            plugin: String::new(),
            what,
        })
    };
    for (name, a, b) in [
        ("signatures", old.signatures, new.signatures),
        (
            "mutating-signatures",
            old.mutating_signatures,
            new.mutating_signatures,
        ),
    ] {
        if a != b {
            let kind = if b < a { Kind::Widened } else { Kind::Narrowed };
            push(kind, format!("policy `{name}` {a} → {b}"));
        }
    }
    for k in &new.keys {
        match old.keys.iter().find(|o| o.name == k.name) {
            None => push(
                Kind::Widened,
                format!(
                    "trusts a new key `{}` ({}) to sign {}",
                    k.name,
                    k.id,
                    list(&k.plugins)
                ),
            ),
            Some(o) if o.id != k.id => push(
                Kind::Widened,
                format!("key `{}` is now another key: {} → {}", k.name, o.id, k.id),
            ),
            Some(o) => {
                for p in &k.plugins {
                    if !o.plugins.iter().any(|q| q.covers(p)) {
                        push(
                            Kind::Widened,
                            format!(
                                "key `{}` may now sign `{p}` (was {})",
                                k.name,
                                list(&o.plugins)
                            ),
                        );
                    }
                }
                for p in &o.plugins {
                    if !k.plugins.iter().any(|q| q.covers(p)) {
                        push(
                            Kind::Narrowed,
                            format!("key `{}` may no longer sign `{p}`", k.name),
                        );
                    }
                }
            }
        }
    }
    for o in &old.keys {
        if !new.keys.iter().any(|k| k.name == o.name) {
            push(Kind::Narrowed, format!("no longer trusts key `{}`", o.name));
        }
    }
}

fn plugin_change(kind: Kind, p: &LockedPlugin, what: String) -> Change {
    Change {
        kind,
        runbook: None,
        step: None,
        plugin: p.name.to_string(),
        what,
    }
}

fn runbook_change(kind: Kind, r: &LockedRunbook, what: String) -> Change {
    Change {
        kind,
        runbook: Some(runbook_name(r)),
        step: None,
        plugin: String::new(),
        what,
    }
}

fn runbook_name(r: &LockedRunbook) -> String {
    format!("{} (`{}`)", r.id, r.file)
}

fn plugin_diff(old: &LockedPlugin, new: &LockedPlugin, out: &mut Vec<Change>) {
    let mut push = |kind, what| out.push(plugin_change(kind, new, what));
    let grants = grants_diff(&old.grants, &new.grants);
    if old.sha256 != new.sha256 {
        push(
            Kind::Changed,
            format!(
                "component changed: sha256 `{}` → `{}`{}",
                short(&old.sha256),
                short(&new.sha256),
                if grants.is_empty() {
                    ", grants unchanged"
                } else {
                    ""
                }
            ),
        );
    }
    if old.version != new.version {
        push(
            Kind::Changed,
            format!("version `{}` → `{}`", old.version, new.version),
        );
    }
    if old.source != new.source {
        push(
            Kind::Changed,
            format!("comes from `{}`, was `{}`", new.source, old.source),
        );
    }
    for (kind, what) in grants {
        push(kind, format!("manifest {what}"));
    }
    for (kind, what) in limits_diff(&old.limits, &new.limits) {
        push(kind, format!("manifest {what}"));
    }
}

fn runbook_diff(old: &LockedRunbook, new: &LockedRunbook, out: &mut Vec<Change>) {
    if old.max_mutations != new.max_mutations {
        out.push(runbook_change(
            if new.max_mutations > old.max_mutations {
                Kind::Widened
            } else {
                Kind::Narrowed
            },
            new,
            format!(
                "`max_mutations` {} → {}",
                old.max_mutations, new.max_mutations
            ),
        ));
    }
    if let (Some(a), Some(b)) = (old.steps.first(), new.steps.first())
        && a.id != b.id
    {
        out.push(runbook_change(
            Kind::Changed,
            new,
            format!("starts at step `{}`, was `{}`", b.id, a.id),
        ));
    }
    for s in &new.steps {
        let Some(before) = old.steps.iter().find(|o| o.id == s.id) else {
            step_added(new, s, out);
            continue;
        };
        let mut push = |kind, what| {
            out.push(Change {
                kind,
                runbook: Some(runbook_name(new)),
                step: Some(s.id.clone()),
                plugin: s.plugin.to_string(),
                what,
            })
        };
        // A new digest or version shows once, on the plugin's own entry;
        // another plugin is other code acting under the step's grant.
        if before.plugin != s.plugin {
            push(
                Kind::Widened,
                format!(
                    "now runs plugin `{}` (sha256 `{}`), was `{}`",
                    s.plugin,
                    short(&s.sha256),
                    before.plugin
                ),
            );
        }
        for (k, v) in &s.inputs {
            match before.inputs.get(k) {
                Some(w) if w == v => {}
                Some(w) => push(Kind::Changed, format!("input `{k}` `{w}` → `{v}`")),
                None => push(Kind::Changed, format!("input `{k}` = `{v}` added")),
            }
        }
        for (k, w) in &before.inputs {
            if !s.inputs.contains_key(k) {
                push(Kind::Changed, format!("input `{k}` (was `{w}`) removed"));
            }
        }
        for (label, to) in &s.on {
            if before.on.get(label) == Some(to) {
                continue;
            }
            // A route into a step that may change something is a new way
            // for a change to happen.
            let mutating = new
                .steps
                .iter()
                .find(|t| t.id == *to)
                .is_some_and(|t| t.grants.interfaces().any(|i| mutates(&t.grants, i)));
            let was = before
                .on
                .get(label)
                .map(|w| format!("was `{w}`"))
                .unwrap_or_else(|| "new route".into());
            push(
                if mutating {
                    Kind::Widened
                } else {
                    Kind::Changed
                },
                format!(
                    "outcome `{label}` now goes to `{to}`{} ({was})",
                    if mutating {
                        ", a step that may mutate"
                    } else {
                        ""
                    }
                ),
            );
        }
        for (label, to) in &before.on {
            if !s.on.contains_key(label) {
                push(Kind::Changed, format!("route `{label}` → `{to}` removed"));
            }
        }
        for (kind, what) in grants_diff(&before.grants, &s.grants) {
            push(kind, what);
        }
        for (kind, what) in limits_diff(&before.limits, &s.limits) {
            push(kind, what);
        }
        if let Some((kind, what)) = approval_diff(before.approval.as_ref(), s.approval.as_ref()) {
            push(kind, what);
        }
        for r in &s.resources {
            if !before.resources.contains(r) {
                push(
                    Kind::Widened,
                    format!(
                        "its inputs now name {} `{}` for {}",
                        r.interface, r.name, r.access
                    ),
                );
            }
        }
        for r in &before.resources {
            if !s.resources.contains(r) {
                push(
                    Kind::Narrowed,
                    format!(
                        "its inputs no longer name {} `{}` for {}",
                        r.interface, r.name, r.access
                    ),
                );
            }
        }
    }
    for o in &old.steps {
        if !new.steps.iter().any(|s| s.id == o.id) {
            out.push(Change {
                kind: Kind::Narrowed,
                runbook: Some(runbook_name(new)),
                step: Some(o.id.clone()),
                plugin: o.plugin.to_string(),
                what: "step removed".into(),
            });
        }
    }
}

fn step_added(r: &LockedRunbook, s: &LockedStep, out: &mut Vec<Change>) {
    let mut what = format!("new step: {}", describe(&s.grants));
    if s.grants.interfaces().any(|i| mutates(&s.grants, i)) {
        what.push_str(" (new mutations)");
    }
    if !s.resources.is_empty() {
        let named: Vec<String> = s
            .resources
            .iter()
            .map(|r| format!("{} `{}` for {}", r.interface, r.name, r.access))
            .collect();
        what.push_str(&format!("; its inputs name {}", named.join(", ")));
    }
    if let Some(rule) = &s.approval {
        what.push_str(&format!("; approval: {}", rule.describe()));
    }
    out.push(Change {
        kind: Kind::Widened,
        runbook: Some(runbook_name(r)),
        step: Some(s.id.clone()),
        plugin: s.plugin.to_string(),
        what,
    });
}

/// A step's approval rule from `old` to `new`: fewer approvals, more
/// people who may give them, the starter allowed, a timeout that denies
/// no more, or no rule at all is a widening (a change needs less to
/// happen); the reverse narrows; anything else (a timeout's length)
/// changes.
fn approval_diff(
    old: Option<&crate::approval::Rule>,
    new: Option<&crate::approval::Rule>,
) -> Option<(Kind, String)> {
    use crate::approval::OnTimeout;
    let said = |r: Option<&crate::approval::Rule>| {
        r.map_or("none (`--yes` approves)".to_string(), |r| {
            format!("`{}`", r.describe())
        })
    };
    let what = format!("approval {} → {}", said(old), said(new));
    match (old, new) {
        (None, None) => None,
        (a, b) if a == b => None,
        (Some(_), None) => Some((Kind::Widened, what)),
        (None, Some(_)) => Some((Kind::Narrowed, what)),
        (Some(a), Some(b)) => {
            let wider = b.approvals < a.approvals
                || (b.from.is_empty() && !a.from.is_empty())
                || (!a.from.is_empty() && b.from.iter().any(|f| !a.from.contains(f)))
                || (b.starter_may_approve && !a.starter_may_approve)
                || (a.on_timeout == OnTimeout::Deny && b.on_timeout == OnTimeout::Escalate);
            let narrower = b.approvals > a.approvals
                || (a.from.is_empty() && !b.from.is_empty())
                || (!b.from.is_empty() && a.from.iter().any(|f| !b.from.contains(f)))
                || (a.starter_may_approve && !b.starter_may_approve);
            let kind = match (wider, narrower) {
                (true, _) => Kind::Widened,
                (false, true) => Kind::Narrowed,
                (false, false) => Kind::Changed,
            };
            Some((kind, what))
        }
    }
}

fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grants::Grants;

    fn grants(toml: &str) -> Grants {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn a_wider_flag_pattern_is_a_widening_and_a_narrower_one_is_not() {
        let old = grants(r#"feature-flags = { read = ["A"], mutate = ["A"] }"#);
        let new = grants(r#"feature-flags = { read = ["A"], mutate = ["AUTH_*"] }"#);
        let d = grants_diff(&old, &new);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].0, Kind::Widened);
        assert_eq!(
            d[0].1,
            "`feature-flags` mutate `AUTH_*` (a wildcard) added (was `A`)"
        );
        assert_eq!(d[1].0, Kind::Narrowed, "{d:?}");
        let back = grants_diff(&new, &old);
        assert!(
            back.iter()
                .any(|(k, w)| *k == Kind::Narrowed && w.contains("mutate `AUTH_*` removed")),
            "{back:?}"
        );
    }

    #[test]
    fn read_to_mutate_and_a_new_interface_are_widenings() {
        let old = grants(r#"redis = { read = ["s"] }"#);
        let new = grants(
            r#"feature-flags = { read = ["F"], mutate = ["F"] }
redis = { read = ["s"] }"#,
        );
        let d = grants_diff(&old, &new);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].1.contains("gains `feature-flags`"), "{d:?}");
        assert!(d[0].1.contains("new mutations"), "{d:?}");
        let old = grants(r#"feature-flags = { read = ["F"] }"#);
        let new = grants(r#"feature-flags = { read = [], mutate = ["F"] }"#);
        let d = grants_diff(&old, &new);
        assert_eq!(
            d,
            vec![(Kind::Widened, "`feature-flags` read → mutate `F`".into())]
        );
        assert!(grants_diff(&new, &new).is_empty());
    }

    #[test]
    fn an_approval_rule_that_asks_less_is_a_widening() {
        let rule = |yaml: &str| -> crate::approval::Rule { serde_yaml_ng::from_str(yaml).unwrap() };
        let two = rule("approvals: 2\nfrom: [sre]");
        let one = rule("approvals: 1\nfrom: [sre]");
        let anyone = rule("approvals: 2");
        let starter = rule("approvals: 2\nfrom: [sre]\nstarter_may_approve: true");
        let longer = rule("approvals: 2\nfrom: [sre]\ntimeout: 2h");
        let kind = |a: Option<&crate::approval::Rule>, b: Option<&crate::approval::Rule>| {
            approval_diff(a, b).map(|(k, _)| k)
        };
        assert_eq!(kind(Some(&two), Some(&one)), Some(Kind::Widened));
        assert_eq!(kind(Some(&two), Some(&anyone)), Some(Kind::Widened));
        assert_eq!(kind(Some(&two), Some(&starter)), Some(Kind::Widened));
        assert_eq!(kind(Some(&two), None), Some(Kind::Widened));
        assert_eq!(kind(None, Some(&two)), Some(Kind::Narrowed));
        assert_eq!(kind(Some(&one), Some(&two)), Some(Kind::Narrowed));
        assert_eq!(kind(Some(&two), Some(&longer)), Some(Kind::Changed));
        assert_eq!(kind(Some(&two), Some(&two)), None);
        let (_, what) = approval_diff(Some(&two), None).unwrap();
        assert_eq!(
            what,
            "approval `2 approvals from `sre`; not the run's starter; no timeout of its own` → none (`--yes` approves)"
        );
    }
}
