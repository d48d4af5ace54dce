//! The deployment guide (docs/DEPLOYMENT.md) holds: its systemd unit and configuration are
//! accepted by the tools that will read them, and a backup taken the way it says (SQLite's
//! `.backup`, `pg_dump`) restores into a fresh instance that devices provision against.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::support::HUB;
use crate::support::db;
use crate::support::instance::{
    Backend, Instance, enroll, random_key, symmetric_document, symmetric_spec,
};
use crate::support::process::{onramp_bin, run};

fn deploy_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/deploy")
        .join(name)
}

/// Runs a tool the guide names; panics with its output unless it succeeds.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program} is not installed ({e}): run scripts/setup.sh --test")
        });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{program} {args:?} failed:\n{stderr}");
    stderr
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let unit = std::fs::read_to_string(deploy_file("onramp.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/onramp --config /etc/onramp/onramp.toml serve")
    );
    // `verify` checks that ExecStart names an executable: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("onramp.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/onramp", onramp_bin())).unwrap();
    // Unknown keys and bad values are only warnings (exit 0), so a clean unit prints nothing.
    let warnings = tool(
        "systemd-analyze",
        &["verify", "--man=no", path.to_str().unwrap()],
    );
    assert_eq!(warnings, "", "systemd-analyze warned about the unit");
}

#[test]
fn the_example_configuration_is_what_the_unit_runs() {
    let config = deploy_file("onramp.toml");
    let out = run(
        &["--config", config.to_str().unwrap(), "config", "show"],
        &[],
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "data_dir = \"/var/lib/onramp\"",
        "https_port = 443",
        "mqtt_port = 8883",
        "amqp_port = 5671",
        "site_root = \"/usr/local/share/onramp/site\"",
    ] {
        assert!(shown.contains(line), "`config show` lacks {line}:\n{shown}");
    }
    let unit = std::fs::read_to_string(deploy_file("onramp.service")).unwrap();
    assert!(unit.contains("StateDirectory=onramp") && unit.contains("TimeoutStopSec=30"));
}

