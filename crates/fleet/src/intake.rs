//! `runbook serve`: CloudWatch alarms, delivered by SNS over HTTP, and
//! Alertmanager's alerts become run requests. `POST /sns` takes an SNS
//! delivery, `POST /alertmanager` a webhook notification (when the
//! triggers file has `[alertmanager]`); `GET /healthz` and `GET /metrics`
//! are as a worker's.
//!
//! Alertmanager gets 200 for what was handled, 401 without the
//! credentials, 400 for a payload this host does not read, 413 past the
//! size cap (it does not retry those at once, but sends the group again at
//! its next `group_interval`), and 503 when a run could not be submitted:
//! it sends the whole notification again, and what was submitted already
//! is a duplicate.
//!
//! What a delivery gets back decides whether SNS tries again: 200 for
//! what was handled (submitted, a duplicate, or matching no trigger),
//! 403 for what is not from SNS or not for us (SNS's own messages always
//! verify, so nothing real is lost), 503 for what cannot be handled now
//! (NATS away, the certificate did not come): SNS delivers it again.

use super::nats::Fleet;
use super::request::{Request, publish};
use super::sns::{Envelope, Refusal, Verifier};
use super::triggers::{Alarm, Triggers};
use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use runbook_core::trace::TraceParent;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// SNS messages are at most 256 KiB; the envelope adds a little.
const MAX_BODY: usize = 512 * 1024;

#[derive(Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub confirmed: AtomicU64,
    pub submitted: AtomicU64,
    pub duplicates: AtomicU64,
    pub unmatched: AtomicU64,
    pub refused: AtomicU64,
    pub unavailable: AtomicU64,
    pub resolved: AtomicU64,
}

impl Counters {
    fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "received",
                "deliveries received (SNS, Alertmanager)",
                &self.received,
            ),
            ("confirmed", "subscriptions confirmed", &self.confirmed),
            ("submitted", "runs submitted", &self.submitted),
            (
                "duplicates",
                "alarms whose incident was already submitted",
                &self.duplicates,
            ),
            (
                "unmatched",
                "SNS notifications and Alertmanager alerts no trigger matched",
                &self.unmatched,
            ),
            (
                "refused",
                "deliveries refused (signature, topic, form)",
                &self.refused,
            ),
            (
                "unavailable",
                "deliveries answered 503 for SNS or Alertmanager to retry",
                &self.unavailable,
            ),
            (
                "resolved",
                "resolved alerts whose trigger matched (recorded, nothing started)",
                &self.resolved,
            ),
        ] {
            super::health::metric(&mut out, "runbook_intake", name, help, v, true);
        }
        out
    }
}

pub struct Intake {
    pub triggers: Triggers,
    pub verifier: Verifier,
    pub fleet: Arc<Fleet>,
    pub counters: Counters,
}

/// The TLS configuration `runbook serve` runs with (`None`: plain HTTP):
/// its files read and checked, and refused when the triggers file asks for
/// client certificates without it. Before anything else starts.
pub fn tls_config(
    triggers: &Triggers,
    tls: Option<&crate::tls::TlsFiles>,
) -> Result<Option<Arc<rustls::ServerConfig>>> {
    let client_ca = triggers
        .alertmanager
        .as_ref()
        .and_then(|a| a.client_ca_file.clone());
    match (tls, &client_ca) {
        (None, Some(_)) => Err(runbook_core::error::hinted(
            format!(
                "triggers file `{}`: `[alertmanager] client_ca_file` asks for client certificates, which only HTTPS carries",
                triggers.path.display()
            ),
            "serve HTTPS with `--tls-cert FILE --tls-key FILE` (PEM)",
        )),
        (None, None) => Ok(None),
        (Some(files), _) => Ok(Some(crate::tls::server_config(
            files,
            client_ca.as_deref(),
        )?)),
    }
}

