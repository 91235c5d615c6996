//! Redis PING and INFO against real servers, by alias (`[redis.ALIAS]` in
//! an environment). Each call connects afresh; the connection and the
//! command are each cut off by our own timeouts (`connect_timeout_ms`,
//! `response_timeout_ms`) and by the step's deadline, whatever the
//! resolver or the client library would otherwise wait.

use super::RedisBackend;
use crate::bindings::Error;
use crate::bindings::runbook::host::redis::{InfoStats, PingReply};
use redis::IntoConnectionInfo;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One Redis server. No password here: `password_env` names the variable
/// that holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTarget {
    /// `redis://host:port/db` or `rediss://` for TLS. No password here.
    pub url: String,
    /// Environment variable holding the password (AUTH), if any.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Or the AWS Secrets Manager secret holding it (`NAME` or
    /// `NAME#KEY`): `crate::secrets`.
    #[serde(default)]
    pub password_secret: Option<String>,
    /// The password, once read for a run ([`RedisTarget::resolved`]).
    #[serde(skip)]
    pub password: Option<crate::secrets::Secret>,
    #[serde(default)]
    pub username: Option<String>,
    /// PEM file of the CA to trust for `rediss://` instead of the system's
    /// roots (relative to the environment file).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_timeout")]
    pub response_timeout_ms: u64,
}

fn default_timeout() -> u64 {
    1_000
}

impl RedisTarget {
    /// Checks the url, the timeouts and `password_env`; resolves `ca_file`
    /// against `base`. `at` names the section in errors.
    pub fn check(&mut self, at: &str, base: &Path) -> Result<(), String> {
        if !(self.url.starts_with("redis://") || self.url.starts_with("rediss://")) {
            return Err(format!(
                "{at}: url must start with `redis://` or `rediss://`"
            ));
        }
        if self.url.contains('@') {
            return Err(format!(
                "{at}: the url carries credentials; keep secrets out of the file and name the variable holding the password with `password_env`"
            ));
        }
        for (name, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("response_timeout_ms", self.response_timeout_ms),
        ] {
            if v == 0 || v > 600_000 {
                return Err(format!("{at}.{name} must be between 1 and 600000, not {v}"));
            }
        }
        // Never echo `password_env`: it may be the secret itself, pasted
        // by mistake.
        if let Some(var) = &self.password_env {
            if !is_variable_name(var) {
                return Err(format!(
                    "{at}.password_env must name an environment variable (letters, digits and `_`), not hold the password itself"
                ));
            }
            if std::env::var_os(var).is_none() {
                return Err(format!(
                    "{at}.password_env names a variable that is not set: export it (with the password) before the run"
                ));
            }
        }
        crate::secrets::SecretRef::either(
            at,
            "password",
            self.password_env.as_ref(),
            self.password_secret.as_ref(),
        )?;
        if let Some(ca) = &mut self.ca_file
            && ca.is_relative()
        {
            *ca = base.join(&*ca);
        }
        Ok(())
    }

    /// How its password is named, if it has one (checked at load).
    pub fn secret_ref(&self) -> Option<crate::secrets::SecretRef> {
        crate::secrets::SecretRef::either(
            "",
            "password",
            self.password_env.as_ref(),
            self.password_secret.as_ref(),
        )
        .ok()
        .flatten()
    }

    /// The same, its password read from `secrets` (once per run).
    pub fn resolved(&self, at: &str, secrets: &crate::secrets::Secrets) -> anyhow::Result<Self> {
        let mut t = self.clone();
        if let Some(r) = self.secret_ref() {
            t.password = Some(secrets.resolve(at, &r)?);
        }
        Ok(t)
    }
}

fn is_variable_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub struct Redis {
    targets: BTreeMap<String, RedisTarget>,
}

impl Redis {
    pub fn new(targets: BTreeMap<String, RedisTarget>) -> Self {
        Self { targets }
    }

    fn target(&self, alias: &str) -> Result<&RedisTarget, Error> {
        self.targets.get(alias).ok_or_else(|| {
            Error::NotFound(format!("redis `{alias}` is not defined in the environment"))
        })
    }
}

fn left(alias: &str, deadline: Instant) -> Result<Duration, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(format!(
            "redis `{alias}`: the step's deadline has passed"
        )));
    }
    Ok(left)
}

