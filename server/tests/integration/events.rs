//! Lifecycle events end to end: a real `onramp` process delivering to a webhook receiver written
//! here, to NATS (core, and JetStream through a stream this test makes) and to Mosquitto, the
//! brokers running on this machine. Every kind of change is made through the service API and a
//! device; each sink must receive each event exactly once after de-duplication by event ID, in
//! the order of the changes, also across SIGKILLs right after a change and while the webhook is
//! down.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::support::process::{Server, free_port};

const NATS: &str = "127.0.0.1:4222";
const MOSQUITTO: (&str, u16) = ("127.0.0.1", 1883);

/// A process server and an owner-signed service API client.
struct Service {
    server: Server,
    token: String,
    scope: String,
}

impl Service {
    async fn start(data: &std::path::Path) -> Service {
        let mut server = Server::start(data, &[]);
        server.wait_healthy().await;
        let token = server.owner_token(3600);
        let scope = server.admin_info()["idScope"].as_str().unwrap().to_string();
        Service {
            server,
            token,
            scope,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{path}?api-version=2021-10-01", self.server.base_url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .server
            .client()
            .request(method, url)
            .header("Authorization", &self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {value}"
        );
        value
    }

    /// Registers over HTTPS with the device's key and returns the final registration state.
    async fn register(&self, id: &str, key: &str) -> Value {
        let resource = format!("{}/registrations/{id}", self.scope);
        let expiry = chrono::Utc::now().timestamp() as u64 + 3600;
        let token =
            onramp::attestation::sas::sign(key, &resource, expiry, Some("registration")).unwrap();
        let base = format!("{}/{resource}", self.server.base_url());
        let client = self.server.client();
        let mut reply: Value = client
            .put(format!("{base}/register?api-version=2021-06-01"))
            .header("Authorization", &token)
            .json(&json!({"registrationId": id}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        while reply["status"] == "assigning" {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let operation = reply["operationId"].as_str().unwrap().to_string();
            reply = client
                .get(format!(
                    "{base}/operations/{operation}?api-version=2021-06-01"
                ))
                .header("Authorization", &token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        }
        reply["registrationState"].clone()
    }
}

type Seen = Arc<Mutex<Vec<Value>>>;

/// The webhook receiver: checks each body's signature and keeps what it got. Stopping it closes
/// its port, as a receiver that is down.
struct Receiver {
    port: u16,
    secret: String,
    seen: Seen,
    bad_signatures: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Receiver {
    fn new(secret: &str) -> Receiver {
        Receiver {
            port: free_port(),
            secret: secret.to_string(),
            seen: Seen::default(),
            bad_signatures: Arc::default(),
            task: None,
        }
    }

    async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (seen, bad, secret) = (
            self.seen.clone(),
            self.bad_signatures.clone(),
            self.secret.clone(),
        );
        let hook = move |headers: HeaderMap, body: axum::body::Bytes| async move {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(&body);
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            if headers
                .get("x-onramp-signature")
                .and_then(|v| v.to_str().ok())
                != Some(&expected)
            {
                bad.fetch_add(1, Ordering::SeqCst);
                return StatusCode::UNAUTHORIZED;
            }
            let event: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(headers["x-onramp-event-id"].to_str().unwrap(), event["id"]);
            seen.lock().unwrap().push(event);
            StatusCode::NO_CONTENT
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(hook));
        self.task = Some(tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        }));
    }

    async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

async fn nats_subscriber(subject: &str) -> (Seen, async_nats::Client) {
    let client = async_nats::connect(NATS)
        .await
        .expect("NATS at 127.0.0.1:4222");
    let mut subscription = client.subscribe(format!("{subject}.>")).await.unwrap();
    client.flush().await.unwrap();
    let seen = Seen::default();
    let keep = seen.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(message) = subscription.next().await {
            assert_eq!(
                message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string()),
                serde_json::from_slice::<Value>(&message.payload).unwrap()["id"]
                    .as_str()
                    .map(str::to_string)
            );
            keep.lock()
                .unwrap()
                .push(serde_json::from_slice(&message.payload).unwrap());
        }
    });
    (seen, client)
}

async fn mqtt_subscriber(topic: &str) -> Seen {
    let id = format!("events-test-{}", uuid::Uuid::new_v4().simple());
    let mut options = rumqttc::MqttOptions::new(id, MOSQUITTO.0, MOSQUITTO.1);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut event_loop) = rumqttc::AsyncClient::new(options, 100);
    client
        .subscribe(format!("{topic}/#"), rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        match event_loop
            .poll()
            .await
            .expect("Mosquitto at 127.0.0.1:1883")
        {
            rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) => break,
            _ => continue,
        }
    }
    let seen = Seen::default();
    let keep = seen.clone();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(event) = event_loop.poll().await {
            if let rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish)) = event {
                let event: Value = serde_json::from_slice(&publish.payload).unwrap();
                assert!(publish.topic.ends_with(event["type"].as_str().unwrap()));
                keep.lock().unwrap().push(event);
            }
        }
    });
    seen
}

