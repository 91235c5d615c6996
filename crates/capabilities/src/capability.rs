//! What every capability module is: the [`Capability`] trait each one
//! implements (its WIT host impl's linker, its simulated and live backends
//! and their configuration). The modules are declared and dispatched to
//! from the registry (`crate::registry`).

use crate::backends::Backed;
use crate::sim;
use crate::state::StepState;
use anyhow::Result;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::Linker;

/// What every capability module provides; see the module docs.
pub trait Capability: Backed {
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

    /// The secrets its live backend is given (where each is named, and
    /// how): read once per run, before any step (`crate::secrets`).
    fn live_secrets(_config: &Self::LiveConfig) -> Vec<(String, crate::secrets::SecretRef)> {
        Vec::new()
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
    pub aws: Option<crate::aws::Aws>,
    pub incident_start_ms: Option<u64>,
    /// The secrets the run's backends name, read once.
    pub secrets: crate::secrets::Secrets,
}
