//! A TLS listener that bounds concurrent connections with a semaphore, gives each client a bounded
//! time to finish its handshake, and shuts down gracefully: on cancellation it stops accepting,
//! lets in-flight requests finish within the grace period, then returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
}

/// Serves `router` over HTTPS (HTTP/1.1 with upgrades, and HTTP/2) until `shutdown` is cancelled.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    loop {
        // Wait for a free slot first, so a full server leaves clients in the kernel's backlog.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        let handshake_timeout = limits.handshake_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let service = router.map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
            let connection = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(
                    TokioIo::new(tls),
                    TowerToHyperService::new(service),
                )
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("stopped accepting connections; finishing in-flight requests");
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "in-flight requests did not finish in time");
    }
}

/// The address a connection came from, as the listener recorded it.
pub type PeerAddr = ConnectInfo<SocketAddr>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use axum::routing::get;

    async fn start(
        router: Router,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<()>,
        reqwest::Client,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            ..Config::default()
        };
        let material = crate::tls::prepare(&config, &[]).unwrap();
        let tls = crate::tls::server_config(&material, &[b"http/1.1"]).unwrap();
        let ca = std::fs::read(material.ca_path.unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let limits = ListenerLimits {
            max_connections: 2,
            handshake_timeout: Duration::from_millis(300),
            shutdown_grace: Duration::from_secs(5),
        };
        let server = tokio::spawn(serve_https(listener, tls, router, limits, shutdown.clone()));
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .resolve("localhost", addr)
            .build()
            .unwrap();
        (addr, shutdown, server, client)
    }

    #[tokio::test]
    async fn shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "done"
            }),
        );
        let (addr, shutdown, server, client) = start(router).await;
        let url = format!("https://localhost:{}/slow", addr.port());
        let in_flight = tokio::spawn(client.get(&url).send());
        tokio::time::sleep(Duration::from_millis(100)).await;
        shutdown.cancel();
        let response = in_flight
            .await
            .unwrap()
            .expect("the in-flight request completes");
        assert_eq!(response.text().await.unwrap(), "done");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("server returns")
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }

    #[tokio::test]
    async fn a_client_that_never_handshakes_is_dropped_and_frees_its_slot() {
        let router = Router::new().route("/", get(|| async { "ok" }));
        let (addr, shutdown, server, client) = start(router).await;
        // Two silent clients take both slots; after the handshake timeout they are dropped.
        let silent: Vec<_> =
            futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(addr))).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        let url = format!("https://localhost:{}/", addr.port());
        let response = tokio::time::timeout(Duration::from_secs(3), client.get(&url).send()).await;
        assert_eq!(
            response
                .expect("served after the silent clients timed out")
                .unwrap()
                .status(),
            200
        );
        drop(silent);
        shutdown.cancel();
        server.await.unwrap();
    }
}
