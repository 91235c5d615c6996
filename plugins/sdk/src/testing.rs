//! A fake host for a plugin's own native `cargo test`: it answers every
//! capability call from an in-memory world and records what the step did.
//!
//! ```ignore
//! use runbook_sdk::testing::FakeHost;
//!
//! #[test]
//! fn sets_the_flag() {
//!     let ran = FakeHost::new()
//!         .flag("AUTH_STATELESS_FALLBACK", "false")
//!         .run::<SetFlag>(&[("key", "AUTH_STATELESS_FALLBACK"), ("value", "true")]);
//!     assert_eq!(ran.outcome().label, "set");
//!     assert_eq!(ran.host.flags["AUTH_STATELESS_FALLBACK"], "true");
//! }
//! ```
//!
//! Grants are not checked here (the host checks them; `runbook step` and
//! `runbook test` run the component under its manifest), but an interface
//! can be made to deny every call with [`FakeHost::deny`].

use crate::ecs::{Deployment, RollbackResult, ServiceInfo};
use crate::history::StepSummary;
use crate::log::Level;
use crate::metrics::{Datapoint, MetricQuery};
use crate::notify::{Sent, Severity};
use crate::redis::{InfoStats, PingReply};
use crate::{Error, Outcome, Pair, RunContext, Step};
use std::cell::RefCell;
use std::collections::BTreeMap;

// `INTERFACES`: the capability interfaces, read from the WIT by build.rs.
include!(concat!(env!("OUT_DIR"), "/interfaces.rs"));

/// A Redis server as the fake host reports it.
#[derive(Debug, Clone)]
pub struct FakeRedis {
    pub up: bool,
    pub latency_ms: f64,
    pub stats: InfoStats,
}

/// Something the step sent through `notify`.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// `page`, `resolve` or `message`.
    pub kind: String,
    pub to: String,
    pub text: String,
    pub dedup_key: Option<String>,
    pub severity: Option<Severity>,
}

/// The world a step under test sees, and afterwards what it did.
#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    /// `namespace/name` → values, oldest first.
    pub metrics: BTreeMap<String, Vec<f64>>,
    pub flags: BTreeMap<String, String>,
    pub redis: BTreeMap<String, FakeRedis>,
    /// `cluster/service` → the service.
    pub services: BTreeMap<String, ServiceInfo>,
    pub history: Vec<StepSummary>,
    pub now_ms: u64,
    pub incident_start_ms: Option<u64>,
    /// Every capability call, `interface.operation resource`.
    pub calls: Vec<String>,
    /// Level, message and fields of each log line.
    pub logs: Vec<(Level, String, Vec<Pair>)>,
    pub sent: Vec<Notification>,
    denied: Vec<String>,
}

/// What a step returned, and the host after it ran.
pub struct Ran {
    pub result: Result<Outcome, Error>,
    pub host: FakeHost,
}

impl Ran {
    /// The outcome; panics (failing the test) with the error otherwise.
    pub fn outcome(&self) -> &Outcome {
        match &self.result {
            Ok(o) => o,
            Err(e) => panic!("the step failed: {}", e.text()),
        }
    }

    /// A fact of the outcome.
    pub fn fact(&self, key: &str) -> Option<&str> {
        self.outcome()
            .facts
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }
}

thread_local! {
    static HOST: RefCell<Option<FakeHost>> = const { RefCell::new(None) };
}

/// Runs `f` on the fake host installed for this thread's step.
pub(crate) fn with<T>(f: impl FnOnce(&mut FakeHost) -> T) -> T {
    HOST.with(|h| {
        let mut h = h.borrow_mut();
        let host = h.as_mut().expect(
            "a capability was called outside a component with no fake host: run the step through `runbook_sdk::testing::FakeHost::run`",
        );
        f(host)
    })
}

impl FakeHost {
    pub fn new() -> Self {
        Self {
            now_ms: 1_764_126_240_000,
            ..Self::default()
        }
    }

