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

use super::nats::{Fleet, REQUESTS, TIMEOUT, jetstream_error};
use super::request::{Request, RunRequest};
use super::store::JetStreamStore;
use super::{page, parked};
use crate::commands::run::{RunContext, resume_in, run_in};
use crate::engine::Runtime;
use crate::exit::Exit;
use crate::journal::{Store, finished};
use anyhow::{Result, anyhow};
use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::{AckPolicy, pull};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The durable consumer every worker shares.
pub const CONSUMER: &str = "runbook-workers";
/// Deliveries of a request that failed before it is given up (terminated).
const REFUSE_AFTER: i64 = 4;

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

/// What a worker has done, for `/metrics` and its last log line.
#[derive(Debug, Default)]
pub struct Counters {
    pub in_flight: AtomicU64,
    pub completed: AtomicU64,
    pub redelivered: AtomicU64,
    pub parked: AtomicU64,
    pub escalated: AtomicU64,
    pub duplicates: AtomicU64,
    pub failed: AtomicU64,
    pub handed_back: AtomicU64,
}

impl Counters {
    /// Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            ("in_flight", "runs executing now", &self.in_flight),
            (
                "completed",
                "runs that ended (resolved, escalated, failed, blocked)",
                &self.completed,
            ),
            (
                "redelivered",
                "requests this worker got after another delivery",
                &self.redelivered,
            ),
            ("parked", "runs parked for an approval", &self.parked),
            (
                "escalated",
                "parked runs escalated after their approval timeout",
                &self.escalated,
            ),
            (
                "duplicates",
                "requests for incidents already handled or parked",
                &self.duplicates,
            ),
            (
                "failed",
                "requests that could not be run (bad input, unreadable files)",
                &self.failed,
            ),
            (
                "handed_back",
                "runs handed back at shutdown",
                &self.handed_back,
            ),
        ] {
            super::health::metric(
                &mut out,
                "runbook_worker",
                name,
                help,
                v,
                name != "in_flight",
            );
        }
        out
    }
}

/// What became of one request.
enum Outcome {
    /// The run ended or parked, or there was nothing to do: acknowledge.
    Done,
    /// Another process has the incident right now: deliver it again later.
    Later,
    /// It cannot be run here (bad request, files differ): give it up.
    Refused(anyhow::Error),
}

