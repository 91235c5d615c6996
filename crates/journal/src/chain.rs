//! Append-only JSON lines, each chained to the one before it: the format
//! of run journals and of the audit log. A line is a JSON object whose
//! first fields are `seq` (1, 2, 3, ...) and `prev` (the `hash` of the line
//! before, 64 zeros for the first) and whose last field is `hash`, the
//! sha256 of the line's bytes up to `,"hash":`. Editing, removing or
//! reordering a line breaks the chain at that line, and
//! [`verify`] names it. (Cutting lines off the end leaves a valid shorter
//! chain: a journal's missing `run-end` is how that shows.)
//!
//! Writers append under an exclusive lock on the file and continue from its
//! last line, so several processes may share one file (the audit log);
//! with `fsync`, a line is on disk before `append` returns. A line appended
//! with [`ChainLog::append_later`] reaches the file (a killed process loses
//! nothing) but the disk only with the next synced line, whose `fsync`
//! covers every byte of the file written before it: a machine that stops
//! loses at most the lines after the last synced one.

use anyhow::{Context, Result};
use serde_json::{Map, Value};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line read back when continuing a chain or verifying one.
const MAX_LINE: usize = 4 * 1024 * 1024;

pub struct ChainLog {
    file: Mutex<Writer>,
    path: PathBuf,
    fsync: bool,
}

/// The file and what this writer knows of it.
struct Writer {
    file: File,
    /// The head as this writer last left it, with the file's length then:
    /// unchanged length means nobody else appended, and the tail need not
    /// be read again.
    known: Option<(u64, Head)>,
    /// The events of lines written since the last sync (their `fsync` is
    /// the next synced line's).
    unsynced: Vec<String>,
}

