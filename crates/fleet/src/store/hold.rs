//! A hold: a key in the fleet's state a live process keeps renewed (the
//! run it executes, a lease on a resource). A process that dies stops
//! renewing, and what it held is free after `HOLD_FOR`.

use super::*;

/// A key this process holds and renews until dropped.
pub(super) struct Hold {
    fleet: Arc<Fleet>,
    key: String,
    value: Arc<Mutex<(Value, u64)>>,
    /// Set when a renewal found the key changed: someone else has it now.
    pub(super) lost: Arc<AtomicBool>,
    /// When the hold last reached NATS (taken or renewed): it lapses
    /// `HOLD_FOR` after that whatever this process believes, so it is
    /// relied on only until `HOLD_FOR - RELY_MARGIN` after it.
    confirmed: Arc<Mutex<Instant>>,
    renew: tokio::task::JoinHandle<()>,
    /// A renewal is on its way (sent, not answered): letting go then takes
    /// the lock, since both writes would expect the same revision.
    renewing: Arc<AtomicBool>,
    /// Let go by deleting the key (a run), else by marking it released (a
    /// lease: the next holder learns who held it and when it let go).
    delete: bool,
}

impl Hold {
    pub(super) fn start(
        fleet: &Arc<Fleet>,
        key: String,
        value: Value,
        revision: u64,
        delete: bool,
        // When the write that took it set out (before its expiry was set).
        taken: Instant,
    ) -> Self {
        let shared = Arc::new(Mutex::new((value, revision)));
        let lost = Arc::new(AtomicBool::new(false));
        // Counted from before the write that took it: never later than
        // the expiry it wrote.
        let confirmed = Arc::new(Mutex::new(taken));
        let renewing = Arc::new(AtomicBool::new(false));
        let renew = fleet.spawn({
            let (fleet, key, shared, lost, confirmed, renewing) = (
                fleet.clone(),
                key.clone(),
                shared.clone(),
                lost.clone(),
                confirmed.clone(),
                renewing.clone(),
            );
            async move {
                // Renewals whose answer never came (timed out, or NATS
                // failed mid-way): each may have landed all the same.
                let mut unanswered: Vec<(Value, Instant)> = Vec::new();
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let (mut value, revision) =
                        shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let sent = Instant::now();
                    value["expires_ms"] = expiry().into();
                    let bytes = bytes::Bytes::from(value.to_string());
                    let renewed = async {
                        if let Some(why) = runbook_journal::failpoint("nats-renew") {
                            if why == "hang" {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            return Err(anyhow!("failpoint `nats-renew` ({why})"));
                        }
                        let put = Write::Put(bytes);
                        // A run's hold renewed on time, with nothing of
                        // ours unanswered: without the lock.
                        let live = delete
                            && unanswered.is_empty()
                            && unlocked(*confirmed.lock().unwrap_or_else(|e| e.into_inner()));
                        let written = if live {
                            write_held(&fleet.state, &key, put, revision).await
                        } else {
                            let locking = fleet.locking;
                            write_if(&fleet.state, locking, &key, put, Some(revision), None).await
                        };
                        if let Ok(Some(_)) = &written
                            && let Some(why) = runbook_journal::failpoint("nats-renewed")
                        {
                            return Err(anyhow!(
                                "failpoint `nats-renewed` ({why}): the renewal landed, its answer was lost"
                            ));
                        }
                        written
                    };
                    renewing.store(true, Ordering::SeqCst);
                    let answer = tokio::time::timeout(TIMEOUT, renewed).await;
                    renewing.store(false, Ordering::SeqCst);
                    match answer {
                        Ok(Ok(Some(r))) => {
                            *shared.lock().unwrap_or_else(|e| e.into_inner()) = (value, r);
                            *confirmed.lock().unwrap_or_else(|e| e.into_inner()) = sent;
                            unanswered.clear();
                        }
                        Ok(Ok(None)) => {
                            // The key moved on: by one of our own renewals
                            // that landed unanswered (it then holds exactly
                            // what that renewal wrote), or by someone else.
                            match landed(&fleet, &key, &unanswered).await {
                                Some((mine, r, at)) => {
                                    tracing::info!(key, "a renewal that timed out had landed");
                                    *shared.lock().unwrap_or_else(|e| e.into_inner()) = (mine, r);
                                    *confirmed.lock().unwrap_or_else(|e| e.into_inner()) = at;
                                    unanswered.clear();
                                }
                                None => {
                                    tracing::warn!(key, "lost a hold: another process took it");
                                    lost.store(true, Ordering::SeqCst);
                                    return;
                                }
                            }
                        }
                        // NATS unreachable for a moment: try again; the
                        // hold lapses if it stays away, and `lost` says so
                        // before it does. A renewal that timed out may
                        // still land: it carries the revision it expects,
                        // so it lands only if nobody took the key, and the
                        // next renewal recognises it.
                        Ok(Err(e)) => {
                            tracing::warn!(key, "renewing a hold: {e:#}");
                            unanswered.push((value, sent));
                        }
                        Err(_) => {
                            tracing::warn!(key, "renewing a hold timed out");
                            unanswered.push((value, sent));
                        }
                    }
                    // Only renewals within one hold's time can matter.
                    let keep = (HOLD_FOR.as_secs() / RENEW_EVERY.as_secs().max(1) + 1) as usize;
                    if unanswered.len() > keep {
                        unanswered.remove(0);
                    }
                }
            }
        });
        Self {
            fleet: fleet.clone(),
            key,
            value: shared,
            lost,
            confirmed,
            renew,
            renewing,
            delete,
        }
    }

