//! The composition root: opens the store, bootstraps the instance, prepares TLS, builds the
//! services (`prepare`), and serves the listeners with the background tasks until shutdown (`run`).
//! Nothing else in the crate depends on this module (tests/architecture.rs).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::bootstrap;
use crate::config::Config;
use crate::coordination::{Follower, Peers};
use crate::diagnostics::DiagnosticsBus;
use crate::domain::admin::Admin;
use crate::domain::console_users;
use crate::domain::device_hub::DeviceHub;
use crate::domain::provisioner::Provisioner;
use crate::domain::throttle;
use crate::hubs::Connectors;
use crate::hubs::builtin::BuiltInHub;
use crate::metrics::Metrics;
use crate::model::ConnectorKind;
use crate::state::AppState;
use crate::store::{self, Store};
use crate::tls;
use crate::transport::amqp::{self, AmqpLimits};
use crate::transport::load_shedding::LoadGauge;
use crate::transport::mqtt::{self, MqttLimits, MqttServices};
use crate::transport::websocket::WebSocketSessions;
use crate::transport::{https, listener, metrics_http};

/// An instance ready to serve: store open, bootstrap done, TLS material at hand.
pub struct Prepared {
    pub state: AppState,
    pub tls: tls::TlsMaterial,
}

/// Opens the store and runs the first-start bootstrap (idempotent); shared by `serve` and the
/// admin commands, so both see the same instance.
pub async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    let store = store::open(
        &config.effective_database_url(),
        config.limits.database_max_connections,
    )
    .await?;
    let instance = bootstrap::bootstrap(store.as_ref(), &config).await?;
    let hub_names: Vec<String> = store
        .list_hubs()
        .await?
        .into_iter()
        .map(|h| h.host_name)
        .collect();
    let tls = tls::prepare(&config, &hub_names)?;
    let bus = DiagnosticsBus::default();
    let metrics = Arc::new(metrics_for(&config, &store));
    let provisioner = Provisioner::new(
        store.clone(),
        Connectors::new(BuiltInHub::new(store.clone())),
        bus.clone(),
        instance.id_scope.clone(),
        &config,
        metrics.clone(),
    );
    let peers = Peers::new(store.clone(), &instance.id_scope);
    let device_hub = DeviceHub::new(store.clone(), bus.clone(), peers.clone());
    let admin = Admin::new(
        store.clone(),
        provisioner.clone(),
        peers.clone(),
        (&config.limits).into(),
    );
    let service_api_calls = Arc::new(throttle::service_api_limit(&config.limits));
    Ok(Prepared {
        state: AppState {
            config: Arc::new(config),
            store,
            instance: Arc::new(instance),
            bus,
            provisioner,
            device_hub,
            admin,
            service_api_calls,
            metrics,
            peers,
            draining: CancellationToken::new(),
        },
        tls,
    })
}

/// Metrics that record when they are served, reading the store's pools and group commit.
fn metrics_for(config: &Config, store: &Arc<dyn Store>) -> Metrics {
    if config.metrics_socket().is_none() {
        return Metrics::disabled();
    }
    let pools = store.clone();
    Metrics::new(
        store.commit_metrics(),
        Some(Box::new(move || pools.pool_use())),
    )
}

/// `onramp serve`: binds the configured ports and runs until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let prepared = prepare(config).await?;
    let config = prepared.state.config.clone();
    let listeners = Listeners {
        https: bind(config.listen_address, config.https_port, "https_port").await?,
        mqtt: bind(config.listen_address, config.mqtt_port, "mqtt_port").await?,
        amqp: bind(config.listen_address, config.amqp_port, "amqp_port").await?,
        metrics: match config.metrics_socket() {
            Some(addr) => Some(bind(addr.ip(), addr.port(), "metrics_address").await?),
            None => None,
        },
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    run(prepared, listeners, shutdown).await
}

/// The sockets an instance serves on, bound by the caller: the configured ports for `serve`,
/// free ports for the tests.
pub struct Listeners {
    pub https: TcpListener,
    pub mqtt: TcpListener,
    pub amqp: TcpListener,
    /// Plain HTTP `/metrics`; None when metrics are off.
    pub metrics: Option<TcpListener>,
}

