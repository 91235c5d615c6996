//! Simulated paging and messaging: `[notify]` in a scenario names the
//! targets and channels that exist (and any that fail); every page and
//! message is recorded, in order, and shows in the run's timeline.

use super::{NotifyBackend, sent, severity_name};
use crate::bindings::Error;
use crate::bindings::runbook::host::notify::{Sent, Severity};
use crate::sim::World;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How long a simulated page or message takes.
const CALL_MS: u64 = 300;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimNotify {
    /// Page targets, e.g. `auth-team-oncall`.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Channels, e.g. `incidents`.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Targets or channels whose backend refuses (to rehearse a failed
    /// page).
    #[serde(default)]
    pub failing: Vec<String>,
}

/// One page or message the simulation received.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    pub to: String,
    pub what: String,
    pub text: String,
}

pub struct SimNotifyBackend {
    config: SimNotify,
    world: Arc<World>,
    pub sent: Mutex<Vec<Delivered>>,
}

impl SimNotifyBackend {
    pub fn new(config: SimNotify, world: Arc<World>) -> Self {
        Self {
            config,
            world,
            sent: Mutex::new(Vec::new()),
        }
    }

    fn send(&self, to: &str, known: &[String], what: &str, text: String) -> Result<(), Error> {
        self.world.advance(CALL_MS);
        if !known.iter().any(|k| k == to) {
            return Err(Error::NotFound(format!("`{to}` is not configured")));
        }
        if self.config.failing.iter().any(|f| f == to) {
            return Err(Error::Unavailable(format!(
                "`{to}`: the simulated backend refused the {what}"
            )));
        }
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Delivered {
                to: to.to_string(),
                what: what.to_string(),
                text,
            });
        Ok(())
    }
}

#[async_trait::async_trait]
impl NotifyBackend for SimNotifyBackend {
    async fn page(
        &self,
        target: &str,
        summary: &str,
        severity: Severity,
        dedup_key: &str,
        _deadline: Instant,
    ) -> Result<Sent, Error> {
        let already = self
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|s| {
                s.to == target && s.what == "page" && s.text.ends_with(&format!("[{dedup_key}]"))
            });
        self.send(
            target,
            &self.config.targets,
            "page",
            format!("{}: {summary} [{dedup_key}]", severity_name(severity)),
        )?;
        Ok(sent(
            target,
            if already { "deduplicated" } else { "triggered" },
            Some(dedup_key),
        ))
    }

    async fn resolve(
        &self,
        target: &str,
        dedup_key: &str,
        _deadline: Instant,
    ) -> Result<Sent, Error> {
        self.send(
            target,
            &self.config.targets,
            "resolve",
            dedup_key.to_string(),
        )?;
        Ok(sent(target, "resolved", Some(dedup_key)))
    }

    async fn message(&self, channel: &str, text: &str, _deadline: Instant) -> Result<Sent, Error> {
        self.send(channel, &self.config.channels, "message", text.to_string())?;
        Ok(sent(channel, "posted", None))
    }
}
