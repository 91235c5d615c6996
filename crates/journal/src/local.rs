//! Journals and leases in a directory on this machine: chained files for
//! journals and incident indexes, OS file locks for "running" and for
//! leases (released by the OS when a process dies).

use crate::chain::ChainLog;
use crate::holder::{Held, Holder};
use crate::lease::{Granted, Lease, next_lease};
use crate::log::Journal;
use crate::replay::finished;
use crate::store::{Shared, Store, incident_taken, is_run_id};
use anyhow::{Context, Result};
use runbook_core::error::hinted;
use serde_json::{Value, json};
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Journals and leases in a directory on this machine.
pub struct LocalStore {
    root: PathBuf,
    fsync: bool,
}

impl LocalStore {
    pub fn open(root: &Path) -> Result<Arc<Self>> {
        Self::with_fsync(root, true)
    }

    /// `fsync`: whether each journal line reaches the disk before `record`
    /// returns (off only to measure what it costs).
    pub fn with_fsync(root: &Path, fsync: bool) -> Result<Arc<Self>> {
        for sub in ["runs", "incidents", "leases", "shared"] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root.join(sub))
                .with_context(|| format!("creating the state directory `{}`", root.display()))?;
        }
        Ok(Arc::new(Self {
            root: root.to_path_buf(),
            fsync,
        }))
    }

    fn run_path(&self, run_id: &str) -> Result<PathBuf> {
        if !is_run_id(run_id) {
            return Err(hinted(
                format!("`{run_id}` is not a run id"),
                "run ids are letters, digits and `-`; `runbook runs` lists them",
            ));
        }
        Ok(self.root.join("runs").join(format!("{run_id}.jsonl")))
    }

    fn lock_file(path: &Path) -> Result<File> {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening `{}`", path.display()))
    }

    /// The run's "running" lock, taken (exclusive, non-blocking).
    fn take_running(&self, run_id: &str) -> Result<Option<File>> {
        let f = Self::lock_file(&self.root.join("runs").join(format!("{run_id}.lock")))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
        }
    }

    /// Who started `run_id`, as the incident's index says (written before
    /// the run's own journal has anything).
    fn index_holder(&self, incident: &str, run_id: &str) -> Option<Holder> {
        let path = self
            .root
            .join("incidents")
            .join(format!("{}.jsonl", slug(incident)));
        crate::chain::read(&path)
            .ok()?
            .into_iter()
            .find(|l| l["run_id"] == run_id)
            .and_then(|l| serde_json::from_value(l["holder"].clone()).ok())
    }

    fn started_by(&self, run_id: &str) -> Option<Holder> {
        let lines = self.read_run(run_id).ok()?;
        let start = lines.iter().find(|l| l["event"] == "run-start")?;
        serde_json::from_value(start["holder"].clone()).ok()
    }
}

impl Store for LocalStore {
    fn start_run(&self, incident: &str, holder: &Holder) -> Result<Journal> {
        let run_id = holder.run_id.as_str();
        // One process at a time decides what the incident's next run is.
        let guard = Self::lock_file(
            &self
                .root
                .join("incidents")
                .join(format!("{}.lock", slug(incident))),
        )?;
        guard.lock()?;
        for earlier in self.incident_runs(incident)? {
            // A journal that cannot be read is not an empty one: whether
            // the incident is free cannot be known, so the run does not start.
            let lines = self.read_run(&earlier).with_context(|| {
                format!("reading run `{earlier}` of incident `{incident}` (is it finished?)")
            })?;
            if finished(&lines).is_some() {
                continue;
            }
            // A run that died before it wrote `run-start` did nothing.
            let started = lines.iter().any(|l| l["event"] == "run-start");
            if !started && !self.is_running(&earlier) {
                continue;
            }
            let by = self
                .started_by(&earlier)
                .or_else(|| self.index_holder(incident, &earlier));
            return Err(incident_taken(
                incident,
                &earlier,
                by,
                self.is_running(&earlier),
            ));
        }
        let path = self.run_path(run_id)?;
        let running = self
            .take_running(run_id)?
            .ok_or_else(|| anyhow::anyhow!("run `{run_id}` is already running"))?;
        let log = ChainLog::open(&path, self.fsync)?;
        if self.fsync {
            // The journal's entry in `runs/` survives a crash too.
            runbook_core::files::sync_dir(&self.root.join("runs"))
                .with_context(|| format!("syncing `{}`", self.root.join("runs").display()))?;
        }
        ChainLog::append(
            &ChainLog::open(
                &self
                    .root
                    .join("incidents")
                    .join(format!("{}.jsonl", slug(incident))),
                self.fsync,
            )?,
            json!({ "event": "run", "incident": incident, "run_id": run_id, "holder": holder }),
        )?;
        drop(guard);
        Ok(Journal::new(Box::new(log), run_id, Box::new(running)))
    }

