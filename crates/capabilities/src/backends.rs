//! The backend behind each capability in a run, simulated or live, and the
//! clock the host reads time from. Below the capability modules and the
//! step state: it knows a capability only by its interface and backend
//! type ([`Backed`]).

use runbook_core::interface::Interface;
use std::any::Any;
use std::sync::Arc;

/// What a capability's backend is, and the interface it backs: all the
/// [`Backends`] need to know of a capability.
pub trait Backed: 'static {
    const INTERFACE: Interface;
    /// The backend its host functions call, e.g. `dyn MetricsBackend`.
    type Backend: ?Sized + Send + Sync + 'static;
}

/// What the host reads the time from: simulated or real.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> u64;
    fn incident_start_ms(&self) -> Option<u64>;
}

/// Real time; the incident start comes from `--incident-start`.
pub struct RealClock {
    pub incident_start_ms: Option<u64>,
}

impl Clock for RealClock {
    fn now_ms(&self) -> u64 {
        runbook_core::time::now_ms()
    }

    fn incident_start_ms(&self) -> Option<u64> {
        self.incident_start_ms
    }
}

/// The backend behind each capability, simulated or live, and the clock.
/// Host functions reach a backend only through the gate, after the grant
/// check (`get` is private to this crate).
#[derive(Clone)]
pub struct Backends {
    slots: Arc<[Option<Arc<dyn Any + Send + Sync>>]>,
    clock: Arc<dyn Clock>,
}

impl Backends {
    /// Starts empty; see [`Backends::with`].
    pub fn builder(clock: Arc<dyn Clock>) -> BackendsBuilder {
        BackendsBuilder {
            slots: vec![None; Interface::ALL.len()],
            clock,
        }
    }

    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    pub(crate) fn get<C: Backed>(&self) -> Option<Arc<C::Backend>> {
        self.slots[C::INTERFACE as usize]
            .as_ref()?
            .downcast_ref::<Arc<C::Backend>>()
            .cloned()
    }
}

pub struct BackendsBuilder {
    slots: Vec<Option<Arc<dyn Any + Send + Sync>>>,
    clock: Arc<dyn Clock>,
}

impl BackendsBuilder {
    pub fn with<C: Backed>(mut self, backend: Arc<C::Backend>) -> Self {
        self.slots[C::INTERFACE as usize] = Some(Arc::new(backend));
        self
    }

    pub fn build(self) -> Backends {
        Backends {
            slots: self.slots.into(),
            clock: self.clock,
        }
    }
}
