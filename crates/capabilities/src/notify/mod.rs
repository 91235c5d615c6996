//! `runbook:host/notify` (0.2.0): page a target, resolve a page, post to a
//! channel. Resources: `page/TARGET` and `channel/NAME`, aliases the
//! runtime configuration maps. Every function is a mutation: granted per
//! target or channel, approved, journaled (a resumed run finds a page it
//! already sent in the journal; PagerDuty's dedup key makes a repeated
//! trigger the same incident), and a failure is a step error, never
//! silent. Simulated from a scenario's `[notify]` (`sim.rs`, which records
//! every page and message); live to PagerDuty Events API v2, Slack-style
//! incoming webhooks or AWS SNS, as an environment's `[notify]` says
//! (`live.rs`).

pub mod live;
pub mod sim;

use crate::backends::Backed;
use crate::bindings::Error;
use crate::bindings::runbook::host::notify as wit;
use crate::bindings::runbook::host::notify::{Sent, Severity};
use crate::capability::{Capability, LiveContext, Missing};
use crate::state::StepState;
use runbook_core::interface::Interface;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::{HasSelf, Linker};

#[async_trait::async_trait]
pub trait NotifyBackend: Send + Sync {
    async fn page(
        &self,
        target: &str,
        summary: &str,
        severity: Severity,
        dedup_key: &str,
        deadline: Instant,
    ) -> Result<Sent, Error>;
    async fn resolve(
        &self,
        target: &str,
        dedup_key: &str,
        deadline: Instant,
    ) -> Result<Sent, Error>;
    async fn message(&self, channel: &str, text: &str, deadline: Instant) -> Result<Sent, Error>;
}

/// What a page, resolve or message reports back to the step.
pub fn sent(to: &str, status: &str, dedup_key: Option<&str>) -> Sent {
    Sent {
        to: to.into(),
        status: status.into(),
        dedup_key: dedup_key.map(str::to_string),
    }
}

pub fn severity_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

pub struct Cap;

impl Backed for Cap {
    const INTERFACE: Interface = Interface::Notify;
    type Backend = dyn NotifyBackend;
}

impl Capability for Cap {
    type SimConfig = sim::SimNotify;
    type LiveConfig = live::NotifyConfig;
    /// Paging people is not a change to a system: not capped by
    /// `max_mutations`.
    const BLAST_RADIUS: bool = false;

    fn add_to_linker(linker: &mut Linker<StepState>) -> wasmtime::Result<()> {
        // New in 0.2.0: nothing to link for 0.1.0 components.
        wit::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
    }

    fn sim(config: &Self::SimConfig, world: &Arc<crate::sim::World>) -> Arc<Self::Backend> {
        let notify = Arc::new(sim::SimNotifyBackend::new(config.clone(), world.clone()));
        world.put(Interface::Notify, notify.clone());
        notify
    }

    fn sim_provides(config: &Self::SimConfig, name: &str) -> Result<(), Missing> {
        provided(name, |kind, alias| match kind {
            Kind::Page => config.targets.iter().any(|t| t == alias),
            Kind::Channel => config.channels.iter().any(|c| c == alias),
        })
    }

    fn check_live(config: &mut Self::LiveConfig, _base: &Path) -> Result<(), String> {
        config.check()
    }

    fn live_provides(config: &Self::LiveConfig, name: &str) -> Result<(), Missing> {
        provided(name, |kind, alias| match kind {
            Kind::Page => config.targets.contains_key(alias),
            Kind::Channel => config.channels.contains_key(alias),
        })
    }

    fn live_uses_aws(config: &Self::LiveConfig) -> bool {
        config.uses_sns()
    }

    fn live_secrets(config: &Self::LiveConfig) -> Vec<(String, crate::secrets::SecretRef)> {
        config.secrets()
    }

    fn live(config: &Self::LiveConfig, ctx: &LiveContext) -> anyhow::Result<Arc<Self::Backend>> {
        Ok(Arc::new(live::Notify::new(config.clone(), ctx)?))
    }
}

enum Kind {
    Page,
    Channel,
}

/// Whether resource `name` (`page/X`, `channel/Y`; wildcards are checked
/// per call) is defined, by `has`.
fn provided(name: &str, has: impl Fn(Kind, &str) -> bool) -> Result<(), Missing> {
    if name.ends_with('*') {
        return Ok(());
    }
    let (kind, alias, section) = match name.split_once('/') {
        Some(("page", alias)) => (Kind::Page, alias, "targets"),
        Some(("channel", alias)) => (Kind::Channel, alias, "channels"),
        _ => {
            return Err(Missing::new(
                "which is neither `page/TARGET` nor `channel/NAME`",
                "grant `notify` resources as `page/TARGET` or `channel/NAME`",
            ));
        }
    };
    if has(kind, alias) {
        return Ok(());
    }
    Err(Missing::new(
        "which {source} does not define",
        format!("add `{alias}` to `[notify] {section}` in `{{path}}`"),
    ))
}