    fn reopen_run(&self, run_id: &str) -> Result<Journal> {
        let path = self.run_path(run_id)?;
        if !path.is_file() {
            return Err(hinted(
                format!("no run `{run_id}` in `{}`", self.root.display()),
                "`runbook runs` lists the runs here; pass `--state-dir` if it was started with another",
            ));
        }
        let Some(running) = self.take_running(run_id)? else {
            let by = self.started_by(run_id);
            return Err(anyhow::Error::new(Held {
                what: format!("run `{run_id}`"),
                by,
                unknown: None,
            })
            .context(format!("run `{run_id}` is running in another process")));
        };
        // Continued only from a journal whose every line is in its chain;
        // a torn last line (a write that never finished) is cut off.
        let text = runbook_core::files::read_bytes(&path, "journal", 1 << 30)?;
        let checked =
            crate::chain::check_to_continue(&text).map_err(|broken| crate::chain::Untrusted {
                location: path.display().to_string(),
                broken,
            })?;
        if checked.torn.is_some() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening `{}`", path.display()))?;
            f.set_len(checked.whole as u64)
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cutting the torn last line off `{}`", path.display()))?;
        }
        Ok(Journal::new(
            Box::new(ChainLog::open(&path, self.fsync)?),
            run_id,
            Box::new(running),
        )
        .with_torn(checked.torn))
    }

    fn read_run(&self, run_id: &str) -> Result<Vec<Value>> {
        crate::chain::read(&self.run_path(run_id)?)
    }

    fn journal_location(&self, run_id: &str) -> Option<String> {
        Some(self.run_path(run_id).ok()?.display().to_string())
    }

    fn is_running(&self, run_id: &str) -> bool {
        matches!(self.take_running(run_id), Ok(None))
    }

    fn incident_runs(&self, incident: &str) -> Result<Vec<String>> {
        let path = self
            .root
            .join("incidents")
            .join(format!("{}.jsonl", slug(incident)));
        if !path.is_file() {
            return Ok(Vec::new());
        }
        Ok(crate::chain::read(&path)?
            .iter()
            .filter(|l| l["incident"] == incident)
            .filter_map(|l| l["run_id"].as_str().map(str::to_string))
            .collect())
    }

    fn recent_runs(&self, limit: usize) -> Result<Vec<String>> {
        let mut runs: Vec<(std::time::SystemTime, String)> =
            std::fs::read_dir(self.root.join("runs"))?
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let id = name.strip_suffix(".jsonl")?.to_string();
                    Some((e.metadata().ok()?.modified().ok()?, id))
                })
                .collect();
        runs.sort();
        runs.reverse();
        Ok(runs.into_iter().take(limit).map(|(_, id)| id).collect())
    }

    fn lease(
        &self,
        resource: &str,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Box<dyn Lease>, Box<Held>> {
        let base = self.root.join("leases").join(slug(resource));
        let held = |by| {
            Box::new(Held {
                what: format!("`{resource}`"),
                by,
                unknown: None,
            })
        };
        // An error is not another holder: whether it is held is unknown.
        let unknown = |why: String| {
            Box::new(Held {
                what: format!("`{resource}`"),
                by: None,
                unknown: Some(why),
            })
        };
        let file =
            Self::lock_file(&base.with_extension("lock")).map_err(|e| unknown(format!("{e:#}")))?;
        let until = Instant::now() + wait;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let by = read_holder(&base.with_extension("json"));
                    if Instant::now() >= until {
                        return Err(held(by));
                    }
                    if !told {
                        eprintln!("waiting up to {} s for {}", wait.as_secs(), held(by));
                        told = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(unknown(format!("locking `{}`: {e}", base.display())));
                }
            }
        }
        // Held: bump the fencing token, say who holds it, keep who held
        // it before.
        let info = base.with_extension("json");
        // A record that cannot be read would restart the fencing tokens.
        let before: Option<Value> = match std::fs::read_to_string(&info) {
            Ok(t) => match serde_json::from_str(&t) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Err(unknown(format!(
                        "the lease record `{}` is not JSON ({e}): remove it only if no run holds or held `{resource}`",
                        info.display()
                    )));
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(unknown(format!("reading `{}`: {e}", info.display()))),
        };
        let (token, previous, record) = next_lease(before.as_ref(), holder, resource);
        // The new fencing token must be on disk before it is used: a lost
        // write would hand the next holder the same token.
        let written = (|| {
            fail::fail_point!("lease-take", |how| Err(std::io::Error::other(format!(
                "failpoint `lease-take` ({})",
                how.unwrap_or_default()
            ))));
            write_atomic(&info, &record.to_string())
        })();
        if let Err(e) = written {
            return Err(unknown(format!(
                "recording the lease in `{}`: {e}",
                info.display()
            )));
        }
        Ok(Box::new(Granted {
            token,
            previous,
            guard: FileGuard {
                _file: file,
                info,
                record,
            },
        }))
    }

    fn read_shared(&self, name: Shared) -> Result<Value> {
        let path = self.shared_path(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| {
                hinted(
                    format!("`{}` is not JSON: {e}", path.display()),
                    "it is written whole or not at all by `runbook`: was it edited? restore it from a backup, or remove it to start it afresh (its halts and counts are then gone)",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Null),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading `{}`", path.display()))),
        }
    }

    fn change_shared(
        &self,
        name: Shared,
        change: &mut (dyn FnMut(&mut Value) -> bool + Send),
    ) -> Result<bool> {
        let path = self.shared_path(name);
        // One process at a time: the OS lock is the "nobody in between".
        let lock = Self::lock_file(&path.with_extension("lock"))?;
        lock.lock()
            .with_context(|| format!("locking `{}`", path.display()))?;
        let mut value = self.read_shared(name)?;
        if !change(&mut value) {
            return Ok(false);
        }
        write_atomic(&path, &value.to_string())
            .with_context(|| format!("writing `{}`", path.display()))?;
        Ok(true)
    }
}