    /// Why this hold can no longer be relied on, if so.
    pub(super) fn lost_why(&self) -> Option<String> {
        if self.lost.load(Ordering::SeqCst) {
            return Some("was taken over by another process".into());
        }
        let confirmed = *self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        let age = confirmed.elapsed();
        (!relied_on(confirmed)).then(|| {
            format!(
                "could not be renewed for {} s (NATS did not answer) and lapses after {} s",
                age.as_secs(),
                HOLD_FOR.as_secs()
            )
        })
    }
}

/// The renewal among `unanswered` that `key` now holds, with the key's
/// revision and when that renewal set out; `None` when the key holds
/// something else (or cannot be read: then it counts as lost, which stops
/// changes rather than risking one).
async fn landed(
    fleet: &Fleet,
    key: &str,
    unanswered: &[(Value, Instant)],
) -> Option<(Value, u64, Instant)> {
    if unanswered.is_empty() {
        return None;
    }
    let (now, revision) = crate::nats::read_key(&fleet.state, key, "reading a hold back")
        .await
        .ok()?;
    let revision = revision?;
    unanswered
        .iter()
        .rfind(|(v, _)| *v == now)
        .map(|(v, at)| (v.clone(), revision, *at))
}

/// How long before a hold lapses this process stops relying on it: a
/// change started then still has this long to reach its backend.
const RELY_MARGIN: Duration = Duration::from_secs(5);

/// Whether a hold last confirmed (taken or renewed) at `confirmed` is
/// still relied on: its lapse is more than `RELY_MARGIN` away, so no other
/// process (its clock within a few seconds of ours) takes it yet.
fn relied_on(confirmed: Instant) -> bool {
    confirmed.elapsed() + RELY_MARGIN < HOLD_FOR
}

/// Whether a run's hold confirmed at `confirmed` may be written without
/// the lock ([`write_held`]): taken or renewed on time, so its lapse is
/// twice `RELY_MARGIN` away and no write of ours can still be on its way
/// when another process could take it. Later (renewals late or
/// unanswered: NATS struggling) the lock decides.
fn unlocked(confirmed: Instant) -> bool {
    confirmed.elapsed() + 2 * RELY_MARGIN < HOLD_FOR
}

impl runbook_journal::lease::Guard for Hold {
    fn lost(&self) -> Option<String> {
        self.lost_why()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.renew.abort();
        if self.lost.load(Ordering::SeqCst) {
            return;
        }
        let (mut value, revision) = self.value.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let (kv, key, delete) = (self.fleet.state.clone(), self.key.clone(), self.delete);
        let locking = self.fleet.locking;
        // A run's hold, still ours for a while and no renewal of ours on
        // its way: nobody else writes it, no lock needed. (Not a lease: a
        // run may take its own lease again, a second writer of the key.)
        let confirmed = *self.confirmed.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.delete && unlocked(confirmed) && !self.renewing.load(Ordering::SeqCst);
        let done = injected("nats-release").and_then(|()| {
            self.fleet.wait("letting go of a hold", async move {
                let write = if delete {
                    Write::Delete
                } else {
                    value["released_ms"] = runbook_core::time::now_ms().into();
                    Write::Put(bytes::Bytes::from(value.to_string()))
                };
                match live {
                    true => write_held(&kv, &key, write, revision).await,
                    false => write_if(&kv, locking, &key, write, Some(revision), None).await,
                }
                .map(|_| ())
            })
        });
        if let Err(e) = done {
            // It lapses on its own within `HOLD_FOR`.
            tracing::warn!(key = self.key, "could not let go of a hold: {e:#}");
        }
    }
}
