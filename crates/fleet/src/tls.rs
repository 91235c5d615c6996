//! HTTPS for `runbook serve` (`--tls-cert`, `--tls-key`: PEM files), and
//! mutual TLS for Alertmanager: with `[alertmanager] client_ca_file` in the
//! triggers file, a client certificate that chains to that CA is asked
//! for. rustls refuses a handshake whose certificate does not verify; one
//! with none goes on (SNS presents none), and `POST /alertmanager` then
//! refuses the delivery ([`ClientCertificate`]).
//!
//! Connections are bounded in number ([`MAX_CONNECTIONS`]) and in time (a
//! handshake, and a request's headers, within [`HANDSHAKE`]; a request
//! within [`REQUEST`]); at stop, requests in hand finish within [`DRAIN`].

use anyhow::{Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long a client has for its TLS handshake, and then for a request's
/// headers.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// Connections served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// How long one request (its body read, and its answer) may take.
pub const REQUEST: Duration = Duration::from_secs(30);
/// How long requests in hand may finish once serving stops.
pub const DRAIN: Duration = Duration::from_secs(30);

/// What the server presents.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Whether the request's connection presented a client certificate that
/// chains to the configured CA (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertificate(pub bool);

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading {what} `{}` (PEM)", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{what} `{}` holds no PEM certificate",
        path.display()
    );
    Ok(certs)
}

/// The server's TLS configuration: its certificate chain and key and, with
/// `client_ca`, client certificates verified against that CA (asked for,
/// not required: [`ClientCertificate`] tells a route whether one came).
pub fn server_config(
    files: &TlsFiles,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certificates(&files.cert, "`--tls-cert`")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| {
            format!(
                "reading `--tls-key` `{}` (a PEM private key)",
                files.key.display()
            )
        })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "`[alertmanager] client_ca_file`")? {
                roots.add(cert).with_context(|| {
                    format!(
                        "`[alertmanager] client_ca_file` `{}`: not a CA certificate rustls can use",
                        ca.display()
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .context("`[alertmanager] client_ca_file`")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        runbook_core::error::hinted(
            format!("`--tls-cert` and `--tls-key` do not go together: {e}"),
            "give the key the certificate was issued for (its chain first in `--tls-cert`)",
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Completes at SIGTERM or Ctrl-C: when a server (`runbook serve`,
/// `runbook console`) stops taking requests.
pub async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Serves `app` over TLS on `listener` until `stop` completes, then lets
/// the requests in hand finish for up to [`DRAIN`] (a delivery already
/// submitted gets its answer, so it is not sent again).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    config: Arc<rustls::ServerConfig>,
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot?,
        };
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, say: not the end of serving.
                    tracing::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, watcher) = (acceptor.clone(), app.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                // Scanners and plain HTTP on this port: not worth a warning.
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake: no answer within {} s", HANDSHAKE.as_secs());
                    return;
                }
            };
            // rustls verified any certificate presented against the CA.
            let verified = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            // Each request: told whether the connection had a certificate,
            // and answered (its body read) within `REQUEST`.
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ClientCertificate(verified));
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    let call = tower_service::Service::call(&mut app.clone(), req);
                    async move {
                        match tokio::time::timeout(REQUEST, call).await {
                            Ok(answer) => answer,
                            Err(_) => Ok(axum::response::IntoResponse::into_response((
                                axum::http::StatusCode::REQUEST_TIMEOUT,
                                format!("the request took longer than {} s\n", REQUEST.as_secs()),
                            ))),
                        }
                    }
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "stopping: requests still open after {} s were cut off",
            DRAIN.as_secs()
        );
    }
    Ok(())
}
