//! One MQTT connection: CONNECT first (within a time limit), then SUBSCRIBE / PUBLISH / PINGREQ /
//! UNSUBSCRIBE / DISCONNECT until the client leaves, stays silent past its keep-alive, breaks the
//! protocol, or the server shuts down. The CONNECT username decides the session kind: a
//! provisioning session (`{idScope}/registrations/...`, requests go to the Provisioner) or a
//! built-in hub session (`{hub}/{deviceId}/...`, requests go to the DeviceHub). Both share this
//! packet loop and nothing else.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::hub_topics::{self, HubRequest, HubUsername};
use super::topics::{self, DpsUsername, Request};
use super::{MqttLimits, MqttServices};
use crate::diagnostics::Protocol;
use crate::domain::device_hub::{Attachment, DeviceHub, Push};
use crate::domain::provisioner::{
    Credential, ProvisionError, Provisioner, RegisterRequest, StatusRequest,
};
use crate::proto::error::ErrorBody;
use crate::proto::twin;

pub use crate::transport::listener::Peer as Client;

pub async fn run<S>(
    stream: S,
    client: Client,
    services: MqttServices,
    limits: &MqttLimits,
    protocol: Protocol,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = Connection {
        stream,
        buffer: BytesMut::with_capacity(IDLE_BUFFER),
        max: limits.max_packet_bytes,
        write_timeout: limits.write_timeout,
    };
    let connect = match tokio::time::timeout(limits.connect_timeout, conn.read()).await {
        Ok(Ok(Some(Packet::Connect(connect)))) => connect,
        Ok(Ok(_)) => bail!("the first packet is not CONNECT"),
        Ok(Err(e)) => return Err(e),
        Err(_) => bail!("no CONNECT within {:?}", limits.connect_timeout),
    };
    let username = connect.login.as_ref().map_or("", |l| l.username.as_str());
    let password = connect.login.as_ref().map(|l| l.password.as_str());
    let idle = match connect.keep_alive {
        0 => limits.idle_timeout,
        secs => Duration::from_millis(u64::from(secs) * 1500),
    };
    // CleanSession is ignored (Python asks for a persistent one): sessions are never persistent.
    let accepted = Packet::ConnAck(ConnAck::new(ConnectReturnCode::Success, false));
    if let Some(user) = topics::parse_username(username) {
        // Credentials are checked per request (as over HTTPS), so a bad key gets the documented
        // res/401 reply with an error body rather than a bare refusal.
        let credential = Credential::from_parts(password, client.chain.as_ref());
        conn.write(accepted).await?;
        let session = ProvisioningSession {
            user,
            credential,
            client: client.ip,
            protocol,
            provisioner: services.provisioner,
        };
        return serve(conn, session, idle, shutdown).await;
    }
    if let Some(user) = hub_topics::parse_username(username) {
        if let Err(refusal) = services
            .hub
            .authenticate(&user.hub, &user.device_id, password, client.chain.as_ref())
            .await
        {
            tracing::info!(hub = %user.hub, device = %user.device_id, reason = %refusal, "hub device refused");
            let refused = ConnAck::new(ConnectReturnCode::NotAuthorized, false);
            conn.write(Packet::ConnAck(refused)).await?;
            bail!("hub device refused: {refusal}");
        }
        conn.write(accepted).await?;
        let session = HubSession {
            attachment: services.hub.attach(&user.hub, &user.device_id),
            user,
            hub: services.hub,
        };
        return serve(conn, session, idle, shutdown).await;
    }
    let refusal = ProvisionError::BadRequest(
        "the MQTT username is neither {idScope}/registrations/{registrationId}/... nor {hub}/{deviceId}/..."
            .into(),
    );
    services
        .provisioner
        .report_refusal(&connect.client_id, protocol, &refusal);
    let refused = ConnAck::new(ConnectReturnCode::BadUserNamePassword, false);
    conn.write(Packet::ConnAck(refused)).await?;
    bail!("bad username");
}

/// What a session kind does with the packets the loop hands it.
trait Handler {
    fn may_subscribe(&self, filter: &str) -> bool;

    /// The reply to a PUBLISH (topic and body), if it gets one; an error closes the connection.
    fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> impl Future<Output = anyhow::Result<Option<(String, Vec<u8>)>>> + Send;

    /// The next message the server sends on its own initiative.
    fn outbound(&mut self) -> impl Future<Output = Outbound> + Send;
}

