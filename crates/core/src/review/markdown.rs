//! The review as Markdown, for a pull request comment.

use super::{Change, Kind};

/// The review as Markdown, for a pull request: widened first.
pub fn markdown(base: &str, changes: &[Change]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let count = |k| changes.iter().filter(|c| c.kind == k).count();
    let _ = writeln!(out, "# Capability review against {base}\n");
    if changes.is_empty() {
        let _ = writeln!(
            out,
            "No change: every step runs and may touch what was locked."
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{} widened, {} changed, {} narrowed.",
        count(Kind::Widened),
        count(Kind::Changed),
        count(Kind::Narrowed)
    );
    for (kind, title) in [
        (Kind::Widened, "Widened: needs a security review"),
        (Kind::Changed, "Changed, same reach"),
        (Kind::Narrowed, "Narrowed"),
    ] {
        let of: Vec<&Change> = changes.iter().filter(|c| c.kind == kind).collect();
        if of.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n## {title}\n");
        for c in of {
            let at = match (&c.runbook, &c.step) {
                (Some(r), Some(s)) => format!("{r} step `{s}` (plugin `{}`)", c.plugin),
                (Some(r), None) => r.clone(),
                _ => format!("plugin `{}`", c.plugin),
            };
            let _ = writeln!(out, "- **{at}**: {}", c.what);
        }
    }
    out
}