/// Where a chain stands: the last line's `seq` and `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl ChainLog {
    /// Opens `path` for appending (created 0600 if missing).
    pub fn open(path: &Path, fsync: bool) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("opening `{}`", path.display()))?;
        Ok(Self {
            file: Mutex::new(Writer {
                file,
                known: None,
                unsynced: Vec::new(),
            }),
            path: path.to_path_buf(),
            fsync,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `fields` (an object) as the next line, on disk before it
    /// returns (with `fsync`, and every line before it too); returns the
    /// bytes written and the new head.
    pub fn append(&self, fields: Value) -> Result<(usize, Head)> {
        self.write(fields, true)
    }

    /// Appends `fields` as the next line, written to the file but synced
    /// only with the next [`ChainLog::append`].
    pub fn append_later(&self, fields: Value) -> Result<(usize, Head)> {
        self.write(fields, false)
    }

    fn write(&self, fields: Value, sync: bool) -> Result<(usize, Head)> {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let Writer {
            file,
            known,
            unsynced,
        } = &mut *guard;
        file.lock()
            .with_context(|| format!("locking `{}`", self.path.display()))?;
        let written = (|| {
            let len = file.metadata()?.len();
            let head = match known.as_ref() {
                Some((at, head)) if *at == len => Some(head.clone()),
                _ => last_head(file)
                    .with_context(|| format!("reading the end of `{}`", self.path.display()))?,
            };
            let event = fields["event"].as_str().unwrap_or_default().to_string();
            let (line, head) = seal(head.as_ref(), fields);
            // Faults of the write itself (tests only): half the line
            // reaches the file and the write fails (a full disk), or the
            // whole line does and its fsync fails.
            if let Some(why) = crate::failpoint(&format!("torn-{event}")) {
                (&*file).write_all(&line.as_bytes()[..line.len() / 2])?;
                anyhow::bail!("failpoint `torn-{event}` ({why}): half the line was written");
            }
            (&*file)
                .write_all(line.as_bytes())
                .with_context(|| format!("writing `{}`", self.path.display()))?;
            *known = Some((len + line.len() as u64, head.clone()));
            if !sync {
                unsynced.push(event);
                return Ok((line.len(), head));
            }
            // This sync is also that of the lines written unsynced before.
            for e in unsynced.iter().chain([&event]) {
                if let Some(why) = crate::failpoint(&format!("fsync-{e}")) {
                    anyhow::bail!(
                        "failpoint `fsync-{e}` ({why}): syncing `{}`",
                        self.path.display()
                    );
                }
            }
            if self.fsync {
                file.sync_data()
                    .with_context(|| format!("syncing `{}`", self.path.display()))?;
            }
            unsynced.clear();
            Ok((line.len(), head))
        })();
        let _ = file.unlock();
        written
    }
}

/// The line for `fields` after `head`, newline included, and its head.
pub fn seal(head: Option<&Head>, fields: Value) -> (String, Head) {
    let seq = head.map_or(1, |h| h.seq + 1);
    let prev = head.map_or(GENESIS.to_string(), |h| h.hash.clone());
    let mut object = Map::new();
    object.insert("seq".into(), seq.into());
    object.insert("prev".into(), prev.into());
    if let Value::Object(rest) = fields {
        for (k, v) in rest {
            if k != "seq" && k != "prev" && k != "hash" {
                object.insert(k, v);
            }
        }
    }
    let body = serde_json::to_string(&Value::Object(object)).unwrap_or_default();
    let open = &body[..body.len() - 1];
    let hash = runbook_core::hash::sha256_hex(open.as_bytes());
    let line = format!("{open},\"hash\":\"{hash}\"}}\n");
    (line, Head { seq, hash })
}

/// The head of the chain in `file` (read from its end: as little as holds
/// the last line), `None` if empty.
fn last_head(file: &File) -> Result<Option<Head>> {
    let mut f = file;
    let len = f.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut take = len.min(64 * 1024);
    let tail = loop {
        f.seek(SeekFrom::Start(len - take))?;
        let mut tail = Vec::with_capacity(take as usize);
        (&mut f).take(take).read_to_end(&mut tail)?;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if body.contains(&b'\n') || take == len || take >= MAX_LINE as u64 {
            break tail;
        }
        take = (take * 4).min(len).min(MAX_LINE as u64);
    };
    let text = String::from_utf8_lossy(&tail);
    let last = text
        .trim_end_matches('\n')
        .rsplit('\n')
        .next()
        .unwrap_or_default();
    let (seq, hash) = parse_line(last).map_err(|why| anyhow::anyhow!("its last line: {why}"))?;
    Ok(Some(Head { seq, hash }))
}

/// A line's `seq` and its own `hash`, checked against its bytes.
fn parse_line(line: &str) -> Result<(u64, String), String> {
    let at = line
        .rfind(",\"hash\":\"")
        .ok_or("no `hash` field at the end")?;
    let hash = line[at + 9..]
        .strip_suffix("\"}")
        .ok_or("the line does not end with its `hash`")?;
    if runbook_core::hash::sha256_hex(&line.as_bytes()[..at]) != hash {
        return Err("its content does not match its `hash`".into());
    }
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let seq = value["seq"].as_u64().ok_or("no `seq`")?;
    Ok((seq, hash.to_string()))
}

/// Where a chain is broken.
#[derive(Debug, PartialEq, Eq)]
pub struct Broken {
    /// 1-based line number in the file.
    pub line: usize,
    pub why: String,
}

/// Checks every line of `path`; returns the number of lines, or the first
/// line that was altered, or follows a line that was removed or reordered.
pub fn verify(path: &Path) -> Result<Result<usize, Broken>> {
    let text = runbook_core::files::read_bytes(path, "log", 1 << 30)?;
    Ok(verify_bytes(&text))
}

pub fn verify_bytes(text: &[u8]) -> Result<usize, Broken> {
    let mut prev = GENESIS.to_string();
    let mut expected = 1u64;
    let mut count = 0;
    for (i, raw) in text.split(|b| *b == b'\n').enumerate() {
        if raw.is_empty() {
            continue;
        }
        let line = i + 1;
        let broken = |why: String| Broken { line, why };
        let text = std::str::from_utf8(raw).map_err(|_| broken("not UTF-8".into()))?;
        let (seq, hash) = parse_line(text).map_err(|why| broken(format!("altered: {why}")))?;
        let value: Value = serde_json::from_str(text).map_err(|e| broken(e.to_string()))?;
        if value["prev"].as_str() != Some(prev.as_str()) {
            return Err(broken(
                "does not follow the line before it (`prev` is not that line's hash): a line before it was altered, removed or reordered".to_string(),
            ));
        }
        if seq != expected {
            return Err(broken(format!(
                "has `seq` {seq} where {expected} belongs: lines were removed or reordered"
            )));
        }
        prev = hash;
        expected += 1;
        count += 1;
    }
    Ok(count)
}

/// A journal read back to be continued: its verified length, and a torn
/// last line (the bytes after the last newline, which do not make a
/// whole line) if there is one.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// Whole lines, each verified, in one chain.
    pub lines: usize,
    /// Bytes up to and including the last whole line's newline.
    pub whole: usize,
    /// What follows them: a line whose write never finished.
    pub torn: Option<Vec<u8>>,
}

