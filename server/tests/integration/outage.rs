//! Database outages (issue 18, point 2). PostgreSQL, the test's own cluster, is stopped and
//! restarted under load: devices meanwhile get 503 with `Retry-After` (MQTT: `res/503` with
//! `retry-after`), `/readyz` answers 503, and afterwards the pool recovers by itself and every
//! device completes. SQLite on a full disk (a small tmpfs) answers the same way, recovers once
//! space is back, and its file passes `PRAGMA integrity_check`.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::task::JoinSet;

use crate::mqtt::Client;
use crate::support::HUB;
use crate::support::db::skip_postgres;
use crate::support::instance::{Instance, enroll_devices};
use crate::support::pg_cluster::{PgCluster, is_root};

const DEVICES: usize = 40;

/// What one device went through: registrations refused with 503 before it was assigned.
struct Outcome {
    id: String,
    unavailable: u32,
}

/// Registers as a device written to the DPS contract does: on 503 it checks the error and
/// waits `Retry-After`; anything but 503 or an assignment fails the test.
async fn register_until_assigned(i: Arc<Instance>, id: String, key: String) -> Outcome {
    let mut unavailable = 0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "{id} never completed");
        let (status, headers, body) = i.register(&id, &key, json!({"registrationId": id})).await;
        if status == 503 {
            assert_unavailable(&headers, &body);
            unavailable += 1;
            tokio::time::sleep(Duration::from_secs(retry_after(&headers))).await;
            continue;
        }
        // 202 with the assignment itself when it finished inline.
        assert!(matches!(status, 200 | 202), "{id}: {status} {body}");
        assert_eq!(body["status"], "assigned", "{id}: {body}");
        assert_eq!(body["registrationState"]["assignedHub"], HUB);
        return Outcome { id, unavailable };
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers["retry-after"].to_str().unwrap().parse().unwrap()
}

fn assert_unavailable(headers: &reqwest::header::HeaderMap, body: &Value) {
    assert_eq!(
        retry_after(headers),
        3,
        "503 without Retry-After 3: {headers:?}"
    );
    assert_eq!(body["errorCode"], 503001, "{body}");
    assert_eq!(
        body["message"], "Service unavailable, retry later",
        "{body}"
    );
}

