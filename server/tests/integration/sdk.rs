//! Conformance with the official Azure IoT SDKs: Node (azure-iot-provisioning-device with its
//! -http, -mqtt and -amqp transports, Mqtt, MqttWs, Amqp and AmqpWs, with azure-iot-security-symmetric-key and
//! azure-iot-security-x509, and azure-iot-security-tpm on a software TPM over -http and -amqp;
//! azure-iot-device and azure-iothub on the built-in hub; from npm) and
//! Python (azure-iot-device's ProvisioningDeviceClient and IoTHubDeviceClient over MQTT and
//! MQTT/WebSocket, from PyPI).
//! The real `onramp` binary listens on 443, 8883 and 5671, the ports those SDKs hard-code; the generated
//! CA is trusted the way each SDK documents; every byte on the wire is the SDK's own. The same
//! scenarios run for every transport, once on SQLite and once on PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use chrono::Utc;
use onramp::model::*;
use onramp::store::Store;
use serde_json::{Value, json};

use crate::support::HUB;
use crate::support::db;
use crate::support::instance::{enroll, enroll_group, random_key, symmetric_spec};
use crate::support::process::{Server, run};
use crate::support::webhook::webhook;

/// Ports 443, 8883 and 5671 are one per machine: the two backends take turns.
static SDK_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn end2end() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../end2end")
}

/// Runs an SDK script (Node for `.js`, the project's Python virtualenv for `.py`) and returns the
/// JSON line it prints.
pub(crate) fn sdk(script: &str, args: &[&str], ca: &str) -> Value {
    let dir = end2end();
    let interpreter = match script.ends_with(".py") {
        true => dir.join(".venv/bin/python"),
        false => PathBuf::from("node"),
    };
    assert!(
        dir.join("node_modules/azure-iot-provisioning-device")
            .exists()
            && dir.join(".venv/bin/python").exists(),
        "the Azure SDK packages are not installed: run scripts/setup.sh --test"
    );
    let out = Command::new(interpreter)
        .arg(dir.join("sdk").join(script))
        .args(args)
        .env("NODE_EXTRA_CA_CERTS", ca)
        .env("SDK_CA_FILE", ca)
        .current_dir(&dir)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no output: {}", String::from_utf8_lossy(&out.stderr)));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("data/onramp.db").display());
    conformance(dir.path(), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_on_postgres() {
    if db::skip_postgres() {
        return;
    }
    let base = db::postgres_url();
    let schema = db::create_schema(&base).await;
    let dir = tempfile::tempdir().unwrap();
    conformance(
        dir.path(),
        &format!("{base}?options=-c%20search_path%3D{schema}"),
    )
    .await;
    db::drop_schema(&base, &schema).await;
}

#[derive(Clone)]
pub(crate) struct Ctx {
    /// `http`, `mqtt`, `mqtt-ws` (Node) or `py-mqtt`, `py-ws` (Python).
    pub transport: &'static str,
    /// Where this transport connects (all but Node MQTT: a host name, the port being fixed).
    pub host: String,
    pub store: Arc<dyn Store>,
    pub scope: String,
    pub ca: String,
    /// The instance's service connection string (owner policy).
    pub service: String,
    /// The default built-in hub's connection string (owner policy, `HostName` = the hub).
    pub hub_service: String,
}

impl Ctx {
    /// The first context of a server `onramp admin info` described.
    fn new(info: &Value, store: Arc<dyn Store>) -> Ctx {
        Ctx {
            transport: "http",
            host: "localhost".into(),
            store,
            scope: info["idScope"].as_str().unwrap().into(),
            ca: info["caCertPath"].as_str().unwrap().into(),
            service: info["serviceConnectionString"].as_str().unwrap().into(),
            hub_service: default_hub_connection_string(info),
        }
    }

    /// This context for another transport: all but Node MQTT connect by host name alone.
    fn over(&self, transport: &'static str, mqtt_port: u16) -> Ctx {
        let host = match transport {
            "mqtt" => format!("localhost:{mqtt_port}"),
            _ => "localhost".to_string(),
        };
        Ctx {
            transport,
            host,
            ..self.clone()
        }
    }

    /// IDs of this transport's devices, so both transports run every scenario from scratch.
    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.transport)
    }

    pub fn register(&self, registration_id: &str, key: &str, extra: &[&str]) -> Value {
        let mut args = vec![
            self.transport,
            &self.host,
            &self.scope,
            registration_id,
            key,
        ];
        args.extend_from_slice(extra);
        sdk(self.script(), &args, &self.ca)
    }

    fn script(&self) -> &'static str {
        match self.is_python() {
            true => "register.py",
            false => "register.js",
        }
    }

    pub fn is_python(&self) -> bool {
        self.transport.starts_with("py-")
    }
}

