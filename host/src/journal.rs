//! Durable runs: every run has an id and a journal, and belongs to an
//! incident; changes take leases on what they change.
//!
//! The journal (`runs/RUN_ID.jsonl` in the state directory) is a chained
//! log ([`crate::chain`]), each line fsync'd before the host goes on:
//! `run-start` (runbook and plugin digests, inputs, backend, incident,
//! who), `step-start`, `intent` before every change (what, its
//! precondition, who approved it and how, the lease's fencing token),
//! `applied` or `failed` after it, `step-end` (the step's whole report),
//! and `run-end`. From it `show` renders a run (a crashed one too) and
//! `resume` continues one: ended steps are replayed, not run again, and a
//! change that has an intent but no result is checked against the real
//! backend before anything is issued again.
//!
//! The [`Store`] trait is what a journal and its leases need from where
//! they are kept; [`LocalStore`] keeps them in a directory on this machine
//! (OS file locks, safe across processes). A store shared by several
//! machines implements the same trait.

use crate::chain::ChainLog;
use crate::error::hinted;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Who started something, from where, when: shown to whoever finds it
/// in their way.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub run_id: String,
    pub who: String,
    pub host: String,
    pub pid: u32,
    /// RFC 3339.
    pub since: String,
}

impl Holder {
    pub fn me(run_id: &str) -> Self {
        Self {
            run_id: run_id.to_string(),
            who: crate::approval::who(),
            host: hostname(),
            pid: std::process::id(),
            since: crate::time::rfc3339(crate::time::now_ms()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "run `{}` (started by {} on {}, pid {}, since {})",
            self.run_id, self.who, self.host, self.pid, self.since
        )
    }
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is passed.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown-host".into()
    }
}

/// A held lease on one resource; released when dropped (and by the OS if
/// the process dies).
pub trait Lease: Send + Sync {
    /// Increases every time the resource is leased: written into the
    /// journal with the change, so a stale holder's change can be told
    /// from a current one.
    fn fencing_token(&self) -> u64;
    /// The run that held the resource before this lease, and when it let
    /// go (when it took it, if it died holding it): a run that changes
    /// what another run changed after it started reading would act on a
    /// stale picture.
    fn previous(&self) -> Option<Previous>;
}

/// The lease before this one.
#[derive(Debug, Clone)]
pub struct Previous {
    pub holder: Holder,
    /// Milliseconds since the epoch.
    pub released_ms: u64,
}

/// A resource or incident another run holds.
#[derive(Debug)]
pub struct Held {
    pub what: String,
    pub by: Option<Holder>,
    /// Set when whether it is held could not be found out (the store did
    /// not answer): why.
    pub unknown: Option<String>,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.unknown, &self.by) {
            (Some(why), _) => write!(
                f,
                "{} could not be leased: {why} (is the journal store reachable?)",
                self.what
            ),
            (None, Some(h)) => write!(f, "{} is held by {}", self.what, h.describe()),
            (None, None) => write!(f, "{} is held by another run", self.what),
        }
    }
}

impl std::error::Error for Held {}

/// Where journals and leases are kept.
pub trait Store: Send + Sync {
    /// Starts `holder`'s run of `incident`: refuses while another run of
    /// the incident is unfinished.
    fn start_run(&self, incident: &str, holder: &Holder) -> Result<Journal>;
    /// Reopens an unfinished run to continue it (refused while it runs).
    fn reopen_run(&self, run_id: &str) -> Result<Journal>;
    /// A run's journal lines.
    fn read_run(&self, run_id: &str) -> Result<Vec<Value>>;
    /// Where a run's journal is, for people (a file, a stream).
    fn journal_location(&self, run_id: &str) -> Option<String>;
    /// Whether a process is executing the run right now.
    fn is_running(&self, run_id: &str) -> bool;
    /// The runs of an incident, oldest first.
    fn incident_runs(&self, incident: &str) -> Result<Vec<String>>;
    /// Every run, newest first, at most `limit`.
    fn recent_runs(&self, limit: usize) -> Result<Vec<String>>;
    /// A lease on `resource`, waiting up to `wait` for it.
    fn lease(
        &self,
        resource: &str,
        holder: &Holder,
        wait: Duration,
    ) -> Result<Box<dyn Lease>, Box<Held>>;
}

