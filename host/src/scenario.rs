//! Simulation scenarios (TOML): what every simulated backend holds at the
//! start of a run, and the effects remediation has on it.

use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub description: String,
    /// Simulated wall clock at the start of the run (RFC 3339).
    pub start: Timestamp,
    #[serde(default)]
    pub incident_start: Option<Timestamp>,
    #[serde(default)]
    pub expect: Option<Expect>,
    #[serde(default)]
    pub metrics: Vec<SimMetric>,
    #[serde(default)]
    pub redis: BTreeMap<String, SimRedis>,
    #[serde(default)]
    pub flags: BTreeMap<String, String>,
    #[serde(default)]
    pub ecs: BTreeMap<String, SimService>,
}

/// The path this scenario should take through the runbook, checked by the
/// tests and shown by `run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub status: String,
    pub path: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimMetric {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    pub statistic: String,
    pub value: f64,
    /// Applied in order; the last one whose condition holds sets the value.
    #[serde(default)]
    pub effects: Vec<Effect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    pub when: Condition,
    pub value: f64,
}

/// `{ flag = "KEY", equals = "true" }` or
/// `{ service = "cluster/service", task_definition = "family:rev" }` (the
/// service runs that task definition and its rollout has finished).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    #[serde(default)]
    pub flag: Option<String>,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub task_definition: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisStatus {
    /// Answers normally.
    Up,
    /// Refuses connections.
    Down,
    /// Accepts but never answers: every call runs into its timeout.
    Hang,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRedis {
    pub status: RedisStatus,
    #[serde(default = "default_latency")]
    pub latency_ms: f64,
    #[serde(default)]
    pub connected_clients: u32,
    #[serde(default)]
    pub keyspace_hits: u64,
    #[serde(default)]
    pub keyspace_misses: u64,
}

fn default_latency() -> f64 {
    0.5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimService {
    pub family: String,
    /// Registered task definition revisions of the family.
    pub revisions: Vec<u32>,
    /// Deployments, oldest first; the last is the current (`PRIMARY`) one.
    pub deployments: Vec<SimDeployment>,
    pub desired: u32,
    /// How long a new deployment takes to become stable.
    #[serde(default = "default_stabilize")]
    pub stabilize_seconds: u64,
    /// When set, a rollback never becomes stable.
    #[serde(default)]
    pub never_stable: bool,
}

fn default_stabilize() -> u64 {
    90
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimDeployment {
    pub revision: u32,
    pub created_at: Timestamp,
}

/// An RFC 3339 instant, kept as unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let t = humantime::parse_rfc3339(&raw).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{raw}` is not an RFC 3339 time like `2026-11-26T03:00:00Z`: {e}"
            ))
        })?;
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_err(serde::de::Error::custom)?
            .as_millis();
        Ok(Timestamp(ms as u64))
    }
}

/// Formats unix milliseconds as RFC 3339 (UTC, seconds).
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self> {
        let scenario: Scenario = crate::error::load_toml(
            path,
            "scenario",
            "see runbooks/README.md for the scenario format",
            |s: &mut Scenario| s.validate(),
        )?;
        Ok(scenario)
    }

    /// The aliases RB steps are granted must exist in the simulation too.
    pub fn check_plan(&self, plan: &crate::plan::Plan, path: &Path) -> Result<()> {
        plan.check_aliases(
            &format!("scenario `{}`", path.display()),
            |interface, alias| match interface {
                crate::grants::Interface::Redis => self.redis.contains_key(alias),
                _ => self.ecs.contains_key(alias),
            },
            |interface, alias| match interface {
                crate::grants::Interface::Redis => format!(
                    "add `[redis.{alias}]` with a `status` to `{}`",
                    path.display()
                ),
                _ => format!(
                    "add `[ecs.\"{alias}\"]` with its revisions and deployments to `{}`",
                    path.display()
                ),
            },
        )
    }

    fn validate(&self) -> Result<(), String> {
        for m in &self.metrics {
            crate::capability::metrics::parse_statistic(&m.statistic)
                .map_err(|why| format!("metric `{}/{}`: {why}", m.namespace, m.name))?;
            for e in &m.effects {
                e.when
                    .validate(self)
                    .map_err(|why| format!("metric `{}/{}`: effect: {why}", m.namespace, m.name))?;
            }
        }
        for (name, svc) in &self.ecs {
            if name
                .split_once('/')
                .is_none_or(|(c, s)| c.is_empty() || s.is_empty())
            {
                return Err(format!(
                    "ecs service `{name}` must be named `cluster/service`"
                ));
            }
            if svc.deployments.is_empty() {
                return Err(format!(
                    "ecs service `{name}` needs at least one deployment"
                ));
            }
            for d in &svc.deployments {
                if !svc.revisions.contains(&d.revision) {
                    return Err(format!(
                        "ecs service `{name}`: deployment of revision {} which is not in `revisions`",
                        d.revision
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Condition {
    fn validate(&self, scenario: &Scenario) -> Result<(), String> {
        match (
            &self.flag,
            &self.equals,
            &self.service,
            &self.task_definition,
        ) {
            (Some(_), Some(_), None, None) => Ok(()),
            (None, None, Some(svc), Some(_)) if scenario.ecs.contains_key(svc) => Ok(()),
            (None, None, Some(svc), Some(_)) => Err(format!(
                "`when.service` names `{svc}`, which is not under `[ecs]`"
            )),
            _ => Err(
                "`when` needs either `flag` and `equals`, or `service` and `task_definition`"
                    .into(),
            ),
        }
    }
}
