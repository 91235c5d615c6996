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
    renew: tokio::task::JoinHandle<()>,
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
    ) -> Self {
        let shared = Arc::new(Mutex::new((value, revision)));
        let lost = Arc::new(AtomicBool::new(false));
        let renew = fleet.spawn({
            let (fleet, key, shared, lost) =
                (fleet.clone(), key.clone(), shared.clone(), lost.clone());
            async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let (mut value, revision) =
                        shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    value["expires_ms"] = expiry().into();
                    let bytes = bytes::Bytes::from(value.to_string());
                    let renewed = write_if(&fleet.state, &key, Write::Put(bytes), Some(revision));
                    match tokio::time::timeout(TIMEOUT, renewed).await {
                        Ok(Ok(Some(r))) => {
                            *shared.lock().unwrap_or_else(|e| e.into_inner()) = (value, r)
                        }
                        Ok(Ok(None)) => {
                            tracing::warn!(key, "lost a hold: another process took it");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        // NATS unreachable for a moment: try again; the
                        // hold lapses if it stays away.
                        _ => {}
                    }
                }
            }
        });
        Self {
            fleet: fleet.clone(),
            key,
            value: shared,
            lost,
            renew,
            delete,
        }
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
        let done = self.fleet.wait("letting go of a hold", async move {
            let write = if delete {
                Write::Delete
            } else {
                value["released_ms"] = runbook_core::time::now_ms().into();
                Write::Put(bytes::Bytes::from(value.to_string()))
            };
            write_if(&kv, &key, write, Some(revision)).await.map(|_| ())
        });
        if let Err(e) = done {
            // It lapses on its own within `HOLD_FOR`.
            tracing::warn!(key = self.key, "could not let go of a hold: {e:#}");
        }
    }
}
