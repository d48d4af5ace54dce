//! An Onramp instance inside the test process: `onramp serve`'s own `service::run` on free ports,
//! so tests speak HTTPS and MQTT to the real composition and still reach its store and event bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::Utc;
use onramp::config::Config;
use onramp::model::*;
use onramp::service::{Listeners, prepare, run};
use onramp::state::AppState;
use onramp::store::Store;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::db;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Instance {
    pub state: AppState,
    pub addr: SocketAddr,
    /// The MQTT listener (TLS), with short limits: CONNECT within 1 s, idle 2 s.
    pub mqtt_addr: SocketAddr,
    /// The AMQP listener (TLS).
    pub amqp_addr: SocketAddr,
    /// `/metrics`, plain HTTP.
    pub metrics_url: String,
    pub ca_pem: Vec<u8>,
    pub client: reqwest::Client,
    pub url: String,
    /// The default built-in hub's REST subset: the same listener, chosen by the `Host` header.
    pub hub_url: String,
    pub database_url: String,
    shutdown: CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: Arc<tempfile::TempDir>,
    schema: Option<String>,
}

/// Few, so that a test can tell a connection slot that is not given back.
pub const MAX_AMQP_CONNECTIONS: usize = 8;

impl Instance {
    /// A fresh instance on `backend`, or None when PostgreSQL was deliberately skipped.
    pub async fn start(backend: Backend) -> Option<Instance> {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let (database_url, schema) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("onramp.db").display()),
                None,
            ),
            Backend::Postgres => {
                if db::skip_postgres() {
                    return None;
                }
                let base = db::postgres_url();
                let schema = db::create_schema(&base).await;
                (
                    format!("{base}?options=-c%20search_path%3D{schema}"),
                    Some(schema),
                )
            }
        };
        Some(Instance::on(dir, database_url, schema).await)
    }

    /// An instance with its data directory in `dir` on the database at `database_url` (which
    /// the test owns and cleans up).
    pub async fn on_database(dir: tempfile::TempDir, database_url: String) -> Instance {
        Instance::on(Arc::new(dir), database_url, None).await
    }

    /// Another instance on the same database (and data directory).
    pub async fn sibling(&self) -> Instance {
        Instance::on(self._dir.clone(), self.database_url.clone(), None).await
    }

    /// A fresh instance on SQLite with its limits changed by `adjust`.
    pub async fn with_limits(adjust: impl FnOnce(&mut onramp::config::Limits)) -> Instance {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let url = format!("sqlite://{}", dir.path().join("onramp.db").display());
        Instance::on_adjusted(dir, url, None, adjust).await
    }

    async fn on(
        dir: Arc<tempfile::TempDir>,
        database_url: String,
        schema: Option<String>,
    ) -> Instance {
        Instance::on_adjusted(dir, database_url, schema, |_| {}).await
    }

    async fn on_adjusted(
        dir: Arc<tempfile::TempDir>,
        database_url: String,
        schema: Option<String>,
        adjust: impl FnOnce(&mut onramp::config::Limits),
    ) -> Instance {
        let mut config = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: Some(database_url.clone()),
            limits: onramp::config::Limits {
                webhook_timeout_secs: 2,
                inline_assignment_ms: 500,
                max_connections: 64,
                handshake_timeout_secs: 5,
                shutdown_grace_secs: 5,
                mqtt_connect_timeout_secs: 1,
                mqtt_idle_timeout_secs: 2,
                max_amqp_connections: MAX_AMQP_CONNECTIONS,
                amqp_idle_timeout_secs: 2,
                ..Default::default()
            },
            ..Config::default()
        };
        adjust(&mut config.limits);
        let prepared = prepare(config).await.expect("prepare instance");
        let state = prepared.state.clone();
        let ca = std::fs::read(prepared.tls.ca_path.clone().unwrap()).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mqtt_tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mqtt_addr = mqtt_tcp.local_addr().unwrap();
        let amqp_tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let amqp_addr = amqp_tcp.local_addr().unwrap();
        let metrics_tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_url = format!("http://{}/metrics", metrics_tcp.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let listeners = Listeners {
            https: tcp,
            mqtt: mqtt_tcp,
            amqp: amqp_tcp,
            metrics: Some(metrics_tcp),
        };
        // The binary's own composition, as `onramp serve` runs it.
        let running = tokio::spawn(run(prepared, listeners, shutdown.clone()));
        let client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .resolve("localhost", addr)
            .resolve(super::HUB, addr)
            .build()
            .unwrap();
        Instance {
            url: format!("https://localhost:{}", addr.port()),
            hub_url: format!("https://{}:{}", super::HUB, addr.port()),
            state,
            running: Some(running),
            addr,
            mqtt_addr,
            amqp_addr,
            metrics_url,
            ca_pem: ca.clone(),
            client,
            database_url,
            shutdown,
            _dir: dir,
            schema,
        }
    }

    /// The exposition `/metrics` serves now.
    pub async fn scrape(&self) -> String {
        let response = reqwest::get(&self.metrics_url)
            .await
            .expect("scrape /metrics");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// The data directory `onramp` commands must be given to act on this instance.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.state.store
    }

    pub fn scope(&self) -> &str {
        &self.state.instance.id_scope
    }

    /// Stops the instance as SIGTERM stops `onramp serve` (its data directory stays).
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            let stopped = tokio::time::timeout(Duration::from_secs(10), running).await;
            assert!(
                matches!(stopped, Ok(Ok(Ok(())))),
                "the instance did not stop cleanly: {stopped:?}"
            );
        }
    }

    /// Starts stopping without waiting (requests in flight get the grace period).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    pub async fn finish(mut self) {
        self.stop().await;
        self.state.store.close().await;
        if let Some(schema) = &self.schema {
            db::drop_schema(&db::postgres_url(), schema).await;
        }
    }

    /// A SAS token for `registration_id` signed with `key`, valid for an hour.
    pub fn token(&self, registration_id: &str, key: &str) -> String {
        let resource = format!("{}/registrations/{registration_id}", self.scope());
        onramp::attestation::sas::sign(
            key,
            &resource,
            Utc::now().timestamp() as u64 + 3600,
            Some("registration"),
        )
        .unwrap()
    }

    /// PUT register with a token; returns status, headers and JSON body.
    pub async fn register(
        &self,
        registration_id: &str,
        key: &str,
        body: Value,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let token = self.token(registration_id, key);
        self.request(
            "PUT",
            &format!("registrations/{registration_id}/register"),
            Some(&token),
            Some(body),
        )
        .await
    }

    /// A device endpoint call (DPS device API version) under this instance's ID scope.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!(
            "{}/{}/{path}?api-version=2019-03-31",
            self.url,
            self.scope()
        );
        self.send(method, url, token, body).await
    }

    /// A service API token of the owner policy, valid for ten minutes.
    pub fn owner_token(&self) -> String {
        let owner = &self.state.instance.owner_policy;
        let expiry = Utc::now().timestamp() as u64 + 600;
        onramp::attestation::sas::sign(&owner.primary_key, "localhost", expiry, Some(&owner.name))
            .unwrap()
    }

    /// A service API call signed with the owner policy.
    pub async fn service_call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!("{}/{path}?api-version=2021-10-01", self.url);
        let token = self.owner_token();
        self.send(method, url, Some(&token), body).await
    }

    /// Status, headers and body (JSON, or the text as a JSON string when it is not JSON).
    async fn send(
        &self,
        method: &str,
        url: String,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.client.request(method.parse().unwrap(), url);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn link_hub(&self, host: &str, weight: u32, region: Option<&str>, apply: bool) {
        let now = Utc::now();
        let hub = LinkedHub {
            host_name: host.into(),
            connector: ConnectorKind::BuiltIn,
            region: region.map(String::from),
            allocation_weight: weight,
            apply_allocation_policy: apply,
            settings: json!({}),
            etag: Etag::new(),
            created: now,
            updated: now,
        };
        self.store().put_hub(hub, IfMatch::Any, &[]).await.unwrap();
        self.state.provisioner.invalidate();
    }
}

