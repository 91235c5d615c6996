//! Revision-checked writes that hold on Debian's nats-server 2.9 cluster.
//!
//! A clustered 2.9 stream checks `Nats-Expected-Last-Subject-Sequence`
//! before its replicas agree on a write, not as part of it: updates racing
//! with the same expected revision may all be stored (nats-server#4320,
//! fixed in 2.9.21; measured here: 193 of 200 races of twelve updates had
//! several winners on a three-node 2.9.10 cluster, none on one node). A
//! write to a subject that must not exist yet (expected sequence 0) is
//! checked as the replicas apply it, and one of racing writers wins (none
//! of 400 races had two).
//!
//! So every revision-checked write to the fleet's state goes through a
//! lock per key made of such first writes: `lock.KEY.G` for generations
//! G = 1, 2, ...; the process whose write creates the next generation
//! holds the lock until it marks it released or `LOCK_FOR` passes. Under
//! it the key's revision is read from the stream's leader and compared,
//! and only then written (with the expected revision too). `lockhint.KEY`
//! holds a hint of the latest generation, for finding it quickly.
//! Generations are never deleted: recreating a deleted key takes the
//! racy path. Each write leaves one small message behind.
//!
//! The lock costs seven to eight round trips per write, so two kinds of
//! write go without it: a key's very first write (expected sequence 0,
//! the lock's own kind of write), and a run's hold renewed or let go by
//! its holder while it is live ([`write_held`]: nobody else writes it
//! then). A
//! stream with one replica has no replicas to disagree: its server checks
//! the expected revision as it stores the write (none of the races above
//! had two winners on one node), so there [`Locking::Off`] writes with the
//! expected revision alone (one round trip when the caller has just read
//! the key, else two: read, write). On a cluster
//! the lock stays, whatever the server's version: 2.9.21 fixed the race
//! above, 2.10 (nats-server#5794) the unchecked expected sequence 0 of a
//! first write, and the check is still the leader's alone across a leader
//! change (nats-server#8469). `RUNBOOK_NATS_REVISION_LOCK` says otherwise:
//! `always`, or `off` for a cluster whose servers are known to check it
//! as they apply (not the default: a version is no proof of that).

use crate::timeouts::TIMEOUT;
use anyhow::{Result, anyhow};
use async_nats::jetstream::kv::{self, UpdateErrorKind};
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A lock not released within this is free (its holder died).
const LOCK_FOR: Duration = Duration::from_secs(5);
/// Each operation under the lock; all of them stay well within `LOCK_FOR`.
const STEP: Duration = Duration::from_millis(1500);
/// How long to wait for a lock others hold.
const WAIT_FOR: Duration = Duration::from_secs(10);

/// Whether revision-checked writes go through the per-key lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locking {
    /// Through the lock: a clustered stream, or asked for.
    On,
    /// The expected revision alone: one replica, or asked for.
    Off,
}

impl Locking {
    /// For the fleet's state stream with `replicas` copies, and `forced`
    /// the value of `RUNBOOK_NATS_REVISION_LOCK` (`auto`, the default;
    /// `always`; `off`). Any other value is refused: a typo must not turn
    /// the lock off.
    pub fn choose(replicas: usize, forced: Option<&str>) -> Result<Locking> {
        match forced.map(str::trim).unwrap_or("auto") {
            "" | "auto" if replicas <= 1 => Ok(Locking::Off),
            "" | "auto" | "always" => Ok(Locking::On),
            "off" => Ok(Locking::Off),
            other => Err(runbook_core::error::hinted(
                format!("`RUNBOOK_NATS_REVISION_LOCK` is `{other}`"),
                "set it to `auto` (the lock on clustered streams only), `always` or `off`, or unset it",
            )),
        }
    }
}

/// What to write.
pub enum Write {
    Put(bytes::Bytes),
    Delete,
}

