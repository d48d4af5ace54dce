//! MQTT and AMQP over WebSocket on the HTTPS listener. Any path is accepted (C# connects to `/`,
//! the other SDKs to `/$iothub/websocket`) and the subprotocols `mqtt` and `AMQPWSB10` match in
//! any case (the C SDK sends `MQTT`); the reply echoes the client's spelling. Each WebSocket
//! carries the same session as the protocol's TLS listener, fed through an in-memory pipe, with
//! the same limits and graceful shutdown. Buffers are small (4 KiB each way): axum's 128 KiB
//! defaults more than doubled what an idle device connection costs.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::amqp::{self, AmqpLimits};
use super::mqtt::{Client, MqttLimits, MqttServices};
use crate::attestation::x509::PresentedChain;
use crate::diagnostics::Protocol;

/// WebSocket buffer sizes, each way.
const BUFFER: usize = 4096;

/// The device protocols a WebSocket can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Mqtt,
    Amqp,
}

/// The WebSocket sessions of one HTTPS listener: bounded in number, and tracked so a shutdown
/// can wait for them (hyper lets go of a connection once it is upgraded).
#[derive(Clone)]
pub struct WebSocketSessions {
    services: MqttServices,
    limits: MqttLimits,
    amqp: AmqpLimits,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl WebSocketSessions {
    pub fn new(
        services: MqttServices,
        limits: MqttLimits,
        amqp: AmqpLimits,
        max_sessions: usize,
        shutdown: CancellationToken,
    ) -> Self {
        WebSocketSessions {
            services,
            limits,
            amqp,
            slots: Arc::new(Semaphore::new(max_sessions)),
            tracker: TaskTracker::new(),
            shutdown,
        }
    }

    /// Waits (after the shutdown token fired) until every session has ended.
    pub async fn drained(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    fn accept(&self, upgrade: WebSocketUpgrade, offered: (Kind, String), peer: Client) -> Response {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many WebSocket sessions",
            )
                .into_response();
        };
        let (kind, subprotocol) = offered;
        let max_message = match kind {
            Kind::Mqtt => self.limits.max_packet_bytes + 16,
            Kind::Amqp => self.amqp.max_message_bytes + 1024,
        };
        let this = self.clone();
        upgrade
            .protocols([subprotocol])
            .read_buffer_size(BUFFER)
            .write_buffer_size(BUFFER)
            .max_message_size(max_message)
            .on_upgrade(move |socket| {
                let tracker = this.tracker.clone();
                tracker.track_future(async move {
                    let _slot = slot;
                    this.run(kind, socket, peer).await;
                })
            })
    }

    async fn run(self, kind: Kind, socket: WebSocket, peer: Client) {
        let ip = peer.ip;
        let (session_end, bridge_end) = tokio::io::duplex(BUFFER * 4);
        let shutdown = self.shutdown.clone();
        let session = async {
            match kind {
                Kind::Mqtt => {
                    let (services, limits) = (self.services.clone(), &self.limits);
                    super::mqtt::run_session(
                        session_end,
                        peer,
                        services,
                        limits,
                        Protocol::MqttWs,
                        shutdown,
                    )
                    .await
                }
                Kind::Amqp => {
                    let provisioner = &self.services.provisioner;
                    let served = amqp::serve(
                        session_end,
                        peer,
                        provisioner,
                        &self.amqp,
                        Protocol::AmqpWs,
                        shutdown,
                    );
                    Box::pin(served).await
                }
            }
        };
        let (result, ()) = tokio::join!(session, bridge(socket, bridge_end));
        if let Err(e) = result {
            tracing::debug!(peer = ?ip, ?kind, error = %e, "WebSocket session ended");
        }
    }
}

