//! Plugin capability manifests (`plugin.toml`): what a component is, what it
//! may touch, and how much it may use. Where backends live is not here: that
//! is runtime configuration (the scenario or environment).

use crate::error::hinted;
use crate::grants::Grants;
use crate::ids::Name;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "plugin.toml";

const HINT: &str = "see plugins/README.md for the manifest fields";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Example: `set-flag`. Must match the directory the manifest sits in.
    pub name: Name,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The component file, relative to the manifest or found in the
    /// component directories (`--components`, `RUNBOOK_COMPONENTS`, and the
    /// directory the build put the plugins in).
    pub component: PathBuf,
    /// Hex sha256 of the component. `--locked` requires it and refuses a
    /// component that does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub grants: Grants,
    /// The outcome labels the plugin returns. Example: `["set", "unchanged"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<Vec<Name>>,
    /// The inputs it takes. Example: `[inputs.key] type = "string"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<std::collections::BTreeMap<String, crate::contract::InputSpec>>,
    /// Resources its inputs name, which a step's grant must cover.
    /// Example: `[[resources]] interface = "ecs", access = "mutate",
    /// name = "{cluster}/{service}"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<crate::contract::ResourceUse>,
}

impl Manifest {
    /// Whether the plugin may return `label`: a declared outcome, the
    /// host's own labels, or anything when it declares none.
    pub fn returns(&self, label: &str) -> bool {
        label == crate::runbook::LABEL_ERROR
            || label == crate::runbook::LABEL_LIMIT
            || self
                .outcomes
                .as_ref()
                .is_none_or(|o| o.iter().any(|l| l.as_str() == label))
    }

    /// What it declares about its inputs, resources and outcomes.
    pub fn contract(&self) -> crate::contract::Contract {
        crate::contract::Contract {
            outcomes: self.outcomes.clone(),
            inputs: self.inputs.clone(),
            resources: self.resources.clone(),
        }
    }
}

/// Per-step resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory, in MiB.
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u32,
    /// Wall-clock deadline for the whole step, host calls included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_memory_mib() -> u32 {
    64
}

fn default_timeout_ms() -> u64 {
    5_000
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: default_memory_mib(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

pub const MAX_MEMORY_MIB: u32 = 4096;
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// A manifest read from disk, with the paths it was resolved against.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    pub path: PathBuf,
    pub manifest: Manifest,
    /// Hex sha256 of the file's text, which a plugin signature covers.
    pub text_sha256: String,
}

impl LoadedManifest {
    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::files::read_text(path, "manifest")?;
        Self::parse(&text, path)
    }

    /// A manifest from `text`; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let manifest: Manifest =
            crate::parse::parse_toml(text, path, "manifest", HINT, |m| validate(m))?;
        Ok(Self {
            path: path.to_path_buf(),
            manifest,
            text_sha256: crate::hash::sha256_hex(text.as_bytes()),
        })
    }

    /// Whether the manifest lets the plugin change anything.
    pub fn mutates(&self) -> bool {
        let g = &self.manifest.grants;
        g.interfaces()
            .any(|i| g.scope(i).is_some_and(|s| !s.mutate.is_empty()))
    }

    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Where the component file is: next to the manifest, else the first
    /// component directory that has it. Either way it must stay inside that
    /// directory (no `..`, no symlink out of it).
    pub fn component_path(&self, component_dirs: &[PathBuf]) -> Result<PathBuf> {
        let rel = &self.manifest.component;
        for dir in std::iter::once(self.dir()).chain(component_dirs.iter().map(PathBuf::as_path)) {
            let candidate = dir.join(rel);
            if candidate.is_file() {
                return inside(dir, &candidate, &self.path);
            }
        }
        let searched = std::iter::once(self.dir().to_path_buf())
            .chain(component_dirs.iter().cloned())
            .map(|d| format!("`{}`", d.display()))
            .collect::<Vec<_>>()
            .join(", ");
        Err(hinted(
            format!(
                "component `{}` of plugin `{}` (manifest `{}`) not found; searched {searched}",
                rel.display(),
                self.manifest.name,
                self.path.display()
            ),
            "put the component file beside the manifest, or pass `--components DIR` (also `RUNBOOK_COMPONENTS`) naming where it is",
        ))
    }
}