/// Serves until SIGTERM or Ctrl-C; over HTTPS with `tls` ([`tls_config`]).
pub async fn serve(
    intake: Arc<Intake>,
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<()> {
    let app = axum::Router::new()
        .route("/sns", post(deliver))
        .route("/alertmanager", post(alerts))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(intake.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on `{addr}` (`--listen`)"))?;
    tracing::info!(
        %addr,
        triggers = intake.triggers.triggers.len(),
        topics = intake.triggers.topics.len(),
        alertmanager = intake.triggers.alertmanager.is_some(),
        "taking SNS deliveries at POST /sns{}",
        if intake.triggers.alertmanager.is_some() {
            " and Alertmanager's at POST /alertmanager"
        } else {
            ""
        }
    );
    if let Some(e) = intake.verifier.endpoint() {
        tracing::warn!(
            endpoint = %e,
            "certificates and confirmations are fetched from the AWS_ENDPOINT_URL override, not from AWS"
        );
    }
    let stop = async {
        crate::tls::stop_signal().await;
        tracing::info!("stopping: no more deliveries");
    };
    match tls {
        Some(config) => crate::tls::serve(listener, app, config, stop)
            .await
            .context("serving deliveries over HTTPS"),
        None => axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
            .context("serving SNS deliveries"),
    }
}

async fn healthz(State(intake): State<Arc<Intake>>) -> (StatusCode, &'static str) {
    if intake.fleet.connected() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not connected to NATS\n")
    }
}

async fn metrics(State(intake): State<Arc<Intake>>) -> String {
    intake.counters.render()
}

async fn deliver(State(intake): State<Arc<Intake>>, body: Bytes) -> (StatusCode, String) {
    let c = &intake.counters;
    c.received.fetch_add(1, Ordering::Relaxed);
    match handle(&intake, &body).await {
        Ok(said) => (StatusCode::OK, format!("{said}\n")),
        Err(Refusal::Bad(why)) => {
            c.refused.fetch_add(1, Ordering::Relaxed);
            // Debug-quoted: it may carry text from an unsigned body.
            tracing::warn!(reason = ?why, "refused an SNS delivery");
            (StatusCode::FORBIDDEN, format!("refused: {why}\n"))
        }
        Err(Refusal::Unavailable(why)) => {
            c.unavailable.fetch_add(1, Ordering::Relaxed);
            tracing::error!(reason = ?why, "could not take an SNS delivery now (SNS will retry)");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("try again: {why}\n"),
            )
        }
    }
}

/// `POST /alertmanager`: the credentials before the body is read.
async fn alerts(
    State(intake): State<Arc<Intake>>,
    request: axum::extract::Request,
) -> (StatusCode, String) {
    let c = &intake.counters;
    c.received.fetch_add(1, Ordering::Relaxed);
    let refuse = |status: StatusCode, why: String| {
        c.refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(reason = ?why, "refused an Alertmanager delivery");
        (status, format!("refused: {why}\n"))
    };
    let Some(auth) = &intake.triggers.alertmanager else {
        return refuse(
            StatusCode::NOT_FOUND,
            "the triggers file has no `[alertmanager]`: no alert is taken".into(),
        );
    };
    let header = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let certificate = request
        .extensions()
        .get::<crate::tls::ClientCertificate>()
        .is_some_and(|c| c.0);
    if !auth.allows(header, certificate) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            if auth.client_ca_file.is_some() && !certificate {
                "no client certificate (`[alertmanager] client_ca_file` asks for one signed by its CA)".into()
            } else {
                "missing or wrong credentials (see `[alertmanager]` in the triggers file)".into()
            },
        );
    }
    // The sender's trace, joined by each run (one that cannot be read is
    // ignored, as W3C trace context asks: the run starts a trace).
    let traceparent = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok()?.parse::<TraceParent>().ok());
    let cap = crate::alertmanager::MAX_BODY;
    let too_large = || {
        format!(
            "a notification is at most {} MiB: lower the receiver's `max_alerts`",
            cap >> 20
        )
    };
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    let body = match axum::body::to_bytes(request.into_body(), cap).await {
        Ok(b) => b,
        Err(e) if e.to_string().contains("length limit") => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large());
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    let notification = match crate::alertmanager::Notification::parse(&body) {
        Ok(n) => n,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    if notification.truncated_alerts > 0 {
        tracing::warn!(
            truncated = notification.truncated_alerts,
            receiver = notification.receiver,
            "Alertmanager left alerts out of this notification (`max_alerts`): they start no run from here"
        );
    }
    let mut said = Vec::new();
    let mut failed = false;
    for alert in &notification.alerts {
        let alarm = Alarm {
            traceparent,
            ..Alarm::from_alert(alert)
        };
        let Some(index) = intake.triggers.find(&alarm) else {
            c.unmatched.fetch_add(1, Ordering::Relaxed);
            tracing::info!(alert = alert.name(), "no trigger matches");
            said.push(format!("`{}`: no trigger matches", alert.name()));
            continue;
        };
        let trigger = &intake.triggers.triggers[index];
        if alert.status == "resolved" {
            let incident = trigger.incident(&alarm);
            let (fleet, key, ends_at) = (
                intake.fleet.clone(),
                incident.clone(),
                alert.ends_at.clone(),
            );
            let recorded = tokio::task::spawn_blocking(move || {
                crate::alertmanager::record_resolved(&fleet, &key, &ends_at)
            })
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
            if let Err(e) = recorded {
                tracing::error!(incident, error = %format!("{e:#}"), "could not record a resolved alert now (Alertmanager will retry)");
                said.push(format!("incident `{incident}`: resolved, try again: {e:#}"));
                failed = true;
                continue;
            }
            c.resolved.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                incident,
                trigger = trigger.name,
                ends_at = alert.ends_at,
                "alert resolved"
            );
            said.push(format!("incident `{incident}`: resolved, noted"));
            continue;
        }
        // Every alert is tried: one that cannot be submitted does not hold
        // back the others of its group (sent again, they are duplicates).
        match submit(&intake, index, alarm, "alertmanager").await {
            Ok(line) => said.push(line),
            Err(Refusal::Bad(why) | Refusal::Unavailable(why)) => {
                tracing::error!(reason = ?why, alert = alert.name(), "could not submit an alert's run now (Alertmanager will retry)");
                said.push(format!("`{}`: try again: {why}", alert.name()));
                failed = true;
            }
        }
    }
    if failed {
        c.unavailable.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", said.join("\n")),
        );
    }
    (StatusCode::OK, format!("{}\n", said.join("\n")))
}

