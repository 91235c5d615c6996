//! The capabilities, one module each, all the same shape (wasmtime's
//! `wasi-config`, Spin's `factor-*` crates). A module owns everything about
//! its capability and implements [`Capability`]:
//!
//! - the WIT host impl for [`StepState`] and `add_to_linker`; every host
//!   function goes through [`StepState::read`] or [`StepState::mutate`],
//!   the only way to its backend, which asks the grant checker first;
//! - its backend trait, its simulated backend and the scenario section that
//!   configures it (`sim.rs`), its live backend and environment section
//!   (`live.rs`);
//! - its tests, among them one proving a denied call never reaches the
//!   backend.
//!
//! The modules are declared, and dispatched to, from the registry in
//! [`crate::interface`]: adding a capability is its module, its WIT
//! interface and one registry line. `log` is not a capability (it needs no
//! grant and has no backend) and is linked for every step.
//!
//! # The step protocol
//!
//! A step is one fresh instance in its own [`wasmtime::Store`] whose data
//! is a [`StepState`]. The runner (`crate::run`) drives it as a future;
//! host calls are `async`. What the step does is kept in its
//! [`StepShared`] (calls, logs, approvals), which the runner reads when the
//! step ends, however it ends: returned, trapped, or dropped at its
//! deadline. A dropped step's future is gone: nothing it started can reach
//! a backend or the audit log afterwards.

pub mod gate;
pub mod history;
pub mod limits;
pub mod log;
pub mod sim;

pub use gate::{StepShared, StepState, Trail};
pub use limits::LimitExceeded;

use crate::interface::Interface;
use anyhow::Result;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Linker;

/// What every capability module provides; see the module docs.
pub trait Capability: 'static {
    const INTERFACE: Interface;
    /// The backend its host functions call, e.g. `dyn MetricsBackend`.
    type Backend: ?Sized + Send + Sync + 'static;
    /// Its section of a scenario file (what the simulation holds).
    type SimConfig: DeserializeOwned + Default + Clone + std::fmt::Debug + Send + Sync;
    /// Its section of an environment file (where the real backend is).
    type LiveConfig: DeserializeOwned + Default + Clone + std::fmt::Debug + Send + Sync;
    /// Whether its mutations count against a run's `max_mutations` (changes
    /// to systems do; telling people does not).
    const BLAST_RADIUS: bool = true;

    /// Adds its WIT interface(s) to a step's linker.
    fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()>;

    /// Checks its scenario section on its own (names, ranges).
    fn check_sim(_config: &Self::SimConfig) -> Result<(), String> {
        Ok(())
    }

    /// Its simulated backend. Its state goes into `world`, where other
    /// capabilities' simulations may look at it (a metric that improves
    /// once a flag is set).
    fn sim(config: &Self::SimConfig, world: &Arc<sim::World>) -> Arc<Self::Backend>;

    /// Checks what its section says about other capabilities, once every
    /// simulation is in `world`.
    fn check_sim_world(_config: &Self::SimConfig, _world: &sim::World) -> Result<(), String> {
        Ok(())
    }

    /// Whether the scenario provides resource `name` that a step is
    /// granted; `Err(hint)` when it does not. Resources that are real names
    /// rather than aliases (metric names, flag keys) need nothing.
    fn sim_provides(_config: &Self::SimConfig, _name: &str) -> Result<(), Missing> {
        Ok(())
    }

    /// Checks its environment section; relative paths are resolved against
    /// `base`, the environment file's directory.
    fn check_live(_config: &mut Self::LiveConfig, _base: &Path) -> Result<(), String> {
        Ok(())
    }

    /// Like [`Capability::sim_provides`], for an environment.
    fn live_provides(_config: &Self::LiveConfig, _name: &str) -> Result<(), Missing> {
        Ok(())
    }

    /// What resource `name` is in this environment, beyond its name (an ECS
    /// cluster and service): leases are taken on it, so runs whose
    /// environments map one name to different things do not wait for each
    /// other, and runs that reach one thing by two names do.
    fn live_identity(_config: &Self::LiveConfig, _name: &str) -> Option<String> {
        None
    }

    /// Whether its live backend needs AWS settings and credentials.
    fn live_uses_aws(_config: &Self::LiveConfig) -> bool {
        false
    }

    /// Its live backend.
    fn live(config: &Self::LiveConfig, ctx: &LiveContext) -> Result<Arc<Self::Backend>>;
}

/// A resource a step is granted that the runtime configuration lacks.
#[derive(Debug)]
pub struct Missing {
    /// Completes "step `x` is granted ecs `a/b`, …", e.g. "which scenario
    /// `s.toml` does not define" (`{source}` is replaced by the file).
    pub why: String,
    /// What to add, where (`{source}` likewise).
    pub hint: String,
}

impl Missing {
    pub fn new(why: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            why: why.into(),
            hint: hint.into(),
        }
    }
}

/// What live backends are built from besides their own section.
pub struct LiveContext {
    /// Shared AWS settings; `None` when no capability of this run needs AWS.
    pub aws: Option<aws::Aws>,
    pub incident_start_ms: Option<u64>,
}

pub mod aws;

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
        crate::time::now_ms()
    }

    fn incident_start_ms(&self) -> Option<u64> {
        self.incident_start_ms
    }
}

/// The backend behind each capability, simulated or live, and the clock.
/// Private to this module's children: host functions reach a backend only
/// through the gate, after the grant check.
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

    pub(in crate::capability) fn get<C: Capability>(&self) -> Option<Arc<C::Backend>> {
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
    pub fn with<C: Capability>(mut self, backend: Arc<C::Backend>) -> Self {
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

macro_rules! define_capabilities {
    ($($section:ident: $variant:ident($wit:literal, $form:literal, parts $parts:literal, $($access:ident)+) => $module:ident,)*) => {
        $(pub mod $module;)*

        /// Links a capability's WIT interface(s).
        pub fn add_to_linker(
            interface: Interface,
            linker: &mut Linker<StepState>,
        ) -> wasmtime::Result<()> {
            match interface {
                $(Interface::$variant => <$module::Cap as Capability>::add_to_linker(linker),)*
            }
        }

        /// Whether the capability's changes are changes to a system
        /// (counted by `max_mutations`, leased), not messages to people.
        pub fn blast_radius(interface: Interface) -> bool {
            match interface {
                $(Interface::$variant => <$module::Cap as Capability>::BLAST_RADIUS,)*
            }
        }
    };
}
crate::interface::with_capabilities!(define_capabilities);

/// A linker with WASI (empty: no files, network, env or args), `log` and
/// `history`, and exactly the granted capability interfaces, each in every
/// version of the contract the host links. A component importing
/// anything else fails to instantiate against it.
pub fn linker_for(
    engine: &wasmtime::Engine,
    granted: impl Iterator<Item = Interface>,
) -> Result<Linker<StepState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    crate::bindings::runbook::host::types::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |s| s,
    )?;
    log::add_to_linker(&mut linker)?;
    history::add_to_linker(&mut linker)?;
    crate::bindings::v0_1::add_base_to_linker(&mut linker)?;
    for interface in granted {
        add_to_linker(interface, &mut linker)?;
    }
    Ok(linker)
}

#[cfg(test)]
pub(crate) mod testing;
