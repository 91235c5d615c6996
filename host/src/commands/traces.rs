//! Tracing for the commands that run runbooks (`run`, `resume`, `bench`,
//! `submit`): the standard OpenTelemetry variables turn it on
//! (`runbook_engine::telemetry`), and `TRACEPARENT` joins the caller's
//! trace (the environment-variable carrier of W3C trace context, as
//! `otel-cli` and CI systems set it).

use anyhow::Result;
use runbook_core::trace::{TraceOrigin, TraceParent};
use runbook_engine::telemetry::Tracing;
use std::sync::Arc;

/// The exporter the environment configures; `None`: tracing is off.
/// Made off the async threads (the exporter's HTTP client starts a thread
/// and waits for it).
pub(super) async fn from_env() -> Result<Option<Arc<Tracing>>> {
    tokio::task::spawn_blocking(Tracing::from_env).await?
}

/// The caller's trace from `TRACEPARENT`. One that cannot be read is said
/// on stderr and left out: a run is never refused for its trace.
pub(super) fn origin_from_env() -> TraceOrigin {
    let parent = std::env::var("TRACEPARENT")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .and_then(|t| match t.parse::<TraceParent>() {
            Ok(p) => Some(p),
            Err(why) => {
                eprintln!("note: `TRACEPARENT` is ignored: {why}");
                None
            }
        });
    TraceOrigin {
        parent,
        ..TraceOrigin::default()
    }
}

/// Sends the last spans, waiting a bounded time off the async threads;
/// spans that could not be sent are said on stderr (the run's outcome
/// stands).
pub(super) async fn shutdown(tracing: Option<Arc<Tracing>>) {
    let Some(t) = tracing else {
        return;
    };
    match tokio::task::spawn_blocking(move || t.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("note: {e:#}"),
        Err(e) => eprintln!("note: exporting traces: {e}"),
    }
}
