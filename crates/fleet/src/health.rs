//! A worker's health and counters over HTTP: `GET /healthz` (200 while
//! connected to NATS, else 503) and `GET /metrics` (Prometheus text);
//! `runbook serve` renders its counters the same way.

use super::nats::Fleet;
use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::routing::get;
use std::sync::Arc;

/// Serves `/healthz` from `fleet`'s connection and `/metrics` from what
/// `render` says (Prometheus text), in the background.
pub async fn serve(
    addr: std::net::SocketAddr,
    fleet: Arc<Fleet>,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) -> Result<()> {
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let fleet = fleet.clone();
                async move {
                    if fleet.connected() {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let render = render.clone();
                async move { render() }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on `{addr}` for `--health`"))?;
    tracing::info!(%addr, "health and counters at /healthz and /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the health endpoint stopped: {e}");
        }
    });
    Ok(())
}

/// One Prometheus metric: `PREFIX_NAME_total` (a counter) or `PREFIX_NAME`
/// (a gauge), with its help text.
pub fn metric(
    out: &mut String,
    prefix: &str,
    name: &str,
    help: &str,
    value: &std::sync::atomic::AtomicU64,
    counter: bool,
) {
    let (kind, suffix) = if counter {
        ("counter", "_total")
    } else {
        ("gauge", "")
    };
    let full = format!("{prefix}_{name}{suffix}");
    out.push_str(&format!(
        "# HELP {full} {help}\n# TYPE {full} {kind}\n{full} {}\n",
        value.load(std::sync::atomic::Ordering::Relaxed)
    ));
}