pub fn random_key() -> String {
    base64::engine::general_purpose::STANDARD
        .encode((0..64).map(|_| rand::random::<u8>()).collect::<Vec<u8>>())
}

/// A symmetric-key individual enrollment as the service API takes it.
pub fn symmetric_document(registration_id: &str, primary: &str) -> Value {
    json!({
        "registrationId": registration_id,
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": random_key()}},
    })
}

pub fn symmetric_spec(primary: &str, secondary: &str) -> EnrollmentSpec {
    EnrollmentSpec {
        attestation: Attestation::SymmetricKey {
            primary_key: primary.into(),
            secondary_key: secondary.into(),
        },
        provisioning_status: ProvisioningStatus::Enabled,
        iot_edge: false,
        initial_twin: Some(InitialTwin {
            tags: json!({"site": "plant-7"}).as_object().unwrap().clone(),
            desired: json!({"telemetryInterval": 30})
                .as_object()
                .unwrap()
                .clone(),
        }),
        reprovision_policy: ReprovisionPolicy::default(),
        allocation_policy: None,
        iot_hubs: vec![],
        custom_allocation: None,
        credential_policy_name: None,
    }
}

pub async fn enroll(
    store: &Arc<dyn Store>,
    registration_id: &str,
    device_id: Option<&str>,
    spec: EnrollmentSpec,
) -> Enrollment {
    let now = Utc::now();
    let enrollment = Enrollment {
        registration_id: registration_id.into(),
        device_id: device_id.map(String::from),
        spec,
        optional_device_information: None,
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    store
        .put_enrollment(enrollment, IfMatch::Any, &[])
        .await
        .unwrap()
}

/// Enrolls `count` symmetric-key devices named `{prefix}-{n}`; returns (registration ID, key).
pub async fn enroll_devices(i: &Instance, prefix: &str, count: usize) -> Vec<(String, String)> {
    let mut devices = Vec::new();
    for n in 0..count {
        let (id, key) = (format!("{prefix}-{n}"), random_key());
        enroll(i.store(), &id, None, symmetric_spec(&key, &random_key())).await;
        devices.push((id, key));
    }
    devices
}

pub async fn enroll_group(
    store: &Arc<dyn Store>,
    group_id: &str,
    spec: EnrollmentSpec,
) -> EnrollmentGroup {
    let now = Utc::now();
    let group = EnrollmentGroup {
        group_id: group_id.into(),
        spec,
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    store.put_group(group, IfMatch::Any, &[]).await.unwrap()
}

/// An assigned registration record (through `group`'s enrollment, or its own individual one).
pub fn registration_record(id: &str, group: Option<&str>) -> RegistrationRecord {
    let now = Utc::now();
    RegistrationRecord {
        registration_id: id.into(),
        enrollment: match group {
            Some(g) => EnrollmentRef::Group(g.into()),
            None => EnrollmentRef::Individual(id.into()),
        },
        attestation: AttestationKind::SymmetricKey,
        assigned_hub: Some("hub-a.localhost".into()),
        device_id: Some(id.into()),
        status: RegistrationStatus::Assigned,
        substatus: Some(Substatus::InitialAssignment),
        error_code: None,
        error_message: None,
        payload: Some(json!({"hello": "device"})),
        etag: Etag::new(),
        created: now,
        updated: now,
    }
}

/// Runs each case against a fresh in-process instance on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! backend_suite {
    ($($case:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let instance = $crate::support::instance::Instance::start($crate::support::instance::Backend::Sqlite).await.unwrap();
                    super::$case(&instance).await;
                    instance.finish().await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(instance) = $crate::support::instance::Instance::start($crate::support::instance::Backend::Postgres).await else { return };
                    super::$case(&instance).await;
                    instance.finish().await;
                }
            )*
        }
    };
}