/// Submits the run trigger `index` makes for `alarm` (a duplicate if its
/// incident was submitted already): what to answer, counted.
async fn submit(
    intake: &Arc<Intake>,
    index: usize,
    alarm: Alarm,
    by: &'static str,
) -> Result<String, Refusal> {
    let c = &intake.counters;
    let name = intake.triggers.triggers[index].name.clone();
    let intake2 = intake.clone();
    // Files read, a runbook parsed, NATS waited on: not on the server's
    // threads.
    let (incident, published) = tokio::task::spawn_blocking(move || {
        let trigger = &intake2.triggers.triggers[index];
        let request = trigger
            .request(by, &alarm)
            .map_err(|e| Refusal::Unavailable(format!("trigger `{}`: {e:#}", trigger.name)))?;
        let incident = request.incident.clone();
        let key = format!("incident:{incident}");
        publish(&intake2.fleet, &Request::Run(request), &key)
            .map(|p| (incident, p))
            .map_err(|e| Refusal::Unavailable(format!("submitting: {e:#}")))
    })
    .await
    .map_err(|e| Refusal::Unavailable(format!("submitting: {e}")))??;
    let trigger = name;
    if published.duplicate {
        c.duplicates.fetch_add(1, Ordering::Relaxed);
        tracing::info!(incident, trigger, "already submitted");
        Ok(format!("incident `{incident}` was already submitted"))
    } else {
        c.submitted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            incident,
            trigger,
            sequence = published.sequence,
            "submitted"
        );
        Ok(format!("submitted incident `{incident}`"))
    }
}

async fn handle(intake: &Arc<Intake>, body: &[u8]) -> Result<String, Refusal> {
    let m = Envelope::parse(body)?;
    // Before any fetch: a message for a topic we do not take costs nothing.
    if !intake.triggers.accepts_topic(&m.topic_arn) {
        return Err(Refusal::Bad(format!(
            "topic `{}` is not among the triggers file's `topics`",
            m.topic_arn
        )));
    }
    intake.verifier.verify(&m).await?;
    let c = &intake.counters;
    match m.kind.as_str() {
        "SubscriptionConfirmation" => {
            intake.verifier.confirm(&m).await?;
            c.confirmed.fetch_add(1, Ordering::Relaxed);
            tracing::info!(topic = m.topic_arn, "subscription confirmed");
            Ok(format!("subscribed to `{}`", m.topic_arn))
        }
        "UnsubscribeConfirmation" => {
            tracing::warn!(
                topic = m.topic_arn,
                "unsubscribed from the topic: its alarms no longer reach this intake"
            );
            Ok("noted".into())
        }
        _ => {
            let alarm = Alarm::from_message(&m.topic_arn, &m.message_id, &m.message);
            let Some(index) = intake.triggers.find(&alarm) else {
                c.unmatched.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    topic = m.topic_arn,
                    alarm = alarm.name.as_deref().unwrap_or("-"),
                    state = alarm.state.as_deref().unwrap_or("-"),
                    "no trigger matches"
                );
                return Ok("no trigger matches".into());
            };
            submit(intake, index, alarm, "sns").await
        }
    }
}
