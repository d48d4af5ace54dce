//! Two instances on one PostgreSQL follow each other (`coordination`): the live log shows the
//! other's registrations within a second, and a change made through one is enforced by the
//! other at once, not after its caches' TTL; periodic work runs on one of them.

use std::time::Duration;

use chrono::Utc;
use onramp::attestation::sas;
use onramp::domain::device_hub::{Attachment, Push};
use onramp::janitor;
use onramp::model::IfMatch;
use serde_json::{Value, json};

use crate::support::HUB;
use crate::support::instance::{
    Backend, Instance, enroll, enroll_group, random_key, symmetric_document, symmetric_spec,
};

#[tokio::test]
async fn a_registration_on_one_instance_shows_in_the_others_live_log() {
    let Some((first, second)) = two_instances_on_postgres().await else {
        return;
    };
    let (mut peers, _) = second.state.bus.subscribe_peers();
    let (mut own, _) = first.state.bus.subscribe_peers();

    let (id, key) = ("fleet-live-1", random_key());
    enroll(first.store(), id, None, symmetric_spec(&key, &random_key())).await;
    let (status, _, body) = first.register(id, &key, json!({})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("assigned")),
        "{body}"
    );

    let seen = tokio::time::timeout(Duration::from_secs(1), peers.recv())
        .await
        .expect("the other instance's live log did not get the event within a second")
        .unwrap();
    assert_eq!(seen.registration_id, id);
    assert_eq!(seen.hub.as_deref(), Some(HUB));
    // An instance does not hear its own events back as another's.
    assert!(
        own.try_recv().is_err(),
        "the first instance got its own event back"
    );
    second.finish().await;
    first.finish().await;
}

#[tokio::test]
async fn a_change_through_one_instance_is_enforced_by_the_other_at_once() {
    let Some((first, second)) = two_instances_on_postgres().await else {
        return;
    };

    // A group the first instance has cached (groups are cached for `SNAPSHOT_TTL`, 2 s)...
    let group_key = random_key();
    enroll_group(
        first.store(),
        "fleet-floor",
        symmetric_spec(&group_key, &random_key()),
    )
    .await;
    let device_key = |id: &str| sas::derive_device_key(&group_key, id).unwrap();
    let (status, _, body) = first
        .register("floor-a", &device_key("floor-a"), json!({}))
        .await;
    assert_eq!(body["status"], "assigned", "{status} {body}");

    // ... disabled through the second instance's service API is refused by the first at once.
    let path = "enrollmentGroups/fleet-floor";
    let (status, _, mut group) = second.service_call("GET", path, None).await;
    assert_eq!(status, 200, "{group}");
    group["provisioningStatus"] = json!("disabled");
    let (status, _, updated) = second.service_call("PUT", path, Some(group)).await;
    assert_eq!(status, 200, "{updated}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, body) = first
        .register("floor-b", &device_key("floor-b"), json!({}))
        .await;
    assert_disabled(status, &body);

    // An individual enrollment disabled through the second is refused by the first as well.
    let (id, key) = ("fleet-single", random_key());
    let document = symmetric_document(id, &key);
    let path = format!("enrollments/{id}");
    let (status, _, created) = second.service_call("PUT", &path, Some(document)).await;
    assert_eq!(status, 200, "{created}");
    let (_, _, body) = first.register(id, &key, json!({})).await;
    assert_eq!(body["status"], "assigned", "{body}");
    let mut disabled = created.clone();
    disabled["provisioningStatus"] = json!("disabled");
    let (status, _, updated) = second.service_call("PUT", &path, Some(disabled)).await;
    assert_eq!(status, 200, "{updated}");
    let (status, _, body) = first.register(id, &key, json!({})).await;
    assert_disabled(status, &body);
    second.finish().await;
    first.finish().await;
}

/// A built-in hub device connected through one instance gets the desired patches made through
/// the other, and connecting through the other closes its first session.
#[tokio::test]
async fn a_hub_device_is_reached_and_replaced_across_instances() {
    let Some((first, second)) = two_instances_on_postgres().await else {
        return;
    };
    let (id, key) = ("fleet-hub-1", random_key());
    enroll(first.store(), id, None, symmetric_spec(&key, &random_key())).await;
    let (_, _, body) = first.register(id, &key, json!({})).await;
    assert_eq!(body["status"], "assigned", "{body}");
    let device = body["registrationState"]["deviceId"].as_str().unwrap();
    let mut on_second = second.state.device_hub.attach(HUB, device);
    let patch = json!({"mode": "eco"}).as_object().unwrap().clone();
    let saved = first
        .state
        .device_hub
        .patch_twin(HUB, device, None, Some(&patch), IfMatch::Any)
        .await
        .unwrap();
    let version = saved.desired.version;
    assert_eq!(
        next_push(&mut on_second).await,
        Push::Desired { version, patch }
    );

    let on_first = first.state.device_hub.attach(HUB, device);
    assert_eq!(next_push(&mut on_second).await, Push::Replaced);
    assert!(!second.state.device_hub.is_connected(HUB, device));
    assert!(first.state.device_hub.is_connected(HUB, device));
    drop((on_first, on_second));
    second.finish().await;
    first.finish().await;
}

async fn next_push(attachment: &mut Attachment) -> Push {
    tokio::time::timeout(Duration::from_secs(1), attachment.pushes.recv())
        .await
        .expect("nothing reached the session on the other instance within a second")
        .unwrap()
}

/// Two instances on one fresh PostgreSQL schema, each following the other; None when
/// PostgreSQL was deliberately skipped.
async fn two_instances_on_postgres() -> Option<(Instance, Instance)> {
    let first = Instance::start(Backend::Postgres).await?;
    let second = first.sibling().await;
    for instance in [&first, &second] {
        let following = instance.state.peers.following();
        tokio::time::timeout(Duration::from_secs(10), following)
            .await
            .expect("an instance did not start following the other");
    }
    Some((first, second))
}

fn assert_disabled(status: u16, body: &Value) {
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        body["status"], "disabled",
        "the other instance still allowed it: {body}"
    );
}

/// The janitor's sweep runs on one instance per period, whichever claims it first; on SQLite
/// (two instances on one file) as on PostgreSQL.
#[tokio::test]
async fn the_sweep_runs_once_per_period_across_instances() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(first) = Instance::start(backend).await else {
            continue;
        };
        let second = first.sibling().await;
        let retention = Duration::from_secs(3600);
        let sweep = |instance: &Instance, at| {
            let store = instance.store().clone();
            async move {
                janitor::sweep_if_due(store.as_ref(), at, retention)
                    .await
                    .unwrap()
            }
        };
        // Both have started; the first to sweep took this period.
        let now = Utc::now();
        assert_eq!(sweep(&first, now).await, None, "{backend:?}");
        assert_eq!(sweep(&second, now).await, None, "{backend:?}");
        // Next period: both try at the same moment, one sweeps.
        let next = now + chrono::Duration::from_std(janitor::EVERY).unwrap();
        let (a, b) = tokio::join!(sweep(&first, next), sweep(&second, next));
        assert_eq!(
            usize::from(a.is_some()) + usize::from(b.is_some()),
            1,
            "{backend:?}: {a:?} {b:?}"
        );
        second.finish().await;
        first.finish().await;
    }
}
