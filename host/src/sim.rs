//! The simulated backend: every capability answered from a scenario, with
//! simulated time. Waits finish at once by moving the clock; remediation
//! changes what later reads see (the scenario's `effects`).

use crate::bindings::Error;
use crate::bindings::runbook::host::ecs::{Deployment, RollbackResult, ServiceInfo};
use crate::bindings::runbook::host::metrics::{Datapoint, MetricQuery};
use crate::bindings::runbook::host::redis::{InfoStats, PingReply};
use crate::capability::ecs::{changed_since_approval, rollback_target};
use crate::capability::{Backends, Clock, EcsBackend, FlagsBackend, MetricsBackend, RedisBackend};
use crate::scenario::{Condition, RedisStatus, Scenario};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// How long simulated calls take, so timestamps in the report advance.
const METRIC_CALL_MS: u64 = 80;
const FLAG_CALL_MS: u64 = 20;
const ECS_CALL_MS: u64 = 150;
const REDIS_TIMEOUT_MS: u64 = 2_000;

pub struct Sim {
    state: Mutex<State>,
}

struct State {
    now_ms: u64,
    scenario: Scenario,
    flags: BTreeMap<String, String>,
    services: BTreeMap<String, Service>,
}

struct Service {
    family: String,
    revisions: Vec<u32>,
    desired: u32,
    stabilize_ms: u64,
    never_stable: bool,
    current: SimDeployment,
    /// While a rollout runs: the deployment being replaced, and when the new
    /// one is stable (`None`: never).
    rollout: Option<(SimDeployment, Option<u64>)>,
    deployments_made: u32,
}

#[derive(Clone)]
struct SimDeployment {
    id: String,
    revision: u32,
    created_at_ms: u64,
}