    /// Metric `namespace`/`name` has these values, oldest first, one per
    /// period, whatever statistic and dimensions a query asks for.
    pub fn metric(mut self, namespace: &str, name: &str, values: &[f64]) -> Self {
        self.metrics
            .insert(format!("{namespace}/{name}"), values.to_vec());
        self
    }

    /// Like [`FakeHost::metric`], but only for a query with exactly this
    /// statistic and these dimensions, as the host's simulation matches
    /// them: any other query of the metric finds no data.
    pub fn metric_exactly(
        mut self,
        namespace: &str,
        name: &str,
        statistic: &str,
        dimensions: &[(&str, &str)],
        values: &[f64],
    ) -> Self {
        let mut dims: Vec<String> = dimensions.iter().map(|(k, v)| format!("{k}={v}")).collect();
        dims.sort();
        self.metrics.insert(
            format!("{namespace}/{name}|{statistic}|{}", dims.join(",")),
            values.to_vec(),
        );
        self
    }

    pub fn flag(mut self, key: &str, value: &str) -> Self {
        self.flags.insert(key.into(), value.into());
        self
    }

    /// Redis `target` answers in `latency_ms` with `clients` connected.
    pub fn redis(mut self, target: &str, latency_ms: f64, clients: u32) -> Self {
        self.redis.insert(
            target.into(),
            FakeRedis {
                up: true,
                latency_ms,
                stats: InfoStats {
                    connected_clients: clients,
                    keyspace_hits: 0,
                    keyspace_misses: 0,
                },
            },
        );
        self
    }

    /// Redis `target` does not answer.
    pub fn redis_down(mut self, target: &str) -> Self {
        self.redis.insert(
            target.into(),
            FakeRedis {
                up: false,
                latency_ms: 0.0,
                stats: InfoStats {
                    connected_clients: 0,
                    keyspace_hits: 0,
                    keyspace_misses: 0,
                },
            },
        );
        self
    }

    /// Service `cluster/service` of task family `family` runs `revision`;
    /// `deployed_ms` is when that deployment was made.
    pub fn service(
        mut self,
        cluster: &str,
        service: &str,
        family: &str,
        revision: u32,
        deployed_ms: u64,
    ) -> Self {
        let task = format!("{family}:{revision}");
        self.services.insert(
            format!("{cluster}/{service}"),
            ServiceInfo {
                cluster: cluster.into(),
                service: service.into(),
                task_definition: task.clone(),
                running_count: 2,
                desired_count: 2,
                deployments: vec![Deployment {
                    id: format!("ecs-svc/{revision}"),
                    status: "PRIMARY".into(),
                    task_definition: task,
                    created_at_ms: deployed_ms,
                    running_count: 2,
                    desired_count: 2,
                    made_by: None,
                }],
            },
        );
        self
    }

    /// A step that ran before, as `history::steps` reports it.
    pub fn ran_before(mut self, step_id: &str, outcome: &str, facts: &[(&str, &str)]) -> Self {
        self.history.push(StepSummary {
            step_id: step_id.into(),
            outcome: outcome.into(),
            summary: String::new(),
            facts: pairs(facts),
        });
        self
    }

    /// Every call to `interface` (a capability's WIT name: `metrics`,
    /// `redis`, `feature-flags`, ...) is denied, as a grant that does not
    /// cover it would.
    pub fn deny(mut self, interface: &str) -> Self {
        assert!(
            INTERFACES.contains(&interface),
            "`deny({interface:?})`: the interfaces are {INTERFACES:?} (their WIT names)"
        );
        self.denied.push(interface.into());
        self
    }

    /// Runs step `S` with `inputs` against this host.
    pub fn run<S: Step>(self, inputs: &[(&str, &str)]) -> Ran {
        let ctx = RunContext {
            run_id: "test-run".into(),
            step_id: "test-step".into(),
            now_ms: self.now_ms,
            incident_start_ms: self.incident_start_ms,
            incident: "test-incident".into(),
        };
        HOST.with(|h| *h.borrow_mut() = Some(self));
        let result = S::run(ctx, pairs(inputs));
        let host = HOST
            .with(|h| h.borrow_mut().take())
            .expect("installed above");
        Ran { result, host }
    }