/// Serves a prepared instance until `shutdown` is cancelled, then drains its connections and
/// closes the store. This is the whole composition (first admin, janitor, event recorder,
/// listeners); `serve` and the integration tests both run it.
pub async fn run(
    prepared: Prepared,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let Prepared { state, tls } = prepared;
    let config = state.config.clone();
    let drain = Duration::from_secs(config.limits.drain_secs);
    let shutdown = drain_before_stopping(state.draining.clone(), shutdown, drain);
    let https_tls = tls::server_config(&tls, &[b"h2", b"http/1.1"])?;
    let mqtt_tls = tls::server_config(&tls, &[])?;
    let amqp_tls = tls::server_config(&tls, &[])?;
    let ca = tls.ca_path.as_ref().map(|path| path.display().to_string());
    let metrics_url = match &listeners.metrics {
        Some(listener) => format!("http://{}/metrics", listener.local_addr()?),
        None => "off".into(),
    };
    tracing::info!(
        url = %config.https_url(),
        mqtt = %config.mqtt_url(),
        amqp = %config.amqp_url(),
        metrics = %metrics_url,
        id_scope = %state.instance.id_scope,
        database = ?state.store.kind(),
        ca = %ca.as_deref().unwrap_or("(operator's certificate)"),
        "Onramp is serving"
    );
    tokio::spawn(warn_about_unresolvable_hubs(state.store.clone()));
    let first_password = config.data_dir.join("initial-admin-password");
    if console_users::ensure_first_admin(state.store.as_ref(), &first_password).await? {
        tracing::warn!(
            console = %config.https_url(),
            password_file = %first_password.display(),
            "no console user existed: created `admin`; its password is in the file"
        );
    }
    // The recorder outlives the listeners, so the events of requests that finish during the grace
    // period are stored before the store closes.
    let recording = CancellationToken::new();
    let recorder = spawn_background_tasks(&state, &shutdown, &recording);
    let limits = listener::ListenerLimits {
        max_connections: config.limits.max_connections,
        handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
        shutdown_grace: Duration::from_secs(config.limits.shutdown_grace_secs),
        load: LoadGauge::start(
            Duration::from_millis(config.limits.shed_queue_delay_ms),
            config.limits.max_connections,
            shutdown.clone(),
        ),
        metrics: Default::default(),
    };
    let mqtt_limits = MqttLimits {
        connect_timeout: Duration::from_secs(config.limits.mqtt_connect_timeout_secs),
        idle_timeout: Duration::from_secs(config.limits.mqtt_idle_timeout_secs),
        write_timeout: Duration::from_secs(config.limits.mqtt_write_timeout_secs),
        ..MqttLimits::default()
    };
    let mqtt_services = MqttServices {
        provisioner: state.provisioner.clone(),
        hub: state.device_hub.clone(),
    };
    let websocket_sessions = WebSocketSessions::new(
        mqtt_services.clone(),
        mqtt_limits.clone(),
        amqp_limits(&config),
        config.limits.max_connections,
        shutdown.clone(),
    );
    let https = listener::serve_https(
        listeners.https,
        https_tls,
        https::router(state.clone(), websocket_sessions.clone()),
        listener::ListenerLimits {
            metrics: state.metrics.listener("https"),
            ..limits.clone()
        },
        shutdown.clone(),
    );
    let mqtt = mqtt::serve_mqtt(
        listeners.mqtt,
        mqtt_tls,
        mqtt_services,
        listener::ListenerLimits {
            metrics: state.metrics.listener("mqtt"),
            ..limits.clone()
        },
        mqtt_limits,
        shutdown.clone(),
    );
    let amqp_listener_limits = listener::ListenerLimits {
        max_connections: config.limits.max_amqp_connections,
        metrics: state.metrics.listener("amqp"),
        ..limits.clone()
    };
    let amqp = amqp::serve_amqp(
        listeners.amqp,
        amqp_tls,
        state.provisioner.clone(),
        amqp_listener_limits,
        amqp_limits(&config),
        shutdown.clone(),
    );
    let metrics = async {
        if let Some(listener) = listeners.metrics {
            metrics_http::serve(listener, state.metrics.clone(), shutdown).await;
        }
    };
    tokio::join!(https, mqtt, amqp, metrics);
    // Upgraded WebSocket sessions outlive their HTTP connection: give them the same grace.
    let grace = Duration::from_secs(config.limits.shutdown_grace_secs);
    if tokio::time::timeout(grace, websocket_sessions.drained())
        .await
        .is_err()
    {
        tracing::warn!(?grace, "WebSocket sessions did not finish in time");
    }
    recording.cancel();
    if recorder.await.is_err() {
        tracing::warn!("the diagnostics recorder failed while stopping");
    }
    state.store.close().await;
    tracing::info!("Onramp stopped");
    Ok(())
}

