//! Pings a Redis target and reads its INFO stats.
//! `healthy`, `degraded` (slow or too many connections) or `unreachable`.
//! Inputs: `target` (alias), `max_latency_ms` (50), `max_connections` (optional).

use runbook_sdk::{Error, Inputs, Outcome, Pair, RunContext, Step, outcome, redis};

struct RedisHealth;

impl Step for RedisHealth {
    fn run(_ctx: RunContext, inputs: Vec<Pair>) -> Result<Outcome, Error> {
        let inputs = Inputs::new(inputs);
        let target = inputs.str("target")?;
        let max_latency: f64 = inputs.num_or("max_latency_ms", 50.0)?;
        let max_connections: Option<u32> = match inputs.opt("max_connections") {
            Some(_) => Some(inputs.num("max_connections")?),
            None => None,
        };
        let ping = match redis::ping(target) {
            Ok(p) => p,
            Err(e @ (Error::Unavailable(_) | Error::Timeout(_))) => {
                return outcome("unreachable")
                    .fact("target", target)
                    .fact("error", e.text())
                    .summary(format!("redis `{target}` unreachable ({})", e.text()));
            }
            Err(e) => return Err(e),
        };
        let info = redis::info(target)?;
        let total = info.keyspace_hits + info.keyspace_misses;
        let hit_rate = if total == 0 {
            1.0
        } else {
            info.keyspace_hits as f64 / total as f64
        };
        let mut problems = Vec::new();
        if ping.latency_ms > max_latency {
            problems.push(format!("ping {:.1}ms > {max_latency}ms", ping.latency_ms));
        }
        if let Some(max) = max_connections
            && info.connected_clients > max
        {
            problems.push(format!("{} connections > {max}", info.connected_clients));
        }
        let label = if problems.is_empty() {
            "healthy"
        } else {
            "degraded"
        };
        let detail = if problems.is_empty() {
            "ok".to_string()
        } else {
            problems.join(", ")
        };
        outcome(label)
            .fact("target", target)
            .fact("latency_ms", format!("{:.1}", ping.latency_ms))
            .fact("connected_clients", info.connected_clients)
            .fact("hit_rate", format!("{hit_rate:.3}"))
            .summary(format!(
                "redis `{target}` {} in {:.1}ms, {} clients, hit rate {:.1}%: {detail}",
                ping.reply,
                ping.latency_ms,
                info.connected_clients,
                hit_rate * 100.0
            ))
    }
}

runbook_sdk::export_step!(RedisHealth);