/// Checks a journal before it is continued: every whole line must be in
/// one unbroken chain. The only damage accepted is a torn last line: the
/// bytes after the last newline, when they are not a whole sealed line.
/// That is what a crash (or a full disk) leaves while a line is written,
/// and since that write never returned, nothing was done on its account;
/// the caller drops it (and says so). Anything else is [`Broken`].
pub fn check_to_continue(text: &[u8]) -> Result<Checked, Broken> {
    let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let tail = &text[whole..];
    let torn = match tail.is_empty() {
        true => None,
        // A line that is whole but lost its newline was not acknowledged
        // either: it goes the same way.
        false => Some(tail.to_vec()),
    };
    let lines = verify_bytes(&text[..whole])?;
    Ok(Checked { lines, whole, torn })
}

/// A journal that fails its check: altered, not crashed.
#[derive(Debug)]
pub struct Untrusted {
    /// Where the journal is.
    pub location: String,
    pub broken: Broken,
}

impl Untrusted {
    /// Whether `e` is, or was caused by, a journal that failed its check.
    pub fn in_chain(e: &anyhow::Error) -> bool {
        e.chain().any(|c| c.downcast_ref::<Untrusted>().is_some())
    }
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the journal `{}` was altered: line {} {}; nothing was resumed",
            self.location, self.broken.line, self.broken.why
        )
    }
}

impl std::error::Error for Untrusted {}