/// `file`, which must resolve to somewhere inside `dir`.
fn inside(dir: &Path, file: &Path, manifest: &Path) -> Result<PathBuf> {
    let real_dir = fs_err::canonicalize(dir)?;
    let real = fs_err::canonicalize(file)?;
    if !real.starts_with(&real_dir) {
        return Err(hinted(
            format!(
                "component `{}` of manifest `{}` resolves to `{}`, outside `{}`",
                file.display(),
                manifest.display(),
                real.display(),
                dir.display()
            ),
            "keep the component file inside the plugin's directory or a components directory (`--components`)",
        ));
    }
    Ok(file.to_path_buf())
}

fn validate(m: &Manifest) -> Result<(), String> {
    use std::path::Component;
    if m.component.as_os_str().is_empty()
        || !m
            .component
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(format!(
            "`component` must be a file name or a relative path without `..`, not `{}`",
            m.component.display()
        ));
    }
    if m.version.trim().is_empty() {
        return Err("`version` must not be empty".into());
    }
    if let Some(d) = &m.sha256
        && (d.len() != 64
            || !d
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    {
        return Err(format!(
            "`sha256` must be 64 lowercase hex digits, not `{d}`"
        ));
    }
    if m.limits.memory_mib == 0 || m.limits.memory_mib > MAX_MEMORY_MIB {
        return Err(format!(
            "`limits.memory_mib` must be between 1 and {MAX_MEMORY_MIB}, not {}",
            m.limits.memory_mib
        ));
    }
    if m.limits.timeout_ms == 0 || m.limits.timeout_ms > MAX_TIMEOUT_MS {
        return Err(format!(
            "`limits.timeout_ms` must be between 1 and {MAX_TIMEOUT_MS}, not {}",
            m.limits.timeout_ms
        ));
    }
    m.grants
        .validate()
        .map_err(|why| format!("grants: {why}"))?;
    m.contract().validate()
}

/// Finds plugin `name` under `dir`: `dir/NAME/plugin.toml` or one level of
/// grouping deeper (`dir/steps/NAME/plugin.toml`). `None` when `dir` does
/// not have it.
pub fn find(dir: &Path, name: &Name) -> Result<Option<PathBuf>> {
    let direct = dir.join(name.as_str()).join(FILE_NAME);
    if direct.is_file() {
        return Ok(Some(direct));
    }
    let groups = fs_err::read_dir(dir)
        .with_context(|| format!("reading the plugin directory `{}`", dir.display()))?;
    let mut found = Vec::new();
    for entry in groups.flatten() {
        let candidate = entry.path().join(name.as_str()).join(FILE_NAME);
        if candidate.is_file() {
            found.push(candidate);
        }
    }
    found.sort();
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found.remove(0))),
        _ => Err(hinted(
            format!(
                "plugin `{name}` is ambiguous: {}",
                found
                    .iter()
                    .map(|p| format!("`{}`", p.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "plugin names must be unique under a plugin directory",
        )),
    }
}

/// Every manifest under `dir` (`NAME/plugin.toml` and one level deeper),
/// sorted by path.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = fs_err::read_dir(dir)
        .with_context(|| format!("reading the plugin directory `{}`", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.join(FILE_NAME).is_file() {
            found.push(path.join(FILE_NAME));
        } else if path.is_dir()
            && let Ok(inner) = fs_err::read_dir(&path)
        {
            found.extend(
                inner
                    .flatten()
                    .map(|e| e.path().join(FILE_NAME))
                    .filter(|p| p.is_file()),
            );
        }
    }
    found.sort();
    Ok(found)
}