/// Writes `key` if its live revision is still `expected` (`None`: absent
/// or deleted): `Ok(Some(revision))` when written, `Ok(None)` when someone
/// else changed it first.
///
/// `seen_last`: the revision of the key's last message of any kind (0:
/// none), as the caller just read it from the stream's leader and decided
/// `expected` on; `None` when it did not read. The write then carries that
/// revision as the one it expects, so anything written since makes it fail
/// as a changed key would, and the read this function would make again is
/// saved (one round trip fewer per write), except under the lock, where
/// the key must be read once the lock is held.
pub async fn write_if(
    kv: &kv::Store,
    locking: Locking,
    key: &str,
    write: Write,
    expected: Option<u64>,
    seen_last: Option<u64>,
) -> Result<Option<u64>> {
    // A key that has never had a message (a new run's hold and entry, a
    // new incident): its first write, with expected revision 0, is the
    // write the lock itself is made of, checked as the replicas apply it
    // (and on one replica as it is stored). One round trip, or two with
    // the read that found the key new, instead of the lock's seven. A key
    // with any message (a value, a deletion) takes the lock.
    if let (None, Write::Put(bytes), None | Some(0)) = (expected, &write, seen_last) {
        match tokio::time::timeout(STEP, kv.update(key, bytes.clone(), 0)).await {
            Ok(Ok(r)) => return Ok(Some(r)),
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // It has a message: a value (someone wrote first), or a
                // deletion (the path below, which reads it).
                if seen_last.is_some() {
                    return Ok(None);
                }
                let (value, _) = leader_get(kv, key, STEP).await?;
                if value.is_some() {
                    return Ok(None);
                }
            }
            Ok(Err(e)) => return Err(anyhow!("writing `{key}`: {e}")),
            Err(_) => return Err(anyhow!("writing `{key}`: no answer in time")),
        }
    }
    let generation = match locking {
        Locking::On => Some(take_lock(kv, key).await?),
        Locking::Off => None,
    };
    let written = async {
        let last = match (generation, seen_last) {
            // Without the lock the server's check of the expected
            // revision is the whole check: the caller's read is as good
            // as one made here.
            (None, Some(last)) if expected.is_none_or(|r| r == last) => last,
            (None, Some(_)) => return Ok(None),
            _ => {
                let (value, last) = leader_get(kv, key, STEP).await?;
                if value.map(|v| v.1) != expected {
                    return Ok(None);
                }
                last
            }
        };
        let done = match write {
            Write::Put(bytes) => {
                match tokio::time::timeout(STEP, kv.update(key, bytes, last)).await {
                    Ok(Ok(r)) => Some(r),
                    Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => None,
                    Ok(Err(e)) => return Err(anyhow!("writing `{key}`: {e}")),
                    Err(_) => return Err(anyhow!("writing `{key}`: no answer in time")),
                }
            }
            Write::Delete => {
                match tokio::time::timeout(STEP, kv.delete_expect_revision(key, Some(last))).await {
                    Ok(Ok(())) => Some(0),
                    Ok(Err(e)) => return Err(anyhow!("deleting `{key}`: {e}")),
                    Err(_) => return Err(anyhow!("deleting `{key}`: no answer in time")),
                }
            }
        };
        Ok(done)
    }
    .await;
    if let Some(generation) = generation {
        release(kv, key, generation).await;
    }
    written
}

/// Writes `key`, a run's hold (`running.ID`) this process has, while the
/// hold is live by its own clock with a margin and no other write of its
/// own is on the way: a renewal, or letting go. Nobody else writes a run's
/// hold while a live process has it (a taker first reads that it lapsed,
/// and a run is never taken again by its own holder), so no write races
/// this one and the lock has nothing to exclude. It still expects
/// `revision`, the hold's own last write: one round trip instead of the
/// lock's eight.
pub async fn write_held(
    kv: &kv::Store,
    key: &str,
    write: Write,
    revision: u64,
) -> Result<Option<u64>> {
    match write {
        Write::Put(bytes) => {
            match tokio::time::timeout(STEP, kv.update(key, bytes, revision)).await {
                Ok(Ok(r)) => Ok(Some(r)),
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(None),
                Ok(Err(e)) => Err(anyhow!("writing `{key}`: {e}")),
                Err(_) => Err(anyhow!("writing `{key}`: no answer in time")),
            }
        }
        Write::Delete => {
            match tokio::time::timeout(STEP, kv.delete_expect_revision(key, Some(revision))).await {
                Ok(Ok(())) => Ok(Some(0)),
                Ok(Err(e)) => Err(anyhow!("deleting `{key}`: {e}")),
                Err(_) => Err(anyhow!("deleting `{key}`: no answer in time")),
            }
        }
    }
}

/// `key`'s last message as the stream's leader has it (a replica may not
/// have the latest yet): its JSON value and revision when it is a value,
/// `None` when absent or deleted; and the revision of the last message of
/// any kind (0 if none). Every read that decides something reads this,
/// waiting at most `wait`.
pub async fn leader_get(
    kv: &kv::Store,
    key: &str,
    wait: Duration,
) -> Result<(Option<(Value, u64)>, u64)> {
    let subject = format!("$KV.{}.{key}", kv.name);
    match tokio::time::timeout(wait, kv.stream.get_last_raw_message_by_subject(&subject)).await {
        Ok(Ok(m)) => {
            let deleted = m
                .headers
                .get("KV-Operation")
                .is_some_and(|op| op.as_str() == "DEL" || op.as_str() == "PURGE");
            let value = (!deleted).then(|| {
                (
                    serde_json::from_slice(&m.payload).unwrap_or(Value::Null),
                    m.sequence,
                )
            });
            Ok((value, m.sequence))
        }
        Ok(Err(e)) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => Ok((None, 0)),
        Ok(Err(e)) => Err(anyhow!("reading `{key}` from the stream leader: {e}")),
        Err(_) => Err(anyhow!(
            "reading `{key}` from the stream leader: no answer in time"
        )),
    }
}

