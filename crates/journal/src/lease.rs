//! Leases on what a run changes: exclusive, with a fencing token that
//! grows with every holder (Kleppmann) and who held the resource before,
//! so a change decided on a stale picture can be refused.

use crate::holder::Holder;
use serde_json::Value;

/// A held lease on one resource; released when dropped (and by the OS if
/// the process dies).
pub trait Lease: Send + Sync {
    /// Increases every time the resource is leased: written into the
    /// journal with the change, so a stale holder's change can be told
    /// from a current one.
    fn fencing_token(&self) -> u64;
    /// The run that held the resource before this lease, and when it let
    /// go (now, if that was never recorded: it died holding it, or its
    /// release could not be written): a run that changes
    /// what another run changed after it started reading would act on a
    /// stale picture.
    fn previous(&self) -> Option<Previous>;
    /// Why this lease can no longer be relied on (its hold could not be
    /// renewed in time, or another process took it), if so: nothing is
    /// changed under it.
    fn lost(&self) -> Option<String> {
        None
    }
}

/// The lease before this one.
#[derive(Debug, Clone)]
pub struct Previous {
    pub holder: Holder,
    /// Milliseconds since the epoch.
    pub released_ms: u64,
}

/// A lease as every store hands it out: its fencing token and who held
/// the resource before, held while `guard` lives (a file lock, a hold
/// renewed in NATS) and let go when it is dropped.
pub struct Granted<G> {
    pub token: u64,
    pub previous: Option<Previous>,
    pub guard: G,
}

/// What a lease's guard knows about whether it is still held.
pub trait Guard: Send + Sync {
    /// Why it is not, if so.
    fn lost(&self) -> Option<String> {
        None
    }
}

impl<G: Guard> Lease for Granted<G> {
    fn fencing_token(&self) -> u64 {
        self.token
    }

    fn previous(&self) -> Option<Previous> {
        self.previous.clone()
    }

    fn lost(&self) -> Option<String> {
        self.guard.lost()
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
    let now = runbook_core::time::now_ms();
    // No release time: the holder died holding it, or could not record
    // letting go. Either way it may have changed the resource until now.
    let previous = before.and_then(|v| {
        Some(Previous {
            holder: serde_json::from_value(v.clone()).ok()?,
            released_ms: v["released_ms"].as_u64().unwrap_or(now),
        })
    });
    let mut record = serde_json::to_value(holder).unwrap_or_default();
    record["fencing_token"] = token.into();
    record["resource"] = resource.into();
    record["leased_ms"] = now.into();
    (token, previous, record)
}
