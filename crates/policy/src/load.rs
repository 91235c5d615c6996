//! A policy directory, read and checked whole: every `*.cedar` file
//! parsed and validated (strictly) against the built-in schema, each
//! policy named (its `@id`, else `FILE#N`), a policy that can never apply
//! refused, and the calendars file read. Nothing runs on a directory that
//! fails any of it.

use crate::calendar::{self, Calendars};
use anyhow::{Context, Result};
use cedar_policy::{EntityUid, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use runbook_core::error::hinted;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const EXTENSION: &str = "cedar";
const MAX_FILES: usize = 256;
const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// The id of the policy that stands for the grants: what a manifest and a
/// runbook grant is permitted, and the organisation's policies forbid.
pub const GRANTS: &str = "grants";
const HINT: &str = "see the README, \"Guardrails\": policies are Cedar (`forbid (principal, action == Runbook::Action::\"feature-flags:mutate\", resource) when { ... };`) over the schema `runbook policies --schema` prints";

/// One policy, as written.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub file: PathBuf,
    pub line: usize,
    /// `permit` or `forbid`.
    pub effect: &'static str,
}

/// A loaded, validated policy directory.
pub struct Policies {
    pub dir: PathBuf,
    pub(crate) set: PolicySet,
    pub(crate) types: crate::values::Types,
    /// The schema's actions and their groups (`"ecs:mutate"` in
    /// `"mutate"`), given with every question: without them `action in
    /// Runbook::Action::"mutate"` would never hold, and a forbid written
    /// so would never apply.
    pub(crate) actions: Vec<cedar_policy::Entity>,
    pub calendars: Calendars,
    /// Where each policy was written, by id.
    pub sources: BTreeMap<String, Source>,
    /// The groups the policies name (`Runbook::Group::"…"`): who an
    /// approval a policy asks for may come from.
    pub groups: Vec<String>,
    /// The calendars the policies read (`calendars.closed.contains("…")`).
    pub calendars_used: Vec<String>,
    /// sha256 over every file read, for the journal.
    pub digest: String,
    /// Some policy reads `context.recent`: runs count their changes for
    /// it (in the store, each counted in the write that allows it).
    pub reads_recent: bool,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("dir", &self.dir)
            .field("policies", &self.sources.keys().collect::<Vec<_>>())
            .field("digest", &self.digest)
            .finish()
    }
}

pub fn schema() -> Schema {
    // The schema is ours and tested: it always parses.
    match Schema::from_cedarschema_str(&crate::schema::text()) {
        Ok((s, _)) => s,
        Err(e) => unreachable!("the built-in schema does not parse: {e}"),
    }
}

