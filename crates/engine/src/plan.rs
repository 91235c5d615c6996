//! Everything a run needs, validated before any step runs: the runbook, each
//! step's plugin (digest, compiled component, imports), its effective grant
//! (the manifest's, narrowed by the step) and an instance template linked
//! with exactly the granted interfaces. `check` stops here.

use crate::plugin::Plugin;
use crate::runtime::{Pre, Runtime};
use crate::sources::Sources;
use anyhow::{Context, Result};
use runbook_core::error::hinted;
use runbook_core::grants::{Grants, Interface};
use runbook_core::ids::Name;
use runbook_core::runbook::{Runbook, StepDef};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

pub struct Plan {
    pub runbook: Runbook,
    pub steps: Vec<PlannedStep>,
    /// The trust file its plugins were checked against, if any.
    pub trust: Option<Arc<runbook_core::signing::Trust>>,
}

pub struct PlannedStep {
    pub def: StepDef,
    pub plugin: Arc<Plugin>,
    pub grants: Grants,
    /// Linked at load for plugins from directories; for built-in plugins
    /// (checked by their recorded imports) on the step's first run.
    pre: std::sync::OnceLock<Pre>,
}

impl PlannedStep {
    /// The instance template, linked now if it was not yet.
    pub fn pre(&self, runtime: &Runtime) -> Result<Pre> {
        if let Some(p) = self.pre.get() {
            return Ok(p.clone());
        }
        let pre = instance_pre(runtime, &self.plugin, &self.grants)?;
        Ok(self.pre.get_or_init(|| pre).clone())
    }
}

impl Plan {
    /// Loads and links `runbook`'s plan. The lock is not looked at here:
    /// `crate::start::load_plan` checks it when `sources.locked`.
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
        // Each plugin once, loaded (compiled, or deserialized) in parallel;
        // an error is reported for the first step that uses the plugin.
        let mut names: Vec<&Name> = Vec::new();
        for def in &runbook.steps {
            if !names.contains(&&def.plugin) {
                names.push(&def.plugin);
            }
        }
        let loaded = parallel(&names, |name| sources.load(runtime, name));
        let mut plugins: BTreeMap<&str, Result<Arc<Plugin>, anyhow::Error>> = names
            .iter()
            .zip(loaded)
            .map(|(n, p)| (n.as_str(), p.map(Arc::new)))
            .collect();
        let mut steps = Vec::new();
        for def in &runbook.steps {
            let step = def.id.as_str();
            let plugin = match plugins.get_mut(def.plugin.as_str()) {
                Some(Ok(p)) => p.clone(),
                Some(Err(e)) => {
                    let e = std::mem::replace(e, anyhow::anyhow!("reported above"));
                    return Err(e.context(format!("step `{step}` of `{}`", runbook.path.display())));
                }
                None => unreachable!("every plugin a step names was loaded"),
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
            let manifest = &plugin.manifest.manifest;
            // A mutation is never inherited from a manifest wildcard: the
            // step says what it may change.
            for interface in manifest.grants.interfaces() {
                let mutates = manifest
                    .grants
                    .scope(interface)
                    .is_some_and(|s| !s.mutate.is_empty());
                let stated = def
                    .grants
                    .as_ref()
                    .and_then(|g| g.scope(interface))
                    .is_some();
                if mutates && !stated {
                    return Err(hinted(
                        format!(
                            "step `{step}` of `{}` uses plugin `{}`, which may change {interface} resources, but the step does not say which",
                            runbook.path.display(),
                            plugin.name()
                        ),
                        format!(
                            "add `grants: {{ {interface}: {{ mutate: [...] }} }}` to the step, listing {} it may change",
                            interface.resource_form()
                        ),
                    ));
                }
            }
            manifest
                .contract()
                .check_step(plugin.name(), def, &grants)
                .map_err(|why| {
                    hinted(
                        format!("step `{step}` of `{}` {why}", runbook.path.display()),
                        format!(
                            "`runbook inspect {}` shows the plugin's inputs, outcomes and the resources they name",
                            if plugin.builtin {
                                plugin.name().to_string()
                            } else {
                                plugin.manifest_path().display().to_string()
                            }
                        ),
                    )
                })?;
            plugin.check_imports(&grants, Some(step))?;
            let pre = std::sync::OnceLock::new();
            if !plugin.builtin {
                let _ =
                    pre.set(instance_pre(runtime, &plugin, &grants).with_context(|| {
                        format!("step `{step}` of `{}`", runbook.path.display())
                    })?);
            }
            steps.push(PlannedStep {
                def: def.clone(),
                plugin,
                grants,
                pre,
            });
        }
        let plan = Self {
            runbook,
            steps,
            trust: sources.trust.clone(),
        };
        Ok(plan)
    }

    /// Loads and links the steps after the first on a thread of their
    /// own, so a run finds them ready rather than loading each as it is
    /// reached. Best effort: a step that gets there first loads its own.
    pub fn prefetch(self: &Arc<Self>, runtime: &Arc<Runtime>) {
        let (plan, runtime) = (self.clone(), runtime.clone());
        let _ = std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || {
                for s in plan.steps.iter().skip(1) {
                    let _ = s.pre(&runtime);
                }
            });
    }

    /// Loads and links every step now (what `check` proves), not on first
    /// use.
    pub fn link_all(&self, runtime: &Runtime) -> Result<()> {
        for s in &self.steps {
            s.pre(runtime).with_context(|| {
                format!("step `{}` of `{}`", s.def.id, self.runbook.path.display())
            })?;
        }
        Ok(())
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

    /// Every resource a step's grant names must be provided by the runtime
    /// configuration (`source`, e.g. "environment `prod.toml`", at `path`):
    /// an alias must be defined, a flag store must exist. Wildcards are
    /// checked per call (and only where a capability needs a store).
    pub fn check_provided(
        &self,
        source: &str,
        path: &Path,
        provides: impl Fn(Interface, &str) -> Result<(), runbook_capabilities::capability::Missing>,
    ) -> Result<()> {
        for step in &self.steps {
            for interface in step.grants.interfaces() {
                let Some(scope) = step.grants.scope(interface) else {
                    continue;
                };
                for pattern in scope.read.iter().chain(&scope.mutate) {
                    if let Err(missing) = provides(interface, pattern.as_str()) {
                        let fill = |s: &str| {
                            s.replace("{source}", source)
                                .replace("{path}", &path.display().to_string())
                        };
                        return Err(hinted(
                            format!(
                                "step `{}` of `{}` is granted {interface} `{pattern}`, {}",
                                step.def.id,
                                self.runbook.path.display(),
                                fill(&missing.why)
                            ),
                            fill(&missing.hint),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// `f` over `items` on up to one thread per core, results in order.
fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<R>>> =
        items.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(f(item));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was mapped")
        })
        .collect()
}

/// Links exactly what `grants` allow; anything else the component imports
/// makes this fail before the step can run.
pub fn instance_pre(runtime: &Runtime, plugin: &Plugin, grants: &Grants) -> Result<Pre> {
    let interfaces: Vec<Interface> = grants.interfaces().collect();
    let component = plugin.component(runtime)?;
    runtime
        .instance_pre(&plugin.digest, &component, &interfaces, plugin.api)
        .with_context(|| format!("linking plugin `{}`", plugin.name()))
}
