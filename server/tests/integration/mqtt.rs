//! The MQTT endpoint at the packet level (the official SDKs are in sdk.rs): registration with
//! QoS 0 and 1, subscriptions, keep-alive, every way a client can misbehave, and the same session
//! over WebSocket on the HTTPS port. Runs on SQLite and PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::{SinkExt, StreamExt};
use onramp::diagnostics::{HubActivity, Protocol};
use onramp::model::IfMatch;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, Publish, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::HUB;
use crate::support::instance::{Instance, enroll, random_key, symmetric_spec};

crate::backend_suite!(
    a_device_registers_and_polls_over_mqtt,
    subscriptions_and_pings,
    misbehaving_clients_are_disconnected,
    the_same_session_runs_over_websocket,
    a_provisioned_device_uses_its_hub,
    the_hub_refuses_devices_it_should_not_serve,
);

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(crate) struct Client {
    tls: Box<dyn Io>,
    buffer: BytesMut,
}

pub(crate) async fn tls_to(i: &Instance, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut i.ca_pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

impl Client {
    async fn open(i: &Instance) -> Client {
        Client {
            tls: Box::new(tls_to(i, i.mqtt_addr).await),
            buffer: BytesMut::new(),
        }
    }

    /// MQTT over WebSocket on the HTTPS listener; returns the subprotocol the server chose.
    async fn open_websocket(i: &Instance, path: &str, subprotocol: &str) -> (Client, String) {
        let mut request = format!("wss://localhost{path}")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("sec-websocket-protocol", subprotocol.parse().unwrap());
        let tls = tls_to(i, i.addr).await;
        let (socket, response) = tokio_tungstenite::client_async(request, tls).await.unwrap();
        let chosen = response.headers()["sec-websocket-protocol"]
            .to_str()
            .unwrap()
            .to_string();
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(websocket_pipe(socket, theirs));
        let client = Client {
            tls: Box::new(ours),
            buffer: BytesMut::new(),
        };
        (client, chosen)
    }

    pub(crate) async fn connect(
        i: &Instance,
        username: &str,
        password: &str,
        keep_alive: u16,
    ) -> (Client, ConnAck) {
        let mut client = Client::open(i).await;
        let mut connect = Connect::new("dev");
        connect.keep_alive = keep_alive;
        connect.clean_session = false;
        connect.login = Some(Login::new(username, password));
        client.send(Packet::Connect(connect)).await;
        match client.next().await {
            Some(Packet::ConnAck(ack)) => (client, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A device's session as the SDKs open it: connected with its SAS token and subscribed to
    /// the responses.
    pub(crate) async fn device(i: &Instance, id: &str, key: &str) -> Client {
        let (mut client, _) = Client::connect(i, &username(i, id), &i.token(id, key), 60).await;
        let subscribe = Subscribe::new("$dps/registrations/res/#", QoS::AtLeastOnce);
        client.send(Packet::Subscribe(subscribe)).await;
        assert!(matches!(client.next().await, Some(Packet::SubAck(_))));
        client
    }

    /// Sends a register request (QoS 0) and returns the response's topic and body.
    pub(crate) async fn register(&mut self, rid: &str, id: &str) -> (String, Value) {
        let topic = format!("$dps/registrations/PUT/iotdps-register/?$rid={rid}");
        let payload = format!(r#"{{"registrationId":"{id}"}}"#).into_bytes();
        let publish = Publish::new(topic, QoS::AtMostOnce, payload);
        self.send(Packet::Publish(publish)).await;
        self.response().await
    }

    pub(crate) async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.send_raw(&out).await;
    }

    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.tls.write_all(bytes).await;
        let _ = self.tls.flush().await;
    }

    /// The next packet, or None once the server has closed the connection.
    pub(crate) async fn next(&mut self) -> Option<Packet> {
        loop {
            if let Ok(packet) = Packet::read(&mut self.buffer, 1 << 20) {
                return Some(packet);
            }
            match tokio::time::timeout(Duration::from_secs(5), self.tls.read_buf(&mut self.buffer))
                .await
            {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("no packet and no close within 5 s"),
            }
        }
    }

    /// The next response publish: (topic, JSON body).
    pub(crate) async fn response(&mut self) -> (String, Value) {
        let (topic, payload) = self.raw_response().await;
        let body = match payload.is_empty() {
            true => Value::Null,
            false => serde_json::from_str(&payload).unwrap(),
        };
        (topic, body)
    }

    /// The next response publish: (topic, payload as sent).
    async fn raw_response(&mut self) -> (String, String) {
        loop {
            match self.next().await {
                Some(Packet::Publish(p)) => {
                    return (p.topic, String::from_utf8(p.payload.to_vec()).unwrap());
                }
                Some(Packet::PubAck(_)) => continue,
                other => panic!("expected a response publish, got {other:?}"),
            }
        }
    }

    pub(crate) async fn closed(&mut self) -> bool {
        loop {
            match self.next().await {
                None => return true,
                Some(_) => continue,
            }
        }
    }
}

/// Client side of MQTT over WebSocket: bytes written to the pipe go out as binary messages, and
/// binary messages come back as bytes.
async fn websocket_pipe<S: AsyncRead + AsyncWrite + Unpin>(
    socket: tokio_tungstenite::WebSocketStream<S>,
    pipe: DuplexStream,
) {
    let (mut to_server, mut from_server) = socket.split();
    let (mut from_client, mut to_client) = tokio::io::split(pipe);
    let outbound = async {
        let mut buffer = vec![0u8; 64 * 1024];
        while let Ok(read @ 1..) = from_client.read(&mut buffer).await {
            let message = Message::Binary(bytes::Bytes::copy_from_slice(&buffer[..read]));
            if to_server.send(message).await.is_err() {
                break;
            }
        }
    };
    let inbound = async {
        while let Some(Ok(Message::Binary(data))) = from_server.next().await {
            if to_client.write_all(&data).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = outbound => {}
        () = inbound => {}
    }
}

pub(crate) fn username(i: &Instance, id: &str) -> String {
    format!(
        "{}/registrations/{id}/api-version=2019-03-31&ClientVersion=test%2F1.0",
        i.scope()
    )
}

async fn a_device_registers_and_polls_over_mqtt(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "mqtt-dev",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let mut events = i.state.bus.subscribe();
    let (mut client, ack) =
        Client::connect(i, &username(i, "mqtt-dev"), &i.token("mqtt-dev", &key), 60).await;
    assert_eq!(
        (ack.code, ack.session_present),
        (ConnectReturnCode::Success, false),
        "CleanSession=false is not honoured"
    );
    client
        .send(Packet::Subscribe(Subscribe::new(
            "$dps/registrations/res/#",
            QoS::AtLeastOnce,
        )))
        .await;
    assert!(matches!(client.next().await, Some(Packet::SubAck(_))));

    // QoS 0 register (C SDK style), with the JSON body.
    let register = Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        QoS::AtMostOnce,
        br#"{"registrationId":"mqtt-dev","payload":null}"#.to_vec(),
    );
    client.send(Packet::Publish(register)).await;
    let (topic, body) = client.response().await;
    assert_eq!(topic, "$dps/registrations/res/202/?$rid=1&retry-after=1");
    assert_eq!(body["status"], "assigned", "{body}");
    assert_eq!(body["registrationState"]["assignedHub"], HUB);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.protocol, event.registration_id.as_str()),
        (Protocol::Mqtt, "mqtt-dev")
    );

    // QoS 1 poll with a " " payload (Node, Python), $rid a UUID: PUBACK first, then 200.
    let operation_id = body["operationId"].as_str().unwrap();
    let mut poll = Publish::new(
        format!(
            "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=6f1c&operationId={operation_id}"
        ),
        QoS::AtLeastOnce,
        b" ".to_vec(),
    );
    poll.pkid = 7;
    client.send(Packet::Publish(poll)).await;
    assert!(
        matches!(client.next().await, Some(Packet::PubAck(ack)) if ack.pkid == 7),
        "PUBACK before the answer"
    );
    let (topic, polled) = client.response().await;
    assert_eq!(topic, "$dps/registrations/res/200/?$rid=6f1c");
    assert_eq!(polled["registrationState"]["deviceId"], "mqtt-dev");

    // An empty register body (C# over MQTT) takes the ID from the username.
    client
        .send(Packet::Publish(Publish::new(
            "$dps/registrations/PUT/iotdps-register/?$rid=3",
            QoS::AtMostOnce,
            Vec::new(),
        )))
        .await;
    assert_eq!(client.response().await.1["status"], "assigned");
    client.send(Packet::Disconnect).await;
    assert!(client.closed().await);

    // A wrong key: CONNACK is fine, the register gets res/401 with the Azure error body.
    let (mut client, ack) = Client::connect(
        i,
        &username(i, "mqtt-dev"),
        &i.token("mqtt-dev", &random_key()),
        60,
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    client
        .send(Packet::Publish(Publish::new(
            "$dps/registrations/PUT/iotdps-register/?$rid=9",
            QoS::AtMostOnce,
            b"{}".to_vec(),
        )))
        .await;
    let (topic, error) = client.response().await;
    assert_eq!(topic, "$dps/registrations/res/401/?$rid=9");
    assert_eq!(error["errorCode"], 401002);
    assert!(error["trackingId"].is_string());
}

async fn subscriptions_and_pings(i: &Instance) {
    let (mut client, _) = Client::connect(i, &username(i, "any"), "", 0).await;
    let subscribe = Subscribe::new_many([
        SubscribeFilter::new("$dps/registrations/res/#".into(), QoS::ExactlyOnce),
        SubscribeFilter::new("devices/#".into(), QoS::AtLeastOnce),
    ]);
    client.send(Packet::Subscribe(subscribe)).await;
    match client.next().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            [
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure
            ],
            "QoS 2 is granted as 1, other filters are refused"
        ),
        other => panic!("{other:?}"),
    }
    client.send(Packet::PingReq).await;
    assert_eq!(client.next().await, Some(Packet::PingResp));
}

