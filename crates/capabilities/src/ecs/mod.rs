//! `runbook:host/ecs`: describe, roll back, wait until stable. Resource:
//! `cluster/service`. `rollback` is a mutation; `wait-stable` is a read.
//! Simulated from a scenario's `[ecs."cluster/service"]` (`sim.rs`); live
//! against ECS for the services an environment's `[ecs."cluster/service"]`
//! maps (`live.rs`).

pub mod live;
pub mod sim;

use crate::backends::Backed;
use crate::bindings::runbook::host::ecs as wit;
use crate::bindings::runbook::host::ecs::{RollbackResult, ServiceInfo};
use crate::bindings::{Error, forward};
use crate::capability::{Capability, LiveContext, Missing};
use crate::state::StepState;
use runbook_core::interface::Interface;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

#[async_trait::async_trait]
pub trait EcsBackend: Send + Sync {
    async fn describe(
        &self,
        cluster: &str,
        service: &str,
        deadline: Instant,
    ) -> Result<ServiceInfo, Error>;
    /// What `rollback` would do, changing nothing.
    async fn rollback_plan(
        &self,
        cluster: &str,
        service: &str,
        revision: Option<u32>,
        deadline: Instant,
    ) -> Result<RollbackResult, Error>;
    /// Performs `plan` (from `rollback_plan`, as approved), refusing if the
    /// service no longer runs `plan.from`.
    async fn rollback(
        &self,
        cluster: &str,
        service: &str,
        plan: &RollbackResult,
        deadline: Instant,
    ) -> Result<RollbackResult, Error>;
    async fn wait_stable(
        &self,
        cluster: &str,
        service: &str,
        timeout_seconds: u32,
        deadline: Instant,
    ) -> Result<ServiceInfo, Error>;
}

pub struct Cap;

impl Backed for Cap {
    const INTERFACE: Interface = Interface::Ecs;
    type Backend = dyn EcsBackend;
}

impl Capability for Cap {
    type SimConfig = BTreeMap<String, sim::SimService>;
    type LiveConfig = BTreeMap<String, live::EcsTarget>;

    fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
        // Components built against 0.1.0 get the same functions.
        crate::bindings::v0_1::runbook::host::ecs::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
    }

    fn check_sim(config: &Self::SimConfig) -> Result<(), String> {
        sim::check(config)
    }

    fn sim(config: &Self::SimConfig, world: &Arc<crate::sim::World>) -> Arc<Self::Backend> {
        let ecs = Arc::new(sim::SimEcs::new(config, world.clone()));
        world.put(Interface::Ecs, ecs.clone());
        ecs
    }

    fn sim_provides(config: &Self::SimConfig, name: &str) -> Result<(), Missing> {
        // Wildcard grants are checked per call.
        if name.ends_with('*') || config.contains_key(name) {
            return Ok(());
        }
        Err(Missing::new(
            "which {source} does not define",
            format!("add `[ecs.\"{name}\"]` with its revisions and deployments to `{{path}}`"),
        ))
    }

    fn live_provides(config: &Self::LiveConfig, name: &str) -> Result<(), Missing> {
        // Wildcard grants are checked per call.
        if name.ends_with('*') || config.contains_key(name) {
            return Ok(());
        }
        Err(Missing::new(
            "which {source} does not define",
            format!("add `[ecs.\"{name}\"]` with `cluster` and `service` to `{{path}}`"),
        ))
    }

    fn live_identity(config: &Self::LiveConfig, name: &str) -> Option<String> {
        config
            .get(name)
            .map(|t| format!("ecs-service:{}/{}", t.cluster, t.service))
    }

    fn live_uses_aws(config: &Self::LiveConfig) -> bool {
        !config.is_empty()
    }

    fn live(config: &Self::LiveConfig, ctx: &LiveContext) -> anyhow::Result<Arc<Self::Backend>> {
        let Some(aws) = &ctx.aws else {
            // No service is mapped: every call is `not-found`, and load-time
            // checks refuse a runbook granted one.
            return Ok(Arc::new(live::Unmapped));
        };
        let mut conf = aws_sdk_ecs::config::Builder::from(&aws.sdk);
        if let Some(url) = aws.endpoint("ecs") {
            conf = conf.endpoint_url(url);
        }
        let client = aws_sdk_ecs::Client::from_conf(conf.build());
        Ok(Arc::new(live::Ecs::new(
            client,
            aws.operation_timeout(),
            config.clone(),
        )))
    }
}