impl LocalStore {
    fn shared_path(&self, name: Shared) -> PathBuf {
        self.root
            .join("shared")
            .join(format!("{}.json", name.key()))
    }
}

/// A name safe as one path component.
fn slug(s: &str) -> String {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    // Distinct names that clean alike stay distinct.
    format!(
        "{clean}-{}",
        &runbook_core::hash::sha256_hex(s.as_bytes())[..12]
    )
}

/// A local lease's lock file, and the record it writes when let go.
struct FileGuard {
    // Dropped after `drop` below wrote the release: the lock is held
    // until then.
    _file: File,
    info: PathBuf,
    record: Value,
}

/// An OS file lock is held until the process lets go or dies.
impl crate::lease::Guard for FileGuard {}

impl Drop for FileGuard {
    fn drop(&mut self) {
        self.record["released_ms"] = runbook_core::time::now_ms().into();
        let written = (|| {
            fail::fail_point!("lease-release", |how| Err(std::io::Error::other(format!(
                "failpoint `lease-release` ({})",
                how.unwrap_or_default()
            ))));
            write_atomic(&self.info, &self.record.to_string())
        })();
        // Not recorded: the next holder finds no release time and takes
        // the resource as held until it took it (`next_lease`), so a change
        // decided before then is blocked, never let through.
        if let Err(e) = written {
            eprintln!(
                "warning: could not record letting go of the lease in `{}`: {e}",
                self.info.display()
            );
        }
    }
}

fn read_holder(path: &Path) -> Option<Holder> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".lease.")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_data()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename itself reaches the disk.
    runbook_core::files::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_run_blocks_its_incident_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::with_fsync(dir.path(), false).unwrap();
        let first = store.start_run("RB-1@prod", &Holder::me("run-a")).unwrap();
        first
            .record("run-start", json!({ "holder": Holder::me("run-a") }))
            .unwrap();
        // While it runs: held, naming who.
        let err = store
            .start_run("RB-1@prod", &Holder::me("run-b"))
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("is still running"), "{err:#}");
        assert!(format!("{err:#}").contains("started by"), "{err:#}");
        // Crashed (its process gone, no run-end): resume it, says the hint.
        drop(first);
        let err = store
            .start_run("RB-1@prod", &Holder::me("run-b"))
            .err()
            .unwrap();
        assert!(err.to_string().contains("has an unfinished run"), "{err}");
        assert!(
            runbook_core::error::hint_of(&err)
                .unwrap()
                .contains("runbook resume run-a"),
            "{err:#}"
        );
        let again = store.reopen_run("run-a").unwrap();
        again
            .record("run-end", json!({ "status": "resolved" }))
            .unwrap();
        drop(again);
        // Finished: the next run may start; another incident never waited.
        store.start_run("RB-1@prod", &Holder::me("run-b")).unwrap();
        store
            .start_run("RB-1@staging", &Holder::me("run-c"))
            .unwrap();
        assert_eq!(
            store.incident_runs("RB-1@prod").unwrap(),
            ["run-a", "run-b"]
        );
        assert_eq!(
            crate::chain::verify(&dir.path().join("runs/run-a.jsonl")).unwrap(),
            Ok(2)
        );
    }

    #[test]
    fn a_lease_is_exclusive_names_its_holder_and_fences() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::with_fsync(dir.path(), false).unwrap();
        let a = Holder::me("run-a");
        let held = store.lease("ecs:prod/auth", &a, Duration::ZERO).unwrap();
        let err = store
            .lease(
                "ecs:prod/auth",
                &Holder::me("run-b"),
                Duration::from_millis(200),
            )
            .err()
            .unwrap();
        assert_eq!(err.by.as_ref().unwrap().run_id, "run-a");
        assert!(err.to_string().contains("is held by run `run-a`"), "{err}");
        let first = held.fencing_token();
        drop(held);
        let next = store
            .lease("ecs:prod/auth", &Holder::me("run-b"), Duration::ZERO)
            .unwrap();
        assert_eq!(next.fencing_token(), first + 1);
        // The next holder learns who held it before, and when it let go.
        let before = runbook_core::time::now_ms();
        let previous = next.previous().unwrap();
        assert_eq!(previous.holder.run_id, "run-a");
        assert!(previous.released_ms <= before);
        drop(next);
        let third = store
            .lease("ecs:prod/auth", &Holder::me("run-c"), Duration::ZERO)
            .unwrap();
        let previous = third.previous().unwrap();
        assert_eq!(previous.holder.run_id, "run-b");
        assert!(previous.released_ms >= before);
    }
}