impl wit::Host for StepState {
    async fn page(
        &mut self,
        target: String,
        summary: String,
        severity: Severity,
        dedup_key: String,
    ) -> wasmtime::Result<Result<Sent, Error>> {
        let resource = format!("page/{target}");
        let args = json!({
            "target": target,
            "summary": summary,
            "severity": severity_name(severity),
            "dedup_key": dedup_key,
        });
        let would = sent(&target, "triggered", Some(&dedup_key));
        let change = format!("page `{target}` ({}): {summary}", severity_name(severity));
        let preview = |_: Arc<dyn NotifyBackend>, _| async move { Ok((change, would)) };
        let apply = |b: Arc<dyn NotifyBackend>, d, _| async move {
            b.page(&target, &summary, severity, &dedup_key, d).await
        };
        // A page with an intent and no result is sent again: its dedup key
        // makes it the same page.
        let in_effect = |_, _, _| async { Ok(false) };
        self.mutate(Cap, "page", &resource, args, preview, apply, in_effect)
            .await
    }

    async fn resolve(
        &mut self,
        target: String,
        dedup_key: String,
    ) -> wasmtime::Result<Result<Sent, Error>> {
        let resource = format!("page/{target}");
        let args = json!({ "target": target, "dedup_key": dedup_key });
        let would = sent(&target, "resolved", Some(&dedup_key));
        let change = format!("resolve the page `{dedup_key}` of `{target}`");
        let preview = |_: Arc<dyn NotifyBackend>, _| async move { Ok((change, would)) };
        let apply = |b: Arc<dyn NotifyBackend>, d, _| async move {
            b.resolve(&target, &dedup_key, d).await
        };
        let in_effect = |_, _, _| async { Ok(false) };
        self.mutate(Cap, "resolve", &resource, args, preview, apply, in_effect)
            .await
    }

    async fn message(
        &mut self,
        channel: String,
        text: String,
    ) -> wasmtime::Result<Result<Sent, Error>> {
        let resource = format!("channel/{channel}");
        let args = json!({ "channel": channel, "text": text });
        let would = sent(&channel, "posted", None);
        let change = format!("post to `{channel}`: {text}");
        let preview = |_: Arc<dyn NotifyBackend>, _| async move { Ok((change, would)) };
        let apply =
            |b: Arc<dyn NotifyBackend>, d, _| async move { b.message(&channel, &text, d).await };
        // A message has no dedup key: one that may or may not have gone out
        // when the run died is posted again (at most one duplicate).
        let in_effect = |_, _, _| async { Ok(false) };
        self.mutate(Cap, "message", &resource, args, preview, apply, in_effect)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bindings::runbook::host::notify::Host;
    use crate::testing;
    use crate::testing::Counted;

    struct Recording;

    #[async_trait::async_trait]
    impl NotifyBackend for Counted<Recording> {
        async fn page(
            &self,
            target: &str,
            _: &str,
            _: Severity,
            key: &str,
            _: Instant,
        ) -> Result<Sent, Error> {
            self.hit();
            Ok(sent(target, "triggered", Some(key)))
        }
        async fn resolve(&self, target: &str, key: &str, _: Instant) -> Result<Sent, Error> {
            self.hit();
            Ok(sent(target, "resolved", Some(key)))
        }
        async fn message(&self, channel: &str, _: &str, _: Instant) -> Result<Sent, Error> {
            self.hit();
            Ok(sent(channel, "posted", None))
        }
    }

    #[tokio::test]
    async fn a_denied_call_never_reaches_the_backend() {
        let backend = Arc::new(Counted::new(Recording));
        let mut st = testing::with_backend::<Cap>(
            "notify = { mutate = [\"page/auth-team-oncall\", \"channel/incidents\"] }",
            backend.clone(),
        );
        let denied = [
            st.page(
                "everyone".into(),
                "x".into(),
                Severity::Critical,
                "k".into(),
            )
            .await
            .unwrap()
            .map(|_| ()),
            st.message("general".into(), "x".into())
                .await
                .unwrap()
                .map(|_| ()),
            st.resolve("everyone".into(), "k".into())
                .await
                .unwrap()
                .map(|_| ()),
        ];
        assert!(denied.iter().all(|r| matches!(r, Err(Error::Denied(_)))));
        assert_eq!(backend.hits(), 0);
        let sent = st
            .page(
                "auth-team-oncall".into(),
                "auth is down".into(),
                Severity::Critical,
                "rb-0031".into(),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sent.status, "triggered");
        st.message("incidents".into(), "paged".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(backend.hits(), 2);
    }

    #[tokio::test]
    async fn pages_need_approval_and_dry_runs_send_nothing() {
        use runbook_core::approval::Policy;
        let backend = Arc::new(Counted::new(Recording));
        let grants = "notify = { mutate = [\"page/*\"] }";
        let mut st = testing::with_backend_and_policy::<Cap>(
            grants,
            backend.clone(),
            Policy::Steps(Default::default()),
        );
        let held = st
            .page("oncall".into(), "x".into(), Severity::Error, "k".into())
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            matches!(&held, Error::Denied(m) if m.starts_with("awaiting approval to page `oncall`"))
        );
        let mut st =
            testing::with_backend_and_policy::<Cap>(grants, backend.clone(), Policy::DryRun);
        st.page("oncall".into(), "x".into(), Severity::Error, "k".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(backend.hits(), 0);
    }
}