#[test]
fn the_haproxy_example_is_valid_without_a_warning() {
    let config = deploy_file("haproxy.cfg");
    // The health checks verify each instance against its CA: any CA file stands in for it here.
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        ca.path(),
        onramp::test_certs::self_signed("Load balancer test CA", true).pem(),
    )
    .unwrap();
    let out = Command::new("haproxy")
        .args(["-c", "-f", config.to_str().unwrap()])
        .env("ONRAMP_CA", ca.path())
        .output()
        .expect("haproxy is not installed: run scripts/setup.sh --test");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("Configuration file is valid"), "{stdout}");
    assert!(
        !stderr.contains("WARNING") && !stderr.contains("ALERT"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_sqlite_backup_restores_into_a_fresh_instance() {
    let original = Instance::start(Backend::Sqlite).await.unwrap();
    let device = provision_before_backup(&original).await;
    let restored_dir = tempfile::tempdir().unwrap();
    let database = original.data_dir().join("onramp.db");
    let copy = restored_dir.path().join("onramp.db");
    // Online: the instance keeps serving while sqlite3 copies a consistent snapshot.
    tool(
        "sqlite3",
        &[
            database.to_str().unwrap(),
            &format!(".backup '{}'", copy.display()),
        ],
    );
    copy_certificates(original.data_dir(), restored_dir.path());
    let url = format!("sqlite://{}", copy.display());
    let restored = Instance::on_database(restored_dir, url).await;
    provision_after_restore(&original, &restored, &device).await;
    restored.finish().await;
    original.finish().await;
}

#[tokio::test]
async fn a_pg_dump_restores_into_a_fresh_database() {
    let Some(original) = Instance::start(Backend::Postgres).await else {
        return;
    };
    let device = provision_before_backup(&original).await;
    let base = db::postgres_url();
    let schema = search_path(&original.database_url);
    let dump_dir = tempfile::tempdir().unwrap();
    let dump = dump_dir.path().join("onramp.dump");
    let dump_arg = format!("--file={}", dump.display());
    tool(
        "pg_dump",
        &[
            "--format=custom",
            &format!("--schema={schema}"),
            &dump_arg,
            &base,
        ],
    );
    let database = format!("onramp_restore_{}", uuid::Uuid::new_v4().simple());
    tool(
        "psql",
        &[&base, "-qc", &format!("CREATE DATABASE {database}")],
    );
    let target = with_database(&base, &database);
    tool(
        "pg_restore",
        &[
            "--no-owner",
            &format!("--dbname={target}"),
            dump.to_str().unwrap(),
        ],
    );

    let restored_dir = tempfile::tempdir().unwrap();
    copy_certificates(original.data_dir(), restored_dir.path());
    let url = format!("{target}?options=-c%20search_path%3D{schema}");
    let restored = Instance::on_database(restored_dir, url).await;
    provision_after_restore(&original, &restored, &device).await;
    restored.finish().await;
    original.finish().await;
    let drop = format!("DROP DATABASE {database} WITH (FORCE)");
    tool("psql", &[&base, "-qc", &drop]);
}

struct Device {
    id: String,
    key: String,
}

/// One device enrolled and assigned, so the backup holds an enrollment, a registration record
/// and a hub identity.
async fn provision_before_backup(instance: &Instance) -> Device {
    let device = Device {
        id: "restored-1".into(),
        key: random_key(),
    };
    enroll(
        instance.store(),
        &device.id,
        None,
        symmetric_spec(&device.key, &random_key()),
    )
    .await;
    let (status, _, body) = instance.register(&device.id, &device.key, json!({})).await;
    assert_assigned(status, &body, "initialAssignment");
    device
}

/// The restored instance is the same service: its ID scope and CA, the device's record and hub
/// identity; the device re-registers, and a new device is enrolled over the service API (with
/// the restored owner key) and provisions.
async fn provision_after_restore(original: &Instance, restored: &Instance, device: &Device) {
    assert_eq!(restored.scope(), original.scope());
    assert_eq!(
        restored.ca_pem, original.ca_pem,
        "the devices' trust anchor changed"
    );
    assert_eq!(
        restored.state.instance.owner_policy.primary_key,
        original.state.instance.owner_policy.primary_key
    );

    let path = format!("registrations/{}", device.id);
    let (status, _, record) = restored.service_call("GET", &path, None).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["assignedHub"], HUB);
    let identity = restored
        .store()
        .get_hub_device(HUB, &device.id)
        .await
        .unwrap();
    assert!(identity.is_some(), "the hub identity was not restored");

    let (status, _, body) = restored.register(&device.id, &device.key, json!({})).await;
    // The default reprovisioning policy migrates: the twin is read from the restored hub.
    assert_assigned(status, &body, "deviceDataMigrated");

    let (id, key) = ("after-restore-1", random_key());
    let document = symmetric_document(id, &key);
    let (status, _, created) = restored
        .service_call("PUT", &format!("enrollments/{id}"), Some(document))
        .await;
    assert_eq!(status, 200, "{created}");
    let (status, _, body) = restored.register(id, &key, json!({})).await;
    assert_assigned(status, &body, "initialAssignment");
}

fn assert_assigned(status: u16, body: &Value, substatus: &str) {
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "assigned", "{body}");
    assert_eq!(body["registrationState"]["assignedHub"], HUB);
    assert_eq!(body["registrationState"]["substatus"], substatus, "{body}");
}

/// What the guide says to back up beside the database: the generated CA (the devices trust it;
/// the server certificate is issued again from it).
fn copy_certificates(from: &Path, to: &Path) {
    for file in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

fn search_path(url: &str) -> String {
    url.rsplit("search_path%3D").next().unwrap().to_string()
}

/// `base` (a PostgreSQL URL without a query) with another database name.
fn with_database(base: &str, database: &str) -> String {
    let (server, _) = base.rsplit_once('/').unwrap();
    format!("{server}/{database}")
}

/// SIGTERM behind a load balancer: `/readyz` fails at once while registrations are still served
/// for `drain_secs`; only then do the listeners close.
#[tokio::test]
async fn a_draining_instance_fails_readyz_first_and_still_serves() {
    let mut instance = Instance::with_limits(|limits| limits.drain_secs = 2).await;
    let (id, key) = ("draining-1", random_key());
    enroll(
        instance.store(),
        id,
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let readyz = || async {
        let response = instance
            .client
            .get(format!("{}/readyz", instance.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    assert_eq!(readyz().await, (200, "ready".to_string()));

    let began = std::time::Instant::now();
    instance.begin_shutdown();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(readyz().await, (503, "draining".to_string()));
    let (status, _, body) = instance.register(id, &key, json!({})).await;
    assert_assigned(status, &body, "initialAssignment");
    assert!(
        tokio::net::TcpStream::connect(instance.addr).await.is_ok(),
        "closed before the drain ended"
    );

    instance.stop().await;
    assert!(
        began.elapsed() >= std::time::Duration::from_secs(2),
        "stopped before the drain ended"
    );
    assert!(
        tokio::net::TcpStream::connect(instance.addr).await.is_err(),
        "still accepting"
    );
}
