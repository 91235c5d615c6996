//! Where a run's plugins come from: plugin directories in order (`--plugins`,
//! else `plugins/` beside the runbook), component directories, the trust
//! file, then the plugins built into the binary.

use crate::plugin::Plugin;
use crate::runtime::Runtime;
use anyhow::Result;
use runbook_core::error::hinted;
use runbook_core::ids::Name;
use runbook_core::manifest::{self, LoadedManifest};
use runbook_core::signing::Trust;
use runbook_policy::Policies;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where to look, as a person says it (`--plugins`, `--components`,
/// `--trust`); empty: the defaults beside the runbook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub plugins: Vec<PathBuf>,
    pub components: Vec<PathBuf>,
    pub trust: Option<PathBuf>,
    /// A policy directory (`--policies`, else `RUNBOOK_POLICIES`).
    pub policies: Option<PathBuf>,
}

/// Where plugins and their components are found: the plugin directories
/// in order, then the plugins built into the binary.
#[derive(Debug, Clone)]
pub struct Sources {
    pub plugin_dirs: Vec<PathBuf>,
    pub component_dirs: Vec<PathBuf>,
    /// Refuse a plan that differs from the `runbook.lock` beside the
    /// runbook: checked by [`crate::start::load_plan`] (and so by every
    /// `Engine` entry), not by `Plan::load` itself.
    pub locked: bool,
    /// Which keys may sign which plugins, and how many signatures a
    /// directory plugin needs.
    pub trust: Option<Arc<Trust>>,
    /// The organisation's guardrails, asked before every change.
    pub policies: Option<Arc<Policies>>,
}

impl Sources {
    /// Where `runbook`'s plugins are found, and the trust file for them.
    /// Without a runbook: `--plugins`, then the built-in plugins.
    pub fn find(search: &Search, runbook: Option<&Path>) -> Result<Self> {
        let trust = Trust::find(
            search.trust.as_deref(),
            runbook.map(|r| r.parent().unwrap_or(Path::new("."))),
        )?
        .map(Arc::new);
        Ok(Self {
            plugin_dirs: plugin_dirs(&search.plugins, runbook),
            component_dirs: component_dirs(&search.components),
            locked: false,
            policies: policies(search.policies.as_deref(), trust.as_deref())?,
            trust,
        })
    }
}

/// The policy directory: `--policies`, else `RUNBOOK_POLICIES`; none
/// when neither is given. One that cannot be read is an error: nothing
/// runs on a policy it cannot read; nor on one the trust file asks to be
/// signed (`policy-signatures`) and that is not, or not by keys trusted
/// to sign policy.
pub fn policies(flag: Option<&Path>, trust: Option<&Trust>) -> Result<Option<Arc<Policies>>> {
    let dir = match flag {
        Some(d) => Some(d.to_path_buf()),
        None => std::env::var_os("RUNBOOK_POLICIES")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    dir.map(|d| load_policies(&d, trust)).transpose()
}

/// Loads the policies of `dir` and checks their signatures when `trust`
/// asks for them.
pub fn load_policies(dir: &Path, trust: Option<&Trust>) -> Result<Arc<Policies>> {
    let policies = Policies::load(dir)?;
    if let Some(trust) = trust.filter(|t| t.policy.policy_signatures > 0) {
        trust.verify_policies(dir, &policies.digest)?;
    }
    Ok(Arc::new(policies))
}

/// `--plugins`, else `plugins/` beside the runbook.
pub fn plugin_dirs(flags: &[PathBuf], runbook: Option<&Path>) -> Vec<PathBuf> {
    match (flags, runbook) {
        ([], Some(runbook)) => default_plugin_dirs(runbook),
        _ => flags.to_vec(),
    }
}

/// `--components`, then `RUNBOOK_COMPONENTS`.
pub fn component_dirs(flags: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = flags.to_vec();
    if let Some(env) = std::env::var_os("RUNBOOK_COMPONENTS") {
        dirs.extend(std::env::split_paths(&env));
    }
    dirs
}

/// The plugin directories for a runbook when none are given: `plugins/`
/// beside the runbook, if there is one. Built-in plugins come after.
pub fn default_plugin_dirs(runbook: &Path) -> Vec<PathBuf> {
    let beside = runbook.parent().unwrap_or(Path::new(".")).join("plugins");
    if beside.is_dir() {
        vec![beside]
    } else {
        Vec::new()
    }
}

/// Where a plugin was found.
pub enum Located {
    Manifest(PathBuf),
    Builtin(&'static crate::builtin::Builtin),
}

impl Sources {
    /// Finds plugin `name`: the first plugin directory that has it, else
    /// the built-in plugin of that name.
    pub fn locate(&self, name: &Name) -> Result<Located> {
        for dir in &self.plugin_dirs {
            if let Some(path) = manifest::find(dir, name)? {
                return Ok(Located::Manifest(path));
            }
        }
        if let Some(b) = crate::builtin::find(name.as_str()) {
            return Ok(Located::Builtin(b));
        }
        let searched: Vec<String> = self
            .plugin_dirs
            .iter()
            .map(|d| format!("`{}`", d.display()))
            .chain(std::iter::once(format!(
                "the built-in plugins ({})",
                crate::builtin::all()
                    .iter()
                    .map(|b| format!("`{}`", b.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
            .collect();
        Err(hinted(
            format!(
                "plugin `{name}` not found; searched {}",
                searched.join(", ")
            ),
            format!(
                "put it in a directory as `DIR/{name}/{}` and pass `--plugins DIR` (or keep it in `plugins/` beside the runbook); `runbook plugins` lists what is available",
                manifest::FILE_NAME
            ),
        ))
    }

    /// Locates and loads plugin `name`.
    pub fn load(&self, runtime: &Runtime, name: &Name) -> Result<Plugin> {
        match self.locate(name)? {
            Located::Builtin(b) => Plugin::builtin(runtime, b),
            Located::Manifest(path) => {
                let loaded = LoadedManifest::load(&path)?;
                if loaded.manifest.name != *name {
                    return Err(hinted(
                        format!(
                            "manifest `{}` names plugin `{}`, but it sits where plugin `{name}` belongs",
                            path.display(),
                            loaded.manifest.name,
                        ),
                        "a plugin's directory must carry its name",
                    ));
                }
                Plugin::load_to_run(runtime, loaded, &self.component_dirs, self.trust.as_deref())
            }
        }
    }
}
