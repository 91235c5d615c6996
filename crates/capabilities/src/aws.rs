//! AWS settings shared by the capabilities whose live backends are AWS
//! services (CloudWatch, ECS, SSM): the `[aws]` section of an environment
//! file, the SDK configuration loaded from it with explicit timeouts and
//! retries, and how an SDK error reads to a step.

use crate::bindings::Error;
use anyhow::Result;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// `[aws]`: shared by every AWS client. Credentials come from the standard
/// chain (env, profile, SSO, instance role), never from this file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    /// For emulators (moto, LocalStack) or VPC endpoints: all services.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Per service (`cloudwatch`, `ecs`, `ssm`, `sns`, `secretsmanager`),
    /// over `endpoint_url`.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
    /// Per attempt.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_ms: u64,
    /// Per operation, retries included.
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout_ms: u64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

/// The services `[aws.endpoints]` may name.
pub const SERVICES: &[&str] = &["cloudwatch", "ecs", "ssm", "sns", "secretsmanager"];

fn default_attempt_timeout() -> u64 {
    3_000
}
fn default_operation_timeout() -> u64 {
    10_000
}
fn default_attempts() -> u32 {
    3
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            profile: None,
            endpoint_url: None,
            endpoints: BTreeMap::new(),
            attempt_timeout_ms: default_attempt_timeout(),
            operation_timeout_ms: default_operation_timeout(),
            max_attempts: default_attempts(),
        }
    }
}

impl AwsConfig {
    /// Where resources live, as far as names go: the region (one cluster
    /// name is one cluster in a region of an account; names that collide
    /// across accounts only make runs wait for each other).
    pub fn identity(&self) -> String {
        self.region
            .clone()
            .unwrap_or_else(|| "default-region".into())
    }

    /// Timeouts within range, endpoints for known services.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("aws.attempt_timeout_ms", self.attempt_timeout_ms),
            ("aws.operation_timeout_ms", self.operation_timeout_ms),
        ] {
            if v == 0 || v > 3_600_000 {
                return Err(format!("`{name}` must be between 1 and 3600000, not {v}"));
            }
        }
        if self.max_attempts == 0 || self.max_attempts > 10 {
            return Err(format!(
                "`aws.max_attempts` must be between 1 and 10, not {}",
                self.max_attempts
            ));
        }
        if let Some(name) = self
            .endpoints
            .keys()
            .find(|k| !SERVICES.contains(&k.as_str()))
        {
            return Err(format!(
                "`aws.endpoints.{name}`: not a service this host calls (one of {})",
                SERVICES.join(", ")
            ));
        }
        Ok(())
    }
}

/// Loaded AWS settings, ready to build clients from.
#[derive(Clone)]
pub struct Aws {
    pub sdk: SdkConfig,
    pub config: AwsConfig,
}

impl Aws {
    /// The endpoint for `service`, when one is configured.
    pub fn endpoint(&self, service: &str) -> Option<&str> {
        self.config.endpoints.get(service).map(String::as_str)
    }

    /// The per-operation timeout every AWS call is cut off at.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.config.operation_timeout_ms)
    }
}

/// How long loading AWS settings (region, profile, credentials chain) may
/// take: the chain can reach the instance metadata service.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(10);

/// Shared AWS settings: region, profile, endpoint, and explicit timeouts
/// and retries (the SDK's defaults have no operation timeout).
pub async fn load(config: &AwsConfig) -> Result<Aws> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(config.attempt_timeout_ms.min(3_000)))
                .operation_attempt_timeout(Duration::from_millis(config.attempt_timeout_ms))
                .operation_timeout(Duration::from_millis(config.operation_timeout_ms))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(config.max_attempts.max(1)));
    if let Some(region) = &config.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &config.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &config.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    let sdk = tokio::time::timeout(CONFIG_TIMEOUT, loader.load())
        .await
        .map_err(|_| {
            runbook_core::error::hinted(
                format!("loading the AWS configuration took longer than {} s", CONFIG_TIMEOUT.as_secs()),
                "set `region` in `[aws]` and make credentials available (env, profile, SSO); outside AWS set AWS_EC2_METADATA_DISABLED=true",
            )
        })?;
    Ok(Aws {
        sdk,
        config: config.clone(),
    })
}

/// `fut`, cut off at `limit` or the step's `deadline`, whichever is first.
pub async fn bounded<T>(
    what: &str,
    limit: Duration,
    deadline: std::time::Instant,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let left = deadline
        .saturating_duration_since(std::time::Instant::now())
        .min(limit);
    if left.is_zero() {
        return Err(Error::Timeout(format!(
            "{what}: the step's deadline has passed"
        )));
    }
    tokio::time::timeout(left, fut).await.unwrap_or_else(|_| {
        Err(Error::Timeout(format!(
            "{what}: no answer within {} ms",
            left.as_millis()
        )))
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
                | "ResourceNotFound"
                | "NotFound" => Error::NotFound(text),
                "InvalidParameterException"
                | "InvalidParameterValue"
                | "InvalidParameterCombination"
                | "InvalidParameter"
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

    #[tokio::test]
    async fn a_call_in_progress_is_cut_off_at_the_deadline() {
        let deadline = std::time::Instant::now() + Duration::from_millis(50);
        let never = std::future::pending::<Result<(), Error>>();
        let err = bounded("call", Duration::from_secs(60), deadline, never)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout(m) if m.starts_with("call: no answer within")),
            "{err:?}"
        );
    }

    #[test]
    fn unknown_endpoint_services_are_refused() {
        let mut c = AwsConfig::default();
        c.endpoints
            .insert("ecss".into(), "http://127.0.0.1:1".into());
        assert!(c.validate().unwrap_err().contains("`aws.endpoints.ecss`"));
    }
}
