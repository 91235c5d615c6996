//! `runbook.lock`: what exactly each runbook step runs and may touch,
//! written by `runbook lock` beside the runbooks and reviewed as a diff,
//! like `Cargo.lock`. Per step: the plugin, its version and component
//! digest, the effective grant after the step narrowed it, the limits, and
//! the resources the step's inputs name; per plugin: the manifest's own
//! grant. `--locked` refuses a plan that differs from it in any of these
//! ([`crate::review`] names what changed).

use crate::contract::ResourceUse;
use crate::grants::Grants;
use crate::ids::Name;
use crate::manifest::Limits;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "runbook.lock";
const VERSION: u32 = 1;
const HEADER: &str = "# Written by `runbook lock`: what each runbook step runs and may touch.\n\
# Review changes to it like code; `runbook review` prints them as a capability diff.\n";
const HINT: &str = "`runbook lock` writes this file; do not edit it by hand";

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    pub version: u32,
    #[serde(default, rename = "runbook", skip_serializing_if = "Vec::is_empty")]
    pub runbooks: Vec<LockedRunbook>,
    #[serde(default, rename = "plugin", skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<LockedPlugin>,
    /// The trust file's keys and policy; none: no signatures needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<LockedTrust>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LockedTrust {
    pub signatures: usize,
    pub mutating_signatures: usize,
    #[serde(default, rename = "key")]
    pub keys: Vec<LockedKey>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedKey {
    pub name: String,
    /// The key id, as minisign prints it.
    pub id: String,
    pub plugins: Vec<crate::grants::Pattern>,
}

impl LockedTrust {
    pub fn of(trust: &crate::signing::Trust) -> Self {
        Self {
            signatures: trust.policy.signatures,
            mutating_signatures: trust.policy.mutating_signatures,
            keys: trust
                .keys
                .iter()
                .map(|k| LockedKey {
                    name: k.name.clone(),
                    id: k.id.clone(),
                    plugins: k.plugins.clone(),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRunbook {
    /// The runbook's file, relative to the lock's directory.
    pub file: String,
    pub id: String,
    pub max_mutations: usize,
    /// In runbook order: the first runs first.
    #[serde(default, rename = "step")]
    pub steps: Vec<LockedStep>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedStep {
    pub id: String,
    pub plugin: Name,
    pub version: String,
    pub sha256: String,
    pub limits: Limits,
    /// The effective grant: the manifest's, narrowed by the step.
    #[serde(default)]
    pub grants: Grants,
    /// What the step's inputs name, as the manifest declares it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<ResourceUse>,
    /// The inputs as the runbook gives them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
    /// Outcome label → next step, `resolved` or `escalated`.
    #[serde(default)]
    pub on: BTreeMap<String, String>,
    /// Who must approve the step's changes (none: `--yes`, `--approve`
    /// or a person at the terminal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<crate::approval::Rule>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPlugin {
    pub name: Name,
    pub version: String,
    pub sha256: String,
    /// `built-in`, or the manifest's path (for the reader; not compared:
    /// the digest says what runs).
    pub source: String,
    pub limits: Limits,
    /// The manifest's grant, before any step narrows it.
    #[serde(default)]
    pub grants: Grants,
}

impl LockFile {
    /// The lock in `dir`, or an empty one if there is none.
    pub fn load_or_empty(dir: &Path) -> Result<Self> {
        let path = dir.join(FILE_NAME);
        if !path.exists() {
            return Ok(Self::empty());
        }
        Self::load(&path)
    }

    pub fn load(path: &Path) -> Result<Self> {
        crate::parse::load_toml(path, "lock file", HINT, |l: &mut LockFile| l.validate())
    }

    /// A lock from `text`; `origin` names it in errors (e.g. `main:runbooks/runbook.lock`).
    pub fn parse(text: &str, origin: &Path) -> Result<Self> {
        crate::parse::parse_toml(text, origin, "lock file", HINT, |l: &mut LockFile| {
            l.validate()
        })
    }

    pub fn empty() -> Self {
        Self {
            version: VERSION,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!(
                "lock file version `{}` is not the `{VERSION}` this binary writes; run `runbook lock` again",
                self.version
            ));
        }
        let digests = self
            .plugins
            .iter()
            .map(|p| (p.name.as_str(), &p.sha256))
            .chain(
                self.runbooks
                    .iter()
                    .flat_map(|r| r.steps.iter().map(|s| (s.id.as_str(), &s.sha256))),
            );
        for (what, d) in digests {
            if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "`{what}`: `sha256` must be 64 hex digits, not `{d}`"
                ));
            }
        }
        Ok(())
    }

    pub fn runbook(&self, file: &str) -> Option<&LockedRunbook> {
        self.runbooks.iter().find(|r| r.file == file)
    }

    pub fn plugin(&self, name: &str) -> Option<&LockedPlugin> {
        self.plugins.iter().find(|p| p.name.as_str() == name)
    }

    /// Puts `runbook` (and the plugins it uses) in, replacing what was
    /// locked for its file; plugins no runbook uses any more are dropped.
    pub fn insert(&mut self, runbook: LockedRunbook, plugins: Vec<LockedPlugin>) {
        self.runbooks.retain(|r| r.file != runbook.file);
        self.runbooks.push(runbook);
        self.runbooks.sort_by(|a, b| a.file.cmp(&b.file));
        for p in plugins {
            self.plugins.retain(|q| q.name != p.name);
            self.plugins.push(p);
        }
        let used: std::collections::BTreeSet<&str> = self
            .runbooks
            .iter()
            .flat_map(|r| r.steps.iter().map(|s| s.plugin.as_str()))
            .collect();
        let used: std::collections::BTreeSet<String> = used.into_iter().map(String::from).collect();
        self.plugins.retain(|p| used.contains(p.name.as_str()));
        self.plugins.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn to_text(&self) -> Result<String> {
        Ok(format!(
            "{HEADER}\n{}",
            toml::to_string(self).context("writing the lock file")?
        ))
    }

    /// Writes the lock to `dir` atomically (a reader sees the old or the
    /// new file, never half of one).
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join(FILE_NAME);
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .with_context(|| format!("writing `{}`", path.display()))?;
        std::io::Write::write_all(&mut tmp, self.to_text()?.as_bytes())
            .with_context(|| format!("writing `{}`", path.display()))?;
        tmp.persist(&path)
            .with_context(|| format!("writing `{}`", path.display()))?;
        Ok(path)
    }
}

/// Where a runbook's lock lives, and the runbook's name in it.
pub fn location(runbook: &Path) -> (PathBuf, String) {
    let dir = match runbook.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file = runbook
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, file)
}
