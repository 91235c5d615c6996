//! Simulated ECS services: `[ecs."cluster/service"]` in a scenario gives a
//! family, its registered revisions and the deployments so far. A rollback
//! starts a rollout that becomes stable after `stabilize_seconds` of
//! simulated time (or never).

use super::{EcsBackend, changed_since_approval, rollback_target};
use crate::bindings::Error;
use crate::bindings::runbook::host::ecs::{Deployment, RollbackResult, ServiceInfo};
use crate::sim::World;
use runbook_core::time::Timestamp;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How long a simulated ECS call takes.
const CALL_MS: u64 = 150;
/// The longest rollout a scenario may describe: a day.
const MAX_STABILIZE_SECONDS: u64 = 86_400;

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

pub fn check(services: &BTreeMap<String, SimService>) -> Result<(), String> {
    for (name, svc) in services {
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
        if svc.stabilize_seconds > MAX_STABILIZE_SECONDS {
            return Err(format!(
                "ecs service `{name}`: `stabilize_seconds` must be at most {MAX_STABILIZE_SECONDS}, not {}",
                svc.stabilize_seconds
            ));
        }
        if svc.desired > 100_000 {
            return Err(format!(
                "ecs service `{name}`: `desired` must be at most 100000, not {}",
                svc.desired
            ));
        }
    }
    Ok(())
}

struct Service {
    family: String,
    revisions: Vec<u32>,
    desired: u32,
    stabilize_ms: u64,
    never_stable: bool,
    current: Dep,
    /// While a rollout runs: the deployment being replaced, and when the new
    /// one is stable (`None`: never).
    rollout: Option<(Dep, Option<u64>)>,
    deployments_made: u32,
}

#[derive(Clone)]
struct Dep {
    id: String,
    revision: u32,
    created_at_ms: u64,
}

pub struct SimEcs {
    services: Mutex<BTreeMap<String, Service>>,
    world: Arc<World>,
}

impl SimEcs {
    pub fn new(config: &BTreeMap<String, SimService>, world: Arc<World>) -> Self {
        let services = config
            .iter()
            .filter_map(|(name, s)| {
                // Checked: at least one deployment.
                let last = s.deployments.last()?;
                let current = Dep {
                    id: format!("ecs-svc/{}", s.deployments.len()),
                    revision: last.revision,
                    created_at_ms: last.created_at.0,
                };
                let service = Service {
                    family: s.family.clone(),
                    revisions: s.revisions.clone(),
                    desired: s.desired,
                    stabilize_ms: s.stabilize_seconds.saturating_mul(1000),
                    never_stable: s.never_stable,
                    current,
                    rollout: None,
                    deployments_made: s.deployments.len() as u32,
                };
                Some((name.clone(), service))
            })
            .collect();
        Self {
            services: Mutex::new(services),
            world,
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Service>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the scenario has service `name` (`cluster/service`).
    pub fn has(&self, name: &str) -> bool {
        self.lock().contains_key(name)
    }

    /// Whether `name` runs `task_definition` and its rollout has finished.
    pub fn runs_stable(&self, name: &str, task_definition: &str, now: u64) -> bool {
        self.lock().get(name).is_some_and(|s| {
            format!("{}:{}", s.family, s.current.revision) == task_definition && s.stable_at(now)
        })
    }

    fn with<T>(
        &self,
        cluster: &str,
        service: &str,
        f: impl FnOnce(&mut Service) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut services = self.lock();
        let svc = services
            .get_mut(&format!("{cluster}/{service}"))
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "service `{service}` not found in cluster `{cluster}`"
                ))
            })?;
        f(svc)
    }
}

impl Service {
    fn stable_at(&self, now: u64) -> bool {
        match &self.rollout {
            None => true,
            Some((_, Some(done))) => *done <= now,
            Some((_, None)) => false,
        }
    }