impl Policies {
    pub fn load(dir: &Path) -> Result<Self> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            hinted(
                format!("policy directory `{}` cannot be read: {e}", dir.display()),
                "give the directory your security team keeps the `*.cedar` policies in",
            )
        })?;
        let mut files: Vec<PathBuf> = Vec::new();
        let mut used: Vec<(String, PathBuf, usize)> = Vec::new();
        for entry in entries {
            let path = entry
                .with_context(|| format!("policy directory `{}` cannot be listed", dir.display()))?
                .path();
            if path.extension().is_some_and(|e| e == EXTENSION) {
                files.push(path);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(hinted(
                format!("policy directory `{}` has no `*.cedar` file", dir.display()),
                "a guardrail that is not there cannot be checked: add the policies, or leave `--policies` out",
            ));
        }
        if files.len() > MAX_FILES {
            return Err(hinted(
                format!(
                    "policy directory `{}` has more than {MAX_FILES} policy files",
                    dir.display()
                ),
                HINT,
            ));
        }
        let schema = schema();
        let validator = Validator::new(schema.clone());
        let mut set = PolicySet::new();
        let mut sources = BTreeMap::new();
        let mut digest_input = Vec::new();
        for path in &files {
            let text = runbook_core::files::read_text_capped(path, "policy file", MAX_FILE_BYTES)?;
            digest_input.extend_from_slice(path.file_name().unwrap_or_default().as_encoded_bytes());
            digest_input.push(0);
            digest_input.extend_from_slice(text.as_bytes());
            digest_input.push(0);
            used.extend(
                calendar_names(&text)
                    .into_iter()
                    .map(|(name, line)| (name, path.clone(), line)),
            );
            let file_set: PolicySet = text.parse().map_err(|e: cedar_policy::ParseErrors| {
                at(path, &text, &e, format!("is not Cedar: {e}"))
            })?;
            if file_set.templates().next().is_some() {
                return Err(hinted(
                    format!(
                        "policy file `{}`: it holds a policy template (`?principal` or `?resource`), which nothing here links",
                        path.display()
                    ),
                    "write the policy for the entities it is about",
                ));
            }
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let policies = ordered(&file_set);
            // Cedar names a file's policies `policy0`, `policy1`, …; people
            // know them by their `@id`.
            let ids: Vec<String> = policies
                .iter()
                .enumerate()
                .map(|(n, p)| match p.annotation("id") {
                    Some(id) => id.to_string(),
                    None => format!("{name}#{}", n + 1),
                })
                .collect();
            let named = |msg: String| {
                ids.iter().enumerate().fold(msg, |m, (n, id)| {
                    m.replace(&format!("`policy{n}`"), &format!("`{id}`"))
                })
            };
            let result = validator.validate(&file_set, ValidationMode::Strict);
            if let Some(e) = result.validation_errors().next() {
                return Err(at(
                    path,
                    &text,
                    e,
                    named(format!("does not match the schema: {e}")),
                ));
            }
            if let Some(w) = result.validation_warnings().next() {
                let what = match w {
                    cedar_policy::ValidationWarning::ImpossiblePolicy(_) => format!(
                        "can never apply: its conditions contradict each other ({})",
                        named(w.to_string())
                    ),
                    other => format!("is refused: {}", named(other.to_string())),
                };
                return Err(at(path, &text, w, what));
            }
            for (n, (policy, id)) in policies.into_iter().zip(ids).enumerate() {
                let effect = match policy.effect() {
                    cedar_policy::Effect::Permit => "permit",
                    cedar_policy::Effect::Forbid => "forbid",
                };
                let line = line_of_policy(&text, n);
                if id == GRANTS || sources.contains_key(&id) {
                    return Err(hinted(
                        format!(
                            "policy file `{}`, line {line}: the policy id `{id}` is taken{}",
                            path.display(),
                            sources
                                .get(&id)
                                .map(|s: &Source| format!(
                                    " (by `{}`, line {})",
                                    s.file.display(),
                                    s.line
                                ))
                                .unwrap_or_else(|| " (it names the grants)".to_string())
                        ),
                        "give each policy its own `@id(\"…\")`",
                    ));
                }
                set.add(policy.new_id(PolicyId::new(&id)))
                    .with_context(|| format!("policy `{id}` cannot be added"))?;
                sources.insert(
                    id.clone(),
                    Source {
                        id,
                        file: path.clone(),
                        line,
                        effect,
                    },
                );
            }
        }
        let grants: cedar_policy::Policy = cedar_policy::Policy::parse(
            Some(PolicyId::new(GRANTS)),
            "permit (principal, action, resource);",
        )
        .context("the grants' policy")?;
        set.add(grants).context("the grants' policy")?;
        let cal_path = dir.join(calendar::FILE);
        let calendars = if cal_path.exists() {
            let text = runbook_core::files::read_text(&cal_path, "calendars file")?;
            digest_input.extend_from_slice(calendar::FILE.as_bytes());
            digest_input.push(0);
            digest_input.extend_from_slice(text.as_bytes());
            Calendars::parse(&text, &cal_path)?
        } else {
            Calendars::default()
        };
        if let Some((name, path, line)) = used
            .iter()
            .find(|(name, _, _)| !calendars.names().any(|n| n == name))
        {
            return Err(hinted(
                format!(
                    "policy file `{}`, line {line}: the policy reads calendar `{name}`, which `{}` does not define: it would never be closed",
                    path.display(),
                    calendar::FILE
                ),
                format!(
                    "define `{name}` in `{}` beside the policies, or correct the name",
                    calendar::FILE
                ),
            ));
        }
        let mut calendars_used: Vec<String> = used.into_iter().map(|(n, _, _)| n).collect();
        calendars_used.sort();
        calendars_used.dedup();
        let mut groups: Vec<String> = set
            .policies()
            .flat_map(|p| p.entity_literals())
            .filter(|uid: &EntityUid| uid.type_name().to_string() == "Runbook::Group")
            .map(|uid| uid.id().unescaped().to_string())
            // A group an approver can be in is a name of the approvers file.
            .filter(|g| runbook_core::ids::Name::parse(g).is_ok())
            .collect();
        groups.sort();
        groups.dedup();
        // Any mention (`context.recent`, `context["recent"]`): counting
        // changes no policy reads costs a write; missing one a limit.
        let reads_recent = set.policies().any(|p| p.to_string().contains("recent"));
        Ok(Self {
            dir: dir.to_path_buf(),
            set,
            types: crate::values::Types::new(),
            actions: schema
                .action_entities()
                .context("the schema's actions")?
                .iter()
                .cloned()
                .collect(),
            calendars,
            calendars_used,
            sources,
            groups,
            digest: runbook_core::hash::sha256_hex(&digest_input),
            reads_recent,
        })
    }

    /// `id (file, line N)` for people.
    pub fn describe(&self, id: &str) -> String {
        match self.sources.get(id) {
            Some(s) => format!(
                "`{id}` ({}, line {})",
                s.file.file_name().unwrap_or_default().to_string_lossy(),
                s.line
            ),
            None => format!("`{id}`"),
        }
    }
}

