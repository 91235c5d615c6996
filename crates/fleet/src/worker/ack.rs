//! One request's life in the queue: parsed, kept from redelivery while
//! its run goes on (`+WPI`), handed back at shutdown, and acknowledged,
//! retried or given up by what became of it.

use super::{Outcome, Worker, stopped};
use crate::request::Request;
use anyhow::anyhow;
use async_nats::jetstream::AckKind;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Deliveries of a request that failed before it is given up (terminated).
const REFUSE_AFTER: i64 = 4;

impl Worker {
    pub(super) async fn handle(
        self: Arc<Self>,
        msg: async_nats::jetstream::Message,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        if delivered > 1 {
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let request: Request = match serde_json::from_slice(&msg.payload) {
            Ok(Request::Run(mut r)) => {
                r.trace = crate::request::trace_of(msg.headers.as_ref());
                Request::Run(r)
            }
            Ok(r) => r,
            Err(e) => {
                tracing::error!("dropping a request that does not parse: {e}");
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        };
        self.counters.in_flight.fetch_add(1, Ordering::Relaxed);
        // Still at it: the request is not delivered to anyone else.
        let progress = {
            let every = self.settings.ack_wait / 3;
            let reply = msg.reply.clone();
            let client = self.fleet.client.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Some(r) = &reply {
                        let _ = client.publish(r.clone(), "+WPI".into()).await;
                    }
                }
            })
        };
        let this = self.clone();
        let work = tokio::spawn(async move { this.execute(request, delivered).await });
        let abort = work.abort_handle();
        let outcome = tokio::select! {
            done = work => done.unwrap_or_else(|e| Outcome::Refused(anyhow!("the run panicked: {e}"))),
            () = stopped(&mut stop) => {
                abort.abort();
                progress.abort();
                self.counters.handed_back.fetch_add(1, Ordering::Relaxed);
                self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                tracing::warn!("handed a run back at shutdown: it continues elsewhere from its journal");
                return;
            }
        };
        progress.abort();
        self.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
        let acked = match outcome {
            Outcome::Done => msg.double_ack().await,
            Outcome::Later => {
                msg.ack_with(AckKind::Nak(Some(Duration::from_secs(3))))
                    .await
            }
            // NATS away for a moment, files not yet deployed here: worth
            // a few more deliveries (to any worker) before giving up.
            Outcome::Refused(e) if delivered < REFUSE_AFTER => {
                tracing::warn!(delivered, "request failed, to be delivered again: {e:#}");
                msg.ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await
            }
            Outcome::Refused(e) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(delivered, "request refused: {e:#}");
                msg.ack_with(AckKind::Term).await
            }
        };
        if let Err(e) = acked {
            // Delivered again after the ack wait; the journal makes that safe.
            tracing::warn!("acknowledging a request: {e}");
        }
    }
}
