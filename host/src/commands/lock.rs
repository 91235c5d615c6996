//! `runbook lock`: write `runbook.lock` beside the runbooks.

use super::{emit, say, search};
use crate::cli::{LockArgs, Search};
use anyhow::{Context, Result};
use runbook_core::error::hinted;
use runbook_core::exit::Exit;
use runbook_core::lock::{self, LockFile};
use runbook_core::runbook::Runbook;
use runbook_engine::plan::Plan;
use runbook_engine::runtime::{Runtime, default_cache_dir};
use std::path::{Path, PathBuf};

pub fn lock(args: LockArgs) -> Result<Exit> {
    let mut out = String::new();
    let runtime = Runtime::new(default_cache_dir())?;
    let mut stale = Vec::new();
    for group in groups(&args.paths)? {
        let mut lock = LockFile::load_or_empty(&group.dir)?;
        let before = lock.clone();
        lock = current(&runtime, &group, &args.search, lock)?;
        if args.check {
            let changes = runbook_core::review::diff(&before, &lock);
            let path = group.dir.join(lock::FILE_NAME);
            if changes.is_empty() && path.is_file() {
                say!(out, "`{}` is up to date", path.display());
            } else {
                stale.push(format!(
                    "`{}` {}:\n{}",
                    path.display(),
                    if path.is_file() {
                        "is out of date"
                    } else {
                        "does not exist"
                    },
                    changes
                        .iter()
                        .map(|c| format!("  - {c}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                ));
            }
            continue;
        }
        let path = lock.save(&group.dir)?;
        let changes = runbook_core::review::diff(&before, &lock);
        say!(
            out,
            "wrote `{}`: {} runbook{}, {} plugin{}; {} change{} since it was last written",
            path.display(),
            lock.runbooks.len(),
            plural(lock.runbooks.len()),
            lock.plugins.len(),
            plural(lock.plugins.len()),
            changes.len(),
            plural(changes.len())
        );
        for c in changes {
            say!(out, "  {c}");
        }
    }
    emit(&out)?;
    if !stale.is_empty() {
        return Err(hinted(
            stale.join("\n"),
            "have the change reviewed (`runbook review`), then run `runbook lock` and commit the lock",
        ));
    }
    Ok(Exit::Ok)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The runbooks of one lock file.
pub(super) struct Group {
    pub dir: PathBuf,
    pub runbooks: Vec<PathBuf>,
    /// A whole directory was named: the lock holds exactly its runbooks.
    pub whole: bool,
}

/// `paths` (runbooks or directories; default `runbooks`) grouped by the
/// directory whose lock records them.
pub(super) fn groups(paths: &[PathBuf]) -> Result<Vec<Group>> {
    let default = [PathBuf::from("runbooks")];
    let paths = if paths.is_empty() {
        &default[..]
    } else {
        paths
    };
    let mut groups: Vec<Group> = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut runbooks: Vec<PathBuf> = fs_err::read_dir(p)?
                .flatten()
                .map(|e| e.path())
                .filter(|f| f.extension().is_some_and(|e| e == "md") && f.is_file())
                .collect();
            runbooks.sort();
            // Markdown without front matter (a README) is not a runbook; one
            // with front matter that does not load is an error, never a
            // runbook silently left out of the lock.
            let mut executable = Vec::new();
            for f in runbooks {
                let text = runbook_core::files::read_text(&f, "runbook")?;
                if !text.trim_start_matches('\u{feff}').starts_with("---") {
                    continue;
                }
                if Runbook::parse(&text, &f)?.is_executable() {
                    executable.push(f);
                }
            }
            let runbooks = executable;
            groups.push(Group {
                dir: p.clone(),
                runbooks,
                whole: true,
            });
        } else if p.is_file() {
            let (dir, _) = lock::location(p);
            match groups.iter_mut().find(|g| g.dir == dir) {
                Some(g) => g.runbooks.push(p.clone()),
                None => groups.push(Group {
                    dir,
                    runbooks: vec![p.clone()],
                    whole: false,
                }),
            }
        } else {
            return Err(hinted(
                format!("`{}` is neither a runbook nor a directory", p.display()),
                "name runbook files or the directory they are in",
            ));
        }
    }
    Ok(groups)
}

/// `base` with the group's runbooks as they are now (for a whole
/// directory: only those).
pub(super) fn current(
    runtime: &Runtime,
    group: &Group,
    s: &Search,
    base: LockFile,
) -> Result<LockFile> {
    let mut lock = if group.whole { LockFile::empty() } else { base };
    // The trust file that runs of these runbooks would use.
    lock.trust = runbook_core::signing::Trust::find(s.trust.as_deref(), Some(&group.dir))?
        .as_ref()
        .map(lock::LockedTrust::of);
    for rb in &group.runbooks {
        let (runbook_locked, plugins) = of(runtime, rb, s)?;
        lock.insert(runbook_locked, plugins);
    }
    Ok(lock)
}

/// What `path` runs. Signatures are not checked here: the lock records
/// the trust policy, and a run checks the signatures against it.
fn of(
    runtime: &Runtime,
    path: &Path,
    s: &Search,
) -> Result<(lock::LockedRunbook, Vec<lock::LockedPlugin>)> {
    let runbook = Runbook::load(path)?;
    let mut sources = search(s, Some(path))?;
    sources.trust = None;
    let plan = Plan::load(runtime, runbook, &sources)
        .with_context(|| format!("reading what `{}` runs", path.display()))?;
    Ok(runbook_engine::lock::of_plan(&plan))
}
