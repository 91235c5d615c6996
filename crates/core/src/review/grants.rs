//! What changed in a grant, a scope or the limits, in words: the part of
//! the diff that says how far a step's reach moved.

use super::Kind;
use crate::grants::{Grants, Interface, Pattern, Scope};

pub(super) fn mutates(g: &Grants, i: Interface) -> bool {
    g.scope(i).is_some_and(|s| !s.mutate.is_empty())
}

/// `(kind, words)` for each way `new` differs from `old`.
pub fn grants_diff(old: &Grants, new: &Grants) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    for i in Interface::ALL.iter().copied() {
        match (old.scope(i), new.scope(i)) {
            (None, None) => {}
            (None, Some(s)) => out.push((
                Kind::Widened,
                format!(
                    "gains `{i}`: {}{}",
                    scope_words(s),
                    if s.mutate.is_empty() {
                        ""
                    } else {
                        " (new mutations)"
                    }
                ),
            )),
            (Some(s), None) => out.push((
                Kind::Narrowed,
                format!("no longer has `{i}` ({})", scope_words(s)),
            )),
            (Some(a), Some(b)) => scope_diff(i, a, b, &mut out),
        }
    }
    out
}

fn scope_diff(i: Interface, old: &Scope, new: &Scope, out: &mut Vec<(Kind, String)>) {
    let covered = |ps: &[&Pattern], p: &Pattern| ps.iter().any(|g| g.covers(p));
    fn readable(s: &Scope) -> Vec<&Pattern> {
        s.read.iter().chain(&s.mutate).collect()
    }
    fn mutable(s: &Scope) -> Vec<&Pattern> {
        s.mutate.iter().collect()
    }
    // Mutations first: they are what a reviewer must see.
    for p in &new.mutate {
        if covered(&mutable(old), p) {
            continue;
        }
        let w = wildcard(p);
        let was = if old.read.contains(p) {
            format!("read → mutate `{p}`{w}")
        } else if old.mutate.is_empty() {
            format!("new mutation: mutate `{p}`{w}")
        } else {
            format!("mutate `{p}`{w} added (was {})", list(&old.mutate))
        };
        out.push((Kind::Widened, format!("`{i}` {was}")));
    }
    for p in &new.read {
        if !covered(&readable(old), p) {
            out.push((
                Kind::Widened,
                format!(
                    "`{i}` read `{p}`{} added (was {})",
                    wildcard(p),
                    list(&old.read)
                ),
            ));
        }
    }
    for p in &old.mutate {
        if !covered(&mutable(new), p) {
            let now = if new.read.iter().any(|r| r.covers(p)) {
                format!("mutate → read `{p}`")
            } else {
                format!("mutate `{p}` removed")
            };
            out.push((Kind::Narrowed, format!("`{i}` {now}")));
        }
    }
    for p in &old.read {
        if !covered(&readable(new), p) {
            out.push((Kind::Narrowed, format!("`{i}` read `{p}` removed")));
        }
    }
    // Same reach, different words (e.g. `A` and `B` folded into `*`
    // shows above; a pattern dropped as redundant shows nowhere).
}

pub(super) fn limits_diff(
    old: &crate::manifest::Limits,
    new: &crate::manifest::Limits,
) -> Vec<(Kind, String)> {
    let mut out = Vec::new();
    let mut one = |name: &str, unit: &str, a: u64, b: u64| {
        if a != b {
            out.push((
                if b > a { Kind::Widened } else { Kind::Narrowed },
                format!(
                    "limit `{name}` {} {a} → {b} {unit}",
                    if b > a { "raised" } else { "lowered" }
                ),
            ));
        }
    };
    one(
        "memory_mib",
        "MiB",
        old.memory_mib.into(),
        new.memory_mib.into(),
    );
    one("timeout_ms", "ms", old.timeout_ms, new.timeout_ms);
    out
}

pub(super) fn wildcard(p: &Pattern) -> &'static str {
    if p.as_str().ends_with('*') {
        " (a wildcard)"
    } else {
        ""
    }
}

pub(super) fn scope_words(s: &Scope) -> String {
    match (s.read.is_empty(), s.mutate.is_empty()) {
        (_, true) => format!("read {}", list(&s.read)),
        (true, false) => format!("mutate {}", list(&s.mutate)),
        (false, false) => format!("read {}, mutate {}", list(&s.read), list(&s.mutate)),
    }
}

pub(super) fn describe(g: &Grants) -> String {
    let parts: Vec<String> = g
        .interfaces()
        .map(|i| format!("`{i}` {}", scope_words(g.scope(i).expect("listed"))))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join("; ")
    }
}

pub(super) fn list(ps: &[Pattern]) -> String {
    if ps.is_empty() {
        return "nothing".into();
    }
    ps.iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