    fn call(&mut self, interface: &str, operation: &str, resource: &str) -> Result<(), Error> {
        self.calls
            .push(format!("{interface}.{operation} {resource}"));
        if self.denied.iter().any(|d| d == interface) {
            return Err(Error::Denied(format!(
                "{interface} `{resource}` is not granted to this step"
            )));
        }
        Ok(())
    }

    /// As the host answers: the query checked as the host checks it, one
    /// datapoint per period of the window, aligned to the period, newest
    /// last; an unknown metric has no data.
    pub(crate) fn metrics_query(&mut self, q: &MetricQuery) -> Result<Vec<Datapoint>, Error> {
        let key = format!("{}/{}", q.namespace, q.name);
        self.call("metrics", "query", &key)?;
        if q.name.is_empty() || q.namespace.is_empty() || q.name.contains('/') {
            return Err(Error::Invalid(format!(
                "metric `{}` in namespace `{}`: names must be non-empty and free of `/`",
                q.name, q.namespace
            )));
        }
        let statistic_ok = matches!(
            q.statistic.as_str(),
            "average" | "sum" | "minimum" | "maximum" | "sample-count"
        ) || q
            .statistic
            .strip_prefix('p')
            .and_then(|p| p.parse::<f64>().ok())
            .is_some_and(|p| p > 0.0 && p <= 100.0);
        if !statistic_ok {
            return Err(Error::Invalid(format!(
                "unknown statistic `{}`",
                q.statistic
            )));
        }
        if q.period_seconds == 0 || q.window_seconds < q.period_seconds {
            return Err(Error::Invalid(format!(
                "window {}s must be at least one period ({}s), and the period above 0",
                q.window_seconds, q.period_seconds
            )));
        }
        let points = (q.window_seconds / q.period_seconds) as usize;
        if points > 1440 {
            return Err(Error::Invalid(
                "a query may return at most 1440 datapoints".into(),
            ));
        }
        let mut dims: Vec<String> = q
            .dimensions
            .iter()
            .map(|d| format!("{}={}", d.name, d.value))
            .collect();
        dims.sort();
        let exact = format!("{key}|{}|{}", q.statistic, dims.join(","));
        let values = self
            .metrics
            .get(&exact)
            .or_else(|| self.metrics.get(&key))
            .cloned()
            .unwrap_or_default();
        let recent = &values[values.len().saturating_sub(points)..];
        let period = u64::from(q.period_seconds) * 1000;
        let end = self.now_ms - self.now_ms % period;
        let n = recent.len() as u64;
        Ok(recent
            .iter()
            .enumerate()
            .map(|(i, v)| Datapoint {
                timestamp_ms: end.saturating_sub((n - i as u64) * period),
                value: *v,
            })
            .collect())
    }

    pub(crate) fn redis_ping(&mut self, target: &str) -> Result<PingReply, Error> {
        self.call("redis", "ping", target)?;
        match self.redis.get(target) {
            Some(r) if r.up => Ok(PingReply {
                reply: "PONG".into(),
                latency_ms: r.latency_ms,
            }),
            Some(_) => Err(Error::Unavailable(format!(
                "redis `{target}` did not answer"
            ))),
            None => Err(Error::NotFound(format!(
                "no redis `{target}` in the fake host"
            ))),
        }
    }

    pub(crate) fn redis_info(&mut self, target: &str) -> Result<InfoStats, Error> {
        self.call("redis", "info", target)?;
        match self.redis.get(target) {
            Some(r) if r.up => Ok(r.stats.clone()),
            Some(_) => Err(Error::Unavailable(format!(
                "redis `{target}` did not answer"
            ))),
            None => Err(Error::NotFound(format!(
                "no redis `{target}` in the fake host"
            ))),
        }
    }

