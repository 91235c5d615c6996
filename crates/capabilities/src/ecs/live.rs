//! ECS: DescribeServices, the previous revision of the service's family
//! (revisions sorted as numbers here, not as listed), UpdateService with
//! a forced new deployment, and waiting until stable by polling
//! DescribeServices (the SDK's waiter polls every 15 s at best).

use super::{EcsBackend, changed_since_approval, rollback_target};
use crate::aws::{aws_error, bounded};
use crate::bindings::Error;
use crate::bindings::runbook::host::ecs::{Deployment, RollbackResult, ServiceInfo};
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::TaskDefinitionStatus;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_secs(2);

/// The real cluster and service behind a `cluster/service` name. The
/// endpoint is `[aws]`'s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsTarget {
    pub cluster: String,
    pub service: String,
}

pub struct Ecs {
    client: Client,
    timeout: Duration,
    targets: BTreeMap<String, EcsTarget>,
}

/// An environment that maps no ECS service.
pub struct Unmapped;

#[async_trait::async_trait]
impl EcsBackend for Unmapped {
    async fn describe(&self, c: &str, s: &str, _: Instant) -> Result<ServiceInfo, Error> {
        Err(unmapped(c, s))
    }
    async fn rollback_plan(
        &self,
        c: &str,
        s: &str,
        _: Option<u32>,
        _: Instant,
    ) -> Result<RollbackResult, Error> {
        Err(unmapped(c, s))
    }
    async fn rollback(
        &self,
        c: &str,
        s: &str,
        _: &RollbackResult,
        _: Instant,
    ) -> Result<RollbackResult, Error> {
        Err(unmapped(c, s))
    }
    async fn wait_stable(
        &self,
        c: &str,
        s: &str,
        _: u32,
        _: Instant,
    ) -> Result<ServiceInfo, Error> {
        Err(unmapped(c, s))
    }
}

fn unmapped(cluster: &str, service: &str) -> Error {
    Error::NotFound(format!(
        "ecs `{cluster}/{service}` is not defined in the environment"
    ))
}

impl Ecs {
    pub fn new(client: Client, timeout: Duration, targets: BTreeMap<String, EcsTarget>) -> Self {
        Self {
            client,
            timeout,
            targets,
        }
    }

    fn target(&self, cluster: &str, service: &str) -> Result<&EcsTarget, Error> {
        self.targets
            .get(&format!("{cluster}/{service}"))
            .ok_or_else(|| unmapped(cluster, service))
    }

    async fn describe_async(
        &self,
        logical: (&str, &str),
        t: &EcsTarget,
    ) -> Result<ServiceInfo, Error> {
        let what = format!("ecs describe `{}/{}`", t.cluster, t.service);
        let out = self
            .client
            .describe_services()
            .cluster(&t.cluster)
            .services(&t.service)
            .send()
            .await
            .map_err(|e| aws_error(&what, e))?;
        let Some(s) = out.services().first() else {
            let why = out
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("not found");
            return Err(Error::NotFound(format!("{what}: {why}")));
        };
        let ms = |d: Option<&aws_sdk_ecs::primitives::DateTime>| {
            d.and_then(|d| d.to_millis().ok()).unwrap_or(0).max(0) as u64
        };
        Ok(ServiceInfo {
            cluster: logical.0.to_string(),
            service: logical.1.to_string(),
            task_definition: short(s.task_definition().unwrap_or_default()),
            running_count: s.running_count().max(0) as u32,
            desired_count: s.desired_count().max(0) as u32,
            deployments: s
                .deployments()
                .iter()
                .map(|d| Deployment {
                    id: d.id().unwrap_or_default().to_string(),
                    status: d.status().unwrap_or_default().to_string(),
                    task_definition: short(d.task_definition().unwrap_or_default()),
                    created_at_ms: ms(d.created_at()),
                    running_count: d.running_count().max(0) as u32,
                    desired_count: d.desired_count().max(0) as u32,
                    made_by: None,
                })
                .collect(),
        })
    }

    async fn plan_async(
        &self,
        logical: (&str, &str),
        t: &EcsTarget,
        revision: Option<u32>,
    ) -> Result<RollbackResult, Error> {
        let info = self.describe_async(logical, t).await?;
        let (family, current) = split(&info.task_definition).ok_or_else(|| {
            Error::Invalid(format!(
                "task definition `{}` is not `family:revision`",
                info.task_definition
            ))
        })?;
        let what = format!("ecs list task definitions `{family}`");
        let mut revisions = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_task_definitions()
                .family_prefix(family)
                .status(TaskDefinitionStatus::Active)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| aws_error(&what, e))?;
            revisions.extend(out.task_definition_arns().iter().filter_map(|arn| {
                split(&short(arn))
                    .filter(|(f, _)| *f == family)
                    .map(|(_, r)| r)
            }));
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let target = rollback_target(family, current, &revisions, revision)?;
        Ok(RollbackResult {
            from: info.task_definition.clone(),
            to: format!("{family}:{target}"),
        })
    }
}

