//! What makes a run's changes durable: its journal, the store where
//! leases are taken, what a resumed run already did, and the run's
//! mutation budget. The mutation protocol (`crate::mutation`) uses them.

use crate::bindings::Error;
use runbook_core::approval::{Decision, Verdict};
use runbook_core::grants::Interface;
use runbook_journal::lease::Lease;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

/// What a resource name is, beyond its name (an ECS cluster and service
/// in an account and region): leases are taken on it. An environment
/// answers; simulated resources belong to their run alone.
pub trait Identities: Send + Sync {
    fn identity(&self, interface: Interface, name: &str) -> Option<String>;
}

/// How long a change waits for a lease another run holds (bounded by the
/// step's deadline).
pub(crate) const LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a change must not go ahead: another run held `lease`'s resource
/// (and may have changed it) after this run started reading, so what this
/// run decided from is stale (two runs seeing one bad deploy roll it back
/// once, not twice).
pub(crate) fn changed_since(lease: &dyn Lease, durable: &Durable) -> Option<String> {
    let previous = lease.previous()?;
    if previous.holder.run_id == durable.holder.run_id || previous.released_ms < durable.since_ms {
        return None;
    }
    Some(format!(
        "{} held this resource to change it after this run started (until {}): what this run decided from may be stale, so nothing was changed; see `runbook show {}`",
        previous.holder.describe(),
        runbook_core::time::rfc3339_millis(previous.released_ms),
        previous.holder.run_id
    ))
}

/// What makes a run's changes durable: its journal, where leases are
/// taken, and (on resume) what it already did.
#[derive(Clone)]
pub struct Durable {
    pub journal: Arc<runbook_journal::log::Journal>,
    pub store: Arc<dyn runbook_journal::store::Store>,
    pub replay: Arc<runbook_journal::replay::Replay>,
    pub holder: runbook_journal::holder::Holder,
    /// Take leases on what is changed (live runs; simulated resources
    /// belong to their run alone).
    pub leases: bool,
    /// When the run started reading (its first start, also when resumed):
    /// a resource another run changed since then is not changed again.
    pub since_ms: u64,
    /// Changes the incident's runs applied before this run (or this
    /// resumed run) started: what a step must not mistake for the cause.
    pub own_changes: Arc<[runbook_journal::replay::OwnChange]>,
    /// What a resource name is (leases are on that): the live
    /// environment; none in simulations.
    pub identities: Option<Arc<dyn Identities>>,
    /// The run's runbook and incident (a halt is for a runbook's runs;
    /// `resume-all` says which incidents it continues).
    pub runbook: String,
    pub incident: String,
}

impl Durable {
    /// The journaled intent of `operation` on `resource` in `step` (the
    /// `index`-th such call, where the intent says), for a reconciled
    /// result.
    pub(crate) fn journal_intent(
        &self,
        step: &str,
        operation: &str,
        resource: &str,
        index: usize,
    ) -> anyhow::Result<Option<u64>> {
        let lines = self.store.read_run(&self.journal.run_id)?;
        Ok(lines
            .iter()
            .rev()
            .find(|l| {
                l["event"] == "intent"
                    && l["step"] == step
                    && l["operation"] == operation
                    && l["resource"] == resource
                    && l["index"].as_u64().is_none_or(|i| i as usize == index)
            })
            .and_then(|l| l["seq"].as_u64()))
    }
}

/// The changes one run may make (`max_mutations` in the runbook), shared
/// by its steps.
#[derive(Debug)]
pub struct Budget {
    pub allowed: usize,
    used: std::sync::atomic::AtomicUsize,
}

impl Budget {
    pub fn new(allowed: usize, used: usize) -> Arc<Self> {
        Arc::new(Self {
            allowed,
            used: used.into(),
        })
    }

    pub fn used(&self) -> usize {
        self.used.load(SeqCst)
    }

    pub(crate) fn take(&self) -> Result<(), Error> {
        let before = self.used.fetch_add(1, SeqCst);
        if before >= self.allowed {
            self.used.fetch_sub(1, SeqCst);
            return Err(Error::Denied(format!(
                "the runbook allows at most {} change{} per run (`max_mutations`), and this run has made {before}",
                self.allowed,
                if self.allowed == 1 { "" } else { "s" }
            )));
        }
        Ok(())
    }

    pub(crate) fn give_back(&self) {
        self.used.fetch_sub(1, SeqCst);
    }
}

/// The approval of a change the journal shows was made before a resume.
pub(crate) fn replayed(why: &str) -> Decision {
    Decision {
        decision: Verdict::Approved,
        how: Some("journal".into()),
        by: None,
        change: why.to_string(),
    }
}

/// A failpoint on the mutation path, for the fault-injection tests (set
/// with `FAILPOINTS` in a binary built for tests; nothing otherwise):
/// `return(hang)` waits until the step's deadline ends the step,
/// `return(MESSAGE)` fails the call with MESSAGE, `panic` panics.
#[allow(unused_mut, reason = "mutated only when failpoints are compiled in")]
pub(crate) async fn injected(name: &str) -> Result<(), Error> {
    let mut action: Option<String> = None;
    let mut eval = || {
        fail::fail_point!(name, |arg: Option<String>| {
            action = Some(arg.unwrap_or_default());
        });
    };
    eval();
    match action.as_deref() {
        None => Ok(()),
        Some("hang") => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            Ok(())
        }
        Some(why) => Err(Error::Unavailable(format!("failpoint `{name}`: {why}"))),
    }
}