/// Once `requested` is cancelled, marks the instance `draining` (`/readyz` fails) and keeps
/// serving for `drain`, so a load balancer stops sending before anyone is refused; the token
/// returned, which stops the listeners, is cancelled after that.
fn drain_before_stopping(
    draining: CancellationToken,
    requested: CancellationToken,
    drain: Duration,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    tokio::spawn(async move {
        requested.cancelled().await;
        draining.cancel();
        if !drain.is_zero() {
            tracing::info!(
                ?drain,
                "draining: /readyz fails, the listeners stop after the drain"
            );
            tokio::time::sleep(drain).await;
        }
        stop.cancel();
    });
    stopping
}

fn amqp_limits(config: &Config) -> AmqpLimits {
    AmqpLimits {
        setup_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
        idle_timeout: Duration::from_secs(config.limits.amqp_idle_timeout_secs),
        // The DPS body limit, plus room for the message's properties.
        max_message_bytes: config.limits.max_body_bytes + 4096,
    }
}

/// The janitor (expired operations and sessions) and the lifecycle event delivery, stopped by
/// `shutdown`, and the recorder (registration events for the dashboard), stopped by `recording`.
fn spawn_background_tasks(
    state: &AppState,
    shutdown: &CancellationToken,
    recording: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let retention = Duration::from_secs(state.config.limits.operation_retention_secs);
    tokio::spawn(crate::janitor::run(
        state.store.clone(),
        retention,
        shutdown.clone(),
    ));
    tokio::spawn(crate::sinks::run(
        state.store.clone(),
        state.metrics.clone(),
        shutdown.clone(),
    ));
    // Like the recorder, the other instances hear of this one's events until the very end.
    let follower = Arc::new(FollowPeers {
        provisioner: state.provisioner.clone(),
        device_hub: state.device_hub.clone(),
    });
    tokio::spawn(
        state
            .peers
            .clone()
            .run(state.bus.clone(), follower, recording.clone()),
    );
    tokio::spawn(crate::diagnostics::recorder::run(
        state.store.clone(),
        state.bus.clone(),
        recording.clone(),
    ))
}

/// What the other instances on the database tell this one, applied to its services.
struct FollowPeers {
    provisioner: Arc<Provisioner>,
    device_hub: Arc<DeviceHub>,
}

impl Follower for FollowPeers {
    fn changed(&self) {
        self.provisioner.invalidate();
    }

    fn connected_elsewhere(&self, hub: &str, device_id: &str, at: chrono::DateTime<chrono::Utc>) {
        self.device_hub.replace_if_older(hub, device_id, at);
    }

    fn desired_patched(
        &self,
        hub: &str,
        device_id: &str,
        version: i64,
        patch: &serde_json::Map<String, serde_json::Value>,
    ) {
        self.device_hub
            .deliver_desired(hub, device_id, version, patch);
    }
}

/// Devices reach a built-in hub by its name: say so at start when this machine cannot resolve one
/// (`hub.localhost` needs a resolver that maps `*.localhost` to loopback, as RFC 6761 asks).
async fn warn_about_unresolvable_hubs(store: Arc<dyn Store>) {
    let Ok(hubs) = store.list_hubs().await else {
        return;
    };
    for hub in hubs
        .iter()
        .filter(|h| h.connector == ConnectorKind::BuiltIn)
    {
        let lookup = tokio::net::lookup_host((hub.host_name.as_str(), 443));
        let resolved = tokio::time::timeout(Duration::from_secs(5), lookup).await;
        if !matches!(resolved, Ok(Ok(_))) {
            tracing::warn!(
                hub = %hub.host_name,
                "this machine does not resolve the built-in hub's name, so its devices cannot \
                 connect to it; on Debian `apt-get install libnss-myhostname` resolves *.localhost, \
                 elsewhere add the name to DNS or /etc/hosts"
            );
        }
    }
}

/// Binds a listener; the dual-stack default falls back to IPv4 where IPv6 is unavailable.
async fn bind(address: IpAddr, port: u16, key: &str) -> anyhow::Result<TcpListener> {
    let addr = SocketAddr::new(address, port);
    match TcpListener::bind(addr).await {
        Err(e)
            if address == IpAddr::from([0u16; 8]) && e.kind() != std::io::ErrorKind::AddrInUse =>
        {
            tracing::info!(error = %e, "IPv6 unavailable; listening on IPv4 only");
            let v4 = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port);
            TcpListener::bind(v4)
                .await
                .with_context(|| format!("cannot listen on {v4} ({key})"))
        }
        result => result.with_context(|| format!("cannot listen on {addr} ({key})")),
    }
}

async fn cancel_on_signal(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
    }
    token.cancel();
}