struct Worker {
    fleet: Arc<Fleet>,
    store: Arc<JetStreamStore>,
    ctx: RunContext,
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
    let consumer = consumer(&fleet, &settings).await?;
    if let Some(addr) = health {
        super::health::serve(addr, fleet.clone(), counters.clone()).await?;
    }
    let worker = Arc::new(Worker {
        fleet: fleet.clone(),
        store: store.clone(),
        ctx: RunContext {
            store: store.clone(),
            runtime: Some(runtime),
            quiet: true,
        },
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
    let fetcher = tokio::spawn(pull(consumer, slots.clone(), taken_tx, fetch_stopped));
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
                                    here.spawn(async move {
                                        page::send_logged(&run["page"], &run, page::Event::Escalated).await;
                                    });
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
    tracing::info!("worker stopped\n{}", counters.render());
    Ok(Exit::Ok)
}

async fn consumer(
    fleet: &Fleet,
    s: &Settings,
) -> Result<async_nats::jetstream::consumer::PullConsumer> {
    let want = pull::Config {
        durable_name: Some(CONSUMER.into()),
        description: Some("runbook workers".into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: s.ack_wait,
        max_deliver: s.max_deliver,
        ..Default::default()
    };
    let stream = fleet.requests.clone();
    match stream.get_consumer::<pull::Config>(CONSUMER).await {
        Ok(mut c) => {
            let info = c
                .info()
                .await
                .map_err(|e| jetstream_error("reading the workers' consumer", e))?;
            if info.config.ack_policy != AckPolicy::Explicit
                || info.config.filter_subject != want.filter_subject
            {
                return Err(crate::error::hinted(
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

type Taken = (
    async_nats::jetstream::Message,
    tokio::sync::OwnedSemaphorePermit,
);

/// Pulls requests while there are free slots, each with the slot it will
/// run in, and hands them over as they come. Stops when told, or when
/// nobody takes them any more (those are handed back).
async fn pull(
    consumer: async_nats::jetstream::consumer::PullConsumer,
    slots: Arc<tokio::sync::Semaphore>,
    taken: tokio::sync::mpsc::Sender<Taken>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use futures_util::StreamExt;
    loop {
        let first = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut stop) => return,
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        // Up to one request per free slot, each as soon as it is there;
        // the pull ends when all came or after 2 s.
        let batch = consumer
            .batch()
            .max_messages(permits.len())
            .expires(Duration::from_secs(2))
            .messages()
            .await;
        let Ok(mut batch) = batch else {
            drop(permits);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let mut handing_back = false;
        // At most one message per permit, then the pull's end.
        for _ in 0..=permits.len() {
            let next = tokio::time::timeout(Duration::from_secs(5), batch.next()).await;
            let Ok(Some(Ok(m))) = next else { break };
            if handing_back || *stop.borrow() {
                handing_back = true;
                let _ = m.ack_with(AckKind::Nak(None)).await;
                continue;
            }
            let Some(permit) = permits.pop() else {
                let _ = m.ack_with(AckKind::Nak(None)).await;
                continue;
            };
            if let Err(back) = taken.send((m, permit)).await {
                // Nobody takes requests any more: this one and the rest of
                // the pull go back now, not after their ack wait.
                let _ = back.0.0.ack_with(AckKind::Nak(None)).await;
                handing_back = true;
            }
        }
        if handing_back {
            return;
        }
    }
}

impl Worker {
    async fn handle(
        self: Arc<Self>,
        msg: async_nats::jetstream::Message,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        if delivered > 1 {
            self.counters.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let request: Request = match serde_json::from_slice(&msg.payload) {
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

    async fn execute(&self, request: Request, delivered: i64) -> Outcome {
        match request {
            Request::Run(r) => self.run(r, delivered).await,
            Request::Resume { run_id, step, by } => {
                tracing::info!(run_id, step, by, "approved: continuing");
                let incident = self
                    .store
                    .read_run(&run_id)
                    .ok()
                    .and_then(|l| {
                        l.iter()
                            .find(|l| l["event"] == "run-start")
                            .and_then(|s| s["incident"].as_str().map(str::to_string))
                    })
                    .unwrap_or_default();
                self.continue_run(&run_id, &incident, None).await
            }
        }
    }

    async fn run(&self, r: RunRequest, delivered: i64) -> Outcome {
        if let Err(e) = r.check_files() {
            return Outcome::Refused(e);
        }
        let store = self.store.clone();
        let incident = r.incident.clone();
        let last = {
            let store = store.clone();
            let incident = incident.clone();
            tokio::task::spawn_blocking(
                move || -> Result<Option<(String, Vec<serde_json::Value>, bool)>> {
                    let Some(last) = store.incident_runs(&incident)?.last().cloned() else {
                        return Ok(None);
                    };
                    let lines = store.read_run(&last)?;
                    let running = store.is_running(&last);
                    Ok(Some((last, lines, running)))
                },
            )
            .await
        };
        let last = match last {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::warn!(incident, "reading the incident's runs: {e:#}");
                return Outcome::Later;
            }
            Err(e) => return Outcome::Refused(anyhow!("{e}")),
        };
        match last {
            Some((run_id, lines, _)) if finished(&lines).is_some() => {
                // Handled already, or parked for an approval: the same
                // alarm again is not another run.
                tracing::info!(
                    incident,
                    run_id,
                    delivered,
                    "duplicate request: the incident has its run"
                );
                self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
            Some((_, _, true)) => Outcome::Later,
            Some((run_id, lines, false)) if lines.iter().any(|l| l["event"] == "run-start") => {
                tracing::info!(
                    incident,
                    run_id,
                    delivered,
                    "continuing the incident's unfinished run from its journal"
                );
                self.continue_run(&run_id, &incident, Some(&r)).await
            }
            _ => self.start(&r).await,
        }
    }

    async fn start(&self, r: &RunRequest) -> Outcome {
        let mut argv: Vec<String> = vec![
            "runbook".into(),
            "run".into(),
            r.runbook.display().to_string(),
        ];
        match (&r.sim, &r.env) {
            (Some(s), _) => argv.extend(["--sim".into(), s.display().to_string()]),
            (None, Some(e)) => argv.extend(["--env".into(), e.display().to_string()]),
            (None, None) => return Outcome::Refused(anyhow!("the request names no backend")),
        }
        argv.extend(["--incident".into(), r.incident.clone(), "--json".into()]);
        if let Some(t) = &r.incident_start {
            argv.extend(["--incident-start".into(), t.clone()]);
        }
        if r.yes {
            argv.push("--yes".into());
        }
        for s in &r.approve {
            argv.extend(["--approve".into(), s.clone()]);
        }
        let args = match parse_args(argv) {
            Ok(crate::cli::Command::Run(a)) => a,
            Ok(_) => return unreachable_command(),
            Err(e) => return Outcome::Refused(e),
        };
        tracing::info!(incident = r.incident, runbook = %r.runbook.display(), "starting a run");
        let exit = run_in(args, &self.ctx).await;
        // Reads and writes NATS and files: off the runtime's own threads.
        tokio::task::block_in_place(|| {
            self.after(&r.incident, exit, r.approval_timeout_s, r.env.as_deref())
        })
    }

    async fn continue_run(&self, run_id: &str, incident: &str, r: Option<&RunRequest>) -> Outcome {
        let approved = {
            let (fleet, id) = (self.fleet.clone(), run_id.to_string());
            tokio::task::spawn_blocking(move || parked::approvals(&fleet, &id))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default()
        };
        let mut argv: Vec<String> = vec![
            "runbook".into(),
            "resume".into(),
            run_id.into(),
            "--json".into(),
        ];
        if r.is_some_and(|r| r.yes) {
            argv.push("--yes".into());
        }
        for s in r
            .map(|r| r.approve.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(approved)
        {
            argv.extend(["--approve".into(), s]);
        }
        let args = match parse_args(argv) {
            Ok(crate::cli::Command::Resume(a)) => a,
            Ok(_) => return unreachable_command(),
            Err(e) => return Outcome::Refused(e),
        };
        let was_parked = {
            let (fleet, id) = (self.fleet.clone(), run_id.to_string());
            tokio::task::spawn_blocking(move || parked::unpark(&fleet, &id))
                .await
                .ok()
                .flatten()
        };
        let paged = was_parked
            .as_ref()
            .map(|p| p["page"].clone())
            .filter(|p| !p.is_null());
        if let (Some(plan), Some(entry)) = (paged.clone(), was_parked) {
            tokio::spawn(async move {
                page::send_logged(&plan, &entry, page::Event::Continued).await;
            });
        }
        let env = r.and_then(|r| r.env.clone()).or_else(|| {
            paged
                .as_ref()
                .and_then(|p| p["env"].as_str().map(std::path::PathBuf::from))
        });
        let exit = resume_in(args, &self.ctx).await;
        tokio::task::block_in_place(|| {
            self.after(
                incident,
                exit,
                r.and_then(|r| r.approval_timeout_s),
                env.as_deref(),
            )
        })
    }

    /// Acknowledge, retry or park, from how the run went.
    /// `env`: the run's environment file (who is paged when it parks).
    fn after(
        &self,
        incident: &str,
        exit: Result<Exit>,
        timeout_s: Option<u64>,
        env: Option<&std::path::Path>,
    ) -> Outcome {
        let exit = match exit {
            Ok(e) => e,
            Err(e) => {
                let held = e
                    .chain()
                    .any(|c| c.downcast_ref::<crate::journal::Held>().is_some());
                return if held {
                    Outcome::Later
                } else {
                    Outcome::Refused(e)
                };
            }
        };
        let last = self
            .store
            .incident_runs(incident)
            .ok()
            .and_then(|r| r.last().cloned());
        let lines = last
            .as_ref()
            .and_then(|id| self.store.read_run(id).ok())
            .unwrap_or_default();
        match exit {
            // Blocked before it began: the incident's run is elsewhere.
            Exit::Blocked if finished(&lines).is_none() => Outcome::Later,
            Exit::AwaitingApproval => {
                let (Some(run_id), Some((step, change))) = (last, parked::waiting_step(&lines))
                else {
                    return Outcome::Done;
                };
                let timeout = timeout_s.unwrap_or(self.settings.approval_timeout.as_secs());
                let plan = page::planned(env, &run_id, &step);
                match parked::park(
                    &self.store,
                    &run_id,
                    incident,
                    (&step, &change),
                    timeout,
                    plan.clone(),
                ) {
                    Ok(entry) => {
                        if let Some(plan) = plan {
                            tokio::spawn(async move {
                                page::send_logged(&plan, &entry, page::Event::Parked).await;
                            });
                        }
                    }
                    Err(e) => {
                        tracing::error!(run_id, "parking: {e:#}");
                        return Outcome::Later;
                    }
                }
                self.counters.parked.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
            // It stopped without its end in the journal (NATS went away
            // mid-run): it continues from there on the next delivery.
            exit if last.is_some() && finished(&lines).is_none() => {
                tracing::warn!(
                    incident,
                    ?exit,
                    "the run stopped without its end journaled: to be continued"
                );
                Outcome::Later
            }
            exit => {
                tracing::info!(
                    incident,
                    run_id = last.unwrap_or_default(),
                    ?exit,
                    "run ended"
                );
                self.counters.completed.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
        }
    }
}

fn parse_args(argv: Vec<String>) -> Result<crate::cli::Command> {
    use clap::Parser;
    crate::cli::Cli::try_parse_from(argv)
        .map(|c| c.command)
        .map_err(|e| anyhow!("the request does not make a valid run: {e}"))
}

fn unreachable_command() -> Outcome {
    Outcome::Refused(anyhow!("internal: the request parsed as another command"))
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