    pub(crate) fn flag_get(&mut self, key: &str) -> Result<Option<String>, Error> {
        self.call("feature-flags", "get", key)?;
        Ok(self.flags.get(key).cloned())
    }

    pub(crate) fn flag_set(&mut self, key: &str, value: &str) -> Result<Option<String>, Error> {
        self.call("feature-flags", "set", key)?;
        Ok(self.flags.insert(key.into(), value.into()))
    }

    fn service_mut(&mut self, cluster: &str, service: &str) -> Result<&mut ServiceInfo, Error> {
        self.services
            .get_mut(&format!("{cluster}/{service}"))
            .ok_or_else(|| {
                Error::NotFound(format!("no service `{cluster}/{service}` in the fake host"))
            })
    }

    pub(crate) fn ecs_describe(
        &mut self,
        cluster: &str,
        service: &str,
    ) -> Result<ServiceInfo, Error> {
        self.call("ecs", "describe-service", &format!("{cluster}/{service}"))?;
        self.service_mut(cluster, service).cloned()
    }

    pub(crate) fn ecs_rollback(
        &mut self,
        cluster: &str,
        service: &str,
        revision: Option<u32>,
    ) -> Result<RollbackResult, Error> {
        self.call("ecs", "rollback", &format!("{cluster}/{service}"))?;
        let now = self.now_ms;
        let s = self.service_mut(cluster, service)?;
        let from = s.task_definition.clone();
        let (family, current) = from
            .rsplit_once(':')
            .and_then(|(f, r)| Some((f.to_string(), r.parse::<u32>().ok()?)))
            .ok_or_else(|| Error::Invalid(format!("task definition `{from}` has no revision")))?;
        let to_revision = match revision {
            Some(r) => r,
            None if current > 1 => current - 1,
            None => return Err(Error::NotFound(format!("`{from}` has no older revision"))),
        };
        let to = format!("{family}:{to_revision}");
        s.task_definition = to.clone();
        s.deployments.insert(
            0,
            Deployment {
                id: format!("ecs-svc/{to_revision}-rollback"),
                status: "PRIMARY".into(),
                task_definition: to.clone(),
                created_at_ms: now,
                running_count: 0,
                desired_count: s.desired_count,
                made_by: None,
            },
        );
        Ok(RollbackResult { from, to })
    }

    pub(crate) fn ecs_wait_stable(
        &mut self,
        cluster: &str,
        service: &str,
        timeout_seconds: u32,
    ) -> Result<ServiceInfo, Error> {
        self.call("ecs", "wait-stable", &format!("{cluster}/{service}"))?;
        if timeout_seconds == 0 {
            return Err(Error::Timeout(format!(
                "`{cluster}/{service}` was not stable within 0 s"
            )));
        }
        let s = self.service_mut(cluster, service)?;
        s.deployments.truncate(1);
        s.running_count = s.desired_count;
        if let Some(d) = s.deployments.first_mut() {
            d.running_count = d.desired_count;
        }
        Ok(s.clone())
    }

    pub(crate) fn notify(
        &mut self,
        kind: &str,
        to: &str,
        text: &str,
        dedup_key: Option<&str>,
        severity: Option<Severity>,
    ) -> Result<Sent, Error> {
        let resource = match kind {
            "message" => format!("channel/{to}"),
            _ => format!("page/{to}"),
        };
        self.call("notify", kind, &resource)?;
        self.sent.push(Notification {
            kind: kind.into(),
            to: to.into(),
            text: text.into(),
            dedup_key: dedup_key.map(str::to_string),
            severity,
        });
        Ok(Sent {
            to: to.into(),
            status: match kind {
                "page" => "triggered",
                "resolve" => "resolved",
                _ => "posted",
            }
            .into(),
            dedup_key: dedup_key.map(str::to_string),
        })
    }
}

fn pairs(kv: &[(&str, &str)]) -> Vec<Pair> {
    kv.iter()
        .map(|(k, v)| Pair {
            key: (*k).into(),
            value: (*v).into(),
        })
        .collect()
}