impl wit::Host for StepState {
    async fn describe_service(
        &mut self,
        cluster: String,
        service: String,
    ) -> wasmtime::Result<Result<ServiceInfo, Error>> {
        let resource = format!("{cluster}/{service}");
        let args = json!({ "cluster": cluster, "service": service });
        let mut described = self
            .read(
                Cap,
                "describe-service",
                &resource,
                args,
                |b, d| async move { b.describe(&cluster, &service, d).await },
            )
            .await?;
        if let Ok(info) = &mut described {
            mark_own(info, &resource, self.own_changes());
        }
        Ok(described)
    }

    async fn rollback(
        &mut self,
        cluster: String,
        service: String,
        revision: Option<u32>,
    ) -> wasmtime::Result<Result<RollbackResult, Error>> {
        let resource = format!("{cluster}/{service}");
        let args = json!({ "cluster": cluster, "service": service, "revision": revision });
        let (c, s, r) = (cluster.clone(), service.clone(), resource.clone());
        let preview = |b: Arc<dyn EcsBackend>, d| async move {
            let plan = b.rollback_plan(&c, &s, revision, d).await?;
            let change = format!("roll back `{r}` {} → {}", plan.from, plan.to);
            Ok((change, plan))
        };
        let (c, s) = (cluster.clone(), service.clone());
        let in_effect = |b: Arc<dyn EcsBackend>, d, plan: RollbackResult| async move {
            Ok(b.describe(&c, &s, d).await?.task_definition == plan.to)
        };
        self.mutate(
            Cap,
            "rollback",
            &resource,
            args,
            preview,
            |b, d, plan| async move { b.rollback(&cluster, &service, &plan, d).await },
            in_effect,
        )
        .await
    }

    async fn wait_stable(
        &mut self,
        cluster: String,
        service: String,
        timeout_seconds: u32,
    ) -> wasmtime::Result<Result<ServiceInfo, Error>> {
        let resource = format!("{cluster}/{service}");
        let args =
            json!({ "cluster": cluster, "service": service, "timeout_seconds": timeout_seconds });
        self.read(Cap, "wait-stable", &resource, args, |b, d| async move {
            b.wait_stable(&cluster, &service, timeout_seconds, d).await
        })
        .await
    }
}

/// Marks the deployments an earlier run of this incident made (a rollback
/// to that task definition, created between its intent and its result,
/// give or take the clocks' skew): a rerun must not take its own fix for
/// the bad deploy.
fn mark_own(info: &mut ServiceInfo, resource: &str, own: &[runbook_journal::replay::OwnChange]) {
    const SKEW_MS: u64 = 5_000;
    for d in &mut info.deployments {
        d.made_by = own
            .iter()
            .find(|c| {
                c.interface == "ecs"
                    && c.operation == "rollback"
                    && c.resource == resource
                    && c.result["to"] == d.task_definition.as_str()
                    && d.created_at_ms + SKEW_MS >= c.intent_ms
                    && d.created_at_ms <= c.applied_ms + SKEW_MS
            })
            .map(|c| c.run_id.clone());
    }
}

/// The error when a service moved between the approval and the rollback.
pub fn changed_since_approval(service: &str, now: &str, plan: &RollbackResult) -> Error {
    Error::Invalid(format!(
        "`{service}` runs `{now}`, not `{}` as when the rollback to `{}` was approved; nothing was changed",
        plan.from, plan.to
    ))
}

/// The revision a rollback goes to: `requested` if it is registered and not
/// the current one, else the newest registered revision older than
/// `current`. Revisions are compared as numbers, never as listed.
pub fn rollback_target(
    family: &str,
    current: u32,
    revisions: &[u32],
    requested: Option<u32>,
) -> Result<u32, Error> {
    match requested {
        Some(r) if r == current => Err(Error::Invalid(format!(
            "the service already runs `{family}:{r}`"
        ))),
        Some(r) if revisions.contains(&r) => Ok(r),
        Some(r) => Err(Error::NotFound(format!(
            "task definition `{family}:{r}` is not registered"
        ))),
        None => revisions
            .iter()
            .copied()
            .filter(|r| *r < current)
            .max()
            .ok_or_else(|| {
                Error::NotFound(format!("no revision of `{family}` older than {current}"))
            }),
    }
}