    fn describe(&mut self, cluster: &str, name: &str, now: u64) -> ServiceInfo {
        if self.stable_at(now) {
            self.rollout = None;
        }
        let dep = |d: &Dep, status: &str, running: u32| Deployment {
            id: d.id.clone(),
            status: status.to_string(),
            task_definition: format!("{}:{}", self.family, d.revision),
            created_at_ms: d.created_at_ms,
            running_count: running,
            desired_count: if status == "PRIMARY" { self.desired } else { 0 },
            made_by: None,
        };
        let deployments = match &self.rollout {
            None => vec![dep(&self.current, "PRIMARY", self.desired)],
            Some((old, _)) => {
                let half = self.desired / 2;
                vec![
                    dep(&self.current, "PRIMARY", half),
                    dep(old, "ACTIVE", self.desired - half),
                ]
            }
        };
        ServiceInfo {
            cluster: cluster.to_string(),
            service: name.to_string(),
            task_definition: format!("{}:{}", self.family, self.current.revision),
            running_count: deployments.iter().map(|d| d.running_count).sum(),
            desired_count: self.desired,
            deployments,
        }
    }
}

#[async_trait::async_trait]
impl EcsBackend for SimEcs {
    async fn describe(
        &self,
        cluster: &str,
        service: &str,
        _deadline: Instant,
    ) -> Result<ServiceInfo, Error> {
        let now = self.world.advance(CALL_MS);
        self.with(cluster, service, |s| Ok(s.describe(cluster, service, now)))
    }

    async fn rollback_plan(
        &self,
        cluster: &str,
        service: &str,
        revision: Option<u32>,
        _deadline: Instant,
    ) -> Result<RollbackResult, Error> {
        self.world.advance(CALL_MS);
        self.with(cluster, service, |svc| {
            let current = svc.current.revision;
            let target = rollback_target(&svc.family, current, &svc.revisions, revision)?;
            Ok(RollbackResult {
                from: format!("{}:{current}", svc.family),
                to: format!("{}:{target}", svc.family),
            })
        })
    }

    async fn rollback(
        &self,
        cluster: &str,
        service: &str,
        plan: &RollbackResult,
        _deadline: Instant,
    ) -> Result<RollbackResult, Error> {
        let now = self.world.advance(CALL_MS);
        self.with(cluster, service, |svc| {
            let current = format!("{}:{}", svc.family, svc.current.revision);
            if current != plan.from {
                return Err(changed_since_approval(service, &current, plan));
            }
            let target = plan
                .to
                .rsplit_once(':')
                .and_then(|(_, r)| r.parse().ok())
                .filter(|r| svc.revisions.contains(r))
                .ok_or_else(|| {
                    Error::NotFound(format!("task definition `{}` is not registered", plan.to))
                })?;
            svc.deployments_made += 1;
            let new = Dep {
                id: format!("ecs-svc/{}", svc.deployments_made),
                revision: target,
                created_at_ms: now,
            };
            let old = std::mem::replace(&mut svc.current, new);
            let done = (!svc.never_stable).then_some(now.saturating_add(svc.stabilize_ms));
            svc.rollout = Some((old, done));
            Ok(plan.clone())
        })
    }

    async fn wait_stable(
        &self,
        cluster: &str,
        service: &str,
        timeout_seconds: u32,
        _deadline: Instant,
    ) -> Result<ServiceInfo, Error> {
        let now = self.world.now_ms();
        let limit = now + u64::from(timeout_seconds) * 1000;
        let ready_at = self.with(cluster, service, |svc| {
            Ok(match &svc.rollout {
                None => now,
                Some((_, Some(done))) => (*done).max(now),
                Some((_, None)) => u64::MAX,
            })
        })?;
        if ready_at > limit {
            self.world.advance_to(limit);
            return Err(Error::Timeout(format!(
                "`{cluster}/{service}` not stable after {timeout_seconds}s"
            )));
        }
        let now = self.world.advance_to(ready_at.saturating_add(CALL_MS));
        self.with(cluster, service, |s| Ok(s.describe(cluster, service, now)))
    }
}
