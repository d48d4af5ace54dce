//! TLS listeners that bound concurrent connections with a semaphore, refuse new ones at once while
//! overloaded (`load_shedding`), give each client a bounded time to finish its handshake, and
//! shut down gracefully: on cancellation they stop accepting,
//! tell every connection to finish, wait for them within the grace period, then return. HTTPS and
//! MQTT share the accept loop; each brings its own per-connection handler.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::load_shedding::LoadGauge;
use crate::attestation::x509::PresentedChain;
use crate::metrics::ListenerMetrics;

/// Who is on the other end of a device connection: the address, and the certificate chain of the
/// TLS handshake. MQTT, AMQP and their WebSocket forms all start from it.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub ip: Option<std::net::IpAddr>,
    pub chain: Option<PresentedChain>,
}

impl Peer {
    pub fn of(tls: &TlsStream<TcpStream>, addr: SocketAddr) -> Peer {
        Peer {
            ip: Some(addr.ip()),
            chain: crate::tls::presented_chain(tls.get_ref().1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Says when a new connection is refused at once (overload).
    pub load: Arc<LoadGauge>,
    /// This listener's connection figures.
    pub metrics: ListenerMetrics,
}

/// Counts a connection open until it is dropped.
struct OpenConnection(prometheus_client::metrics::gauge::Gauge);

impl OpenConnection {
    fn new(open: &prometheus_client::metrics::gauge::Gauge) -> OpenConnection {
        open.inc();
        OpenConnection(open.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Accepts TLS connections until `shutdown` and runs `serve` for each; `serve` gets the token too
/// and must wind its connection down when it fires.
pub async fn accept_tls<F, Fut>(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: ListenerLimits,
    shutdown: CancellationToken,
    serve: F,
) where
    F: Fn(TlsStream<TcpStream>, SocketAddr, CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let serve = Arc::new(serve);
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
        let Some(handshake) = limits.load.admit(&tcp) else {
            limits.metrics.shed.inc();
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, serve, shutdown) = (acceptor.clone(), serve.clone(), shutdown.clone());
        let handshake_timeout = limits.handshake_timeout;
        let metrics = limits.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _open = OpenConnection::new(&metrics.open);
            let accepted = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
            drop(handshake);
            match accepted {
                Ok(Ok(tls)) => return serve(tls, peer, shutdown).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
            metrics.handshake_failures.inc();
        });
    }
    drop(listener);
    tracing::info!("stopped accepting connections; finishing in-flight work");
    // Every connection holds a permit: all permits back means all connections done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, connections.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(grace = ?limits.shutdown_grace, "connections did not finish in time");
    }
}

/// Serves `router` over HTTPS (HTTP/1.1 with upgrades, and HTTP/2) until `shutdown` is cancelled.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) {
    accept_tls(
        listener,
        tls,
        limits,
        shutdown,
        move |tls, peer, shutdown| {
            let chain = crate::tls::presented_chain(tls.get_ref().1);
            let service = router
                .clone()
                .map_request(move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    if let Some(chain) = &chain {
                        request.extensions_mut().insert(chain.clone());
                    }
                    request
                });
            async move {
                let builder = auto::Builder::new(TokioExecutor::new());
                let connection = builder.serve_connection_with_upgrades(
                    TokioIo::new(tls),
                    TowerToHyperService::new(service),
                );
                tokio::pin!(connection);
                let result = tokio::select! {
                    result = connection.as_mut() => result,
                    _ = shutdown.cancelled() => {
                        connection.as_mut().graceful_shutdown();
                        connection.await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            }
        },
    )
    .await
}

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
            load: Arc::default(),
            metrics: ListenerMetrics::default(),
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
