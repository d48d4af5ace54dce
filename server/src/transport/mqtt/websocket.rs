//! MQTT over WebSocket on the HTTPS listener. Any path is accepted (C# connects to `/`, the other
//! SDKs to `/$iothub/websocket`) and the subprotocol `mqtt` matches in any case (the C SDK sends
//! `MQTT`); the reply echoes the client's spelling. Each WebSocket carries the same session as the
//! TLS listener, fed through an in-memory pipe, with the same limits and graceful shutdown.

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

use super::session::Client;
use super::{MqttLimits, MqttServices};
use crate::attestation::x509::PresentedChain;
use crate::diagnostics::Protocol;

/// The MQTT-over-WebSocket sessions of one HTTPS listener: bounded in number, and tracked so a
/// shutdown can wait for them (hyper lets go of a connection once it is upgraded).
#[derive(Clone)]
pub struct WebSocketSessions {
    services: MqttServices,
    limits: MqttLimits,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl WebSocketSessions {
    pub fn new(
        services: MqttServices,
        limits: MqttLimits,
        max_sessions: usize,
        shutdown: CancellationToken,
    ) -> Self {
        WebSocketSessions {
            services,
            limits,
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

    fn accept(&self, upgrade: WebSocketUpgrade, subprotocol: String, peer: Client) -> Response {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return (StatusCode::SERVICE_UNAVAILABLE, "too many MQTT sessions").into_response();
        };
        let this = self.clone();
        upgrade
            .protocols([subprotocol])
            .max_message_size(self.limits.max_packet_bytes + 16)
            .on_upgrade(move |socket| {
                let tracker = this.tracker.clone();
                tracker.track_future(async move {
                    let _slot = slot;
                    this.run(socket, peer).await;
                })
            })
    }

    async fn run(self, socket: WebSocket, peer: Client) {
        let ip = peer.ip;
        let (session_end, bridge_end) = tokio::io::duplex(self.limits.max_packet_bytes);
        let session = super::session::run(
            session_end,
            peer,
            self.services.clone(),
            &self.limits,
            Protocol::MqttWs,
            self.shutdown.clone(),
        );
        let (result, ()) = tokio::join!(session, bridge(socket, bridge_end));
        if let Err(e) = result {
            tracing::debug!(peer = ?ip, error = %e, "MQTT-over-WebSocket session ended");
        }
    }
}

/// Axum middleware: WebSocket upgrades asking for the `mqtt` subprotocol become MQTT sessions,
/// whatever their path; every other request goes on to the routes.
pub async fn intercept(
    State(sessions): State<WebSocketSessions>,
    request: Request,
    next: Next,
) -> Response {
    let Some(subprotocol) = mqtt_subprotocol(request.headers()) else {
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
        Ok(upgrade) => sessions.accept(upgrade, subprotocol, peer),
        Err(rejection) => rejection.into_response(),
    }
}

/// The client's spelling of `mqtt` in a WebSocket upgrade's subprotocol list, if it asks for it.
fn mqtt_subprotocol(headers: &HeaderMap) -> Option<String> {
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
        .find(|offered| offered.eq_ignore_ascii_case("mqtt"))
        .map(str::to_string)
}

/// Copies WebSocket binary messages into the session's pipe and the session's bytes back out as
/// binary messages, until either side ends. Text frames are not MQTT and end the connection.
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

    #[test]
    fn mqtt_subprotocol_matches_in_any_case_and_keeps_the_clients_spelling() {
        assert_eq!(
            mqtt_subprotocol(&headers("websocket", &["mqtt"])).as_deref(),
            Some("mqtt")
        );
        assert_eq!(
            mqtt_subprotocol(&headers("WebSocket", &["MQTT"])).as_deref(),
            Some("MQTT")
        );
        assert_eq!(
            mqtt_subprotocol(&headers("websocket", &["wamp, Mqtt"])).as_deref(),
            Some("Mqtt")
        );
        assert_eq!(
            mqtt_subprotocol(&headers("websocket", &["x", "mqtt"])).as_deref(),
            Some("mqtt")
        );
    }

    #[test]
    fn other_upgrades_and_plain_requests_are_not_mqtt() {
        assert_eq!(
            mqtt_subprotocol(&headers("websocket", &["AMQPWSB10"])),
            None
        );
        assert_eq!(mqtt_subprotocol(&headers("websocket", &["mqttv5"])), None);
        assert_eq!(mqtt_subprotocol(&headers("h2c", &["mqtt"])), None);
        assert_eq!(mqtt_subprotocol(&HeaderMap::new()), None);
    }
}
