//! `/metrics` against real registrations: counters and histogram counts move by exactly what
//! happened, read back with the official Prometheus client's parser (Python `prometheus_client`,
//! end2end/sdk/metrics.py); the Grafana dashboard and the alert rules in docs/monitoring query
//! only metrics an instance serves; every service API call is one ServiceOperations log line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::mqtt;
use crate::support::HUB;
use crate::support::instance::{Backend, Instance, enroll, random_key, symmetric_spec};
use crate::support::process::Server;

#[derive(Debug, Deserialize)]
struct Family {
    name: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// An exposition as the official parser read it.
struct Exposition(Vec<Family>);

fn end2end() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../end2end")
}

/// Runs end2end/sdk/metrics.py with `args` and `input` on stdin; returns its JSON line.
fn metrics_py(args: &[&str], input: &str) -> Value {
    let python = end2end().join(".venv/bin/python");
    assert!(
        python.exists(),
        "the Python test packages are not installed: run scripts/setup.sh --test"
    );
    let mut child = Command::new(python)
        .arg(end2end().join("sdk/metrics.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "metrics.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

impl Exposition {
    async fn of(i: &Instance) -> Exposition {
        let text = i.scrape().await;
        Exposition(serde_json::from_value(metrics_py(&["parse"], &text)).unwrap())
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.0.iter().flat_map(|f| &f.samples)
    }

    /// Whether a query may name `metric`: a declared family (it may have no samples yet, such as
    /// hub errors on a healthy instance) under its own name or a sample's (`_total`, `_bucket`).
    fn serves(&self, metric: &str) -> bool {
        const SUFFIXES: [&str; 5] = ["", "_total", "_bucket", "_count", "_sum"];
        self.0.iter().any(|f| {
            let rest = metric.strip_prefix(f.name.as_str());
            rest.is_some_and(|rest| SUFFIXES.contains(&rest))
        })
    }
}

/// How much each sample moved between two scrapes.
fn delta(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_move_the_counters_by_exactly_what_happened() {
    let i = Instance::start(Backend::Sqlite).await.unwrap();
    let (https_key, mqtt_key) = (random_key(), random_key());
    enroll(
        i.store(),
        "m-https",
        None,
        symmetric_spec(&https_key, &random_key()),
    )
    .await;
    enroll(
        i.store(),
        "m-mqtt",
        None,
        symmetric_spec(&mqtt_key, &random_key()),
    )
    .await;
    let before = Exposition::of(&i).await;

    let (status, _, body) = i.register("m-https", &https_key, json!({})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("assigned")),
        "{body}"
    );
    let (status, _, _) = i.register("m-https", &random_key(), json!({})).await;
    assert_eq!(status, 401, "a wrong key is refused");
    let mut device = mqtt::Client::device(&i, "m-mqtt", &mqtt_key).await;
    let (_, body) = device.register("1", "m-mqtt").await;
    assert_eq!(body["status"], "assigned", "{body}");
    // A client that is no TLS client at all: one failed handshake on the MQTT listener.
    let mut garbage = tokio::net::TcpStream::connect(i.mqtt_addr).await.unwrap();
    garbage
        .write_all(b"CONNECT nonsense\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::io::AsyncReadExt::read(&mut garbage, &mut [0u8; 64]).await;
    let (status, _, _) = i.service_call("GET", "enrollments/m-https", None).await;
    assert_eq!(status, 200);
    let (status, _, _) = i.service_call("GET", "enrollments/nobody", None).await;
    assert_eq!(status, 404);
    let after = Exposition::of(&i).await;
    let moved = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);

    let attempts = "onramp_registration_attempts_total";
    assert_eq!(
        moved(
            attempts,
            &[("status", "assigned"), ("protocol", "https"), ("hub", HUB)]
        ),
        1.0
    );
    assert_eq!(
        moved(attempts, &[("status", "failed"), ("protocol", "https")]),
        1.0
    );
    assert_eq!(
        moved(
            attempts,
            &[("status", "assigned"), ("protocol", "mqtt"), ("hub", HUB)]
        ),
        1.0
    );
    assert_eq!(moved(attempts, &[]), 3.0, "nothing else was counted");
    assert_eq!(
        moved("onramp_device_assignments_total", &[("hub", HUB)]),
        2.0
    );
    let errors = "onramp_registration_errors_total";
    assert_eq!(
        moved(errors, &[("protocol", "https"), ("code", "401002")]),
        1.0
    );
    assert_eq!(moved(errors, &[]), 1.0);
    let attestations = "onramp_attestation_attempts_total";
    let sas = ("attestation", "symmetricKey");
    assert_eq!(
        moved(
            attestations,
            &[("status", "success"), ("protocol", "https"), sas]
        ),
        1.0
    );
    assert_eq!(
        moved(
            attestations,
            &[("status", "failure"), ("protocol", "https"), sas]
        ),
        1.0
    );
    assert_eq!(
        moved(
            attestations,
            &[("status", "success"), ("protocol", "mqtt"), sas]
        ),
        1.0
    );

    let latency = "onramp_registration_duration_seconds_count";
    assert_eq!(moved(latency, &[("protocol", "https")]), 2.0);
    assert_eq!(moved(latency, &[("protocol", "mqtt")]), 1.0);
    let steps = "onramp_registration_step_duration_seconds_count";
    for (step, https, mqtt) in [
        ("authenticate", 2.0, 1.0),
        ("allocate", 1.0, 1.0),
        ("hub_write", 1.0, 1.0),
        ("commit", 1.0, 1.0),
    ] {
        assert_eq!(
            moved(steps, &[("protocol", "https"), ("step", step)]),
            https,
            "{step}"
        );
        assert_eq!(
            moved(steps, &[("protocol", "mqtt"), ("step", step)]),
            mqtt,
            "{step}"
        );
    }
    // Two registrations committed, each one job of the group commit.
    assert_eq!(moved("onramp_group_commit_jobs_sum", &[]), 2.0);
    assert!(moved("onramp_group_commit_duration_seconds_count", &[]) >= 1.0);

    let handshakes = "onramp_tls_handshake_failures_total";
    assert_eq!(moved(handshakes, &[("listener", "mqtt")]), 1.0);
    assert_eq!(moved(handshakes, &[("listener", "https")]), 0.0);
    let calls = "onramp_service_api_requests_total";
    let get_one = ("operation", "GET /enrollments/{id}");
    assert_eq!(moved(calls, &[get_one, ("status", "200")]), 1.0);
    assert_eq!(moved(calls, &[get_one, ("status", "404")]), 1.0);
    assert_eq!(
        moved(
            "onramp_service_api_request_duration_seconds_count",
            &[get_one]
        ),
        2.0
    );
    let max = i.state.config.limits.database_max_connections;
    let pool_max = "onramp_db_pool_max_connections";
    assert_eq!(after.value(pool_max, &[("pool", "main")]), f64::from(max));
    assert_eq!(
        after.value(pool_max, &[("pool", "writer")]),
        1.0,
        "SQLite's one writer"
    );
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_and_throttling_refusals_are_counted() {
    let i = Instance::with_limits(|l| l.registrations_per_second = 1).await;
    let key = random_key();
    enroll(
        i.store(),
        "m-throttled",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let open = "onramp_open_connections";
    let before = Exposition::of(&i).await;
    let client = mqtt::tls_to(&i, i.mqtt_addr).await;
    let connected = Exposition::of(&i).await;
    assert_eq!(
        delta(&before, &connected, open, &[("listener", "mqtt")]),
        1.0
    );
    drop(client);

    let first = i.register("m-throttled", &key, json!({})).await.0;
    let second = i.register("m-throttled", &key, json!({})).await.0;
    assert_eq!((first, second), (202, 429));
    let after = Exposition::of(&i).await;
    let throttled = "onramp_throttled_requests_total";
    let limit = ("limit", "registrations_per_second");
    assert_eq!(delta(&before, &after, throttled, &[limit]), 1.0);
    i.finish().await;
}

fn monitoring(file: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/monitoring")
        .join(file)
        .display()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alert_rules_query_only_metrics_an_instance_serves() {
    let i = Instance::start(Backend::Sqlite).await.unwrap();
    let key = random_key();
    enroll(
        i.store(),
        "m-dash",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    assert_eq!(i.register("m-dash", &key, json!({})).await.0, 202);
    assert_eq!(i.register("m-dash", &random_key(), json!({})).await.0, 401);
    assert_eq!(
        i.service_call("GET", "enrollments/m-dash", None).await.0,
        200
    );
    let served = Exposition::of(&i).await;
    let dashboard = monitoring("grafana-dashboard.json");
    let queried = metrics_py(&["queries", &dashboard, &monitoring("alerts.yml")], "");
    let names: Vec<&str> = queried["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(queried["expressions"].as_u64().unwrap() >= 8, "{queried}");
    assert!(names.len() >= 5, "{queried}");
    let missing: Vec<&&str> = names.iter().filter(|n| !served.serves(n)).collect();
    assert!(missing.is_empty(), "queried but not served: {missing:?}");
    i.finish().await;
}

/// Every service API call is one `onramp::service_operations` line in the JSON log, with the
/// operation, the policy it signed with, the status and the latency; no token is logged.
#[tokio::test]
async fn service_api_calls_are_logged_as_service_operations() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--log-format", "json"]);
    server.wait_healthy().await;
    let owner = "provisioningserviceowner";
    let token = server.owner_token(600);
    let expiry = chrono::Utc::now().timestamp() as u64 + 600;
    let forged =
        onramp::attestation::sas::sign(&random_key(), "localhost", expiry, Some(owner)).unwrap();
    let base = format!(
        "{}/enrollments/log-dev?api-version=2021-10-01",
        server.base_url()
    );
    let client = server.client();
    let enrollment = json!({
        "registrationId": "log-dev",
        "attestation": {"type": "symmetricKey"},
    });
    let put = client
        .put(&base)
        .header("Authorization", &token)
        .json(&enrollment);
    assert_eq!(put.send().await.unwrap().status(), 200);
    let get = client.get(&base).header("Authorization", &token);
    assert_eq!(get.send().await.unwrap().status(), 200);
    let refused = client.get(&base).header("Authorization", &forged);
    assert_eq!(refused.send().await.unwrap().status(), 401);
    assert!(
        server
            .terminate(std::time::Duration::from_secs(15))
            .success()
    );

    let log = server.log();
    let operations: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON log lines"))
        .filter(|l| l["target"] == "onramp::service_operations")
        .map(|l| l["fields"].clone())
        .collect();
    let seen: Vec<(&str, &str, u64)> = operations
        .iter()
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap_or_default();
            (
                text("operation"),
                text("policy"),
                f["status"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("PUT /enrollments/{id}", owner, 200),
            ("GET /enrollments/{id}", owner, 200),
            ("GET /enrollments/{id}", "-", 401),
        ],
        "{log}"
    );
    assert!(operations.iter().all(|f| f["latency_ms"].is_u64()), "{log}");
    let signature = |t: &str| {
        t.split("sig=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .to_string()
    };
    assert!(!log.contains(&signature(&token)) && !log.contains(&signature(&forged)));
}
