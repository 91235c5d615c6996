//! Counts of recent changes, as a store keeps them
//! (`runbook_journal::recent`) and policies read them (`context.recent`).

use serde::Serialize;

/// Changes over the sliding windows that end now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Window {
    pub hour: u64,
    pub day: u64,
}

/// The counts a policy reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recent {
    /// Of this resource, by any runbook.
    pub resource: Window,
    /// By this runbook, of any resource.
    pub runbook: Window,
}