async fn misbehaving_clients_are_disconnected(i: &Instance) {
    // A username that is neither {scope}/registrations/{id} nor {hub}/{device}: refused at CONNACK.
    let (mut client, ack) = Client::connect(i, "just-a-name", "x", 60).await;
    assert_eq!(ack.code, ConnectReturnCode::BadUserNamePassword);
    assert!(client.closed().await);

    // Garbage instead of CONNECT.
    let mut client = Client::open(i).await;
    client
        .send_raw(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2, 3])
        .await;
    assert!(client.closed().await);

    // No CONNECT at all: dropped after the connect timeout (1 s here).
    let mut client = Client::open(i).await;
    let started = std::time::Instant::now();
    assert!(client.closed().await);
    assert!(started.elapsed() < Duration::from_secs(4));

    // A PUBLISH to an unknown topic.
    let (mut client, _) = Client::connect(i, &username(i, "dev-1"), "", 60).await;
    client
        .send(Packet::Publish(Publish::new(
            "devices/dev-1/messages/events/",
            QoS::AtMostOnce,
            b"hi".to_vec(),
        )))
        .await;
    assert!(client.closed().await);

    // An oversized packet.
    let (mut client, _) = Client::connect(i, &username(i, "dev-1"), "", 60).await;
    let huge = Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        QoS::AtMostOnce,
        vec![b'x'; 200 * 1024],
    );
    client.send(Packet::Publish(huge)).await;
    assert!(client.closed().await);

    // QoS 2 is not supported.
    let (mut client, _) = Client::connect(i, &username(i, "dev-1"), "", 60).await;
    let mut exactly_once = Publish::new(
        "$dps/registrations/PUT/iotdps-register/?$rid=1",
        QoS::ExactlyOnce,
        b"{}".to_vec(),
    );
    exactly_once.pkid = 1;
    client.send(Packet::Publish(exactly_once)).await;
    assert!(client.closed().await);

    // Silent past 1.5 × keep-alive (1 s here).
    let (mut client, _) = Client::connect(i, &username(i, "dev-1"), "", 1).await;
    let started = std::time::Instant::now();
    assert!(client.closed().await);
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );

    // After all that the endpoint still serves.
    let (_, ack) = Client::connect(i, &username(i, "dev-1"), "", 60).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
}