/// Every line of a chained file as JSON (unverified; see [`verify`]).
pub fn read(path: &Path) -> Result<Vec<Value>> {
    let text = runbook_core::files::read_bytes(path, "journal", 1 << 30)?;
    Ok(text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(n: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let log = ChainLog::open(&path, false).unwrap();
        for i in 0..n {
            log.append(json!({ "event": "e", "i": i })).unwrap();
        }
        (dir, path)
    }

    #[test]
    fn a_chain_verifies_and_continues_across_writers() {
        let (_d, path) = lines(3);
        // A second writer continues the same chain.
        ChainLog::open(&path, true)
            .unwrap()
            .append(json!({ "event": "more" }))
            .unwrap();
        assert_eq!(verify(&path).unwrap(), Ok(4));
        let all = read(&path).unwrap();
        assert_eq!(all[3]["seq"], 4);
        assert_eq!(all[3]["prev"], all[2]["hash"]);
    }

    /// A line appended to wait is in the file at once (a killed process
    /// loses nothing) and is synced by the next durable line: a failed
    /// sync of the line that waited is that line's error, and the log's
    /// chain holds both lines either way. (Needs the failpoints, on in
    /// the workspace's `cargo test`.)
    #[cfg(feature = "failpoints")]
    #[test]
    fn a_line_that_waits_is_written_now_and_synced_with_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let log = ChainLog::open(&path, true).unwrap();
        log.append(json!({ "event": "first" })).unwrap();
        crate::set_failpoint("fsync-gc-waits", "return(disk gone)").unwrap();
        let waited = log.append_later(json!({ "event": "gc-waits" }));
        assert_eq!(waited.unwrap().1.seq, 2, "no sync yet, so no error");
        assert_eq!(verify(&path).unwrap(), Ok(2), "written before any sync");
        let err = log
            .append(json!({ "event": "gc-durable" }))
            .unwrap_err()
            .to_string();
        crate::clear_failpoint("fsync-gc-waits");
        assert!(
            err.contains("failpoint `fsync-gc-waits` (disk gone)"),
            "{err}"
        );
        // Nothing waits once a sync went through.
        log.append_later(json!({ "event": "gc-waits" })).unwrap();
        log.append(json!({ "event": "gc-durable" })).unwrap();
        assert!(log.file.lock().unwrap().unsynced.is_empty());
        assert_eq!(verify(&path).unwrap(), Ok(5));
    }

    #[test]
    fn editing_removing_or_swapping_a_line_is_named() {
        let (_d, path) = lines(5);
        let original = std::fs::read_to_string(&path).unwrap();
        let ls: Vec<&str> = original.lines().collect();
        let write = |l: Vec<&str>| std::fs::write(&path, l.join("\n") + "\n").unwrap();
        // Edited: line 3 no longer matches its own hash.
        let edited = ls[2].replace("\"i\":2", "\"i\":9");
        write(vec![ls[0], ls[1], &edited, ls[3], ls[4]]);
        let b = verify(&path).unwrap().unwrap_err();
        assert_eq!(b.line, 3, "{b:?}");
        assert!(b.why.starts_with("altered"), "{b:?}");
        // Removed: line 3 (formerly 4) does not follow line 2.
        write(vec![ls[0], ls[1], ls[3], ls[4]]);
        assert_eq!(verify(&path).unwrap().unwrap_err().line, 3);
        // Swapped.
        write(vec![ls[0], ls[2], ls[1], ls[3], ls[4]]);
        assert_eq!(verify(&path).unwrap().unwrap_err().line, 2);
        // Restored: fine again.
        std::fs::write(&path, &original).unwrap();
        assert_eq!(verify(&path).unwrap(), Ok(5));
    }

    #[test]
    fn only_a_torn_last_line_is_accepted_when_continuing() {
        let (_d, path) = lines(3);
        let original = std::fs::read(&path).unwrap();
        assert_eq!(
            check_to_continue(&original).unwrap(),
            Checked {
                lines: 3,
                whole: original.len(),
                torn: None
            }
        );
        // A crash while the fourth line was written.
        let mut torn = original.clone();
        torn.extend_from_slice(b"{\"seq\":4,\"prev\":\"ab");
        let c = check_to_continue(&torn).unwrap();
        assert_eq!((c.lines, c.whole), (3, original.len()));
        assert_eq!(c.torn.unwrap(), b"{\"seq\":4,\"prev\":\"ab");
        // A line altered, duplicated or removed in the middle is refused.
        let text = String::from_utf8(original).unwrap();
        let ls: Vec<&str> = text.lines().collect();
        for bad in [
            vec![ls[0], ls[1], ls[1], ls[2]],
            vec![ls[0], ls[2]],
            vec![ls[1], ls[0], ls[2]],
        ] {
            let bytes = (bad.join("\n") + "\n").into_bytes();
            assert!(check_to_continue(&bytes).is_err(), "{bad:?}");
        }
        let edited = text.replacen("\"i\":1", "\"i\":7", 1);
        assert_eq!(check_to_continue(edited.as_bytes()).unwrap_err().line, 2);
    }

    #[test]
    fn concurrent_writers_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let log = ChainLog::open(&path, false).unwrap();
                    for i in 0..25 {
                        log.append(json!({ "w": w, "i": i })).unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!(verify(&path).unwrap(), Ok(100));
    }
}
