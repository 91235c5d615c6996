//! The simulated world one run's capabilities share: a clock that moves
//! only when a simulated call takes time, and each capability's simulated
//! state, where the others can see it (a metric that improves once a flag
//! is set, or once a rollback finished).

use runbook_core::interface::Interface;
use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};

pub struct World {
    now_ms: AtomicU64,
    incident_start_ms: Option<u64>,
    states: Vec<OnceLock<Arc<dyn Any + Send + Sync>>>,
}

impl World {
    pub fn new(start_ms: u64, incident_start_ms: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            now_ms: AtomicU64::new(start_ms),
            incident_start_ms,
            states: (0..Interface::ALL.len()).map(|_| OnceLock::new()).collect(),
        })
    }

    /// Simulated time, unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(SeqCst)
    }

    /// A simulated call took `ms`.
    pub fn advance(&self, ms: u64) -> u64 {
        self.now_ms.fetch_add(ms, SeqCst).saturating_add(ms)
    }

    /// Moves the clock to `ms` unless it is already later.
    pub fn advance_to(&self, ms: u64) -> u64 {
        self.now_ms.fetch_max(ms, SeqCst).max(ms)
    }

    /// Keeps `state` as `interface`'s simulated state (once).
    pub fn put<S: Any + Send + Sync>(&self, interface: Interface, state: Arc<S>) {
        let _ = self.states[interface as usize].set(state);
    }

    /// `interface`'s simulated state, if it has one of type `S`.
    pub fn get<S: Any + Send + Sync>(&self, interface: Interface) -> Option<Arc<S>> {
        self.states[interface as usize]
            .get()
            .and_then(|s| s.clone().downcast::<S>().ok())
    }
}

impl crate::backends::Clock for World {
    fn now_ms(&self) -> u64 {
        World::now_ms(self)
    }

    fn incident_start_ms(&self) -> Option<u64> {
        self.incident_start_ms
    }
}