async fn the_same_session_runs_over_websocket(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "ws-dev",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let mut events = i.state.bus.subscribe();
    // C# connects to `/`, the C SDK asks for `MQTT`: both are served, the spelling echoed.
    let (mut client, chosen) = Client::open_websocket(i, "/", "MQTT").await;
    assert_eq!(chosen, "MQTT");
    let mut connect = Connect::new("ws-dev");
    connect.login = Some(Login::new(username(i, "ws-dev"), i.token("ws-dev", &key)));
    client.send(Packet::Connect(connect)).await;
    assert!(
        matches!(client.next().await, Some(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success)
    );
    client
        .send(Packet::Publish(Publish::new(
            "$dps/registrations/PUT/iotdps-register/?$rid=1",
            QoS::AtMostOnce,
            br#"{"registrationId":"ws-dev"}"#.to_vec(),
        )))
        .await;
    let (topic, body) = client.response().await;
    assert_eq!(topic, "$dps/registrations/res/202/?$rid=1&retry-after=1");
    assert_eq!(body["registrationState"]["deviceId"], "ws-dev", "{body}");
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.protocol, Protocol::MqttWs);
    client.send(Packet::Disconnect).await;
    assert!(client.closed().await);

    // The usual path and spelling, and the same protocol rules: garbage ends the session.
    let (mut client, chosen) = Client::open_websocket(i, "/$iothub/websocket", "mqtt").await;
    assert_eq!(chosen, "mqtt");
    client.send_raw(&[0xF0, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    assert!(client.closed().await);

    // A WebSocket upgrade without the mqtt subprotocol is not an MQTT session.
    let response = i
        .client
        .get(format!("{}/$iothub/websocket", i.url))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "chat")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
}

/// IoT Hub sends `$version` as the last member of each twin side and desired patch; firmware
/// parsing in order (the Embedded C SDK's twin sample) stops there. Checked on the bytes sent:
/// `sides` objects, each closing right after its `$version`.
fn assert_version_last(raw: &str, sides: usize) {
    let versions: Vec<&str> = raw
        .match_indices("\"$version\":")
        .map(|(at, key)| &raw[at + key.len()..])
        .collect();
    assert_eq!(versions.len(), sides, "{raw}");
    for rest in versions {
        let after = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        assert!(after.starts_with('}'), "`$version` is not last: {raw}");
    }
}

fn hub_token(device: &str, key: &str, expiry: i64) -> String {
    onramp::attestation::sas::sign(key, &format!("{HUB}/devices/{device}"), expiry as u64, None)
        .unwrap()
}

fn hub_username(device: &str) -> String {
    format!("{HUB}/{device}/?api-version=2021-04-12&DeviceClientType=test")
}

/// Provisions `id` over MQTT (so the built-in hub holds its identity) and returns its key.
async fn provision(i: &Instance, id: &str) -> String {
    let key = random_key();
    enroll(i.store(), id, None, symmetric_spec(&key, &random_key())).await;
    let (mut client, _) = Client::connect(i, &username(i, id), &i.token(id, &key), 60).await;
    assert_eq!(client.register("1", id).await.1["status"], "assigned");
    key
}

async fn a_provisioned_device_uses_its_hub(i: &Instance) {
    let key = provision(i, "hub-dev").await;
    let mut events = i.state.bus.subscribe_hub();
    let expiry = chrono::Utc::now().timestamp() + 600;
    let (mut client, ack) = Client::connect(
        i,
        &hub_username("hub-dev"),
        &hub_token("hub-dev", &key, expiry),
        60,
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);

    // Twin GET before any SUBSCRIBE (the Python SDK pipelines it so): answered anyway.
    client
        .send(Packet::Publish(Publish::new(
            "$iothub/twin/GET/?$rid=g1",
            QoS::AtMostOnce,
            Vec::new(),
        )))
        .await;
    let (topic, raw) = client.raw_response().await;
    assert_eq!(topic, "$iothub/twin/res/200/?$rid=g1");
    assert_version_last(&raw, 2);
    let twin: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(twin["desired"]["telemetryInterval"], 30, "{twin}");
    assert_eq!(twin["reported"]["$version"], 1);

    let subscribe = Subscribe::new_many([
        SubscribeFilter::new("$iothub/twin/res/#".into(), QoS::AtLeastOnce),
        SubscribeFilter::new(
            "devices/hub-dev/messages/devicebound/#".into(),
            QoS::AtLeastOnce,
        ),
        SubscribeFilter::new(
            "devices/other/messages/devicebound/#".into(),
            QoS::AtLeastOnce,
        ),
    ]);
    client.send(Packet::Subscribe(subscribe)).await;
    match client.next().await {
        Some(Packet::SubAck(ack)) => assert_eq!(
            ack.return_codes,
            [
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::Failure
            ]
        ),
        other => panic!("{other:?}"),
    }

    // A reported patch is merged and versioned; a bad one gets 400 and changes nothing.
    let patch = |rid: &str, body: &[u8]| {
        Packet::Publish(Publish::new(
            format!("$iothub/twin/PATCH/properties/reported/?$rid={rid}"),
            QoS::AtMostOnce,
            body.to_vec(),
        ))
    };
    client
        .send(patch("p1", br#"{"firmware":"1.0","gone":null}"#))
        .await;
    let (topic, _) = client.response().await;
    assert_eq!(topic, "$iothub/twin/res/204/?$rid=p1&$version=2");
    client.send(patch("p2", b"[1,2]")).await;
    assert_eq!(client.response().await.0, "$iothub/twin/res/400/?$rid=p2");
    let device = i
        .store()
        .get_hub_device(HUB, "hub-dev")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.reported.properties["firmware"], "1.0");
    assert_eq!(device.reported.version, 2);

    // Telemetry at QoS 1 is acknowledged.
    let mut telemetry = Publish::new(
        "devices/hub-dev/messages/events/%24.ct=application%2Fjson",
        QoS::AtLeastOnce,
        br#"{"t":21.5}"#.to_vec(),
    );
    telemetry.pkid = 5;
    client.send(Packet::Publish(telemetry)).await;
    assert!(matches!(client.next().await, Some(Packet::PubAck(ack)) if ack.pkid == 5));
    let messages: Value = i
        .client
        .get(format!("{}/devices/hub-dev/recentMessages", i.hub_url))
        .header(
            "authorization",
            onramp::attestation::sas::sign(
                &i.state.instance.owner_policy.primary_key,
                HUB,
                expiry as u64,
                Some(&i.state.instance.owner_policy.name),
            )
            .unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(messages[0]["body"], r#"{"t":21.5}"#, "{messages}");
    assert_eq!(messages[0]["properties"], "%24.ct=application%2Fjson");
    client.send(Packet::PingReq).await;
    assert_eq!(client.next().await, Some(Packet::PingResp));

    // The REST subset: refused without a token, and a desired change made through it is pushed
    // to the connected device.
    let twin_url = format!("{}/twins/hub-dev", i.hub_url);
    let anonymous = i.client.patch(&twin_url).body("{}").send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let owner = &i.state.instance.owner_policy;
    let token =
        onramp::attestation::sas::sign(&owner.primary_key, HUB, expiry as u64, Some(&owner.name))
            .unwrap();
    let patched = i
        .client
        .patch(&twin_url)
        .header("authorization", &token)
        .body(r#"{"properties":{"desired":{"telemetryInterval":7}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_version_last(&patched.text().await.unwrap(), 2);
    let (topic, pushed) = client.raw_response().await;
    assert_eq!(topic, "$iothub/twin/PATCH/properties/desired/?$version=2");
    assert_eq!(pushed, r#"{"telemetryInterval":7,"$version":2}"#);
    let twin = i
        .client
        .get(&twin_url)
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(twin.status(), 200);
    assert_version_last(&twin.text().await.unwrap(), 2);
    let unknown = i
        .client
        .get(format!("{}/devices/nobody", i.hub_url))
        .header("authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    // An identity created through PUT /devices connects with the key it was given; a bad key
    // length is refused and creates nothing.
    let made_key = random_key();
    let made = i
        .client
        .put(format!("{}/devices/made-by-rest", i.hub_url))
        .header("authorization", &token)
        .json(&serde_json::json!({
            "deviceId": "made-by-rest",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": made_key}},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 200);
    let made: Value = made.json().await.unwrap();
    assert_eq!(
        made["authentication"]["symmetricKey"]["primaryKey"],
        made_key.as_str()
    );
    let generated = made["authentication"]["symmetricKey"]["secondaryKey"]
        .as_str()
        .unwrap();
    assert!(!generated.is_empty(), "the missing key is generated");
    let (_, ack) = Client::connect(
        i,
        &hub_username("made-by-rest"),
        &hub_token("made-by-rest", generated, expiry),
        60,
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let bad = i
        .client
        .put(format!("{}/devices/bad-key", i.hub_url))
        .header("authorization", &token)
        .json(&serde_json::json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "c2hvcnQ="}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(
        i.store()
            .get_hub_device(HUB, "bad-key")
            .await
            .unwrap()
            .is_none()
    );

    // Each step was a diagnostics event with protocol hub-mqtt.
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        assert_eq!(event.protocol, Protocol::HubMqtt);
        if event.device_id == "hub-dev" {
            seen.push(event.activity.clone());
        }
    }
    assert_eq!(
        seen,
        [
            HubActivity::Connected,
            HubActivity::ReportedPatched { version: 2 },
            HubActivity::DesiredPatched {
                version: 2,
                delivered: true
            },
        ]
    );

    // One connection per device: a second one replaces the first.
    let (client2, ack) = Client::connect(
        i,
        &hub_username("hub-dev"),
        &hub_token("hub-dev", &key, expiry),
        60,
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(client.closed().await, "the older connection is dropped");
    let mut client = client2;

    // Another device's telemetry topic is not this device's to use.
    client
        .send(Packet::Publish(Publish::new(
            "devices/other/messages/events/",
            QoS::AtMostOnce,
            b"x".to_vec(),
        )))
        .await;
    assert!(client.closed().await);
}

async fn the_hub_refuses_devices_it_should_not_serve(i: &Instance) {
    let key = provision(i, "hub-refused").await;
    let now = chrono::Utc::now().timestamp();
    let refused = |ack: ConnAck| assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    let user = hub_username("hub-refused");
    let cases = [
        (
            "wrong key",
            user.clone(),
            hub_token("hub-refused", &random_key(), now + 600),
        ),
        (
            "expired token",
            user.clone(),
            hub_token("hub-refused", &key, now - 1),
        ),
        ("no token", user.clone(), String::new()),
        (
            "unknown device",
            hub_username("nobody"),
            hub_token("nobody", &key, now + 600),
        ),
        (
            "token for another device",
            user.clone(),
            hub_token("nobody", &key, now + 600),
        ),
    ];
    let mut events = i.state.bus.subscribe_hub();
    for (case, username, token) in cases {
        let (mut client, ack) = Client::connect(i, &username, &token, 60).await;
        assert_eq!(ack.code, ConnectReturnCode::NotAuthorized, "{case}");
        assert!(client.closed().await, "{case}");
        // The operator sees why; the device only hears "not authorized".
        let event = events.try_recv().unwrap();
        assert!(
            matches!(&event.activity, HubActivity::Refused { reason } if !reason.is_empty()),
            "{case}: {event:?}"
        );
    }

    // A disabled identity cannot connect, even with the right key.
    let mut device = i
        .store()
        .get_hub_device(HUB, "hub-refused")
        .await
        .unwrap()
        .unwrap();
    device.enabled = false;
    i.store()
        .put_hub_device(device, IfMatch::Any)
        .await
        .unwrap();
    let (_, ack) = Client::connect(i, &user, &hub_token("hub-refused", &key, now + 600), 60).await;
    refused(ack);
}