/// Bootstraps the instance in `data` (`onramp admin info --json`) and returns what it printed.
fn admin_info(data: &str, database_url: &str) -> Value {
    let args = [
        "admin",
        "info",
        "--json",
        "--data-dir",
        data,
        "--database-url",
        database_url,
    ];
    let out = run(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Issue 18, point 3: over `limits.registrations_per_second` (1 here) a device is told 429 with
/// `retry-after`; the official Node MQTT and Python clients wait as told and succeed. Two devices
/// start together, so the second lands in the first one's second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_wait_out_throttling() {
    let _ports = SDK_PORTS.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let url = format!("sqlite://{}", data.join("onramp.db").display());
    let config = dir.path().join("onramp.toml");
    std::fs::write(&config, "[limits]\nregistrations_per_second = 1\n").unwrap();
    let info = admin_info(data_arg, &url);
    let store = onramp::store::open(&url, 2).await.unwrap();
    let args = ["--database-url", &url, "--config", config.to_str().unwrap()];
    let mut server = Server::start_on_device_ports(&data, [443, 8883, 5671], &args);
    server.wait_healthy().await;
    let base = Ctx::new(&info, store);
    for transport in ["mqtt", "py-mqtt"] {
        let ctx = base.over(transport, server.mqtt_port);
        let mut devices = Vec::new();
        for n in 0..2 {
            let (id, key) = (ctx.id(&format!("throttled-{n}")), random_key());
            enroll(&ctx.store, &id, None, symmetric_spec(&key, &random_key())).await;
            devices.push((id, key));
        }
        let started = std::time::Instant::now();
        let outs: Vec<Value> = std::thread::scope(|s| {
            let running: Vec<_> = devices
                .iter()
                .map(|(id, key)| s.spawn(|| ctx.register(id, key, &[])))
                .collect();
            running.into_iter().map(|r| r.join().unwrap()).collect()
        });
        for out in &outs {
            assert_eq!(out["ok"], true, "{transport}: {out}");
            assert_eq!(out["result"]["assignedHub"], HUB, "{out}");
        }
        let log = server.log();
        let throttled = log
            .lines()
            .filter(|l| l.contains("throttled") && devices.iter().any(|(id, _)| l.contains(id)))
            .count();
        eprintln!(
            "{transport}: 2 devices done in {:?}, {throttled} throttled attempt(s)",
            started.elapsed()
        );
        assert!(
            throttled >= 1,
            "{transport}: neither device was throttled:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1_100));
    }
    base.store.close().await;
    server.terminate(std::time::Duration::from_secs(15));
}

async fn conformance(dir: &Path, database_url: &str) {
    let _ports = SDK_PORTS.lock().await;
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    // Bootstrap first and link two more built-in hubs, so the server starts knowing them.
    let info = admin_info(data_arg, database_url);
    let store = onramp::store::open(database_url, 4).await.unwrap();
    for hub in ["hub-a.localhost", "hub-b.localhost"] {
        link(&store, hub).await;
    }
    let ports = [443, 8883, 5671];
    let mut server = Server::start_on_device_ports(&data, ports, &["--database-url", database_url]);
    server.wait_healthy().await;
    let console = Console::open(&server, data_arg, database_url).await;
    let base = Ctx::new(&info, store);

    for transport in [
        "http", "mqtt", "mqtt-ws", "amqp", "amqp-ws", "py-mqtt", "py-ws",
    ] {
        let ctx = base.over(transport, server.mqtt_port);
        individual_enrollment(&ctx).await;
        group_enrollment(&ctx).await;
        disabled_enrollment(&ctx).await;
        wrong_key(&ctx).await;
        reprovisioning(&ctx).await;
        custom_allocation(&ctx).await;
        match ctx.transport {
            "mqtt" => node_device_meets_its_hub(&ctx).await,
            "py-mqtt" | "py-ws" => device_meets_its_hub(&ctx).await,
            _ => {}
        }
        crate::sdk_x509::x509_devices(&ctx, &dir.join("certs")).await;
        if matches!(ctx.transport, "http" | "py-mqtt") {
            crate::issuance::with_the_sdks(&ctx, &dir.join("certs")).await;
        }
        if matches!(ctx.transport, "http" | "amqp" | "amqp-ws") {
            crate::sdk_tpm::tpm_devices(&ctx).await;
        }
    }
    service_sdk(&base, &base.service).await;
    hub_service_sdk(&base).await;
    console.shows_the_node_device_on_its_hub(&server).await;

    // Every protocol and attestation ran through this server: none of the keys it holds (enrollment,
    // group and derived device keys, hub identities' keys, access policies) is in its log.
    let secrets = secrets_in(base.store.as_ref()).await;
    assert!(secrets.len() > 50, "only {} keys found", secrets.len());
    let log = server.log();
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "a key is in the server log");
    }

    base.store.close().await;
    server.terminate(std::time::Duration::from_secs(15));
}

