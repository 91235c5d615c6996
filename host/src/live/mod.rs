//! Live backends: CloudWatch, Redis, a flag store and ECS, chosen by an
//! environment file. Host calls are synchronous; the AWS SDK is async, so
//! each AWS call runs to completion on a small tokio runtime, bounded by
//! the smaller of its own timeout and the step's deadline.

pub mod cloudwatch;
pub mod ecs;
pub mod flags;
pub mod redis;
pub mod replay;

use crate::bindings::Error;
use crate::capability::{Backends, Clock};
use crate::environment::{AwsConfig, Environment, FlagStore, MetricsConfig};
use anyhow::{Context, Result};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs AWS futures to completion for synchronous host calls.
#[derive(Clone)]
pub struct Blocking {
    rt: Arc<tokio::runtime::Runtime>,
}

impl Blocking {
    pub fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the tokio runtime for AWS calls")?;
        Ok(Self { rt: Arc::new(rt) })
    }

    /// `fut`, cut off at `limit` or the step's `deadline`, whichever is first.
    pub fn run<T>(
        &self,
        what: &str,
        limit: Duration,
        deadline: Instant,
        fut: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(limit);
        if left.is_zero() {
            return Err(Error::Timeout(format!(
                "{what}: the step's deadline has passed"
            )));
        }
        self.rt
            .block_on(async { tokio::time::timeout(left, fut).await })
            .unwrap_or_else(|_| {
                Err(Error::Timeout(format!(
                    "{what}: no answer within {} ms",
                    left.as_millis()
                )))
            })
    }

    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.rt.block_on(fut)
    }
}

/// Real time; the incident start comes from `--incident-start`.
pub struct RealClock {
    pub incident_start_ms: Option<u64>,
}

impl Clock for RealClock {
    fn now_ms(&self) -> u64 {
        crate::scenario::now_ms()
    }

    fn incident_start_ms(&self) -> Option<u64> {
        self.incident_start_ms
    }
}

/// How long loading AWS settings (region, profile, credentials chain) may
/// take: the chain can reach the instance metadata service.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared AWS settings: region, profile, endpoint, and explicit timeouts
/// and retries (the SDK's defaults have no operation timeout).
pub fn sdk_config(blocking: &Blocking, aws: &AwsConfig) -> Result<SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(aws.attempt_timeout_ms.min(3_000)))
                .operation_attempt_timeout(Duration::from_millis(aws.attempt_timeout_ms))
                .operation_timeout(Duration::from_millis(aws.operation_timeout_ms))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(aws.max_attempts.max(1)));
    if let Some(region) = &aws.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &aws.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    blocking
        .block_on(async { tokio::time::timeout(CONFIG_TIMEOUT, loader.load()).await })
        .map_err(|_| {
            crate::error::hinted(
                format!("loading the AWS configuration took longer than {} s", CONFIG_TIMEOUT.as_secs()),
                "set `region` in `[aws]` and make credentials available (env, profile, SSO); outside AWS set AWS_EC2_METADATA_DISABLED=true",
            )
        })
}

