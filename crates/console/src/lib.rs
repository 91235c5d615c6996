//! The responder console (`runbook console`): the runs of a journal store
//! (a state directory or NATS JetStream) in a browser, each run's timeline
//! as it happens, and for a change parked under an approval rule exactly
//! what it will do, with Approve and Deny for people of the approvers
//! file. Server-rendered HTML (maud escapes every value), one small script
//! for the live timeline; loopback by default, HTTPS with `--tls-cert`.
//!
//! # Layout
//! - [`auth`]: who someone is (their token, or a trusted proxy's header),
//!   sessions, CSRF tokens and rate limits.
//! - [`runs`]: runs read back from the store for the list and a run's page.
//! - [`pages`]: the HTML.
//! - [`routes`]: the HTTP routes, the pages' handlers and the live
//!   timeline; [`decisions`]: a decision recorded and its run set going.
//! - [`slack`]: Slack's Approve and Deny buttons: signed clicks.
//!
//! A decision goes through `runbook_engine::approvals::cast`, as `runbook
//! approve` does: the same rule, the same journal line, the same refusals.
//! Once a change is decided, a fleet's run is queued for a worker; a run
//! in a state directory is continued by the console itself
//! ([`decisions::continue_here`]), with what it was started with.

pub mod auth;
pub mod decisions;
pub mod pages;
pub mod routes;
pub mod runs;
pub mod slack;

use runbook_core::approvers::Approvers;
use runbook_fleet::nats::Fleet;
use runbook_journal::store::Store;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A reverse proxy that authenticates people (oauth2-proxy and the like)
/// and names them in a header: believed only from these addresses.
#[derive(Debug, Clone)]
pub struct TrustedHeader {
    pub header: String,
    pub proxies: Vec<IpAddr>,
}

/// What the console serves from, and who may decide.
pub struct Console {
    pub store: Arc<dyn Store>,
    /// The fleet behind the store, when it is NATS: a decided change is
    /// queued for a worker to continue.
    pub fleet: Option<Arc<Fleet>>,
    /// Without a fleet, a decided run continues in this process.
    pub engine: Option<runbook_engine::Engine>,
    pub approvers: Approvers,
    pub trusted: Option<TrustedHeader>,
    /// Slack approvals, when a signing secret is given.
    pub slack: Option<slack::Slack>,
    /// Cookies marked `Secure` (served over HTTPS).
    pub https: bool,
    pub sessions: auth::Sessions,
    pub limits: auth::Limits,
    pub counters: Counters,
    /// Argon2 checks at once (each takes 19 MiB and a core for tens of
    /// milliseconds).
    pub checking: tokio::sync::Semaphore,
    /// Live timelines open at once.
    pub following: Arc<tokio::sync::Semaphore>,
}

/// Live timelines (server-sent events) open at once; more are refused
/// (503) until one ends.
pub const MAX_FOLLOWING: usize = 64;

impl Console {
    pub fn new(
        store: Arc<dyn Store>,
        fleet: Option<Arc<Fleet>>,
        engine: Option<runbook_engine::Engine>,
        approvers: Approvers,
        (trusted, slack): (Option<TrustedHeader>, Option<slack::Slack>),
        https: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            fleet,
            engine,
            approvers,
            trusted,
            slack,
            https,
            sessions: auth::Sessions::default(),
            limits: auth::Limits::default(),
            counters: Counters::default(),
            checking: tokio::sync::Semaphore::new(2),
            following: Arc::new(tokio::sync::Semaphore::new(MAX_FOLLOWING)),
        })
    }
}

/// What `/metrics` reports.
#[derive(Default)]
pub struct Counters {
    pub pages: AtomicU64,
    pub logins: AtomicU64,
    pub logins_refused: AtomicU64,
    pub decisions: AtomicU64,
    pub decisions_refused: AtomicU64,
    pub rate_limited: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus's text format, like the worker's.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in [
            ("pages", "pages served", &self.pages),
            ("logins", "people signed in", &self.logins),
            ("logins_refused", "sign-ins refused", &self.logins_refused),
            ("decisions", "decisions recorded", &self.decisions),
            (
                "decisions_refused",
                "decisions refused (nothing recorded)",
                &self.decisions_refused,
            ),
            (
                "rate_limited",
                "requests refused for coming too often",
                &self.rate_limited,
            ),
        ] {
            runbook_fleet::health::metric(&mut out, "runbook_console", name, help, c, true);
        }
        out
    }
}