/// A connection to `t`, made within its connect timeout and the deadline.
pub async fn connect(
    alias: &str,
    t: &RedisTarget,
    deadline: Instant,
) -> Result<redis::aio::MultiplexedConnection, Error> {
    let left = left(alias, deadline)?;
    let mut info = t
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| Error::Invalid(format!("redis `{alias}`: bad url: {e}")))?;
    let mut settings = info.redis_settings().clone();
    if let Some(password) = &t.password {
        settings = settings.set_password(password.expose());
    } else if let Some(var) = &t.password_env {
        let password = std::env::var(var).map_err(|_| {
            Error::Unavailable(format!(
                "redis `{alias}`: the variable `password_env` names is not set"
            ))
        })?;
        settings = settings.set_password(password);
    }
    if let Some(user) = &t.username {
        settings = settings.set_username(user);
    }
    info = info.set_redis_settings(settings);
    let client = match &t.ca_file {
        None => redis::Client::open(info),
        Some(ca) => {
            let pem = tokio::fs::read(ca).await.map_err(|e| {
                Error::Unavailable(format!(
                    "redis `{alias}`: reading CA file `{}`: {e}",
                    ca.display()
                ))
            })?;
            let certs = redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            };
            redis::Client::build_with_tls(info, certs)
        }
    }
    .map_err(|e| redis_error(alias, e))?;
    let connect = Duration::from_millis(t.connect_timeout_ms).min(left);
    let response = Duration::from_millis(t.response_timeout_ms).min(left);
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect))
        .set_response_timeout(Some(response));
    tokio::time::timeout(
        connect,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| {
        Error::Timeout(format!(
            "redis `{alias}`: no connection within {} ms",
            connect.as_millis()
        ))
    })?
    .map_err(|e| redis_error(alias, e))
}

/// One command round trip, within the response timeout and the deadline.
pub async fn answer<T>(
    alias: &str,
    t: &RedisTarget,
    deadline: Instant,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Error> {
    let wait = Duration::from_millis(t.response_timeout_ms).min(left(alias, deadline)?);
    tokio::time::timeout(wait, command)
        .await
        .map_err(|_| {
            Error::Timeout(format!(
                "redis `{alias}`: no answer within {} ms",
                wait.as_millis()
            ))
        })?
        .map_err(|e| redis_error(alias, e))
}

pub fn redis_error(alias: &str, e: redis::RedisError) -> Error {
    let io_timeout = matches!(e.kind(), redis::ErrorKind::Io)
        && e.to_string().to_ascii_lowercase().contains("timed out");
    if e.is_timeout() || io_timeout {
        Error::Timeout(format!("redis `{alias}`: no answer in time ({e})"))
    } else {
        Error::Unavailable(format!("redis `{alias}`: {e}"))
    }
}

fn field<T: std::str::FromStr>(info: &str, name: &str) -> Option<T> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.trim().parse().ok())
}

#[async_trait::async_trait]
impl RedisBackend for Redis {
    async fn ping(&self, target: &str, deadline: Instant) -> Result<PingReply, Error> {
        let t = self.target(target)?;
        let mut conn = connect(target, t, deadline).await?;
        let started = Instant::now();
        let reply: String = answer(
            target,
            t,
            deadline,
            redis::cmd("PING").query_async(&mut conn),
        )
        .await?;
        Ok(PingReply {
            reply,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    async fn info(&self, target: &str, deadline: Instant) -> Result<InfoStats, Error> {
        let t = self.target(target)?;
        let mut conn = connect(target, t, deadline).await?;
        // One round trip for both sections.
        let (clients, stats): (String, String) = answer(
            target,
            t,
            deadline,
            redis::pipe()
                .cmd("INFO")
                .arg("clients")
                .cmd("INFO")
                .arg("stats")
                .query_async(&mut conn),
        )
        .await?;
        Ok(InfoStats {
            connected_clients: field(&clients, "connected_clients").unwrap_or(0),
            keyspace_hits: field(&stats, "keyspace_hits").unwrap_or(0),
            keyspace_misses: field(&stats, "keyspace_misses").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fields_parse() {
        let info = "# Clients\r\nconnected_clients:12\r\nblocked_clients:0\r\n";
        assert_eq!(field::<u32>(info, "connected_clients"), Some(12));
        assert_eq!(field::<u32>(info, "missing"), None);
    }

    #[test]
    fn a_password_in_password_env_is_refused_without_echoing_it() {
        let mut t = RedisTarget {
            url: "redis://127.0.0.1:6379".into(),
            password_env: Some("hunter2 secret!".into()),
            password_secret: None,
            password: None,
            username: None,
            ca_file: None,
            connect_timeout_ms: 1000,
            response_timeout_ms: 1000,
        };
        let err = t.check("redis.sessions", Path::new(".")).unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.contains("must name an environment variable"), "{err}");
    }
}
