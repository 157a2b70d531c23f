//! The listener: accepts connections (plain or TLS via rustls), serves HTTP/1.1 with
//! keep-alive, and on shutdown stops accepting, lets requests in progress finish (their
//! events drain through the pipeline), then returns so the pipeline can close.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::config::TlsConfig;
use super::routes::RemoteAddr;

/// A client must send its request headers within this time (slowloris protection).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// A TLS handshake that takes longer is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At shutdown, requests in progress get this long to finish (ack mode waits for sinks).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

pub fn tls_acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("tls.cert_file {}: {e}", show(&cfg.cert_file)))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.cert_file {}: no PEM certificate found",
            show(&cfg.cert_file)
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key_file).map_err(|e| {
        format!(
            "tls.key_file {}: no usable PEM private key: {e}",
            show(&cfg.key_file)
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: the certificate and key do not fit together: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn show(p: &Path) -> String {
    p.display().to_string()
}

pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    shutdown: CancellationToken,
    name: Arc<str>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let app = app.clone().layer(Extension(RemoteAddr(peer)));
                    let tls = tls.clone();
                    let stop = shutdown.clone();
                    connections.spawn(async move {
                        match tls {
                            None => serve_connection(stream, app, stop).await,
                            Some(acceptor) => {
                                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                    Ok(Ok(tls_stream)) => serve_connection(tls_stream, app, stop).await,
                                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                                }
                            }
                        }
                    });
                }
                // Out of file descriptors and similar: wait a little instead of spinning.
                Err(e) => {
                    tracing::warn!(source = %name, error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    drop(app);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(source = %name, "requests still in progress after {SHUTDOWN_GRACE:?}; closing them (their senders will retry)");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn serve_connection<I>(io: I, app: Router, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            // Finish the request in progress, then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
