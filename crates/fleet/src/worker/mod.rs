//! `runbook worker`: pulls run requests from the work queue and executes
//! them, many at once in one process, on one shared engine.
//!
//! A request is acknowledged only when its run has ended (or parked); while
//! it runs the worker tells JetStream it is still at it. A worker that
//! dies stops telling, the request is delivered again after the ack wait,
//! and the next worker continues the incident's run from its journal: the
//! steps that ended are replayed, a change with an intent and no result is
//! checked against the real backend before anything is issued again.
//!
//! On SIGTERM or Ctrl-C a worker takes no more requests, lets the runs in
//! hand finish for `--grace` seconds, then hands the rest back (they
//! continue elsewhere from their journals).

mod ack;
mod counters;
mod park;
mod pull;
mod runs;
mod thread;

use crate::nats::{Fleet, REQUESTS, TIMEOUT, jetstream_error};
use crate::store::JetStreamStore;
use crate::{page, parked};
use anyhow::Result;
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull::Config as PullConfig};
pub use counters::Counters;
use runbook_core::exit::Exit;
use runbook_engine::Engine;
use runbook_engine::runtime::Runtime;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The durable consumer every worker shares.
pub const CONSUMER: &str = "runbook-workers";

/// How a worker is set up (`runbook worker`'s flags).
#[derive(Debug, Clone)]
pub struct Settings {
    pub concurrency: usize,
    pub ack_wait: Duration,
    /// Deliveries of one request before it is given up (a run that keeps
    /// killing its workers must not take down the fleet).
    pub max_deliver: i64,
    pub grace: Duration,
    pub approval_timeout: Duration,
    pub cache_dir: Option<std::path::PathBuf>,
}

struct Worker {
    fleet: Arc<Fleet>,
    store: Arc<JetStreamStore>,
    /// One engine for every run in this process, journaling to `store`.
    engine: Engine,
    settings: Settings,
    counters: Arc<Counters>,
}

/// Runs a worker until SIGTERM / Ctrl-C.
pub async fn work(
    fleet: Arc<Fleet>,
    settings: Settings,
    health: Option<std::net::SocketAddr>,
) -> Result<Exit> {
    let store = JetStreamStore::once_per_incident(fleet.clone());
    let runtime = Runtime::with_instances(settings.cache_dir.clone(), settings.concurrency as u32)?;
    let counters = Arc::new(Counters::default());
    // The standard OpenTelemetry variables: each run traced, or nothing.
    let tracing =
        tokio::task::spawn_blocking(runbook_engine::telemetry::Tracing::from_env).await??;
    let consumer = consumer(&fleet, &settings).await?;
    if let Some(addr) = health {
        let render = counters.clone();
        crate::health::serve(addr, fleet.clone(), Arc::new(move || render.render())).await?;
    }
    let worker = Arc::new(Worker {
        fleet: fleet.clone(),
        store: store.clone(),
        engine: Engine::new(runtime, Some(store.clone())).with_tracing(tracing.clone()),
        settings: settings.clone(),
        counters: counters.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let slots = Arc::new(tokio::sync::Semaphore::new(settings.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sweep = tokio::time::interval(Duration::from_secs(2));
    let mut sweeping: Option<tokio::task::JoinHandle<()>> = None;
    // Requests come from a task of their own: a pull cancelled halfway
    // (as a `select!` branch would be) loses the messages it had taken
    // until their ack wait runs out.
    let (taken_tx, mut taken) = tokio::sync::mpsc::channel(settings.concurrency);
    let (fetch_stop, fetch_stopped) = tokio::sync::watch::channel(false);
    let fetcher = tokio::spawn(pull::pull(consumer, slots.clone(), taken_tx, fetch_stopped));
    tracing::info!(
        nats = fleet.url,
        concurrency = settings.concurrency,
        "worker started"
    );
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = sweep.tick() => {
                // In the background, one sweep at a time: requests keep
                // flowing while it reads.
                if sweeping.as_ref().is_none_or(|h: &tokio::task::JoinHandle<()>| h.is_finished()) {
                    let (w, counters) = (worker.clone(), counters.clone());
                    let here = tokio::runtime::Handle::current();
                    sweeping = Some(tokio::task::spawn_blocking(move || {
                        match parked::escalate_overdue(&w.store) {
                            Ok(runs) => {
                                counters.escalated.fetch_add(runs.len() as u64, Ordering::Relaxed);
                                for run in runs.into_iter().filter(|r| !r["page"].is_null()) {
                                    here.spawn(page::escalated(w.store.clone(), run));
                                }
                            }
                            Err(e) => tracing::debug!("escalating parked runs: {e:#}"),
                        }
                    }));
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            Some((msg, permit)) = taken.recv() => {
                let (w, stop) = (worker.clone(), stop_rx.clone());
                tasks.spawn(async move {
                    w.handle(msg, stop).await;
                    drop(permit);
                });
            }
        }
    }
    // No more requests: those taken but not started go back at once.
    let _ = fetch_stop.send(true);
    taken.close();
    while let Some((msg, _)) = taken.recv().await {
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
    // Its pull ends within 2 s (what it took then goes back at once).
    let abort = fetcher.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), fetcher)
        .await
        .is_err()
    {
        abort.abort();
    }
    tracing::info!(
        in_flight = tasks.len(),
        "stopping: no more requests; letting runs in hand finish for up to {} s",
        settings.grace.as_secs()
    );
    let drained = tokio::time::timeout(settings.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let _ = stop_tx.send(true);
        // Each run hands its request back and lets go of its journal.
        let _ = tokio::time::timeout(TIMEOUT, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
    }
    if let Some(t) = tracing
        && let Ok(Err(e)) = tokio::task::spawn_blocking(move || t.shutdown()).await
    {
        tracing::warn!("{e:#}");
    }
    tracing::info!("worker stopped\n{}", counters.render());
    Ok(Exit::Ok)
}

async fn consumer(
    fleet: &Fleet,
    s: &Settings,
) -> Result<async_nats::jetstream::consumer::PullConsumer> {
    let want = PullConfig {
        durable_name: Some(CONSUMER.into()),
        description: Some("runbook workers".into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: s.ack_wait,
        max_deliver: s.max_deliver,
        ..Default::default()
    };
    let stream = fleet.requests.clone();
    match stream.get_consumer::<PullConfig>(CONSUMER).await {
        Ok(mut c) => {
            let info = c
                .info()
                .await
                .map_err(|e| jetstream_error("reading the workers' consumer", e))?;
            if info.config.ack_policy != AckPolicy::Explicit
                || info.config.filter_subject != want.filter_subject
            {
                return Err(runbook_core::error::hinted(
                    format!(
                        "the consumer `{CONSUMER}` on `{REQUESTS}` is not one workers can share: it must acknowledge explicitly and take every request"
                    ),
                    format!(
                        "remove it (`nats consumer rm {REQUESTS} {CONSUMER}`); the next worker makes it again"
                    ),
                ));
            }
            Ok(c)
        }
        Err(_) => stream
            .create_consumer(want)
            .await
            .map_err(|e| jetstream_error("creating the workers' consumer", e)),
    }
}

/// What became of one request.
pub(super) enum Outcome {
    /// The run ended or parked, or there was nothing to do: acknowledge.
    Done,
    /// Another process has the incident right now: deliver it again later.
    Later,
    /// It cannot be run here (bad request, files differ): give it up.
    Refused(anyhow::Error),
}

/// Resolves once the worker is told to hand runs back.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
