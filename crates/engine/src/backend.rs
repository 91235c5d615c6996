//! What stands behind the capabilities in a run: a simulation (a scenario
//! file) or real systems (an environment file), chosen, loaded and checked
//! against a plan.

use crate::plan::Plan;
use anyhow::Result;
use runbook_capabilities::backends::Backends;
use runbook_capabilities::durable::Identities;
use runbook_capabilities::environment::Environment;
use runbook_capabilities::scenario::{Expect, Scenario};
use runbook_core::error::hinted;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which backend a run asks for, by file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// Simulated backends, as this scenario describes them (`--sim`).
    Sim(PathBuf),
    /// Real backends, as this environment file maps them (`--env`).
    Live(PathBuf),
}

impl BackendChoice {
    /// From `--sim` and `--env`: one of them must be given (`--sim` wins).
    pub fn from_flags(sim: Option<&Path>, env: Option<&Path>) -> Result<Self> {
        match (sim, env) {
            (Some(path), _) => Ok(Self::Sim(path.to_path_buf())),
            (None, Some(path)) => Ok(Self::Live(path.to_path_buf())),
            (None, None) => Err(hinted(
                "no backend chosen for the run",
                "pass `--sim SCENARIO` to run against simulated backends (e.g. `runbooks/scenarios/session-store-outage.toml`), or `--env FILE` for real ones",
            )),
        }
    }
}

/// A backend, loaded.
#[allow(
    clippy::large_enum_variant,
    reason = "one per run, made once: its size does not matter"
)]
pub enum Backend {
    /// `--sim SCENARIO`.
    Sim { scenario: Scenario, path: PathBuf },
    /// `--env FILE`.
    Live {
        env: Environment,
        incident_start_ms: Option<u64>,
    },
}

impl Backend {
    /// Reads and checks the scenario or environment file;
    /// `incident_start` (RFC 3339) only counts for live runs.
    pub fn load(choice: &BackendChoice, incident_start: Option<&str>) -> Result<Self> {
        match choice {
            BackendChoice::Sim(path) => Ok(Backend::Sim {
                scenario: Scenario::load(path)?,
                path: path.clone(),
            }),
            BackendChoice::Live(path) => Ok(Backend::Live {
                env: Environment::load(path)?,
                incident_start_ms: incident_start.map(parse_incident_start).transpose()?,
            }),
        }
    }

    /// When the incident started (`--incident-start`, live runs).
    pub fn incident_start_ms(&self) -> Option<u64> {
        match self {
            Backend::Live {
                incident_start_ms, ..
            } => *incident_start_ms,
            Backend::Sim { .. } => None,
        }
    }

    /// Every resource the plan's grants name is provided.
    pub fn check(&self, plan: &Plan) -> Result<()> {
        match self {
            Backend::Sim { scenario, path } => plan.check_provided(
                &format!("scenario `{}`", path.display()),
                path,
                |i, name| scenario.provides(i, name),
            ),
            Backend::Live { env, .. } => plan.check_provided(
                &format!("environment `{}`", env.path.display()),
                &env.path,
                |i, name| env.provides(i, name),
            ),
        }
    }

    pub fn mode(&self) -> String {
        match self {
            Backend::Sim { path, .. } => format!(
                "simulation `{}`",
                path.file_stem().unwrap_or_default().to_string_lossy()
            ),
            Backend::Live { env, .. } => format!("live `{}`", env.path.display()),
        }
    }

    /// What resource names are here (leases name what the environment
    /// maps them to); none for a simulation.
    pub fn identities(&self) -> Option<Arc<dyn Identities>> {
        match self {
            Backend::Live { env, .. } => Some(Arc::new(env.clone())),
            Backend::Sim { .. } => None,
        }
    }

    pub fn is_simulation(&self) -> bool {
        matches!(self, Backend::Sim { .. })
    }

    pub fn expect(&self) -> Option<&Expect> {
        match self {
            Backend::Sim { scenario, .. } => scenario.expect.as_ref(),
            Backend::Live { .. } => None,
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            Backend::Sim { path, .. } => path,
            Backend::Live { env, .. } => &env.path,
        }
    }

    /// Fresh backends for one run: a new simulated world, or clients of
    /// the real systems the plan's steps are granted.
    pub async fn backends(&self, plan: &Plan) -> Result<Backends> {
        match self {
            Backend::Sim { scenario, path } => scenario.backends().map_err(|why| {
                hinted(
                    format!("invalid scenario `{}`: {why}", path.display()),
                    "see runbooks/README.md for the scenario format",
                )
            }),
            Backend::Live {
                env,
                incident_start_ms,
            } => env.backends(&plan.interfaces(), *incident_start_ms).await,
        }
    }
}

fn parse_incident_start(t: &str) -> Result<u64> {
    runbook_core::time::Timestamp::parse(t)
        .map(|t| t.0)
        .map_err(|e| {
            hinted(
                format!("`--incident-start`: {e}"),
                "write it like `2026-11-26T02:52:00Z`",
            )
        })
}