/// What a sink got, once per event ID, in sequence order: (type, resource ID).
fn distinct(seen: &Seen) -> Vec<(String, String)> {
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for event in seen.lock().unwrap().iter() {
        let id = event["id"].as_str().unwrap().to_string();
        if let Some(earlier) = by_id.get(&id) {
            assert_eq!(
                earlier, event,
                "a redelivery differs from the first delivery"
            );
        }
        by_id.insert(id, event.clone());
    }
    let mut events: Vec<&Value> = by_id.values().collect();
    events.sort_by_key(|e| e["sequence"].as_i64().unwrap());
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["resource"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Waits until every sink got `expected.len()` distinct events (at most a minute), then checks
/// that each got exactly the expected ones.
async fn all_received(sinks: &[(&str, &Seen)], expected: &[(&str, &str)]) {
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(t, id)| (t.to_string(), id.to_string()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sinks
        .iter()
        .any(|(_, seen)| distinct(seen).len() < expected.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Anything extra would arrive right behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (name, seen) in sinks {
        assert_eq!(distinct(seen), expected, "sink {name}");
    }
}

fn enrollment(id: &str, key: &str, status: &str, tag: &str) -> Value {
    json!({
        "registrationId": id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
        "provisioningStatus": status,
        "initialTwin": {"tags": {"site": tag}, "properties": {"desired": {}}},
    })
}

fn group(id: &str, status: &str, tag: &str) -> Value {
    json!({
        "enrollmentGroupId": id,
        "attestation": {"type": "symmetricKey"},
        "provisioningStatus": status,
        "initialTwin": {"tags": {"site": tag}, "properties": {"desired": {}}},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_reaches_every_sink_exactly_once_across_crashes_and_outages() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut service = Service::start(&data).await;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let secret = format!("webhook-secret-{run_id}");

    let mut receiver = Receiver::new(&secret);
    receiver.start().await;
    let core_subject = format!("onramp-test.{run_id}.core");
    let js_subject = format!("onramp-test.{run_id}.js");
    let (core_seen, nats) = nats_subscriber(&core_subject).await;
    let (js_seen, _js_client) = nats_subscriber(&js_subject).await;
    let jetstream = async_nats::jetstream::new(nats.clone());
    let stream_name = format!("ONRAMP_TEST_{run_id}");
    let mut stream = jetstream
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{js_subject}.>")],
            ..Default::default()
        })
        .await
        .expect("JetStream on the local NATS");
    let topic = format!("onramp-test/{run_id}");
    let mqtt_seen = mqtt_subscriber(&topic).await;

    let hook_url = format!("http://127.0.0.1:{}/hook", receiver.port);
    let sinks = [
        (
            "hook",
            json!({"kind": "webhook", "url": hook_url, "secret": secret}),
        ),
        (
            "nats-core",
            json!({"kind": "nats", "url": format!("nats://{NATS}"), "subject": core_subject}),
        ),
        (
            "nats-js",
            json!({"kind": "nats", "url": format!("nats://{NATS}"), "subject": js_subject}),
        ),
        (
            "mqtt",
            json!({"kind": "mqtt", "url": "mqtt://127.0.0.1:1883", "topic": topic}),
        ),
    ];
    for (name, body) in &sinks {
        let sink = service
            .ok("PUT", &format!("/eventSinks/{name}"), Some(body.clone()))
            .await;
        assert!(
            sink.get("secret").is_none(),
            "the secret is never shown: {sink}"
        );
    }
    let (status, _) = service
        .call(
            "PUT",
            "/eventSinks/bad",
            Some(json!({"kind": "nats", "url": "nats://h", "subject": "a.>"})),
        )
        .await;
    assert_eq!(status, 400);

    let key = "cHJpbWFyeS1rZXktZm9yLXRoZS1ldmVudHMtdGVzdA==";
    let mut expected: Vec<(&str, &str)> = Vec::new();
    let e = "/enrollments/dev-1";
    service
        .ok("PUT", e, Some(enrollment("dev-1", key, "enabled", "a")))
        .await;
    service
        .ok("PUT", e, Some(enrollment("dev-1", key, "enabled", "b")))
        .await;
    service
        .ok("PUT", e, Some(enrollment("dev-1", key, "disabled", "b")))
        .await;
    service
        .ok("PUT", e, Some(enrollment("dev-1", key, "enabled", "b")))
        .await;
    expected.extend([
        ("enrollment.created", "dev-1"),
        ("enrollment.updated", "dev-1"),
        ("enrollment.disabled", "dev-1"),
        ("enrollment.enabled", "dev-1"),
    ]);
    let g = "/enrollmentGroups/g-1";
    service
        .ok("PUT", g, Some(group("g-1", "enabled", "a")))
        .await;
    service
        .ok("PUT", g, Some(group("g-1", "enabled", "b")))
        .await;
    service
        .ok("PUT", g, Some(group("g-1", "disabled", "b")))
        .await;
    service
        .ok("PUT", g, Some(group("g-1", "enabled", "b")))
        .await;
    expected.extend([
        ("group.created", "g-1"),
        ("group.updated", "g-1"),
        ("group.disabled", "g-1"),
        ("group.enabled", "g-1"),
    ]);
    let state = service.register("dev-1", key).await;
    assert_eq!(state["status"], "assigned", "{state}");
    let state = service.register("dev-1", key).await;
    assert_eq!(state["status"], "assigned", "{state}");
    expected.extend([
        ("registration.assigned", "dev-1"),
        ("registration.reprovisioned", "dev-1"),
    ]);
    // A device whose only hub is unlinked fails to register.
    service
        .ok("PUT", "/linkedHubs/hub-b.localhost", Some(json!({})))
        .await;
    let mut dev2 = enrollment("dev-2", key, "enabled", "a");
    dev2["iotHubs"] = json!(["hub-b.localhost"]);
    service.ok("PUT", "/enrollments/dev-2", Some(dev2)).await;
    service
        .ok("DELETE", "/linkedHubs/hub-b.localhost", None)
        .await;
    let state = service.register("dev-2", key).await;
    assert_eq!(state["status"], "failed", "{state}");
    expected.extend([
        ("hub.linked", "hub-b.localhost"),
        ("enrollment.created", "dev-2"),
        ("hub.unlinked", "hub-b.localhost"),
        ("registration.failed", "dev-2"),
    ]);
    let ca = onramp::test_certs::self_signed("Events CA", true).pem();
    service
        .ok(
            "PUT",
            "/certificates/events-ca",
            Some(json!({"certificate": ca, "isVerified": true})),
        )
        .await;
    service.ok("DELETE", "/registrations/dev-1", None).await;
    service.ok("DELETE", e, None).await;
    service.ok("DELETE", g, None).await;
    expected.extend([
        ("ca.verified", "events-ca"),
        ("registration.deleted", "dev-1"),
        ("enrollment.deleted", "dev-1"),
        ("group.deleted", "g-1"),
    ]);
    let hook_seen = receiver.seen.clone();
    let all: [(&str, &Seen); 4] = [
        ("hook", &hook_seen),
        ("nats-core", &core_seen),
        ("nats-js", &js_seen),
        ("mqtt", &mqtt_seen),
    ];
    all_received(&all, &expected).await;

    // The webhook goes down; a change is made, and the server is killed after the brokers got it
    // but before the webhook could.
    receiver.stop().await;
    service
        .ok(
            "PUT",
            "/enrollments/crash-1",
            Some(enrollment("crash-1", key, "enabled", "a")),
        )
        .await;
    expected.push(("enrollment.created", "crash-1"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let hook_failing = loop {
        let sink = service.ok("GET", "/eventSinks/hook", None).await;
        if !sink["status"]["lastError"].is_null() || Instant::now() > deadline {
            break sink;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        hook_failing["status"]["lag"].as_i64().unwrap() >= 1,
        "{hook_failing}"
    );
    assert!(
        hook_failing["status"]["failures"].as_u64().unwrap() >= 1,
        "{hook_failing}"
    );
    service.server.kill();
    service.server.start_again();
    service.server.wait_healthy().await;
    // A change and a SIGKILL at once: the event is in the outbox, delivered by no one yet.
    service
        .ok(
            "PUT",
            "/enrollments/crash-2",
            Some(enrollment("crash-2", key, "enabled", "a")),
        )
        .await;
    service.server.kill();
    expected.push(("enrollment.created", "crash-2"));
    service.server.start_again();
    service.server.wait_healthy().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.start().await;
    all_received(&all, &expected).await;
    assert_eq!(receiver.bad_signatures.load(Ordering::SeqCst), 0);

    // JetStream kept each event once, whatever was published again; the sinks caught up.
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages as usize, expected.len());
    jetstream.delete_stream(&stream_name).await.unwrap();
    for (name, _) in &sinks {
        let sink = service
            .ok("GET", &format!("/eventSinks/{name}"), None)
            .await;
        assert_eq!(sink["status"]["lag"], 0, "{sink}");
        assert!(sink["status"]["lastError"].is_null(), "{sink}");
    }
    let log = service.server.log();
    assert!(!log.contains(&secret), "the webhook secret is never logged");
    let through_jetstream: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("through JetStream"))
        .collect();
    assert!(
        !through_jetstream.is_empty() && through_jetstream.iter().all(|l| l.contains(&js_subject)),
        "only the sink on the stream's subject publishes through JetStream:\n{log}"
    );
}