/// `arn:aws:ecs:…:task-definition/auth-service:42` → `auth-service:42`.
fn short(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

fn split(td: &str) -> Option<(&str, u32)> {
    let (family, rev) = td.rsplit_once(':')?;
    Some((family, rev.parse().ok()?))
}

/// One deployment left, all its tasks running.
fn is_stable(s: &ServiceInfo) -> bool {
    s.deployments.len() == 1 && s.running_count == s.desired_count
}

#[async_trait::async_trait]
impl EcsBackend for Ecs {
    async fn describe(
        &self,
        cluster: &str,
        service: &str,
        deadline: Instant,
    ) -> Result<ServiceInfo, Error> {
        let t = self.target(cluster, service)?;
        bounded(
            &format!("ecs describe `{}/{}`", t.cluster, t.service),
            self.timeout,
            deadline,
            self.describe_async((cluster, service), t),
        )
        .await
    }

    async fn rollback_plan(
        &self,
        cluster: &str,
        service: &str,
        revision: Option<u32>,
        deadline: Instant,
    ) -> Result<RollbackResult, Error> {
        let t = self.target(cluster, service)?;
        bounded(
            &format!("ecs rollback plan `{}/{}`", t.cluster, t.service),
            self.timeout,
            deadline,
            self.plan_async((cluster, service), t, revision),
        )
        .await
    }

    async fn rollback(
        &self,
        cluster: &str,
        service: &str,
        plan: &RollbackResult,
        deadline: Instant,
    ) -> Result<RollbackResult, Error> {
        let t = self.target(cluster, service)?;
        let what = format!("ecs rollback `{}/{}`", t.cluster, t.service);
        let current = bounded(&what, self.timeout, deadline, async {
            Ok(self
                .describe_async((cluster, service), t)
                .await?
                .task_definition)
        })
        .await?;
        if current != plan.from {
            return Err(changed_since_approval(service, &current, plan));
        }
        let update = bounded(&what, self.timeout, deadline, async {
            self.client
                .update_service()
                .cluster(&t.cluster)
                .service(&t.service)
                .task_definition(&plan.to)
                .force_new_deployment(true)
                .send()
                .await
                .map_err(|e| aws_error(&what, e))
        })
        .await;
        match update {
            Ok(_) => Ok(plan.clone()),
            // The request may have reached ECS before the answer was lost.
            Err(Error::Timeout(m)) => Err(Error::Timeout(format!(
                "{m}; the rollback to `{}` may have been applied: describe the service before retrying",
                plan.to
            ))),
            Err(e) => Err(e),
        }
    }

    async fn wait_stable(
        &self,
        cluster: &str,
        service: &str,
        timeout_seconds: u32,
        deadline: Instant,
    ) -> Result<ServiceInfo, Error> {
        let t = self.target(cluster, service)?;
        let started = Instant::now();
        let limit = Duration::from_secs(u64::from(timeout_seconds));
        let until = (started + limit).min(deadline);
        let progress = indicatif::ProgressBar::new_spinner();
        progress.enable_steady_tick(Duration::from_millis(200));
        let what = format!("ecs wait-stable `{}/{}`", t.cluster, t.service);
        // One more describe may start just before `until`: allow for it.
        let result = bounded(&what, limit + self.timeout, deadline, async {
            loop {
                // A describe that fails or times out is a failure to look,
                // not a verdict on the service: `unavailable`, never the
                // `timeout` that means "not stable in time".
                let info = bounded(
                    &format!("ecs describe `{}/{}`", t.cluster, t.service),
                    self.timeout,
                    deadline,
                    self.describe_async((cluster, service), t),
                )
                .await
                .map_err(|e| match e {
                    Error::Timeout(m) => Error::Unavailable(m),
                    other => other,
                })?;
                progress.set_message(format!(
                    "waiting for `{cluster}/{service}`: {}/{} running, {} deployment(s)",
                    info.running_count,
                    info.desired_count,
                    info.deployments.len()
                ));
                if is_stable(&info) {
                    return Ok(info);
                }
                if Instant::now() + POLL >= until {
                    let by = if until < started + limit { "the step's deadline" } else { "`timeout-seconds`" };
                    return Err(Error::Timeout(format!(
                        "`{cluster}/{service}` not stable after {}s, the limit set by {by} ({}/{} running, {} deployments)",
                        started.elapsed().as_secs(),
                        info.running_count,
                        info.desired_count,
                        info.deployments.len()
                    )));
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await;
        progress.finish_and_clear();
        result
    }
}

#[cfg(test)]
mod tests {
    use super::{short, split};

    #[test]
    fn task_definition_names() {
        assert_eq!(
            short("arn:aws:ecs:us-east-1:123:task-definition/auth-service:42"),
            "auth-service:42"
        );
        assert_eq!(split("auth-service:42"), Some(("auth-service", 42)));
        assert_eq!(split("auth-service"), None);
    }
}