impl Sim {
    pub fn new(scenario: Scenario) -> Arc<Self> {
        let services = scenario
            .ecs
            .iter()
            .map(|(name, s)| {
                let last = s
                    .deployments
                    .last()
                    .expect("validated: at least one deployment");
                let current = SimDeployment {
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
                (name.clone(), service)
            })
            .collect();
        Arc::new(Self {
            state: Mutex::new(State {
                now_ms: scenario.start.0,
                flags: scenario.flags.clone(),
                services,
                scenario,
            }),
        })
    }

    /// All four capabilities and the clock, backed by this simulation.
    pub fn backends(self: &Arc<Self>) -> Backends {
        Backends {
            metrics: self.clone(),
            redis: self.clone(),
            flags: self.clone(),
            ecs: self.clone(),
            clock: self.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-written
        // in a way later reads would misread; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn holds(&self, c: &Condition) -> bool {
        if let (Some(flag), Some(equals)) = (&c.flag, &c.equals) {
            return self.flags.get(flag) == Some(equals);
        }
        if let (Some(svc), Some(td)) = (&c.service, &c.task_definition) {
            return self.services.get(svc).is_some_and(|s| {
                format!("{}:{}", s.family, s.current.revision) == *td && s.stable_at(self.now_ms)
            });
        }
        false
    }

    fn service(&mut self, cluster: &str, service: &str) -> Result<&mut Service, Error> {
        let key = format!("{cluster}/{service}");
        self.services.get_mut(&key).ok_or_else(|| {
            Error::NotFound(format!(
                "service `{service}` not found in cluster `{cluster}`"
            ))
        })
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
        let dep = |d: &SimDeployment, status: &str, running: u32| Deployment {
            id: d.id.clone(),
            status: status.to_string(),
            task_definition: format!("{}:{}", self.family, d.revision),
            created_at_ms: d.created_at_ms,
            running_count: running,
            desired_count: if status == "PRIMARY" { self.desired } else { 0 },
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

impl Clock for Sim {
    fn now_ms(&self) -> u64 {
        self.lock().now_ms
    }

    fn incident_start_ms(&self) -> Option<u64> {
        self.lock().scenario.incident_start.map(|t| t.0)
    }
}

impl MetricsBackend for Sim {
    fn query(&self, q: &MetricQuery, _deadline: Instant) -> Result<Vec<Datapoint>, Error> {
        let mut st = self.lock();
        st.now_ms += METRIC_CALL_MS;
        let series = st.scenario.metrics.iter().find(|m| {
            crate::capability::metrics::series_matches(
                &m.namespace,
                &m.name,
                &m.dimensions,
                &m.statistic,
                q,
            )
        });
        let Some(series) = series else {
            // Like CloudWatch: an unknown metric is just one without data.
            return Ok(Vec::new());
        };
        let value = series
            .effects
            .iter()
            .rfind(|e| st.holds(&e.when))
            .map_or(series.value, |e| e.value);
        let period_ms = u64::from(q.period_seconds) * 1000;
        let points = u64::from(q.window_seconds / q.period_seconds);
        let end = st.now_ms - st.now_ms % period_ms;
        Ok((0..points)
            .rev()
            .map(|i| Datapoint {
                timestamp_ms: end.saturating_sub((i + 1) * period_ms),
                value,
            })
            .collect())
    }
}

impl RedisBackend for Sim {
    fn ping(&self, target: &str, deadline: Instant) -> Result<PingReply, Error> {
        let r = self.redis_call(target, deadline)?;
        Ok(PingReply {
            reply: "PONG".into(),
            latency_ms: r.latency_ms,
        })
    }

    fn info(&self, target: &str, deadline: Instant) -> Result<InfoStats, Error> {
        let r = self.redis_call(target, deadline)?;
        Ok(InfoStats {
            connected_clients: r.connected_clients,
            keyspace_hits: r.keyspace_hits,
            keyspace_misses: r.keyspace_misses,
        })
    }
}

impl Sim {
    fn redis_call(
        &self,
        target: &str,
        _deadline: Instant,
    ) -> Result<crate::scenario::SimRedis, Error> {
        let mut st = self.lock();
        let Some(r) = st.scenario.redis.get(target).cloned() else {
            return Err(Error::NotFound(format!(
                "redis target `{target}` is not configured"
            )));
        };
        match r.status {
            RedisStatus::Up => {
                st.now_ms += r.latency_ms.ceil() as u64;
                Ok(r)
            }
            RedisStatus::Down => {
                st.now_ms += 1;
                Err(Error::Unavailable(format!(
                    "redis `{target}`: connection refused"
                )))
            }
            RedisStatus::Hang => {
                st.now_ms += REDIS_TIMEOUT_MS;
                Err(Error::Timeout(format!(
                    "redis `{target}`: no reply within {REDIS_TIMEOUT_MS}ms"
                )))
            }
        }
    }
}

impl FlagsBackend for Sim {
    fn get(&self, key: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        let mut st = self.lock();
        st.now_ms += FLAG_CALL_MS;
        Ok(st.flags.get(key).cloned())
    }

    fn set(&self, key: &str, value: &str, _deadline: Instant) -> Result<Option<String>, Error> {
        let mut st = self.lock();
        st.now_ms += FLAG_CALL_MS;
        Ok(st.flags.insert(key.to_string(), value.to_string()))
    }
}

impl EcsBackend for Sim {
    fn describe(
        &self,
        cluster: &str,
        service: &str,
        _deadline: Instant,
    ) -> Result<ServiceInfo, Error> {
        let mut st = self.lock();
        st.now_ms += ECS_CALL_MS;
        let now = st.now_ms;
        Ok(st
            .service(cluster, service)?
            .describe(cluster, service, now))
    }

    fn rollback_plan(
        &self,
        cluster: &str,
        service: &str,
        revision: Option<u32>,
        _deadline: Instant,
    ) -> Result<RollbackResult, Error> {
        let mut st = self.lock();
        st.now_ms += ECS_CALL_MS;
        let svc = st.service(cluster, service)?;
        let current = svc.current.revision;
        let target = rollback_target(&svc.family, current, &svc.revisions, revision)?;
        Ok(RollbackResult {
            from: format!("{}:{current}", svc.family),
            to: format!("{}:{target}", svc.family),
        })
    }

    fn rollback(
        &self,
        cluster: &str,
        service: &str,
        plan: &RollbackResult,
        _deadline: Instant,
    ) -> Result<RollbackResult, Error> {
        let mut st = self.lock();
        st.now_ms += ECS_CALL_MS;
        let now = st.now_ms;
        let svc = st.service(cluster, service)?;
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
        let new = SimDeployment {
            id: format!("ecs-svc/{}", svc.deployments_made),
            revision: target,
            created_at_ms: now,
        };
        let old = std::mem::replace(&mut svc.current, new);
        let done = (!svc.never_stable).then_some(now.saturating_add(svc.stabilize_ms));
        svc.rollout = Some((old, done));
        Ok(plan.clone())
    }

    fn wait_stable(
        &self,
        cluster: &str,
        service: &str,
        timeout_seconds: u32,
        _deadline: Instant,
    ) -> Result<ServiceInfo, Error> {
        let mut st = self.lock();
        let now = st.now_ms;
        let limit = now + u64::from(timeout_seconds) * 1000;
        let svc = st.service(cluster, service)?;
        let ready_at = match &svc.rollout {
            None => now,
            Some((_, Some(done))) => (*done).max(now),
            Some((_, None)) => u64::MAX,
        };
        if ready_at > limit {
            st.now_ms = limit;
            return Err(Error::Timeout(format!(
                "`{cluster}/{service}` not stable after {timeout_seconds}s"
            )));
        }
        st.now_ms = ready_at + ECS_CALL_MS;
        let now = st.now_ms;
        Ok(st
            .service(cluster, service)?
            .describe(cluster, service, now))
    }
}