/// A file's policies in the order written (Cedar names them `policy0`,
/// `policy1`, … as it parses).
fn ordered(set: &PolicySet) -> Vec<cedar_policy::Policy> {
    let mut ps: Vec<(usize, cedar_policy::Policy)> = set
        .policies()
        .map(|p| {
            let n = p
                .id()
                .to_string()
                .strip_prefix("policy")
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            (n, p.clone())
        })
        .collect();
    ps.sort_by_key(|(n, _)| *n);
    ps.into_iter().map(|(_, p)| p).collect()
}

/// The line the `n`-th policy of `text` starts on: the line of its
/// effect keyword (`permit` or `forbid`) outside comments and strings.
fn line_of_policy(text: &str, n: usize) -> usize {
    let mut seen = 0;
    let mut in_string = false;
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut depth = 0i32;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            line += 1;
        }
        if in_string {
            if c == b'\\' {
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' {
            in_string = true;
        } else if c == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        } else if c == b'(' || c == b'{' || c == b'[' {
            depth += 1;
        } else if c == b')' || c == b'}' || c == b']' {
            depth -= 1;
        } else if depth == 0
            && (bytes[i..].starts_with(b"permit") || bytes[i..].starts_with(b"forbid"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            if seen == n {
                return line;
            }
            seen += 1;
            i += 6;
            continue;
        }
        i += 1;
    }
    line
}

/// The calendar names a policy file reads, with their lines: each
/// `calendars.open` or `calendars.closed` followed by `.contains("NAME")`.
fn calendar_names(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for field in ["calendars.open", "calendars.closed"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(field) {
            let start = from + at;
            from = start + field.len();
            let rest = text[from..].trim_start();
            let Some(rest) = rest.strip_prefix(".contains(") else {
                continue;
            };
            let Some(rest) = rest.trim_start().strip_prefix('"') else {
                continue;
            };
            if let Some(end) = rest.find('"') {
                let line = runbook_core::files::line_column(&text.as_bytes()[..start]).0;
                found.push((rest[..end].to_string(), line));
            }
        }
    }
    found
}

/// An error at the place a Cedar diagnostic points to in `path`.
fn at(path: &Path, text: &str, d: &dyn Diagnostic, what: String) -> anyhow::Error {
    let offset = d
        .labels()
        .and_then(|mut ls| ls.next())
        .map(|l| l.offset().min(text.len()));
    let line = offset.map_or(String::new(), |o| {
        format!(
            ", line {}",
            runbook_core::files::line_column(&text.as_bytes()[..o]).0
        )
    });
    let help = d
        .help()
        .map(|h| h.to_string())
        .filter(|h| !steadier(h))
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    hinted(
        format!(
            "policy file `{}`{line}: the policy {what}{help}",
            path.display()
        ),
        HINT,
    )
}

/// Cedar's guess at the action meant: among actions as near as each
/// other (`run`, `read`) it guesses differently from run to run, so it
/// is left out (`runbook policies --schema` lists them; the hint says so).
fn steadier(help: &str) -> bool {
    help.starts_with("did you mean `Runbook::Action::")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_are_found_on_the_line_they_start() {
        let text = "// a comment with forbid in it\n@id(\"a\")\npermit (principal, action, resource);\n\nforbid (principal, action, resource)\nwhen { \"permit\" == \"x\" };\n";
        assert_eq!(line_of_policy(text, 0), 3);
        assert_eq!(line_of_policy(text, 1), 5);
    }
}
