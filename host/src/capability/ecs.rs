//! `runbook:host/ecs`: describe, roll back, wait until stable. Resource:
//! `cluster/service`. `rollback` is a mutation; `wait-stable` is a read.

use super::{Backends, StepState};
use crate::bindings::Error;
use crate::bindings::runbook::host::ecs::{self as wit, RollbackResult, ServiceInfo};
use crate::grants::{Access, Interface};
use serde_json::json;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

pub trait EcsBackend: Send + Sync {
    fn describe(
        &self,
        cluster: &str,
        service: &str,
        deadline: Instant,
    ) -> Result<ServiceInfo, Error>;
    /// What `rollback` would do, changing nothing.
    fn rollback_plan(
        &self,
        cluster: &str,
        service: &str,
        revision: Option<u32>,
        deadline: Instant,
    ) -> Result<RollbackResult, Error>;
    /// Performs `plan` (from `rollback_plan`, as approved), refusing if the
    /// service no longer runs `plan.from`.
    fn rollback(
        &self,
        cluster: &str,
        service: &str,
        plan: &RollbackResult,
        deadline: Instant,
    ) -> Result<RollbackResult, Error>;
    fn wait_stable(
        &self,
        cluster: &str,
        service: &str,
        timeout_seconds: u32,
        deadline: Instant,
    ) -> Result<ServiceInfo, Error>;
}

impl wit::Host for StepState {
    fn describe_service(&mut self, cluster: String, service: String) -> Result<ServiceInfo, Error> {
        let resource = format!("{cluster}/{service}");
        let args = json!({ "cluster": cluster, "service": service });
        self.call(
            Interface::Ecs,
            "describe-service",
            Access::Read,
            &resource,
            args,
            |b, d| b.ecs.describe(&cluster, &service, d),
        )
    }

    fn rollback(
        &mut self,
        cluster: String,
        service: String,
        revision: Option<u32>,
    ) -> Result<RollbackResult, Error> {
        let resource = format!("{cluster}/{service}");
        let args = json!({ "cluster": cluster, "service": service, "revision": revision });
        let preview = |b: &Backends, d| {
            let plan = b.ecs.rollback_plan(&cluster, &service, revision, d)?;
            let change = format!("roll back `{resource}` {} → {}", plan.from, plan.to);
            Ok((change, plan))
        };
        self.mutate(
            Interface::Ecs,
            "rollback",
            &resource,
            args,
            preview,
            |b, d, plan| b.ecs.rollback(&cluster, &service, plan, d),
        )
    }

    fn wait_stable(
        &mut self,
        cluster: String,
        service: String,
        timeout_seconds: u32,
    ) -> Result<ServiceInfo, Error> {
        let resource = format!("{cluster}/{service}");
        let args =
            json!({ "cluster": cluster, "service": service, "timeout_seconds": timeout_seconds });
        self.call(
            Interface::Ecs,
            "wait-stable",
            Access::Read,
            &resource,
            args,
            |b, d| b.ecs.wait_stable(&cluster, &service, timeout_seconds, d),
        )
    }
}

pub fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
    wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
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

#[cfg(test)]
mod tests {
    #[test]
    fn rollback_target_is_the_newest_older_revision() {
        use super::rollback_target;
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

    use crate::bindings::Error;
    use crate::bindings::runbook::host::ecs::Host;
    use crate::capability::testing::state;

    #[test]
    fn rollback_only_on_the_granted_service() {
        let mut st =
            state("ecs = { read = [\"production/*\"], mutate = [\"production/auth-service\"] }");
        let denied = st
            .rollback("production".into(), "billing".into(), None)
            .unwrap_err();
        assert!(matches!(denied, Error::Denied(_)));
        let r = st
            .rollback("production".into(), "auth-service".into(), None)
            .unwrap();
        assert_eq!(
            (r.from.as_str(), r.to.as_str()),
            ("auth-service:42", "auth-service:41")
        );
        let info = st
            .wait_stable("production".into(), "auth-service".into(), 600)
            .unwrap();
        assert_eq!(info.task_definition, "auth-service:41");
        assert_eq!(info.deployments.len(), 1);
    }

    #[test]
    fn read_only_grant_cannot_roll_back() {
        let mut st = state("ecs = { read = [\"production/auth-service\"] }");
        assert!(
            st.describe_service("production".into(), "auth-service".into())
                .is_ok()
        );
        assert!(matches!(
            st.rollback("production".into(), "auth-service".into(), None)
                .unwrap_err(),
            Error::Denied(_)
        ));
    }

    #[test]
    fn a_dry_run_rollback_reports_the_plan_and_changes_nothing() {
        use crate::approval::Policy;
        use crate::capability::testing::with_policy;
        let mut st = with_policy(
            "ecs = { read = [\"*\"], mutate = [\"*\"] }",
            Policy::DryRun,
            false,
        );
        let r = st
            .rollback("production".into(), "auth-service".into(), None)
            .unwrap();
        assert_eq!(r.to, "auth-service:41");
        let info = st
            .describe_service("production".into(), "auth-service".into())
            .unwrap();
        assert_eq!(info.task_definition, "auth-service:42");
    }

    #[test]
    fn a_rollback_refuses_when_the_service_moved_since_approval() {
        use crate::bindings::runbook::host::ecs::RollbackResult;
        use crate::capability::testing::state;
        let st = state("ecs = { read = [\"*\"] }");
        let stale = RollbackResult {
            from: "auth-service:40".into(),
            to: "auth-service:39".into(),
        };
        let far = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let err = st
            .backends
            .ecs
            .rollback("production", "auth-service", &stale, far)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("runs `auth-service:42`, not `auth-service:40`")),
            "{err:?}"
        );
    }
}
