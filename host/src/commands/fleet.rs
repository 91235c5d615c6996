//! `runbook submit`, `runbook worker`, `runbook parked`: the fleet's
//! commands (see [`runbook_fleet`]).

use super::{emit, say};
use crate::cli::{ParkedArgs, ServeArgs, SubmitArgs, WorkerArgs};
use anyhow::Result;
use runbook_core::exit::Exit;
use runbook_fleet::nats::{Fleet, url_of};
use runbook_fleet::request::{Request, RunRequest, publish};
use runbook_fleet::worker::{Settings, work};
use std::time::Duration;

pub fn submit(args: SubmitArgs) -> Result<Exit> {
    let mut request = RunRequest::new(
        &args.runbook,
        args.sim.as_deref(),
        args.env.as_deref(),
        args.incident.clone(),
    )?;
    request.incident_start = args.incident_start.clone();
    request.yes = args.yes;
    request.approve = args.approve.clone();
    request.approval_timeout_s = args.approval_timeout;
    request.severity = args.severity.clone();
    request.trace = super::traces::origin_from_env();
    let fleet = Fleet::connect(&url_of(args.nats.nats.as_deref())?, args.nats.replicas)?;
    let key = format!("incident:{}", request.incident);
    let incident = request.incident.clone();
    let published = publish(&fleet, &Request::Run(request), &key)?;
    let mut out = String::new();
    if published.duplicate {
        say!(
            out,
            "incident `{incident}` was already submitted: this request is the same one (no second run)"
        );
    } else {
        say!(
            out,
            "submitted incident `{incident}` (request {}); `runbook runs --nats URL` shows its run once a worker has it",
            published.sequence
        );
    }
    emit(&out)?;
    Ok(Exit::Ok)
}

pub async fn worker(args: WorkerArgs) -> Result<Exit> {
    init_tracing();
    let url = url_of(args.nats.nats.as_deref())?;
    let replicas = args.nats.replicas;
    let fleet = tokio::task::spawn_blocking(move || Fleet::connect(&url, replicas)).await??;
    let settings = Settings {
        concurrency: args.concurrency.max(1),
        ack_wait: Duration::from_secs(args.ack_wait.max(3)),
        max_deliver: 10,
        grace: Duration::from_secs(args.grace),
        approval_timeout: Duration::from_secs(args.approval_timeout),
        cache_dir: args
            .cache_dir
            .or_else(runbook_engine::runtime::default_cache_dir),
    };
    work(fleet, settings, args.health).await
}

/// `runbook parked`: the runs waiting for an approval, and those
/// escalated without their journal (kept on the list to be looked at).
pub fn parked(args: ParkedArgs) -> Result<Exit> {
    let fleet = Fleet::connect(&url_of(args.nats.nats.as_deref())?, args.nats.replicas)?;
    let all = runbook_fleet::parked::list(&fleet)?;
    if args.json {
        emit(&(serde_json::to_string_pretty(&all)? + "\n"))?;
        return Ok(Exit::Ok);
    }
    let mut out = String::new();
    let entries = all.as_object().cloned().unwrap_or_default();
    if entries.is_empty() {
        say!(out, "no run is parked");
    }
    let time = |v: &serde_json::Value| {
        v.as_u64()
            .map(runbook_core::time::rfc3339)
            .unwrap_or_else(|| "?".into())
    };
    let now = runbook_core::time::now_ms();
    for (run, e) in &entries {
        let text = |k: &str| e[k].as_str().unwrap_or("?").to_string();
        let state = if e["escalated"].is_object() {
            let page = match e["escalated"]["paged"]["delivered"].as_bool() {
                Some(true) => "paged",
                Some(false) => "page NOT delivered",
                None if e["page"].is_null() => "nobody to page",
                None => "not paged yet",
            };
            format!(
                "escalated at {} ({page}): {}",
                time(&e["escalated"]["at_ms"]),
                e["escalated"]["reason"].as_str().unwrap_or("?")
            )
        } else if e["claim"]["until_ms"].as_u64().is_some_and(|u| u > now) {
            format!(
                "being escalated by {}",
                e["claim"]["by"].as_str().unwrap_or("?")
            )
        } else if e["deadline_ms"].as_u64().is_some_and(|d| d <= now) {
            "overdue: the next sweep escalates it".into()
        } else {
            format!("waiting: `runbook approve {run} {}`", text("step"))
        };
        say!(
            out,
            "{run}  step `{}` ({})  incident `{}`  since {}  deadline {}\n  {state}",
            text("step"),
            text("change"),
            text("incident"),
            time(&e["since_ms"]),
            time(&e["deadline_ms"]),
        );
    }
    emit(&out)?;
    Ok(Exit::Ok)
}

pub async fn serve(args: ServeArgs) -> Result<Exit> {
    let path = args.triggers.clone();
    let triggers =
        tokio::task::spawn_blocking(move || runbook_fleet::triggers::Triggers::load(&path))
            .await??;
    let files = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(runbook_fleet::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    // Read and checked before anything connects (and by `--check`).
    let tls = runbook_fleet::intake::tls_config(&triggers, files.as_ref())?;
    if args.check {
        let mut out = String::new();
        say!(
            out,
            "triggers file `{}`: {} trigger(s), from {} topic(s){}",
            triggers.path.display(),
            triggers.triggers.len(),
            triggers.topics.len(),
            if triggers.alertmanager.is_some() {
                " and Alertmanager (POST /alertmanager)"
            } else {
                ""
            }
        );
        for t in &triggers.triggers {
            let what = match (&t.alarm, &t.topic) {
                _ if t.alertname.is_some() => {
                    let labels: Vec<String> =
                        t.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
                    format!(
                        "alert `{}`{}",
                        t.alertname.as_deref().unwrap_or_default(),
                        if labels.is_empty() {
                            String::new()
                        } else {
                            format!(" with {}", labels.join(", "))
                        }
                    )
                }
                (Some(a), _) => {
                    format!("alarm `{a}` in `{}`", t.state.as_deref().unwrap_or("ALARM"))
                }
                (None, Some(topic)) => format!("any message on `{topic}`"),
                (None, None) => "nothing".into(),
            };
            let backend = t
                .env
                .as_ref()
                .or(t.sim.as_ref())
                .map(|p| p.display().to_string());
            say!(
                out,
                "  {}: {what} -> `{}` against `{}`, incident `{}`",
                t.name,
                t.runbook.display(),
                backend.unwrap_or_default(),
                t.template()
            );
        }
        emit(&out)?;
        return Ok(Exit::Ok);
    }
    init_tracing();
    let verifier = runbook_fleet::sns::Verifier::from_env()?;
    let url = url_of(args.nats.nats.as_deref())?;
    let replicas = args.nats.replicas;
    let fleet = tokio::task::spawn_blocking(move || Fleet::connect(&url, replicas)).await??;
    let intake = std::sync::Arc::new(runbook_fleet::intake::Intake {
        triggers,
        verifier,
        fleet,
        counters: Default::default(),
    });
    runbook_fleet::intake::serve(intake, args.listen, tls).await?;
    Ok(Exit::Ok)
}

/// Worker logs: `RUST_LOG` (default `info`) to stderr.
pub(super) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(crate::color::on_stderr())
        .try_init();
}