pub enum Outbound {
    Publish(String, Vec<u8>),
    /// End the session (another connection of the same device replaced it).
    Close,
}

enum Event {
    Packet(Option<Packet>),
    Outbound(Outbound),
}

/// The packet loop after CONNACK, shared by both session kinds.
async fn serve<S, H>(
    mut conn: Connection<S>,
    mut handler: H,
    idle: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut next_pkid: u16 = 0;
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            read = tokio::time::timeout(idle, conn.read()) => match read {
                Ok(packet) => Event::Packet(packet?),
                Err(_) => bail!("silent for longer than the keep-alive allows"),
            },
            out = handler.outbound() => Event::Outbound(out),
        };
        let packet = match event {
            Event::Packet(Some(packet)) => packet,
            Event::Packet(None) | Event::Outbound(Outbound::Close) => return Ok(()),
            Event::Outbound(Outbound::Publish(topic, body)) => {
                next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                let mut message = Publish::new(topic, QoS::AtLeastOnce, body);
                message.pkid = next_pkid;
                conn.write(Packet::Publish(message)).await?;
                continue;
            }
        };
        match packet {
            Packet::Subscribe(subscribe) => {
                let codes = subscribe
                    .filters
                    .iter()
                    .map(|f| match handler.may_subscribe(&f.path) {
                        true if f.qos == QoS::AtMostOnce => {
                            SubscribeReasonCode::Success(QoS::AtMostOnce)
                        }
                        true => SubscribeReasonCode::Success(QoS::AtLeastOnce),
                        false => SubscribeReasonCode::Failure,
                    })
                    .collect();
                conn.write(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
                    .await?;
            }
            Packet::Publish(publish) => {
                match publish.qos {
                    QoS::ExactlyOnce => bail!("QoS 2 is not supported"),
                    // Acknowledge first: C# waits for the PUBACK before it expects the answer.
                    QoS::AtLeastOnce => {
                        conn.write(Packet::PubAck(PubAck::new(publish.pkid)))
                            .await?
                    }
                    QoS::AtMostOnce => {}
                }
                // Boxed: a request's future is large, and an idle session should not carry its
                // space (10,000 idle devices are the common case).
                let reply = Box::pin(handler.publish(&publish.topic, publish.payload)).await?;
                if let Some((topic, body)) = reply {
                    next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                    let mut response = Publish::new(topic, QoS::AtLeastOnce, body);
                    response.pkid = next_pkid;
                    conn.write(Packet::Publish(response)).await?;
                }
            }
            Packet::PubAck(_) => {}
            Packet::PingReq => conn.write(Packet::PingResp).await?,
            Packet::Unsubscribe(unsubscribe) => {
                conn.write(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                    .await?
            }
            Packet::Disconnect => return Ok(()),
            other => bail!("unexpected packet {other:?}"),
        }
    }
}

struct ProvisioningSession {
    user: DpsUsername,
    credential: Credential,
    client: Option<IpAddr>,
    protocol: Protocol,
    provisioner: Arc<Provisioner>,
}

impl Handler for ProvisioningSession {
    fn may_subscribe(&self, filter: &str) -> bool {
        filter == topics::RESPONSE_FILTER
    }

    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        let Some(request) = topics::parse_request(topic) else {
            bail!("PUBLISH to an unknown topic");
        };
        self.answer(request, payload).await.map(Some)
    }

    fn outbound(&mut self) -> impl Future<Output = Outbound> + Send {
        std::future::pending()
    }
}