/// Every capability backed by what `env` names; `used`: the interfaces the
/// runbook's steps are granted.
pub fn backends(
    env: &Environment,
    incident_start_ms: Option<u64>,
    used: &std::collections::BTreeSet<crate::grants::Interface>,
) -> Result<Backends> {
    use crate::grants::Interface;
    let blocking = Blocking::new()?;
    let replayed = matches!(env.metrics, Some(MetricsConfig::Replay { .. }));
    let ssm_flags = matches!(env.flags, Some(FlagStore::Ssm { .. }));
    let uses_aws = (used.contains(&Interface::Metrics) && !replayed)
        || used.contains(&Interface::Ecs)
        || (used.contains(&Interface::FeatureFlags) && ssm_flags);
    // Only load AWS settings (and reach for credentials) when a service needs them.
    let sdk = if uses_aws {
        sdk_config(&blocking, &env.aws)?
    } else {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .build()
    };
    let op_timeout = Duration::from_millis(env.aws.operation_timeout_ms);

    let endpoints = &env.aws.endpoints;
    let metrics: Arc<dyn crate::capability::MetricsBackend> = match &env.metrics {
        Some(MetricsConfig::Replay { path }) => Arc::new(replay::Replay::load(path)?),
        _ => {
            let mut conf = aws_sdk_cloudwatch::config::Builder::from(&sdk);
            if let Some(url) = &endpoints.cloudwatch {
                conf = conf.endpoint_url(url);
            }
            let client = aws_sdk_cloudwatch::Client::from_conf(conf.build());
            Arc::new(cloudwatch::CloudWatch::new(
                client,
                blocking.clone(),
                op_timeout,
            ))
        }
    };
    let mut conf = aws_sdk_ecs::config::Builder::from(&sdk);
    if let Some(url) = &endpoints.ecs {
        conf = conf.endpoint_url(url);
    }
    let client = aws_sdk_ecs::Client::from_conf(conf.build());
    let ecs = ecs::Ecs::new(client, blocking.clone(), op_timeout, env.ecs.clone());
    let flags: Arc<dyn crate::capability::FlagsBackend> = match &env.flags {
        None => Arc::new(flags::Unconfigured),
        Some(FlagStore::File { path }) => Arc::new(flags::FileFlags::new(path.clone())),
        Some(FlagStore::Redis { target, hash }) => {
            Arc::new(flags::RedisFlags::new(target.clone(), hash.clone()))
        }
        Some(FlagStore::Ssm { prefix }) => {
            let mut conf = aws_sdk_ssm::config::Builder::from(&sdk);
            if let Some(url) = &endpoints.ssm {
                conf = conf.endpoint_url(url);
            }
            let client = aws_sdk_ssm::Client::from_conf(conf.build());
            Arc::new(flags::SsmFlags::new(
                client,
                blocking.clone(),
                op_timeout,
                prefix.clone(),
            ))
        }
    };
    Ok(Backends {
        metrics,
        redis: Arc::new(redis::Redis::new(env.redis.clone())),
        flags,
        ecs: Arc::new(ecs),
        clock: Arc::new(RealClock { incident_start_ms }),
    })
}

/// An AWS SDK error as the step should see it: throttling and unreachable
/// endpoints are `unavailable`, timeouts `timeout`, bad requests `invalid`.
pub fn aws_error<E, R>(what: &str, err: aws_sdk_ecs::error::SdkError<E, R>) -> Error
where
    E: aws_sdk_ecs::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ecs::error::SdkError;
    match &err {
        SdkError::TimeoutError(_) => Error::Timeout(format!("{what}: timed out")),
        SdkError::DispatchFailure(d) if d.is_timeout() => {
            Error::Timeout(format!("{what}: timed out"))
        }
        SdkError::DispatchFailure(_) => Error::Unavailable(format!("{what}: {}", chain(&err))),
        SdkError::ServiceError(s) => {
            let e = s.err();
            let code = e.code().unwrap_or("Unknown");
            let text = format!("{what}: {code}: {}", e.message().unwrap_or(""));
            match code {
                "Throttling"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException" => Error::Unavailable(text),
                "InvalidClientTokenId"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "SignatureDoesNotMatch"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "AccessDenied"
                | "AccessDeniedException"
                | "MissingAuthenticationToken" => Error::Unavailable(format!(
                    "{text} (check the AWS credentials and their permissions)"
                )),
                "ParameterNotFound"
                | "ServiceNotFoundException"
                | "ClusterNotFoundException"
                | "ResourceNotFoundException"
                | "ResourceNotFound" => Error::NotFound(text),
                "InvalidParameterException"
                | "InvalidParameterValue"
                | "InvalidParameterCombination"
                | "ValidationError"
                | "ValidationException"
                | "InvalidNextToken" => Error::Invalid(text),
                _ => Error::Unavailable(text),
            }
        }
        _ => Error::Unavailable(format!("{what}: {}", chain(&err))),
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_progress_is_cut_off_at_the_deadline() {
        let blocking = Blocking::new().unwrap();
        let deadline = Instant::now() + Duration::from_millis(50);
        let never = std::future::pending::<Result<(), Error>>();
        let err = blocking
            .run("call", Duration::from_secs(60), deadline, never)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout(m) if m.starts_with("call: no answer within")),
            "{err:?}"
        );
    }
}