/// The keys the store holds, and those derived from its group keys for the devices registered.
async fn secrets_in(store: &dyn Store) -> Vec<String> {
    let mut secrets = Vec::new();
    let mut add = |attestation: &Attestation| {
        if let Attestation::SymmetricKey {
            primary_key,
            secondary_key,
        } = attestation
        {
            secrets.extend([primary_key.clone(), secondary_key.clone()]);
        }
    };
    let all = |after| ListQuery {
        after,
        limit: 1000,
        ..Default::default()
    };
    let enrollments = store.list_enrollments(&all(None)).await.unwrap();
    assert!(enrollments.next.is_none());
    enrollments
        .items
        .iter()
        .for_each(|e| add(&e.spec.attestation));
    let groups = store.list_groups(&all(None)).await.unwrap().items;
    groups.iter().for_each(|g| add(&g.spec.attestation));
    let records = store.list_registrations(&all(None)).await.unwrap().items;
    for record in &records {
        for group in &groups {
            if let Attestation::SymmetricKey { primary_key, .. } = &group.spec.attestation {
                let derived = onramp::attestation::sas::derive_device_key(
                    primary_key,
                    &record.registration_id,
                );
                secrets.extend(derived.ok());
            }
        }
        if let (Some(hub), Some(device)) = (&record.assigned_hub, &record.device_id) {
            let identity = store.get_hub_device(hub, device).await.unwrap();
            if let Some(DeviceAuth::Sas {
                primary_key,
                secondary_key,
            }) = identity.map(|d| d.auth)
            {
                secrets.extend([primary_key, secondary_key]);
            }
        }
    }
    for policy in store.list_policies().await.unwrap() {
        secrets.extend([policy.primary_key, policy.secondary_key]);
    }
    secrets.retain(|s| s.len() >= 16);
    secrets.sort();
    secrets.dedup();
    secrets
}

async fn link(store: &Arc<dyn Store>, host: &str) {
    let now = Utc::now();
    let hub = LinkedHub {
        host_name: host.into(),
        connector: ConnectorKind::BuiltIn,
        region: None,
        allocation_weight: 1,
        apply_allocation_policy: false,
        settings: json!({}),
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    store.put_hub(hub, IfMatch::Any, &[]).await.unwrap();
}

/// Flow steps 7 and 8: after provisioning, the device's hub client connects to the assigned
/// built-in hub with the same key, reads the enrollment's initial twin, and reports a property.
async fn device_meets_its_hub(ctx: &Ctx) {
    let key = random_key();
    let id = ctx.id("seed-flow");
    enroll(&ctx.store, &id, None, symmetric_spec(&key, &random_key())).await;
    let reported = r#"{"firmware": "py-1.0", "battery": {"level": 80}}"#;
    let args = [
        ctx.transport,
        &ctx.host,
        &ctx.scope,
        &id,
        &key,
        reported,
        &ctx.service,
    ];
    let out = sdk("device.py", &args, &ctx.ca);
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["assignedHub"], HUB);
    assert_eq!(out["twin"]["desired"]["telemetryInterval"], 30, "{out}");
    assert_eq!(
        out["twinAfterPatch"]["reported"]["firmware"], "py-1.0",
        "{out}"
    );
    let device = ctx.store.get_hub_device(HUB, &id).await.unwrap().unwrap();
    assert_eq!(device.reported.properties["battery"]["level"], 80);
    assert_eq!(
        out["twinAfterPatch"]["reported"]["$version"],
        device.reported.version
    );

    // An operator's desired change through the hub's REST subset reaches the connected device.
    assert_eq!(out["servicePatch"]["status"], 200, "{out}");
    assert_eq!(out["servicePatch"]["body"]["tags"]["room"], "lab");
    assert_eq!(out["pushReceived"], true, "{out}");
    assert_eq!(out["desiredPush"]["telemetryInterval"], 5, "{out}");
    assert_eq!(out["desiredPush"]["$version"], 2, "{out}");
    let device = ctx.store.get_hub_device(HUB, &id).await.unwrap().unwrap();
    assert_eq!(device.desired.properties["telemetryInterval"], 5);
}