impl ProvisioningSession {
    /// The response topic and body for one request; an error closes the connection (a test-mode
    /// fault asked for that instead of the reply).
    async fn answer(
        &self,
        request: Request,
        payload: bytes::Bytes,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        let status_request = || StatusRequest {
            id_scope: self.user.id_scope.clone(),
            registration_id: self.user.registration_id.clone(),
            credential: self.credential.clone(),
            protocol: self.protocol,
        };
        let (rid, result, register) = match request {
            Request::Register { rid } => {
                let request = RegisterRequest {
                    id_scope: self.user.id_scope.clone(),
                    registration_id: self.user.registration_id.clone(),
                    body: payload,
                    credential: self.credential.clone(),
                    protocol: self.protocol,
                    client: self.client,
                };
                (rid, self.provisioner.register(request).await, true)
            }
            Request::OperationStatus { rid, operation_id } => (
                rid,
                self.provisioner
                    .operation_status(status_request(), &operation_id)
                    .await,
                false,
            ),
        };
        match result {
            // As over HTTPS: register answers 202 (with the final state when it is done); a poll
            // answers 200 once final.
            Ok(reply) if reply.drop_connection => {
                bail!("test mode: connection dropped before the reply")
            }
            Ok(reply) => {
                let status = if register || !reply.is_final() {
                    202
                } else {
                    200
                };
                let retry = (status == 202).then_some(reply.retry_after_secs);
                Ok((
                    topics::response_topic(status, &rid, retry),
                    json(&reply.operation),
                ))
            }
            Err(e) => {
                let body = ErrorBody::new(e.code(), e.client_message());
                let retry = e.retry_after_secs();
                Ok((topics::response_topic(e.status(), &rid, retry), json(&body)))
            }
        }
    }
}

struct HubSession {
    user: HubUsername,
    hub: Arc<DeviceHub>,
    attachment: Attachment,
}

impl Handler for HubSession {
    fn may_subscribe(&self, filter: &str) -> bool {
        hub_topics::may_subscribe(filter, &self.user.device_id)
    }

    async fn publish(
        &self,
        topic: &str,
        payload: Bytes,
    ) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        let (hub, device_id) = (&self.user.hub, &self.user.device_id);
        let reply = match hub_topics::parse_request(topic, device_id) {
            None => bail!("PUBLISH to a topic the hub does not serve"),
            // Telemetry is acknowledged (PUBACK), kept among the device's recent messages, and
            // not answered.
            Some(HubRequest::Telemetry) => {
                let properties = topic.splitn(5, '/').nth(4).unwrap_or_default();
                self.hub
                    .record_telemetry(hub, device_id, properties, &payload);
                None
            }
            Some(HubRequest::TwinGet { rid }) => Some(match self.hub.twin(hub, device_id).await {
                Ok(device) => (
                    hub_topics::twin_response_topic(200, &rid, None),
                    json(&twin::document(&device)),
                ),
                Err(e) => twin_error(&rid, &e),
            }),
            Some(HubRequest::ReportedPatch { rid }) => Some(
                match self.hub.patch_reported(hub, device_id, &payload).await {
                    Ok(version) => (
                        hub_topics::twin_response_topic(204, &rid, Some(version)),
                        Vec::new(),
                    ),
                    Err(e) => twin_error(&rid, &e),
                },
            ),
        };
        Ok(reply)
    }

    async fn outbound(&mut self) -> Outbound {
        match self.attachment.pushes.recv().await {
            Some(Push::Desired { version, patch }) => {
                let patch = twin::Properties {
                    properties: &patch,
                    version,
                };
                Outbound::Publish(hub_topics::desired_push_topic(version), json(&patch))
            }
            Some(Push::Replaced) | None => Outbound::Close,
        }
    }
}

fn twin_error(rid: &str, error: &crate::domain::device_hub::TwinError) -> (String, Vec<u8>) {
    let topic = hub_topics::twin_response_topic(error.status(), rid, None);
    (topic, json(&json!({ "message": error.to_string() })))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types serialize")
}

/// Read buffer of an idle connection; it grows for a large packet and shrinks back after it.
const IDLE_BUFFER: usize = 512;

/// Packets over a byte stream, at most `max` bytes each.
struct Connection<S> {
    stream: S,
    buffer: BytesMut,
    max: usize,
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// The next packet, or None at a clean end of stream.
    async fn read(&mut self) -> anyhow::Result<Option<Packet>> {
        loop {
            if let Some(packet) = super::decode(&mut self.buffer, self.max)? {
                if self.buffer.is_empty() && self.buffer.capacity() > 8 * IDLE_BUFFER {
                    self.buffer = BytesMut::with_capacity(IDLE_BUFFER);
                }
                return Ok(Some(packet));
            }
            if self.stream.read_buf(&mut self.buffer).await? == 0 {
                return match self.buffer.is_empty() {
                    true => Ok(None),
                    false => bail!("the connection closed in the middle of a packet"),
                };
            }
        }
    }

    async fn write(&mut self, packet: Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX)?;
        let sent = async {
            self.stream.write_all(&out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, sent).await {
            Ok(sent) => Ok(sent?),
            Err(_) => bail!("the client read nothing for {:?}", self.write_timeout),
        }
    }
}
