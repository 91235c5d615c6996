//! What a worker has done: the counters behind `/metrics` and its last
//! log line.

use std::sync::atomic::AtomicU64;

/// What a worker has done, for `/metrics` and its last log line.
#[derive(Debug, Default)]
pub struct Counters {
    pub in_flight: AtomicU64,
    pub completed: AtomicU64,
    pub redelivered: AtomicU64,
    pub parked: AtomicU64,
    pub escalated: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub handed_back: AtomicU64,
}

impl Counters {
    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            ("in_flight", "runs executing now", &self.in_flight),
            (
                "completed",
                "runs that ended (resolved, escalated, failed, blocked)",
                &self.completed,
            ),
            (
                "redelivered",
                "requests this worker got after another delivery",
                &self.redelivered,
            ),
            ("parked", "runs parked for an approval", &self.parked),
            (
                "escalated",
                "parked runs escalated after their approval timeout",
                &self.escalated,
            ),
            (
                "duplicates",
                "requests for incidents already handled or parked",
                &self.duplicates,
            ),
            (
                "failed",
                "requests that could not be run (bad input, unreadable files)",
                &self.failed,
            ),
            (
                "handed_back",
                "runs handed back at shutdown",
                &self.handed_back,
            ),
        ] {
            crate::health::metric(
                &mut out,
                "runbook_worker",
                name,
                help,
                v,
                name != "in_flight",
            );
        }
        out
    }
}
