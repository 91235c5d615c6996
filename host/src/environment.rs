//! Environment files (`--env FILE`): which real backend each alias means.
//! Grants name aliases (`session-store`, `production/auth-service`); this
//! file maps them to endpoints. It holds no secrets: passwords come from
//! environment variables it names, AWS credentials from the standard chain.

use crate::error::hinted;
use crate::grants::Interface;
use crate::plan::Plan;
use anyhow::Result;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub aws: AwsConfig,
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
    #[serde(default)]
    pub redis: BTreeMap<String, RedisTarget>,
    #[serde(default)]
    pub flags: Option<FlagStore>,
    #[serde(default)]
    pub ecs: BTreeMap<String, EcsTarget>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// Shared by every AWS client. Credentials: the standard chain (env,
/// profile, SSO, instance role).
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
    /// Per service, over `endpoint_url`.
    #[serde(default)]
    pub endpoints: Endpoints,
    /// Per attempt.
    #[serde(default = "default_attempt_timeout")]
    pub attempt_timeout_ms: u64,
    /// Per operation, retries included.
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout_ms: u64,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

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
            endpoints: Endpoints::default(),
            attempt_timeout_ms: default_attempt_timeout(),
            operation_timeout_ms: default_operation_timeout(),
            max_attempts: default_attempts(),
        }
    }
}

/// Endpoint URLs per AWS service (`[aws.endpoints]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoints {
    #[serde(default)]
    pub cloudwatch: Option<String>,
    #[serde(default)]
    pub ecs: Option<String>,
    #[serde(default)]
    pub ssm: Option<String>,
}

/// Where metrics come from: CloudWatch (the default), or recorded responses
/// replayed from a file, for rehearsals and for emulators that cannot
/// answer metric queries.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "source", rename_all = "kebab-case")]
pub enum MetricsConfig {
    Cloudwatch {},
    Replay { path: PathBuf },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTarget {
    /// `redis://host:port/db` or `rediss://` for TLS. No password here.
    pub url: String,
    /// Environment variable holding the password (AUTH), if any.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    /// PEM file of the CA to trust for `rediss://` instead of the system's
    /// roots (relative to the environment file).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_redis_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_redis_timeout")]
    pub response_timeout_ms: u64,
}

fn default_redis_timeout() -> u64 {
    1_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "store", rename_all = "kebab-case")]
pub enum FlagStore {
    /// A JSON object of key → value, rewritten atomically (the default).
    File { path: PathBuf },
    /// A Redis hash.
    Redis {
        #[serde(flatten)]
        target: RedisTarget,
        hash: String,
    },
    /// SSM Parameter Store: flag `K` is parameter `{prefix}K`.
    Ssm { prefix: String },
}

/// The real cluster and service behind a `cluster/service` name. The
/// endpoint is `[aws]`'s.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EcsTarget {
    pub cluster: String,
    pub service: String,
}

const HINT: &str = "see runbooks/environments/README.md for the environment file";

impl Environment {
    pub fn load(path: &Path) -> Result<Self> {
        let mut env: Environment =
            crate::error::load_toml(path, "environment", HINT, |e: &mut Environment| {
                e.validate_timeouts()
            })?;
        env.path = path.to_path_buf();
        // A relative flag file is relative to the environment file.
        if let Some(FlagStore::File { path: flags }) = &mut env.flags
            && flags.is_relative()
        {
            *flags = path.parent().unwrap_or(Path::new(".")).join(&*flags);
        }
        if let Some(MetricsConfig::Replay { path: replay }) = &mut env.metrics
            && replay.is_relative()
        {
            *replay = path.parent().unwrap_or(Path::new(".")).join(&*replay);
        }
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let targets = env.redis.values_mut().chain(match &mut env.flags {
            Some(FlagStore::Redis { target, .. }) => Some(target),
            _ => None,
        });
        for t in targets {
            if let Some(ca) = &mut t.ca_file
                && ca.is_relative()
            {
                *ca = base.join(&*ca);
            }
        }
        for (alias, t) in env
            .redis
            .iter()
            .map(|(a, t)| (a.as_str(), t))
            .chain(match &env.flags {
                Some(FlagStore::Redis { target, .. }) => Some(("flags", target)),
                _ => None,
            })
        {
            if !(t.url.starts_with("redis://") || t.url.starts_with("rediss://")) {
                return Err(hinted(
                    format!(
                        "invalid environment `{}`: redis `{alias}`: url must start with `redis://` or `rediss://`",
                        path.display()
                    ),
                    HINT,
                ));
            }
            if t.url.contains('@') {
                return Err(hinted(
                    format!(
                        "invalid environment `{}`: redis `{alias}`: the url carries credentials",
                        path.display()
                    ),
                    "keep secrets out of the file: name the variable holding the password with `password_env`",
                ));
            }
        }
        Ok(env)
    }

    fn validate_timeouts(&self) -> Result<(), String> {
        let positive = |name: String, v: u64| {
            if v == 0 {
                Err(format!("`{name}` must be above 0"))
            } else {
                Ok(())
            }
        };
        positive("aws.attempt_timeout_ms".into(), self.aws.attempt_timeout_ms)?;
        positive(
            "aws.operation_timeout_ms".into(),
            self.aws.operation_timeout_ms,
        )?;
        positive("aws.max_attempts".into(), u64::from(self.aws.max_attempts))?;
        let flags = match &self.flags {
            Some(FlagStore::Redis { target, .. }) => Some(("flags".to_string(), target)),
            _ => None,
        };
        for (alias, t) in self
            .redis
            .iter()
            .map(|(a, t)| (format!("redis.{a}"), t))
            .chain(flags)
        {
            positive(format!("{alias}.connect_timeout_ms"), t.connect_timeout_ms)?;
            positive(
                format!("{alias}.response_timeout_ms"),
                t.response_timeout_ms,
            )?;
        }
        Ok(())
    }

    /// Every exact alias a step's grant names must be mapped here; wildcard
    /// grants are checked per call.
    pub fn check_plan(&self, plan: &Plan) -> Result<()> {
        plan.check_aliases(
            &format!("environment `{}`", self.path.display()),
            |interface, alias| match interface {
                Interface::Redis => self.redis.contains_key(alias),
                _ => self.ecs.contains_key(alias),
            },
            |interface, alias| match interface {
                Interface::Redis => format!(
                    "add `[redis.{alias}]` with its `url` to `{}`",
                    self.path.display()
                ),
                _ => format!(
                    "add `[ecs.\"{alias}\"]` with `cluster` and `service` to `{}`",
                    self.path.display()
                ),
            },
        )?;
        if let Some(step) = plan.steps.iter().find(|s| s.grants.feature_flags.is_some())
            && self.flags.is_none()
        {
            return Err(hinted(
                format!(
                    "step `{}` of `{}` uses feature flags, but environment `{}` has no `[flags]` store",
                    step.def.id,
                    plan.runbook.path.display(),
                    self.path.display()
                ),
                "add `[flags]` with `store = \"file\"` and a `path` (or `redis` / `ssm`)",
            ));
        }
        Ok(())
    }
}
