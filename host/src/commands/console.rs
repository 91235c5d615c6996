//! `runbook console`: the responder console ([`runbook_console`]) over the
//! journal store `--state-dir` or `--nats` names.

use super::run::store_and_fleet;
use crate::cli::ConsoleArgs;
use anyhow::Result;
use runbook_console::{Console, TrustedHeader};
use runbook_core::approvers::Approvers;
use runbook_core::error::hinted;
use runbook_core::exit::Exit;

pub async fn console(args: ConsoleArgs) -> Result<Exit> {
    super::fleet::init_tracing();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(runbook_fleet::tls::server_config(
            &runbook_fleet::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            },
            None,
        )?),
        _ => None,
    };
    if tls.is_none() && !args.listen.ip().is_loopback() {
        return Err(hinted(
            format!(
                "the console would listen on `{}` without HTTPS: sign-ins and decisions would cross the network in the clear",
                args.listen
            ),
            "give `--tls-cert` and `--tls-key`, or listen on 127.0.0.1 behind a reverse proxy that terminates TLS",
        ));
    }
    let path = args
        .approvers
        .clone()
        .or_else(|| std::env::var_os("RUNBOOK_APPROVERS").map(std::path::PathBuf::from))
        .ok_or_else(|| {
            hinted(
                "no approvers file: pass `--approvers FILE` or set `RUNBOOK_APPROVERS`",
                "the approvers file lists who may approve, their groups and their token hashes; see runbooks/README.md (Approvals)",
            )
        })?;
    let approvers = Approvers::load(&path)?;
    let trusted = args.trusted_header.clone().map(|header| TrustedHeader {
        header,
        proxies: args.trusted_proxy.clone(),
    });
    let slack = match &args.slack_signing_secret_env {
        Some(var) => {
            let secret = std::env::var(var).map_err(|_| {
                hinted(
                    format!("`--slack-signing-secret-env` names `{var}`, which is not set"),
                    "export the Slack app's signing secret (Basic Information → App Credentials) in that variable",
                )
            })?;
            Some(runbook_console::slack::Slack::new(
                secret,
                args.slack_response_base.clone(),
            )?)
        }
        None => None,
    };
    let (store, fleet) = store_and_fleet(&args.state)?;
    // A state directory's decided runs continue here; a fleet's workers
    // continue its own.
    let engine = match fleet {
        Some(_) => None,
        None => Some(runbook_engine::Engine::new(
            runbook_engine::runtime::Runtime::new(runbook_engine::runtime::default_cache_dir())?,
            Some(store.clone()),
        )),
    };
    let console = Console::new(
        store,
        fleet,
        engine,
        approvers,
        (trusted, slack),
        tls.is_some(),
    );
    runbook_console::routes::serve(console, args.listen, tls).await?;
    Ok(Exit::Ok)
}