/// Where one run's journal lines go: a chained file ([`ChainLog`]) or a
/// JetStream subject ([`crate::fleet`]).
pub trait JournalLog: Send + Sync {
    /// Appends one record (an object) as the next chained line; returns
    /// its `seq`. An error means the line was not written.
    fn append(&self, fields: Value) -> Result<u64>;
    /// Where the lines are, for people.
    fn location(&self) -> String;
}

impl JournalLog for ChainLog {
    fn append(&self, fields: Value) -> Result<u64> {
        Ok(ChainLog::append(self, fields)?.1.seq)
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }
}

/// One run's journal, open for appending, held by this process.
pub struct Journal {
    log: Box<dyn JournalLog>,
    pub run_id: String,
    /// Held while this process executes the run (a file lock, a lease).
    _running: Box<dyn Send + Sync>,
}

impl Journal {
    pub fn new(log: Box<dyn JournalLog>, run_id: &str, running: Box<dyn Send + Sync>) -> Self {
        Self {
            log,
            run_id: run_id.to_string(),
            _running: running,
        }
    }

    /// Appends one record; errors are loud (stderr) but do not stop an
    /// incident response already under way.
    pub fn record(&self, event: &str, fields: Value) -> u64 {
        match self.try_record(event, fields) {
            Ok(seq) => seq,
            Err(e) => {
                eprintln!(
                    "warning: could not write the journal `{}`: {e:#}",
                    self.log.location()
                );
                0
            }
        }
    }

    /// Appends one record, or says why it could not: what must be in the
    /// journal before it happens (a change's intent) waits on this.
    pub fn try_record(&self, event: &str, mut fields: Value) -> Result<u64> {
        if let Value::Object(map) = &mut fields {
            map.insert("event".into(), event.into());
            map.insert("run_id".into(), self.run_id.clone().into());
            map.insert(
                "time".into(),
                crate::time::rfc3339_millis(crate::time::now_ms()).into(),
            );
        }
        self.log.append(fields)
    }

    /// Where the journal is, for people.
    pub fn location(&self) -> String {
        self.log.location()
    }
}

/// Why a run of `incident` may not start: `earlier` has not finished
/// (`running`: a process executes it right now).
pub fn incident_taken(
    incident: &str,
    earlier: &str,
    by: Option<Holder>,
    running: bool,
) -> anyhow::Error {
    let who = by
        .as_ref()
        .map(Holder::describe)
        .unwrap_or_else(|| format!("run `{earlier}`"));
    if running {
        anyhow::Error::new(Held {
            what: format!("incident `{incident}`"),
            by,
            unknown: None,
        })
        .context(format!(
            "incident `{incident}` is being handled by {who}, which is still running"
        ))
    } else {
        hinted(
            format!(
                "incident `{incident}` has an unfinished run: {who} did not finish (it crashed, was stopped, or waits for an approval)"
            ),
            format!(
                "continue it with `runbook resume {earlier}` (see what it did with `runbook show {earlier}`); or start over with `--new`"
            ),
        )
    }
}

/// The state directory: `--state-dir`, `RUNBOOK_STATE_DIR`, else
/// `$XDG_STATE_HOME/runbook`, else `~/.local/state/runbook`.
pub fn default_state_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("RUNBOOK_STATE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        return Some(PathBuf::from(d).join("runbook"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/runbook"))
}

/// A change an incident's run applied: what, to what, when.
#[derive(Debug, Clone)]
pub struct OwnChange {
    pub run_id: String,
    pub interface: String,
    pub operation: String,
    pub resource: String,
    /// What the change returned (a rollback's `from` and `to`).
    pub result: Value,
    /// Milliseconds since the epoch: when it was set out (intent) and
    /// when it was applied.
    pub intent_ms: u64,
    pub applied_ms: u64,
}

