//! `runbook.lock` against a loaded plan: what a plan records in the
//! lock ([`of_plan`]) and `--locked` ([`verify`]), which refuses a plan
//! that differs from the lock in any way [`runbook_core::review`] names.

use crate::plan::Plan;
use anyhow::Result;
use runbook_core::error::hinted;
use runbook_core::lock::{
    FILE_NAME, LockFile, LockedPlugin, LockedRunbook, LockedStep, LockedTrust, location,
};
use std::collections::BTreeMap;
use std::path::Path;

/// What `plan` runs, as the lock records it.
pub fn of_plan(plan: &Plan) -> (LockedRunbook, Vec<LockedPlugin>) {
    let (dir, file) = location(&plan.runbook.path);
    let mut plugins: BTreeMap<&str, LockedPlugin> = BTreeMap::new();
    let steps = plan
        .steps
        .iter()
        .map(|s| {
            let manifest = &s.plugin.manifest.manifest;
            let mut resources = manifest.contract().named_resources(&s.def);
            resources.sort();
            resources.dedup();
            plugins
                .entry(s.plugin.name())
                .or_insert_with(|| LockedPlugin {
                    name: manifest.name.clone(),
                    version: manifest.version.clone(),
                    sha256: s.plugin.digest.clone(),
                    source: if s.plugin.builtin {
                        "built-in".into()
                    } else {
                        let at = relative(&s.plugin.manifest.path, &dir);
                        // What `plugin pull` wrote; the digest is what counts.
                        match crate::oci::origin(s.plugin.manifest.dir()) {
                            Some(from) => format!("{at} (pulled from oci://{from})"),
                            None => at,
                        }
                    },
                    limits: manifest.limits,
                    grants: manifest.grants.clone(),
                });
            LockedStep {
                id: s.def.id.to_string(),
                plugin: manifest.name.clone(),
                version: manifest.version.clone(),
                sha256: s.plugin.digest.clone(),
                limits: manifest.limits,
                grants: s.grants.clone(),
                resources,
                inputs: s.def.input_pairs().into_iter().collect(),
                on: s.def.on.clone(),
                approval: s.def.approval.clone(),
            }
        })
        .collect();
    (
        LockedRunbook {
            file,
            id: plan.runbook.runbook_id.clone(),
            max_mutations: plan.runbook.max_mutations,
            steps,
        },
        plugins.into_values().collect(),
    )
}

/// `path` relative to `dir` when it is inside it, with `/` separators.
fn relative(path: &Path, dir: &Path) -> String {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (path, dir) = (canon(path), canon(dir));
    match pathdiff(&path, &dir) {
        Some(rel) => rel,
        None => path.display().to_string(),
    }
}

/// `path` relative to `base`, walking up with `..` as needed.
fn pathdiff(path: &Path, base: &Path) -> Option<String> {
    let p: Vec<_> = path.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if common == 0 {
        return None;
    }
    let ups = std::iter::repeat_n("..".to_string(), b.len() - common);
    let downs = p[common..]
        .iter()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    Some(ups.chain(downs).collect::<Vec<_>>().join("/"))
}

/// `--locked`: the plan must be exactly what `runbook.lock` beside the
/// runbook records for it.
pub fn verify(plan: &Plan) -> Result<()> {
    let (dir, file) = location(&plan.runbook.path);
    let path = dir.join(FILE_NAME);
    let shown = plan.runbook.path.display();
    if !path.is_file() {
        return Err(hinted(
            format!(
                "`--locked`: there is no `{}` beside runbook `{shown}`",
                path.display()
            ),
            format!(
                "review the runbook and its plugins, then run `runbook lock {shown}` and commit `{FILE_NAME}`"
            ),
        ));
    }
    let lock = LockFile::load(&path)?;
    let Some(locked) = lock.runbook(&file) else {
        return Err(hinted(
            format!(
                "`--locked`: `{}` locks nothing for runbook `{file}`",
                path.display()
            ),
            format!("review the runbook and its plugins, then run `runbook lock {shown}`"),
        ));
    };
    let (current, plugins) = of_plan(plan);
    let mut base = LockFile::empty();
    base.insert(
        locked.clone(),
        locked
            .steps
            .iter()
            .filter_map(|s| lock.plugin(s.plugin.as_str()).cloned())
            .collect(),
    );
    base.trust = lock.trust.clone();
    let mut now = LockFile::empty();
    now.insert(current, plugins);
    now.trust = plan.trust.as_deref().map(LockedTrust::of);
    let changes = runbook_core::review::diff(&base, &now);
    if changes.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = changes.iter().map(|c| format!("  - {c}")).collect();
    Err(hinted(
        format!(
            "`--locked`: runbook `{shown}` differs from `{}` in {} way{}:\n{}",
            path.display(),
            changes.len(),
            if changes.len() == 1 { "" } else { "s" },
            list.join("\n")
        ),
        format!(
            "if the change is intended, have it reviewed (`runbook review {shown}`), then run `runbook lock {shown}`; otherwise restore what was locked"
        ),
    ))
}
