//! Everything a run needs, validated before any step runs: the runbook, each
//! step's plugin (digest, compiled component, imports), its effective grant
//! (the manifest's, narrowed by the step) and an instance template linked
//! with exactly the granted interfaces. `check` stops here.

use crate::bindings::StepPre;
use crate::capability::{StepState, linker_for};
use crate::engine::Runtime;
use crate::error::hinted;
use crate::grants::{Grants, Interface};
use crate::manifest::{self, LoadedManifest};
use crate::plugin::Plugin;
use crate::runbook::{Runbook, StepDef};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where plugins and their components are found.
#[derive(Debug, Clone)]
pub struct Sources {
    pub plugins_dir: PathBuf,
    pub component_dirs: Vec<PathBuf>,
    /// Refuse components whose manifest pins no digest.
    pub locked: bool,
}

pub struct Plan {
    pub runbook: Runbook,
    pub steps: Vec<PlannedStep>,
}

pub struct PlannedStep {
    pub def: StepDef,
    pub plugin: Arc<Plugin>,
    pub grants: Grants,
    pub pre: StepPre<StepState>,
}

impl Plan {
    pub fn load(runtime: &Runtime, runbook: Runbook, sources: &Sources) -> Result<Self> {
        if !runbook.is_executable() {
            return Err(hinted(
                format!(
                    "runbook `{}` ({}) is not executable: it has no `steps`",
                    runbook.path.display(),
                    runbook.runbook_id
                ),
                "add a `steps` list to the front matter; see runbooks/README.md",
            ));
        }
        let mut plugins: BTreeMap<String, Arc<Plugin>> = BTreeMap::new();
        let mut steps = Vec::new();
        for def in &runbook.steps {
            let step = def.id.as_str();
            let plugin = match plugins.get(def.plugin.as_str()) {
                Some(p) => p.clone(),
                None => {
                    let path =
                        manifest::find(&sources.plugins_dir, &def.plugin).with_context(|| {
                            format!("step `{step}` of `{}`", runbook.path.display())
                        })?;
                    let loaded = LoadedManifest::load(&path)?;
                    if loaded.manifest.name != def.plugin {
                        return Err(hinted(
                            format!(
                                "manifest `{}` names plugin `{}`, but it sits where plugin `{}` belongs",
                                path.display(),
                                loaded.manifest.name,
                                def.plugin
                            ),
                            "a plugin's directory must carry its name",
                        ));
                    }
                    let p = Arc::new(
                        Plugin::load(runtime, loaded, &sources.component_dirs, sources.locked)
                            .with_context(|| {
                                format!("step `{step}` of `{}`", runbook.path.display())
                            })?,
                    );
                    plugins.insert(def.plugin.to_string(), p.clone());
                    p
                }
            };
            let grants = match &def.grants {
                None => plugin.manifest.manifest.grants.clone(),
                Some(narrower) => plugin.manifest.manifest.grants.narrow(narrower).map_err(|why| {
                    hinted(
                        format!(
                            "step `{step}` of `{}` widens the grant of plugin `{}`: {why}",
                            runbook.path.display(),
                            plugin.name()
                        ),
                        format!(
                            "a step may only narrow what `{}` grants; change the step's `grants`, or have the manifest reviewed",
                            plugin.manifest_path().display()
                        ),
                    )
                })?,
            };
            plugin.check_imports(&grants, Some(step))?;
            let pre = instance_pre(runtime, &plugin, &grants)
                .with_context(|| format!("step `{step}` of `{}`", runbook.path.display()))?;
            steps.push(PlannedStep {
                def: def.clone(),
                plugin,
                grants,
                pre,
            });
        }
        Ok(Self { runbook, steps })
    }

    pub fn step(&self, id: &str) -> Option<&PlannedStep> {
        self.steps.iter().find(|s| s.def.id.as_str() == id)
    }

    /// The capability interfaces any step is granted.
    pub fn interfaces(&self) -> std::collections::BTreeSet<Interface> {
        self.steps
            .iter()
            .flat_map(|s| s.grants.interfaces())
            .collect()
    }

    /// Every exact Redis alias and ECS `cluster/service` a step's grant
    /// names must be defined by the runtime configuration (`source`, e.g.
    /// "environment `prod.toml`"); wildcard grants are checked per call.
    pub fn check_aliases(
        &self,
        source: &str,
        defines: impl Fn(Interface, &str) -> bool,
        hint: impl Fn(Interface, &str) -> String,
    ) -> Result<()> {
        for step in &self.steps {
            for interface in [Interface::Redis, Interface::Ecs] {
                let Some(scope) = step.grants.scope(interface) else {
                    continue;
                };
                let exact = scope
                    .read
                    .iter()
                    .chain(&scope.mutate)
                    .filter(|p| !p.as_str().ends_with('*'));
                if let Some(alias) = exact.map(|p| p.as_str()).find(|a| !defines(interface, a)) {
                    return Err(hinted(
                        format!(
                            "step `{}` of `{}` is granted {interface} `{alias}`, which {source} does not define",
                            step.def.id,
                            self.runbook.path.display()
                        ),
                        hint(interface, alias),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Links exactly what `grants` allow; anything else the component imports
/// makes this fail before the step can run.
pub fn instance_pre(
    runtime: &Runtime,
    plugin: &Plugin,
    grants: &Grants,
) -> Result<StepPre<StepState>> {
    let linker = linker_for(&runtime.engine, grants.interfaces())?;
    let pre = linker
        .instantiate_pre(&plugin.component)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("linking plugin `{}`", plugin.name()))?;
    StepPre::new(pre)
        .map_err(anyhow::Error::from)
        .with_context(|| {
            format!(
                "plugin `{}` does not export the `step` world's `run` function",
                plugin.name()
            )
        })
}

/// The plugin directory for a runbook: the nearest `plugins/` directory at
/// or above the runbook's own, else `./plugins`.
pub fn default_plugins_dir(runbook: &Path) -> PathBuf {
    let start = runbook
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let mut dir = start.as_deref();
    while let Some(d) = dir {
        let candidate = d.join("plugins");
        if candidate.is_dir() {
            return candidate;
        }
        dir = d.parent();
    }
    PathBuf::from("plugins")
}