/// Generation `g` of `key`'s lock. Hints are under another prefix, so no
/// key's hint is another key's generation.
fn lock_key(key: &str, generation: u64) -> String {
    format!("lock.{key}.{generation}")
}

fn hint_key(key: &str) -> String {
    format!("lockhint.{key}")
}

/// Whether generation `g` of `key`'s lock has been written (by anyone).
async fn exists(kv: &kv::Store, key: &str, g: u64) -> Result<Option<Value>> {
    let e = tokio::time::timeout(TIMEOUT, kv.entry(lock_key(key, g)))
        .await
        .map_err(|_| anyhow!("reading the lock of `{key}`: no answer in time"))?
        .map_err(|e| anyhow!("reading the lock of `{key}`: {e}"))?;
    Ok(e.map(|e| serde_json::from_slice(&e.value).unwrap_or(Value::Null)))
}

/// Takes `key`'s lock: the next generation, once the latest is released
/// or has lapsed. Returns that generation.
async fn take_lock(kv: &kv::Store, key: &str) -> Result<u64> {
    let until = Instant::now() + WAIT_FOR;
    let hint_key = hint_key(key);
    for attempt in 0..10_000u64 {
        if Instant::now() > until {
            return Err(anyhow!(
                "`{key}` stayed locked by another process for {} s",
                WAIT_FOR.as_secs()
            ));
        }
        if attempt > 0 {
            let jitter = runbook_core::time::now_ms() % 10;
            tokio::time::sleep(Duration::from_millis(3 + jitter + attempt.min(20))).await;
        }
        let hint = tokio::time::timeout(TIMEOUT, kv.get(&hint_key))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["g"].as_u64())
            .unwrap_or(0);
        // The hint may lag: the latest generation is the last that exists.
        let mut latest = hint;
        let mut record = None;
        for _ in 0..1000 {
            match exists(kv, key, latest + 1).await? {
                Some(r) => {
                    latest += 1;
                    record = Some(r);
                }
                None => break,
            }
        }
        if record.is_none() && latest > 0 {
            record = exists(kv, key, latest).await?;
        }
        if let Some(r) = &record {
            let released = r["released"].as_bool().unwrap_or(false);
            let lapsed = r["expires_ms"].as_u64().unwrap_or(0) <= runbook_core::time::now_ms();
            if !released && !lapsed {
                continue;
            }
        }
        let next = latest + 1;
        let mine = json!({
            "pid": std::process::id(),
            "host": runbook_core::whoami::hostname(),
            "expires_ms": runbook_core::time::now_ms() + LOCK_FOR.as_millis() as u64,
        });
        // Expected revision 0: stored only if the subject has no message.
        match tokio::time::timeout(
            STEP,
            kv.update(lock_key(key, next), bytes::Bytes::from(mine.to_string()), 0),
        )
        .await
        {
            Ok(Ok(_)) => {
                let _ = tokio::time::timeout(
                    STEP,
                    kv.put(
                        &hint_key,
                        bytes::Bytes::from(json!({ "g": next }).to_string()),
                    ),
                )
                .await;
                return Ok(next);
            }
            Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => continue,
            Ok(Err(e)) => return Err(anyhow!("locking `{key}`: {e}")),
            // It may have been stored: if so, it lapses within `LOCK_FOR`.
            Err(_) => return Err(anyhow!("locking `{key}`: no answer in time")),
        }
    }
    Err(anyhow!("`{key}`: its lock kept changing"))
}

/// Marks generation `g` released (only its holder writes it; should this
/// fail, it lapses within `LOCK_FOR`).
async fn release(kv: &kv::Store, key: &str, g: u64) {
    let done = bytes::Bytes::from(json!({ "released": true }).to_string());
    let _ = tokio::time::timeout(STEP, kv.put(lock_key(key, g), done)).await;
}

#[cfg(test)]
mod tests {
    use super::Locking;

    #[test]
    fn the_lock_is_kept_on_a_cluster_unless_turned_off_by_name() {
        for (replicas, forced, want) in [
            (1, None, Locking::Off),
            (3, None, Locking::On),
            (1, Some("auto"), Locking::Off),
            (3, Some(" auto "), Locking::On),
            (1, Some("always"), Locking::On),
            (3, Some("always"), Locking::On),
            (3, Some("off"), Locking::Off),
        ] {
            assert_eq!(
                Locking::choose(replicas, forced).unwrap(),
                want,
                "{replicas} {forced:?}"
            );
        }
        for typo in ["on", "1", "true", "never", "Off"] {
            let e = Locking::choose(1, Some(typo)).unwrap_err();
            assert!(format!("{e:#}").contains(&format!("`{typo}`")), "{e:#}");
        }
    }
}