/// `onramp admin info` names the default built-in hub (with a dot: the Azure IoT C SDK needs one)
/// and gives its connection string.
fn default_hub_connection_string(info: &Value) -> String {
    let hubs = info["hubs"].as_array().unwrap();
    let hub = hubs.iter().find(|h| h["hostName"] == HUB).unwrap();
    let connection_string = hub["connectionString"].as_str().unwrap();
    assert!(
        connection_string.starts_with(&format!("HostName={HUB};")),
        "{connection_string}"
    );
    connection_string.to_string()
}

/// The official IoT Hub service SDK (azure-iothub's Registry) manages a built-in hub's devices and
/// twins through the hub REST subset, with the instance's connection string.
async fn hub_service_sdk(ctx: &Ctx) {
    let out = sdk(
        "hub-service.js",
        &[&ctx.hub_service, "svc-hub-device"],
        &ctx.ca,
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["created"]["deviceId"], "svc-hub-device", "{out}");
    assert_eq!(out["read"]["primaryKeyMatches"], true, "{out}");
    assert_eq!(out["twinAfter"]["tags"]["building"], "b7", "{out}");
    assert_eq!(out["twinAfter"]["interval"], 12, "{out}");
    let before = out["twinBefore"]["desiredVersion"].as_i64().unwrap();
    assert_eq!(out["twinAfter"]["desiredVersion"], before + 1, "{out}");
    assert_eq!(out["staleUpdate"], 412, "an old etag is refused: {out}");
    assert_eq!(out["afterDelete"], 404, "{out}");
    assert!(
        ctx.store
            .get_hub_device(HUB, "svc-hub-device")
            .await
            .unwrap()
            .is_none()
    );
}

/// An admin's console session, with the live log's event stream read in the background.
struct Console {
    cookie: String,
    events: Arc<std::sync::Mutex<String>>,
}

