//! Runbooks: Markdown with YAML front matter. The front matter has the seed
//! runbook fields plus an optional executable `steps` list; the Markdown body
//! stays the human runbook and is never parsed.

use crate::error::hinted;
use crate::grants::Grants;
use crate::ids::Name;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a route may end instead of at another step.
pub const RESOLVED: &str = "resolved";
pub const ESCALATED: &str = "escalated";
/// Changes a run may make unless its runbook says otherwise.
pub const DEFAULT_MAX_MUTATIONS: usize = 5;

fn default_max_mutations() -> usize {
    DEFAULT_MAX_MUTATIONS
}

/// Labels the host gives a step that did not return an outcome of its own.
pub const LABEL_ERROR: &str = "error";
pub const LABEL_LIMIT: &str = "limit-exceeded";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runbook {
    pub runbook_id: String,
    pub title: String,
    pub service: String,
    pub severity_scope: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub first_action_step: String,
    #[serde(default)]
    pub escalation: Option<Escalation>,
    /// Empty for a runbook that is documentation only.
    #[serde(default)]
    pub steps: Vec<StepDef>,
    /// The most changes (flag sets, rollbacks) one run may make.
    #[serde(default = "default_max_mutations")]
    pub max_mutations: usize,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Who to call when the run ends `escalated`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub page: String,
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    pub id: Name,
    pub plugin: Name,
    #[serde(default)]
    pub description: Option<String>,
    /// Scalars only; handed to the plugin as strings.
    #[serde(default)]
    pub inputs: BTreeMap<String, serde_yaml_ng::Value>,
    /// Narrows the plugin manifest's grant for this step.
    #[serde(default)]
    pub grants: Option<Grants>,
    /// Outcome label → next step id, `resolved` or `escalated`.
    pub on: BTreeMap<String, String>,
    /// Who must approve this step's changes (M of N people, not the
    /// run's starter, a timeout); `--yes` and `--approve` do not.
    #[serde(default)]
    pub approval: Option<crate::approval::Rule>,
}

impl StepDef {
    pub fn input_pairs(&self) -> Vec<(String, String)> {
        self.inputs
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
            .collect()
    }
}

fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl Runbook {
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::files::read_text(path, "runbook")?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let shown = path.display();
        let hint = "a runbook starts with `---`, YAML front matter, `---`, then Markdown; see runbooks/README.md";
        let fields_hint =
            "see runbooks/README.md for the front matter fields and the `steps` format";
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let Some(rest) = text
            .strip_prefix("---\n")
            .or_else(|| text.strip_prefix("---\r\n"))
        else {
            return Err(hinted(
                format!(
                    "invalid runbook `{shown}`: no YAML front matter (the first line must be `---`)"
                ),
                hint,
            ));
        };
        let end = rest
            .match_indices("\n---")
            .map(|(i, _)| i + 1)
            .find(|&i| {
                rest[i + 3..].starts_with('\n')
                    || rest[i + 3..].starts_with("\r\n")
                    || rest.len() == i + 3
            })
            .ok_or_else(|| {
                hinted(
                    format!(
                        "invalid runbook `{shown}`: the front matter is never closed with `---`"
                    ),
                    hint,
                )
            })?;
        let yaml = &rest[..end];
        check_shape(yaml)
            .map_err(|why| hinted(format!("invalid runbook `{shown}`: {why}"), fields_hint))?;
        let mut runbook: Runbook = serde_yaml_ng::from_str(yaml).map_err(|e| {
            // Line numbers from the YAML parser count from the front matter;
            // the `---` line comes first in the file.
            let at = e
                .location()
                .map(|l| format!(":{}:{}", l.line() + 1, l.column()))
                .unwrap_or_default();
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg);
            hinted(format!("invalid runbook `{shown}{at}`: {msg}"), fields_hint)
        })?;
        runbook.path = path.to_path_buf();
        runbook
            .validate()
            .map_err(|why| hinted(format!("invalid runbook `{shown}`: {why}"), fields_hint))?;
        Ok(runbook)
    }

    pub fn is_executable(&self) -> bool {
        !self.steps.is_empty()
    }

    pub fn step(&self, id: &str) -> Option<&StepDef> {
        self.steps.iter().find(|s| s.id.as_str() == id)
    }

    fn validate(&self) -> Result<(), String> {
        if self.runbook_id.trim().is_empty() {
            return Err("`runbook_id` must not be empty".into());
        }
        if self.max_mutations > 100 {
            return Err(format!(
                "`max_mutations` is {}; a runbook may allow at most 100 changes per run",
                self.max_mutations
            ));
        }
        let mut ids = BTreeSet::new();
        for step in &self.steps {
            let id = step.id.as_str();
            if id == RESOLVED || id == ESCALATED {
                return Err(format!(
                    "step id `{id}` is reserved for the end of a run; rename the step"
                ));
            }
            if !ids.insert(id) {
                return Err(format!("step id `{id}` is used twice"));
            }
        }
        for step in &self.steps {
            let id = &step.id;
            for (key, value) in &step.inputs {
                if scalar(value).is_none() {
                    return Err(format!(
                        "step `{id}`: input `{key}` must be a string, number or boolean"
                    ));
                }
            }
            if step.on.is_empty() {
                return Err(format!(
                    "step `{id}` has no `on` routes; map each outcome label to a step, `{RESOLVED}` or `{ESCALATED}`"
                ));
            }
            for (label, next) in &step.on {
                if Name::parse(label).is_err() {
                    return Err(format!(
                        "step `{id}`: outcome label `{label}` must be kebab-case"
                    ));
                }
                if next != RESOLVED && next != ESCALATED && !ids.contains(next.as_str()) {
                    return Err(format!(
                        "step `{id}`: outcome `{label}` goes to `{next}`, which is not a step, `{RESOLVED}` or `{ESCALATED}`"
                    ));
                }
            }
            if let Some(g) = &step.grants {
                g.validate()
                    .map_err(|why| format!("step `{id}`: grants: {why}"))?;
            }
            if let Some(rule) = &step.approval {
                rule.validate()
                    .map_err(|why| format!("step `{id}`: approval: {why}"))?;
            }
        }
        // Every step must be reachable from the first: a stranded step is
        // almost always a routing typo.
        if let Some(first) = self.steps.first() {
            let mut seen = BTreeSet::from([first.id.as_str()]);
            let mut todo = vec![first];
            while let Some(step) = todo.pop() {
                for next in step.on.values() {
                    if let Some(s) = self.step(next)
                        && seen.insert(s.id.as_str())
                    {
                        todo.push(s);
                    }
                }
            }
            if let Some(lost) = self.steps.iter().find(|s| !seen.contains(s.id.as_str())) {
                return Err(format!(
                    "step `{}` is never reached from the first step `{}`; route an outcome to it or remove it",
                    lost.id, first.id
                ));
            }
        }
        Ok(())
    }
}