/// Every change the runs of `incident` applied, from their journals.
pub fn own_changes(store: &dyn Store, incident: &str) -> Vec<OwnChange> {
    let ms = |l: &Value| {
        l["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    let mut out = Vec::new();
    for run in store.incident_runs(incident).unwrap_or_default() {
        let lines = store.read_run(&run).unwrap_or_default();
        for applied in lines.iter().filter(|l| l["event"] == "applied") {
            let Some(intent) = lines
                .iter()
                .find(|l| l["event"] == "intent" && l["seq"] == applied["intent"])
            else {
                continue;
            };
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            out.push(OwnChange {
                run_id: run.clone(),
                interface: text(&intent["interface"]),
                operation: text(&intent["operation"]),
                resource: text(&intent["resource"]),
                result: applied["result"].clone(),
                intent_ms: ms(intent),
                applied_ms: ms(applied),
            });
        }
    }
    out
}

/// Journals and leases in a directory on this machine.
pub struct LocalStore {
    root: PathBuf,
    fsync: bool,
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
    format!("{clean}-{}", &crate::engine::sha256_hex(s.as_bytes())[..12])
}

pub fn is_run_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl LocalStore {
    pub fn open(root: &Path) -> Result<Arc<Self>> {
        Self::with_fsync(root, true)
    }

    /// `fsync`: whether each journal line reaches the disk before `record`
    /// returns (off only to measure what it costs).
    pub fn with_fsync(root: &Path, fsync: bool) -> Result<Arc<Self>> {
        for sub in ["runs", "incidents", "leases"] {
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
            let lines = self.read_run(&earlier).unwrap_or_default();
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
        Ok(Journal::new(
            Box::new(ChainLog::open(&path, self.fsync)?),
            run_id,
            Box::new(running),
        ))
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
        let file = Self::lock_file(&base.with_extension("lock")).map_err(|_| held(None))?;
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
                Err(std::fs::TryLockError::Error(_)) => return Err(held(None)),
            }
        }
        // Held: bump the fencing token, say who holds it, keep who held
        // it before.
        let info = base.with_extension("json");
        let before: Option<Value> = std::fs::read_to_string(&info)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let (token, previous, record) = next_lease(before.as_ref(), holder, resource);
        let _ = write_atomic(&info, &record.to_string());
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
}

/// A lease as every store hands it out: its fencing token and who held
/// the resource before, held while `guard` lives (a file lock, a hold
/// renewed in NATS) and let go when it is dropped.
pub struct Granted<G> {
    pub token: u64,
    pub previous: Option<Previous>,
    pub guard: G,
}

impl<G: Send + Sync> Lease for Granted<G> {
    fn fencing_token(&self) -> u64 {
        self.token
    }

    fn previous(&self) -> Option<Previous> {
        self.previous.clone()
    }
}

/// A local lease's lock file, and the record it writes when let go.
struct FileGuard {
    // Dropped after `drop` below wrote the release: the lock is held
    // until then.
    _file: File,
    info: PathBuf,
    record: Value,
}

impl Drop for FileGuard {
    fn drop(&mut self) {
        self.record["released_ms"] = crate::time::now_ms().into();
        let _ = write_atomic(&self.info, &self.record.to_string());
    }
}

/// The lease on `resource` that `holder` takes after `before` (the last
/// holder's record, if any): its fencing token, who held it before and
/// when they let go, and the record to keep.
pub fn next_lease(
    before: Option<&Value>,
    holder: &Holder,
    resource: &str,
) -> (u64, Option<Previous>, Value) {
    let token = before
        .and_then(|v| v["fencing_token"].as_u64())
        .unwrap_or(0)
        + 1;
    let previous = before.and_then(|v| {
        Some(Previous {
            holder: serde_json::from_value(v.clone()).ok()?,
            released_ms: v["released_ms"]
                .as_u64()
                .or_else(|| v["leased_ms"].as_u64())?,
        })
    });
    let mut record = serde_json::to_value(holder).unwrap_or_default();
    record["fencing_token"] = token.into();
    record["resource"] = resource.into();
    record["leased_ms"] = crate::time::now_ms().into();
    (token, previous, record)
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
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

/// The `run-end` record, if the run finished (and was not resumed after
/// it stopped for an approval).
pub fn finished(lines: &[Value]) -> Option<&Value> {
    lines
        .iter()
        .rev()
        .find(|l| l["event"] == "run-end" || l["event"] == "resume")
        .filter(|l| l["event"] == "run-end")
}

/// The incident a run belongs to by default: the runbook, where it runs,
/// and when the incident started when that is known.
pub fn default_incident(runbook_id: &str, backend: &str, incident_start: Option<&str>) -> String {
    match incident_start {
        Some(t) => format!("{runbook_id}@{backend}@{t}"),
        None => format!("{runbook_id}@{backend}"),
    }
}

/// A mutation as the journal has it, for resuming a run.
#[derive(Debug, Clone)]
pub enum Done {
    /// Applied: what the step was told.
    Applied(Value),
    /// An intent with no result: it may or may not have reached the
    /// backend; `would` is what the step would be told if it did.
    Unknown { would: Value },
}

/// Identifies one mutation of one step: the same call in the same order.
pub type CallKey = (String, String, String, String, usize);

/// What resuming a run needs from its journal.
#[derive(Debug, Default)]
pub struct Replay {
    /// Reports of the steps that ended, in order.
    pub ended: Vec<Value>,
    /// The changes already made or attempted: step, interface, operation,
    /// resource, and which such call in the step it was (0, 1, ...).
    pub mutations: BTreeMap<CallKey, Done>,
    /// Changes applied in this run, counted against `max_mutations`.
    pub applied: usize,
}

impl Replay {
    pub fn from_journal(lines: &[Value]) -> Self {
        let mut replay = Replay::default();
        let mut seen: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
        let mut intents: BTreeMap<u64, CallKey> = BTreeMap::new();
        let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
        for l in lines {
            match l["event"].as_str() {
                Some("step-start") => seen.retain(|k, _| k.0 != s(&l["step"])),
                Some("intent") => {
                    let base = (
                        s(&l["step"]),
                        s(&l["interface"]),
                        s(&l["operation"]),
                        s(&l["resource"]),
                    );
                    let n = seen.entry(base.clone()).or_insert(0);
                    let key = (base.0, base.1, base.2, base.3, *n);
                    *n += 1;
                    if let Some(seq) = l["seq"].as_u64() {
                        intents.insert(seq, key.clone());
                    }
                    replay.mutations.insert(
                        key,
                        Done::Unknown {
                            would: l["would"].clone(),
                        },
                    );
                }
                Some("applied") => {
                    if let Some(key) = l["intent"].as_u64().and_then(|i| intents.get(&i)) {
                        replay
                            .mutations
                            .insert(key.clone(), Done::Applied(l["result"].clone()));
                        replay.applied += 1;
                    }
                }
                Some("failed") => {
                    if let Some(key) = l["intent"].as_u64().and_then(|i| intents.get(&i)) {
                        // A failure that may still have reached the backend
                        // (a timeout) stays unknown; others did nothing.
                        if l["error"] != "timeout" {
                            replay.mutations.remove(key);
                        }
                    }
                }
                Some("step-end") => replay.ended.push(l["report"].clone()),
                // A run that stopped for an approval goes on with the step
                // that waited: it runs again, now approved.
                Some("run-end")
                    if l["status"] == "awaiting-approval"
                        && replay
                            .ended
                            .last()
                            .is_some_and(|r| !r["awaiting_approval"].is_null()) =>
                {
                    replay.ended.pop();
                }
                _ => {}
            }
        }
        replay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_run_blocks_its_incident_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::with_fsync(dir.path(), false).unwrap();
        let first = store.start_run("RB-1@prod", &Holder::me("run-a")).unwrap();
        first.record("run-start", json!({ "holder": Holder::me("run-a") }));
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
            crate::error::hint_of(&err)
                .unwrap()
                .contains("runbook resume run-a"),
            "{err:#}"
        );
        let again = store.reopen_run("run-a").unwrap();
        again.record("run-end", json!({ "status": "resolved" }));
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
        let before = crate::time::now_ms();
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