impl Console {
    async fn open(server: &Server, data_dir: &str, database_url: &str) -> Console {
        let args = [
            "--data-dir",
            data_dir,
            "--database-url",
            database_url,
            "admin",
            "user",
            "create",
            "sdk-admin",
            "--role",
            "admin",
        ];
        let out = run(&args, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let password = stdout
            .lines()
            .find_map(|l| l.strip_prefix("password: "))
            .unwrap_or_else(|| panic!("no generated password: {stdout}"));
        let cookie = server.sign_in("sdk-admin", password.trim()).await;
        let events = Arc::new(std::sync::Mutex::new(String::new()));
        let mut stream = server
            .client()
            .get(format!("{}/console/events", server.base_url()))
            .header("cookie", &cookie)
            .timeout(std::time::Duration::from_secs(600))
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        let sink = events.clone();
        tokio::spawn(async move {
            while let Ok(Some(chunk)) = stream.chunk().await {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        });
        Console { cookie, events }
    }

    /// The registration page shows the Node device's twin and telemetry on its hub, and the live
    /// log streamed its hub events (connected, reported) as they happened.
    async fn shows_the_node_device_on_its_hub(&self, server: &Server) {
        let id = "mqtt-node-seed-flow";
        let page = server
            .client()
            .get(format!("{}/console/registrations/{id}", server.base_url()))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains("On the hub"), "{page}");
        assert!(page.contains("nodeFirmware"), "the reported twin: {page}");
        assert!(
            page.contains("source=node-sdk"),
            "the telemetry's properties: {page}"
        );
        assert!(page.contains("temperature"), "the telemetry's body: {page}");
        let events = self.events.lock().unwrap().clone();
        let hub_events: Vec<Value> = events
            .split("\n\n")
            .filter(|e| e.contains("event: hub"))
            .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
            .filter_map(|data| serde_json::from_str(data).ok())
            .filter(|e: &Value| e["registration_id"] == id)
            .collect();
        for status in ["connected", "reported"] {
            assert!(
                hub_events
                    .iter()
                    .any(|e| e["status"] == status && e["protocol"] == "hub-mqtt"),
                "{status}: {hub_events:?}"
            );
        }
    }
}

/// The Node device SDK (azure-iot-device-mqtt) on the built-in hub after provisioning: connect
/// with the device key, read the twin, report a property, send telemetry.
async fn node_device_meets_its_hub(ctx: &Ctx) {
    let key = random_key();
    let id = ctx.id("node-seed-flow");
    enroll(&ctx.store, &id, None, symmetric_spec(&key, &random_key())).await;
    let provisioned = ctx.register(&id, &key, &[]);
    assert_eq!(provisioned["ok"], true, "{provisioned}");
    let hub = provisioned["result"]["assignedHub"].as_str().unwrap();
    let out = sdk(
        "hub-device.js",
        &[hub, &id, &key, r#"{"nodeFirmware": "n-1"}"#],
        &ctx.ca,
    );
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["desired"]["telemetryInterval"], 30, "{out}");
    let device = ctx.store.get_hub_device(hub, &id).await.unwrap().unwrap();
    assert_eq!(device.reported.properties["nodeFirmware"], "n-1");
}

async fn individual_enrollment(ctx: &Ctx) {
    let key = random_key();
    enroll(
        &ctx.store,
        &ctx.id("dev-1"),
        Some(ctx.id("thermostat").as_str()),
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let out = ctx.register(&ctx.id("dev-1"), &key, &[]);
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["result"]["status"], "assigned");
    assert_eq!(out["result"]["assignedHub"], HUB);
    assert_eq!(out["result"]["deviceId"], ctx.id("thermostat"));
    assert_eq!(out["result"]["substatus"], "initialAssignment");
    let identity = ctx
        .store
        .get_hub_device(HUB, &ctx.id("thermostat"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(identity.desired.properties["telemetryInterval"], 30);
}

async fn group_enrollment(ctx: &Ctx) {
    let group_key = random_key();
    enroll_group(
        &ctx.store,
        &ctx.id("fleet"),
        symmetric_spec(&group_key, &random_key()),
    )
    .await;
    for device in [ctx.id("g-1"), ctx.id("g-2")] {
        let out = ctx.register(&device, &group_key, &["--group-key"]);
        assert_eq!(out["ok"], true, "{out}");
        assert_eq!(out["result"]["deviceId"], device);
        let record = ctx.store.get_registration(&device).await.unwrap().unwrap();
        assert_eq!(record.enrollment, EnrollmentRef::Group(ctx.id("fleet")));
    }
}

async fn disabled_enrollment(ctx: &Ctx) {
    let key = random_key();
    let mut spec = symmetric_spec(&key, &random_key());
    spec.provisioning_status = ProvisioningStatus::Disabled;
    enroll(&ctx.store, &ctx.id("off"), None, spec).await;
    let out = ctx.register(&ctx.id("off"), &key, &[]);
    assert_disabled(ctx, &out, &ctx.id("off")).await;
}

/// The device was told its enrollment is disabled, and nothing was made on the hub. The SDKs know
/// only assigned/assigning/failed: Node reports `disabled` as an error that carries the result,
/// Python as an error naming the status.
pub(crate) async fn assert_disabled(ctx: &Ctx, out: &Value, device_id: &str) {
    assert_eq!(out["ok"], false, "{out}");
    match ctx.is_python() {
        true => assert!(message(out).contains("status disabled"), "{out}"),
        false => assert_eq!(out["result"]["status"], "disabled", "{out}"),
    }
    let identity = ctx.store.get_hub_device(HUB, device_id).await;
    assert!(
        identity.unwrap().is_none(),
        "{device_id} has no hub identity"
    );
}

async fn wrong_key(ctx: &Ctx) {
    enroll(
        &ctx.store,
        &ctx.id("wrong"),
        None,
        symmetric_spec(&random_key(), &random_key()),
    )
    .await;
    let out = ctx.register(&ctx.id("wrong"), &random_key(), &[]);
    assert_unauthorized(ctx, &out);
}

/// The device was told 401 / 401002 the way its SDK shows it.
pub(crate) fn assert_unauthorized(ctx: &Ctx, out: &Value) {
    assert_eq!(out["ok"], false, "{out}");
    // HTTP: the 401 response and its body. MQTT: the res/401 reply, which Node turns into an
    // UnauthorizedError carrying the body, and Python into an error naming the status code.
    // AMQP: the SASL outcome `auth`.
    if ctx.is_python() {
        assert!(message(out).contains("status code 401"), "{out}");
        return;
    }
    if ctx.transport.starts_with("amqp") {
        // A key is refused at the SASL login (outcome `auth`, connection closed), which rhea
        // reports as a connection that never opened (amqp.rs checks the outcome and the event).
        // A certificate is refused per request: a Rejected outcome carrying the Azure error.
        if out["name"] == "NotConnectedError" || out["name"] == "UnauthorizedError" {
            return;
        }
        assert_eq!(out["condition"], "amqp:unauthorized-access", "{out}");
        let error: Value = serde_json::from_str(out["description"].as_str().unwrap()).unwrap();
        assert_eq!(error["errorCode"], 401002, "{out}");
        return;
    }
    let error = match ctx.transport {
        "http" => {
            assert_eq!(out["statusCode"], 401, "{out}");
            &out["body"]
        }
        _ => {
            assert_eq!(out["name"], "UnauthorizedError", "{out}");
            &out["result"]
        }
    };
    assert_eq!(error["errorCode"], 401002, "{out}");
}

pub(crate) fn message(out: &Value) -> &str {
    out["message"].as_str().unwrap_or_default()
}

async fn reprovisioning(ctx: &Ctx) {
    let key = random_key();
    let mut spec = symmetric_spec(&key, &random_key());
    spec.iot_hubs = vec!["hub-a.localhost".into()];
    enroll(&ctx.store, &ctx.id("mover"), None, spec.clone()).await;
    assert_eq!(
        ctx.register(&ctx.id("mover"), &key, &[])["result"]["assignedHub"],
        "hub-a.localhost"
    );
    let mut twin = ctx
        .store
        .get_hub_device("hub-a.localhost", &ctx.id("mover"))
        .await
        .unwrap()
        .unwrap();
    twin.reported
        .properties
        .insert("firmware".into(), json!("1.0"));
    ctx.store.put_hub_device(twin, IfMatch::Any).await.unwrap();

    let steps = [
        (
            "hub-b.localhost",
            true,
            true,
            "hub-b.localhost",
            "deviceDataMigrated",
            Some("1.0"),
        ),
        (
            "hub-a.localhost",
            true,
            false,
            "hub-a.localhost",
            "deviceDataReset",
            None,
        ),
        (
            "hub-b.localhost",
            false,
            false,
            "hub-a.localhost",
            "reprovisionedToInitialAssignment",
            None,
        ),
    ];
    for (named, update, migrate, expected_hub, substatus, firmware) in steps {
        spec.iot_hubs = vec![named.into()];
        spec.reprovision_policy = ReprovisionPolicy {
            update_hub_assignment: update,
            migrate_device_data: migrate,
        };
        enroll(&ctx.store, &ctx.id("mover"), None, spec.clone()).await;
        let out = ctx.register(&ctx.id("mover"), &key, &[]);
        assert_eq!(
            out["result"]["assignedHub"], expected_hub,
            "{substatus}: {out}"
        );
        assert_eq!(out["result"]["substatus"], substatus, "{out}");
        let twin = ctx
            .store
            .get_hub_device(expected_hub, &ctx.id("mover"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            twin.reported
                .properties
                .get("firmware")
                .and_then(Value::as_str),
            firmware,
            "{substatus}"
        );
        assert_eq!(twin.desired.properties["telemetryInterval"], 30);
    }
}

async fn custom_allocation(ctx: &Ctx) {
    let reply = json!({"iotHubHostName": "hub-b.localhost", "payload": {"greeting": "hello node"}});
    let (url, seen) = webhook(200, reply).await;
    let key = random_key();
    let mut spec = symmetric_spec(&key, &random_key());
    spec.allocation_policy = Some(AllocationPolicy::Custom);
    spec.custom_allocation = Some(CustomAllocationDefinition {
        webhook_url: url,
        api_version: "2019-03-31".into(),
    });
    enroll(&ctx.store, &ctx.id("custom"), None, spec).await;
    let out = ctx.register(&ctx.id("custom"), &key, &[r#"{"model":"n1"}"#]);
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["result"]["assignedHub"], "hub-b.localhost");
    assert_eq!(
        out["result"]["payload"],
        json!({"greeting": "hello node"}),
        "the device receives the webhook's payload"
    );
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0]["deviceRuntimeContext"]["payload"],
        json!({"model": "n1"}),
        "the device's payload reached the webhook"
    );
}

/// The official Node service SDK against the service API: CRUD with ETags, groups, bulk with a
/// failing item, paged queries, and a registration record from a real device registration.
async fn service_sdk(ctx: &Ctx, connection_string: &str) {
    let key = random_key();
    enroll(
        &ctx.store,
        "svc-registered",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    assert_eq!(ctx.register("svc-registered", &key, &[])["ok"], true);
    let out = sdk(
        "service.js",
        &[connection_string, "svc-registered"],
        &ctx.ca,
    );

    assert_eq!(out["created"]["status"], 200, "{out}");
    assert_eq!(
        out["created"]["keyLength"], 64,
        "keys are generated when omitted"
    );
    assert_eq!(
        out["read"],
        json!({"status": 200, "registrationId": "svc-dev-1", "type": "symmetricKey", "tags": {"site": "a"}})
    );
    assert_eq!(
        out["updated"],
        json!({"status": 200, "provisioningStatus": "disabled", "etagChanged": true})
    );
    assert_eq!(
        out["staleUpdate"],
        json!({"status": 412, "errorCode": 412001})
    );
    assert_eq!(out["staleDelete"]["status"], 412);
    assert_eq!(
        out["deleted"],
        json!({"error": null, "afterwards": 404, "errorCode": 404201})
    );
    assert!(
        ctx.store
            .get_enrollment("svc-dev-1")
            .await
            .unwrap()
            .is_none()
    );

    let group = &out["group"];
    assert_eq!(group["created"], 200, "{out}");
    assert_eq!(group["read"], "svc-group-1");
    assert_eq!(group["updated"], "hashed");
    assert_eq!(group["staleStatus"], 412);
    assert_eq!(group["keysFromAttestationMechanism"], true);
    assert_eq!(
        group["primaryKeyMatches"], true,
        "an update without keys keeps them"
    );
    let deletes = &out["groupDelete"];
    assert_eq!(deletes["missing"], 404, "{out}");
    assert_eq!(deletes["wrongEtag"], 412, "{out}");
    assert_eq!(
        (&deletes["error"], &deletes["afterwards"]),
        (&Value::Null, &json!(404)),
        "{out}"
    );

    assert_eq!(out["bulk"]["allCreated"], true, "{out}");
    assert_eq!(out["bulk"]["mixedSuccessful"], false);
    let errors = out["bulk"]["mixedErrors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{out}");
    assert_eq!(errors[0]["registrationId"], "svc-bulk-00");
    assert_eq!(errors[0]["errorCode"], 409001);
    assert!(
        ctx.store
            .get_enrollment("svc-bulk-new")
            .await
            .unwrap()
            .is_some(),
        "the other item was created"
    );

    assert!(out["query"]["pages"].as_u64().unwrap() >= 3, "paged: {out}");
    assert_eq!(
        out["query"]["bulkIds"], 26,
        "every enrollment exactly once across pages"
    );
    let group_ids: Vec<&str> = out["groupQuery"]["ids"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        group_ids.contains(&"svc-group-1") && group_ids.contains(&"http-fleet"),
        "{group_ids:?}"
    );
    let group_pages = out["groupQuery"]["pages"].as_u64();
    assert_eq!(
        group_pages,
        Some(group_ids.len() as u64),
        "one group per page"
    );

    assert_eq!(
        out["registration"],
        json!({"status": 200, "assignedHub": HUB, "deviceStatus": "assigned"})
    );
    assert_eq!(
        out["registrationDelete"],
        json!({"stale": 412, "error": null, "afterwards": 404})
    );
    assert!(
        ctx.store
            .get_registration("svc-registered")
            .await
            .unwrap()
            .is_none()
    );
}