/// `runbook:host@0.1.0`: the same functions, forwarded.
impl crate::bindings::v0_1::runbook::host::ecs::Host for StepState {
    async fn describe_service(
        &mut self,
        cluster: String,
        service: String,
    ) -> wasmtime::Result<
        Result<
            crate::bindings::v0_1::runbook::host::ecs::ServiceInfo,
            crate::bindings::v0_1::runbook::host::types::Error,
        >,
    > {
        Ok(forward(
            wit::Host::describe_service(self, cluster, service).await?,
        ))
    }

    async fn rollback(
        &mut self,
        cluster: String,
        service: String,
        revision: Option<u32>,
    ) -> wasmtime::Result<
        Result<
            crate::bindings::v0_1::runbook::host::ecs::RollbackResult,
            crate::bindings::v0_1::runbook::host::types::Error,
        >,
    > {
        Ok(forward(
            wit::Host::rollback(self, cluster, service, revision).await?,
        ))
    }

    async fn wait_stable(
        &mut self,
        cluster: String,
        service: String,
        timeout_seconds: u32,
    ) -> wasmtime::Result<
        Result<
            crate::bindings::v0_1::runbook::host::ecs::ServiceInfo,
            crate::bindings::v0_1::runbook::host::types::Error,
        >,
    > {
        Ok(forward(
            wit::Host::wait_stable(self, cluster, service, timeout_seconds).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    /// A deployment an earlier run of the incident made by its rollback is
    /// marked with that run; the bad deploy before it, and a rollback to
    /// the same revision long after, are not.
    #[test]
    fn an_incidents_own_rollback_is_marked() {
        let dep = |id: &str, td: &str, at: u64| crate::bindings::runbook::host::ecs::Deployment {
            id: id.into(),
            status: "PRIMARY".into(),
            task_definition: td.into(),
            created_at_ms: at,
            running_count: 1,
            desired_count: 1,
            made_by: None,
        };
        let mut info = ServiceInfo {
            cluster: "c".into(),
            service: "s".into(),
            task_definition: "a:41".into(),
            running_count: 1,
            desired_count: 1,
            deployments: vec![
                dep("bad", "a:42", 1_000_000),
                dep("fix", "a:41", 2_000_500),
                dep("later", "a:41", 9_000_000),
            ],
        };
        let own = [runbook_journal::replay::OwnChange {
            run_id: "run-1".into(),
            interface: "ecs".into(),
            operation: "rollback".into(),
            resource: "production/auth-service".into(),
            result: json!({ "from": "a:42", "to": "a:41" }),
            intent_ms: 2_000_000,
            applied_ms: 2_001_000,
        }];
        mark_own(&mut info, "production/auth-service", &own);
        let marks: Vec<_> = info
            .deployments
            .iter()
            .map(|d| d.made_by.as_deref())
            .collect();
        assert_eq!(marks, [None, Some("run-1"), None]);
        mark_own(&mut info, "production/billing", &own);
        assert!(info.deployments.iter().all(|d| d.made_by.is_none()));
    }

    use super::*;
    use crate::bindings::runbook::host::ecs::Host;
    use crate::testing;
    use crate::testing::Counted;
    use crate::testing::state;

    #[test]
    fn rollback_target_is_the_newest_older_revision() {
        assert_eq!(
            rollback_target("a", 42, &[9, 41, 40, 42, 100], None).unwrap(),
            41
        );
        assert_eq!(
            rollback_target("a", 42, &[40, 41, 42], Some(40)).unwrap(),
            40
        );
        assert!(rollback_target("a", 42, &[40, 41, 42], Some(42)).is_err());
        assert!(rollback_target("a", 42, &[40, 41, 42], Some(7)).is_err());
        assert!(rollback_target("a", 1, &[1, 2], None).is_err());
    }

    #[tokio::test]
    async fn rollback_only_on_the_granted_service() {
        let mut st =
            state("ecs = { read = [\"production/*\"], mutate = [\"production/auth-service\"] }");
        let denied = st
            .rollback("production".into(), "billing".into(), None)
            .await
            .unwrap()
            .unwrap_err();
        assert!(matches!(denied, Error::Denied(_)));
        let r = st
            .rollback("production".into(), "auth-service".into(), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("auth-service:42", "auth-service:41")
        );
        let info = st
            .wait_stable("production".into(), "auth-service".into(), 600)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.task_definition, "auth-service:41");
        assert_eq!(info.deployments.len(), 1);
    }

    #[tokio::test]
    async fn read_only_grant_cannot_roll_back() {
        let mut st = state("ecs = { read = [\"production/auth-service\"] }");
        assert!(
            st.describe_service("production".into(), "auth-service".into())
                .await
                .unwrap()
                .is_ok()
        );
        assert!(matches!(
            st.rollback("production".into(), "auth-service".into(), None)
                .await
                .unwrap()
                .unwrap_err(),
            Error::Denied(_)
        ));
    }

    #[tokio::test]
    async fn a_dry_run_rollback_reports_the_plan_and_changes_nothing() {
        use crate::testing::with_policy;
        use runbook_core::approval::Policy;
        let mut st = with_policy(
            "ecs = { read = [\"*\"], mutate = [\"*\"] }",
            Policy::DryRun,
            false,
        );
        let r = st
            .rollback("production".into(), "auth-service".into(), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.to, "auth-service:41");
        let info = st
            .describe_service("production".into(), "auth-service".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(info.task_definition, "auth-service:42");
    }

    #[tokio::test]
    async fn a_rollback_refuses_when_the_service_moved_since_approval() {
        let world = crate::sim::World::new(0, None);
        let config: BTreeMap<String, sim::SimService> = toml::from_str(
            "[\"production/auth-service\"]\nfamily = \"auth-service\"\nrevisions = [40, 41, 42]\ndesired = 4\ndeployments = [{ revision = 42, created_at = \"2026-11-26T02:40:00Z\" }]\n",
        )
        .unwrap();
        let ecs = sim::SimEcs::new(&config, world);
        let stale = RollbackResult {
            from: "auth-service:40".into(),
            to: "auth-service:39".into(),
        };
        let far = Instant::now() + std::time::Duration::from_secs(5);
        let err = ecs
            .rollback("production", "auth-service", &stale, far)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("runs `auth-service:42`, not `auth-service:40`")),
            "{err:?}"
        );
    }

    struct Recording;

    #[async_trait::async_trait]
    impl EcsBackend for Counted<Recording> {
        async fn describe(&self, c: &str, s: &str, _: Instant) -> Result<ServiceInfo, Error> {
            self.hit();
            Ok(ServiceInfo {
                cluster: c.into(),
                service: s.into(),
                task_definition: "a:2".into(),
                running_count: 1,
                desired_count: 1,
                deployments: vec![],
            })
        }
        async fn rollback_plan(
            &self,
            _: &str,
            _: &str,
            _: Option<u32>,
            _: Instant,
        ) -> Result<RollbackResult, Error> {
            self.hit();
            Ok(RollbackResult {
                from: "a:2".into(),
                to: "a:1".into(),
            })
        }
        async fn rollback(
            &self,
            _: &str,
            _: &str,
            plan: &RollbackResult,
            _: Instant,
        ) -> Result<RollbackResult, Error> {
            self.hit();
            Ok(plan.clone())
        }
        async fn wait_stable(
            &self,
            c: &str,
            s: &str,
            _: u32,
            d: Instant,
        ) -> Result<ServiceInfo, Error> {
            self.describe(c, s, d).await
        }
    }

    #[tokio::test]
    async fn a_denied_call_never_reaches_the_backend() {
        let backend = Arc::new(Counted::new(Recording));
        let mut st = testing::with_backend::<Cap>(
            "ecs = { read = [\"production/*\"], mutate = [\"production/auth\"] }",
            backend.clone(),
        );
        let denied = [
            st.describe_service("staging".into(), "auth".into())
                .await
                .unwrap()
                .map(|_| ()),
            st.rollback("production".into(), "billing".into(), None)
                .await
                .unwrap()
                .map(|_| ()),
            st.wait_stable("staging".into(), "auth".into(), 1)
                .await
                .unwrap()
                .map(|_| ()),
        ];
        assert!(denied.iter().all(|r| matches!(r, Err(Error::Denied(_)))));
        assert_eq!(backend.hits(), 0);
        st.rollback("production".into(), "auth".into(), None)
            .await
            .unwrap()
            .unwrap();
        // The preview and the rollback itself.
        assert_eq!(backend.hits(), 2);
    }
}