/// Axum middleware: WebSocket upgrades asking for `mqtt` or `AMQPWSB10` become device sessions,
/// whatever their path; every other request goes on to the routes.
pub async fn intercept(
    State(sessions): State<WebSocketSessions>,
    request: Request,
    next: Next,
) -> Response {
    let Some(offered) = device_subprotocol(request.headers()) else {
        return next.run(request).await;
    };
    let (mut parts, _) = request.into_parts();
    let peer = Client {
        ip: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip()),
        chain: parts.extensions.get::<PresentedChain>().cloned(),
    };
    match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => sessions.accept(upgrade, offered, peer),
        Err(rejection) => rejection.into_response(),
    }
}

/// The device protocol a WebSocket upgrade asks for, with the client's spelling of it.
fn device_subprotocol(headers: &HeaderMap) -> Option<(Kind, String)> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    if !upgrade.trim().eq_ignore_ascii_case("websocket") {
        return None;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .map(str::trim)
        .find_map(|offered| {
            let kind = match offered.to_ascii_lowercase().as_str() {
                "mqtt" => Kind::Mqtt,
                "amqpwsb10" => Kind::Amqp,
                _ => return None,
            };
            Some((kind, offered.to_string()))
        })
}

/// Copies WebSocket binary messages into the session's pipe and the session's bytes back out as
/// binary messages, until either side ends. Text frames carry neither protocol and end the
/// connection.
async fn bridge(socket: WebSocket, pipe: DuplexStream) {
    let (mut to_client, mut from_client) = socket.split();
    let (mut from_session, mut to_session) = tokio::io::split(pipe);
    let inbound = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(data) => {
                    if to_session.write_all(&data).await.is_err() {
                        break;
                    }
                }
                Message::Ping(_) | Message::Pong(_) => {}
                Message::Text(_) | Message::Close(_) => break,
            }
        }
        // End of input: the session sees a closed stream and finishes.
        let _ = to_session.shutdown().await;
        std::future::pending::<()>().await
    };
    let outbound = async {
        let mut buffer = vec![0u8; 16 * 1024];
        while let Ok(read @ 1..) = from_session.read(&mut buffer).await {
            let frame = Message::Binary(bytes::Bytes::copy_from_slice(&buffer[..read]));
            if to_client.send(frame).await.is_err() {
                return;
            }
        }
        let _ = to_client.send(Message::Close(None)).await;
    };
    tokio::select! {
        () = inbound => {}
        () = outbound => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(upgrade: &str, protocols: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_str(upgrade).unwrap());
        for protocol in protocols {
            headers.append(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(protocol).unwrap(),
            );
        }
        headers
    }

    fn offered(upgrade: &str, protocols: &[&str]) -> Option<(Kind, String)> {
        device_subprotocol(&headers(upgrade, protocols))
    }

    #[test]
    fn subprotocols_match_in_any_case_and_keep_the_clients_spelling() {
        let mqtt = |s: &str| Some((Kind::Mqtt, s.to_string()));
        assert_eq!(offered("websocket", &["mqtt"]), mqtt("mqtt"));
        assert_eq!(offered("WebSocket", &["MQTT"]), mqtt("MQTT"));
        assert_eq!(offered("websocket", &["wamp, Mqtt"]), mqtt("Mqtt"));
        assert_eq!(offered("websocket", &["x", "mqtt"]), mqtt("mqtt"));
        let amqp = Some((Kind::Amqp, "AMQPWSB10".to_string()));
        assert_eq!(offered("websocket", &["AMQPWSB10"]), amqp);
        assert_eq!(offered("websocket", &["amqpwsb10"]).unwrap().0, Kind::Amqp);
    }

    #[test]
    fn other_upgrades_and_plain_requests_are_no_device_protocol() {
        assert_eq!(offered("websocket", &["mqttv5"]), None);
        assert_eq!(offered("websocket", &["AMQPWSB11"]), None);
        assert_eq!(offered("h2c", &["mqtt"]), None);
        assert_eq!(device_subprotocol(&HeaderMap::new()), None);
    }
}
