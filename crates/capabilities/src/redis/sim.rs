//! Simulated Redis servers: `[redis.ALIAS]` in a scenario says whether the
//! server answers, refuses, or hangs.

use super::RedisBackend;
use crate::bindings::Error;
use crate::bindings::runbook::host::redis::{InfoStats, PingReply};
use crate::sim::World;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// How long a call to a hanging server takes before it times out.
const TIMEOUT_MS: u64 = 2_000;
/// The slowest answer a scenario may describe.
const MAX_LATENCY_MS: f64 = 3_600_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RedisStatus {
    /// Answers normally.
    Up,
    /// Refuses connections.
    Down,
    /// Accepts but never answers: every call runs into its timeout.
    Hang,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimRedis {
    pub status: RedisStatus,
    #[serde(default = "default_latency")]
    pub latency_ms: f64,
    #[serde(default)]
    pub connected_clients: u32,
    #[serde(default)]
    pub keyspace_hits: u64,
    #[serde(default)]
    pub keyspace_misses: u64,
}

fn default_latency() -> f64 {
    0.5
}

pub fn check(servers: &BTreeMap<String, SimRedis>) -> Result<(), String> {
    for (alias, r) in servers {
        if !(r.latency_ms.is_finite() && (0.0..=MAX_LATENCY_MS).contains(&r.latency_ms)) {
            return Err(format!(
                "redis `{alias}`: `latency_ms` must be between 0 and {MAX_LATENCY_MS}, not `{}`",
                r.latency_ms
            ));
        }
    }
    Ok(())
}

pub struct SimRedisBackend {
    servers: BTreeMap<String, SimRedis>,
    world: Arc<World>,
}

impl SimRedisBackend {
    pub fn new(servers: BTreeMap<String, SimRedis>, world: Arc<World>) -> Self {
        Self { servers, world }
    }

    fn call(&self, target: &str) -> Result<&SimRedis, Error> {
        let Some(r) = self.servers.get(target) else {
            return Err(Error::NotFound(format!(
                "redis target `{target}` is not configured"
            )));
        };
        match r.status {
            RedisStatus::Up => {
                self.world.advance(r.latency_ms.ceil() as u64);
                Ok(r)
            }
            RedisStatus::Down => {
                self.world.advance(1);
                Err(Error::Unavailable(format!(
                    "redis `{target}`: connection refused"
                )))
            }
            RedisStatus::Hang => {
                self.world.advance(TIMEOUT_MS);
                Err(Error::Timeout(format!(
                    "redis `{target}`: no reply within {TIMEOUT_MS}ms"
                )))
            }
        }
    }
}

#[async_trait::async_trait]
impl RedisBackend for SimRedisBackend {
    async fn ping(&self, target: &str, _deadline: Instant) -> Result<PingReply, Error> {
        let r = self.call(target)?;
        Ok(PingReply {
            reply: "PONG".into(),
            latency_ms: r.latency_ms,
        })
    }

    async fn info(&self, target: &str, _deadline: Instant) -> Result<InfoStats, Error> {
        let r = self.call(target)?;
        Ok(InfoStats {
            connected_clients: r.connected_clients,
            keyspace_hits: r.keyspace_hits,
            keyspace_misses: r.keyspace_misses,
        })
    }
}