async fn readyz(i: &Instance) -> u16 {
    let response = i
        .client
        .get(format!("{}/readyz", i.url))
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// Spawns the devices, each starting `stagger` after the one before, so load spans the outage.
fn spawn_devices(
    i: &Arc<Instance>,
    devices: Vec<(String, String)>,
    stagger: Duration,
) -> JoinSet<Outcome> {
    let mut set = JoinSet::new();
    for (n, (id, key)) in devices.into_iter().enumerate() {
        let i = i.clone();
        set.spawn(async move {
            tokio::time::sleep(stagger * n as u32).await;
            register_until_assigned(i, id, key).await
        });
    }
    set
}

/// Every device completed, at least one met the outage, and each is in the store as assigned.
async fn assert_all_completed(i: &Instance, mut devices: JoinSet<Outcome>, expected: usize) {
    let mut outcomes = Vec::new();
    while let Some(outcome) = devices.join_next().await {
        outcomes.push(outcome.expect("a device task panicked"));
    }
    let refused: u32 = outcomes.iter().map(|o| o.unavailable).sum();
    let met = outcomes.iter().filter(|o| o.unavailable > 0).count();
    eprintln!(
        "{} devices completed; {met} met the outage, {refused} registrations answered 503",
        outcomes.len()
    );
    assert_eq!(outcomes.len(), expected);
    assert!(
        met > 0,
        "no device met the outage: the test did not test it"
    );
    for outcome in &outcomes {
        let record = i.store().get_registration(&outcome.id).await.unwrap();
        let record = record.unwrap_or_else(|| panic!("{} assigned but not stored", outcome.id));
        assert_eq!(record.assigned_hub.as_deref(), Some(HUB), "{record:?}");
        assert_eq!(record.device_id.as_deref(), Some(outcome.id.as_str()));
    }
}

/// The MQTT side of an outage: the register reply is `res/503` with `retry-after` and the
/// Azure error body, and the connection stays usable.
async fn assert_mqtt_unavailable(i: &Instance, id: &str, key: &str) {
    let (topic, body) = Client::device(i, id, key).await.register("7", id).await;
    assert_eq!(topic, "$dps/registrations/res/503/?$rid=7&retry-after=3");
    assert_eq!(body["errorCode"], 503001, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_load() {
    if skip_postgres() {
        return;
    }
    let cluster = PgCluster::start();
    let i = Instance::on_database(tempfile::tempdir().unwrap(), cluster.url()).await;
    let i = Arc::new(i);
    let devices = enroll_devices(&i, "outage", DEVICES).await;
    let probe = enroll_devices(&i, "probe", 1).await.remove(0);
    assert_eq!(readyz(&i).await, 200);

    let started = Instant::now();
    let running = spawn_devices(&i, devices, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.down();
    let stopped = Instant::now();

    assert_eq!(readyz(&i).await, 503, "/readyz while PostgreSQL is down");
    let (status, headers, body) = i
        .register(&probe.0, &probe.1, json!({"registrationId": probe.0}))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_unavailable(&headers, &body);
    eprintln!("HTTPS register answered 503 after {:?}", stopped.elapsed());
    assert_mqtt_unavailable(&i, &probe.0, &probe.1).await;

    tokio::time::sleep(Duration::from_secs(4).saturating_sub(stopped.elapsed())).await;
    cluster.up();
    eprintln!("PostgreSQL down for {:?}", stopped.elapsed());
    assert_all_completed(&i, running, DEVICES).await;
    eprintln!(
        "all devices done {:?} after the load began",
        started.elapsed()
    );
    assert_eq!(readyz(&i).await, 200, "/readyz after PostgreSQL is back");

    let i = Arc::into_inner(i).expect("device tasks finished");
    i.finish().await;
}

/// A small tmpfs mounted over a directory for the test's lifetime.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount (the test runs as root, as CI does)");
        assert!(status.success(), "mounting a tmpfs needs root");
        SmallDisk { dir }
    }

    /// Fills what is left of the disk; returns the filler to delete.
    fn fill(&self) -> std::path::PathBuf {
        let filler = self.dir.path().join("filler");
        let status = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "dd stops when the disk is full");
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_on_a_full_disk_refuses_clearly_and_stays_intact() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    if !is_root() && !ci {
        eprintln!("not root: cannot mount a small disk, SQLite full-disk half skipped");
        return;
    }
    let disk = SmallDisk::mount(16);
    // The database outside the data directory, which the instance removes when it finishes.
    let data = tempfile::tempdir_in(disk.dir.path()).unwrap();
    let db = disk.dir.path().join("onramp.db");
    let url = format!("sqlite://{}", db.display());
    let i = Arc::new(Instance::on_database(data, url.clone()).await);
    let before = enroll_devices(&i, "before", 5).await;
    let during = enroll_devices(&i, "during", DEVICES).await;
    for (id, key) in before.iter().cloned() {
        register_until_assigned(i.clone(), id, key).await;
    }

    let filler = disk.fill();
    let (id, key) = &during[0];
    let (status, headers, body) = i.register(id, key, json!({"registrationId": id})).await;
    assert_eq!(status, 503, "a full disk: {body}");
    assert_unavailable(&headers, &body);
    let running = spawn_devices(&i, during, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(filler).unwrap();
    assert_all_completed(&i, running, DEVICES).await;
    for (id, _) in &before {
        let record = i.store().get_registration(id).await.unwrap().unwrap();
        assert_eq!(record.assigned_hub.as_deref(), Some(HUB));
    }

    let i = Arc::into_inner(i).expect("device tasks finished");
    i.finish().await;
    let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    connection.close().await.unwrap();
    drop(disk);
}
