//! The MQTT 3.1.1 device endpoint, over TLS and over WebSocket on the HTTPS listener
//! (`websocket`): provisioning sessions (`$dps/registrations/...`) and built-in hub sessions
//! (`$iothub/twin/...`, telemetry), packets
//! decoded with the `rumqttc` codec. A session only translates packets into Provisioner calls and
//! answers on `$dps/registrations/res/{status}/?$rid=...`; no business rule lives here.

pub mod hub_topics;
mod session;
pub mod topics;

pub use session::{Client, run as run_session};

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::listener::{ListenerLimits, accept_tls};
use crate::diagnostics::Protocol;
use crate::domain::device_hub::DeviceHub;
use crate::domain::provisioner::Provisioner;

/// The domain services MQTT sessions call: one per session kind.
#[derive(Clone)]
pub struct MqttServices {
    pub provisioner: Arc<Provisioner>,
    pub hub: Arc<DeviceHub>,
}

/// Takes the next whole packet (at most `max` bytes) off the front of `buffer`: `Ok(None)` when more
/// bytes are needed, an error for anything malformed. Never panics (fuzz/fuzz_targets/mqtt_packet.rs).
pub fn decode(
    buffer: &mut bytes::BytesMut,
    max: usize,
) -> anyhow::Result<Option<rumqttc::mqttbytes::v4::Packet>> {
    match rumqttc::mqttbytes::v4::Packet::read(buffer, max) {
        Ok(packet) => Ok(Some(packet)),
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => anyhow::bail!("malformed packet: {e}"),
    }
}

/// Bounds of one MQTT connection.
#[derive(Debug, Clone)]
pub struct MqttLimits {
    /// Time from the TLS handshake to a complete CONNECT.
    pub connect_timeout: Duration,
    /// Largest packet accepted (the DPS message limit plus headers).
    pub max_packet_bytes: usize,
    /// Idle limit when a client asks for keep-alive 0 (which MQTT means as "none").
    pub idle_timeout: Duration,
    /// How long one packet may take to leave: a client that stops reading is dropped after it
    /// instead of holding its session (and connection slot) forever.
    pub write_timeout: Duration,
}

impl Default for MqttLimits {
    fn default() -> Self {
        MqttLimits {
            connect_timeout: Duration::from_secs(10),
            max_packet_bytes: 96 * 1024 + 1024,
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
        }
    }
}

pub async fn serve_mqtt(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    services: MqttServices,
    limits: ListenerLimits,
    mqtt: MqttLimits,
    shutdown: CancellationToken,
) {
    accept_tls(
        listener,
        tls,
        limits,
        shutdown,
        move |stream, peer, shutdown| {
            let (services, mqtt) = (services.clone(), mqtt.clone());
            let client = session::Client::of(&stream, peer);
            async move {
                if let Err(e) =
                    session::run(stream, client, services, &mqtt, Protocol::Mqtt, shutdown).await
                {
                    tracing::debug!(%peer, error = %e, "MQTT session ended");
                }
            }
        },
    )
    .await
}
