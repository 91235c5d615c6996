//! Redis PING and INFO against real servers, by alias. Each call connects
//! afresh with explicit connect and response timeouts (the crate's defaults
//! wait far longer than a step may).

use crate::bindings::Error;
use crate::bindings::runbook::host::redis::{InfoStats, PingReply};
use crate::capability::RedisBackend;
use crate::environment::RedisTarget;
use redis::IntoConnectionInfo;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

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

/// A connection to `t`, its timeouts bounded by the step's deadline.
pub fn connect(
    alias: &str,
    t: &RedisTarget,
    deadline: Instant,
) -> Result<redis::Connection, Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(format!(
            "redis `{alias}`: the step's deadline has passed"
        )));
    }
    let mut info = t
        .url
        .as_str()
        .into_connection_info()
        .map_err(|e| Error::Invalid(format!("redis `{alias}`: bad url: {e}")))?;
    let mut settings = info.redis_settings().clone();
    if let Some(var) = &t.password_env {
        let password = std::env::var(var).map_err(|_| {
            Error::Unavailable(format!(
                "redis `{alias}`: password variable `{var}` is not set"
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
            let pem = std::fs::read(ca).map_err(|e| {
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
    let conn = client
        .get_connection_with_timeout(connect)
        .map_err(|e| redis_error(alias, e))?;
    arm(alias, &conn, t, deadline)?;
    Ok(conn)
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

/// Each connection answers within the response timeout or what is left of
/// the step's deadline, whichever is less; every call makes one round trip.
fn arm(
    alias: &str,
    conn: &redis::Connection,
    t: &RedisTarget,
    deadline: Instant,
) -> Result<(), Error> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Error::Timeout(format!(
            "redis `{alias}`: the step's deadline has passed"
        )));
    }
    let wait = Duration::from_millis(t.response_timeout_ms).min(left);
    conn.set_read_timeout(Some(wait))
        .map_err(|e| redis_error(alias, e))?;
    conn.set_write_timeout(Some(wait))
        .map_err(|e| redis_error(alias, e))
}

impl RedisBackend for Redis {
    fn ping(&self, target: &str, deadline: Instant) -> Result<PingReply, Error> {
        let t = self.target(target)?;
        let mut conn = connect(target, t, deadline)?;
        let started = Instant::now();
        let reply: String = redis::cmd("PING")
            .query(&mut conn)
            .map_err(|e| redis_error(target, e))?;
        Ok(PingReply {
            reply,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        })
    }

    fn info(&self, target: &str, deadline: Instant) -> Result<InfoStats, Error> {
        let t = self.target(target)?;
        let mut conn = connect(target, t, deadline)?;
        // One round trip for both sections.
        let (clients, stats): (String, String) = redis::pipe()
            .cmd("INFO")
            .arg("clients")
            .cmd("INFO")
            .arg("stats")
            .query(&mut conn)
            .map_err(|e| redis_error(target, e))?;
        Ok(InfoStats {
            connected_clients: field(&clients, "connected_clients").unwrap_or(0),
            keyspace_hits: field(&stats, "keyspace_hits").unwrap_or(0),
            keyspace_misses: field(&stats, "keyspace_misses").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn info_fields_parse() {
        let info = "# Clients\r\nconnected_clients:12\r\nblocked_clients:0\r\n";
        assert_eq!(field::<u32>(info, "connected_clients"), Some(12));
        assert_eq!(field::<u32>(info, "missing"), None);
    }
}