/// Front matter this large or this deep is not a runbook; the YAML parser
/// is not given it (deep nesting makes it take minutes).
const MAX_FRONT_MATTER: usize = 512 * 1024;
const MAX_FLOW_DEPTH: usize = 64;
const MAX_INDENT: usize = 128;

/// Size and nesting of the front matter, checked before it is parsed.
fn check_shape(yaml: &str) -> Result<(), String> {
    if yaml.len() > MAX_FRONT_MATTER {
        return Err(format!(
            "the front matter is {} bytes; at most {MAX_FRONT_MATTER} are read",
            yaml.len()
        ));
    }
    for (n, line) in yaml.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        if indent > MAX_INDENT {
            return Err(format!(
                "line {} is indented {indent} columns; nesting that deep is not a runbook (at most {MAX_INDENT})",
                n + 2
            ));
        }
    }
    // `[` and `{` outside quotes and comments.
    let (mut depth, mut quote, mut comment) = (0usize, None::<char>, false);
    let mut prev = ' ';
    for c in yaml.chars() {
        match (quote, c) {
            // Quoted scalars may span lines; comments end with them.
            (_, '\n') => comment = false,
            _ if comment => {}
            (None, '#') if prev.is_whitespace() => comment = true,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q && !(q == '"' && prev == '\\') => quote = None,
            (None, '[' | '{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(format!(
                        "brackets nest more than {MAX_FLOW_DEPTH} deep; that is not a runbook"
                    ));
                }
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        prev = c;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_huge_front_matter_is_refused_before_parsing() {
        let deep = format!(
            "---\nrunbook_id: RB-1\ntags: {}{}\n---\n",
            "[".repeat(250_000),
            "]".repeat(250_000)
        );
        let started = std::time::Instant::now();
        let err = Runbook::parse(&deep, Path::new("x.md"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("brackets nest more than 64 deep"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        let indented: String = (0..200).map(|i| format!("{}- \n", " ".repeat(i))).collect();
        let err = Runbook::parse(&format!("---\ntags:\n{indented}---\n"), Path::new("x.md"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nesting that deep is not a runbook"), "{err}");
        // Brackets inside quotes and comments do not count.
        assert!(
            check_shape(&format!(
                "a: \"{}\" # {}\n",
                "[".repeat(100),
                "{".repeat(100)
            ))
            .is_ok()
        );
    }

    const SEED: &str = include_str!("../../../runbooks/RB-0031-auth-service-degradation.md");

    #[test]
    fn seed_shape_without_steps_parses_as_not_executable() {
        let text = "---\nrunbook_id: RB-1\ntitle: T\nservice: s\nseverity_scope: HIGH\ntags: [a]\nfirst_action_step: look\n---\n# Body\n";
        let rb = Runbook::parse(text, Path::new("x.md")).unwrap();
        assert!(!rb.is_executable());
    }

    #[test]
    fn rb0031_parses_with_steps() {
        let rb = Runbook::parse(SEED, Path::new("rb.md")).unwrap();
        assert_eq!(rb.runbook_id, "RB-0031");
        assert!(rb.is_executable());
    }

    #[test]
    fn yaml_errors_point_at_the_file_line() {
        let text = "---\nrunbook_id: RB-1\ntitle: [\n---\n";
        let err = Runbook::parse(text, Path::new("x.md"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid runbook `x.md:"), "{err}");
    }
}
