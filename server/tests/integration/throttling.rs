//! Throttling as DPS does it (issue 18, point 3), each limit set low in `limits`: registrations
//! per instance and per enrollment group, status requests per device, service API calls per
//! policy. Over a limit: 429 with error code 429001 and `Retry-After` (MQTT: `res/429` with
//! `retry-after`); the limited caller gets through once told to, others are not held back. The
//! official SDKs waiting it out are in sdk.rs.

use std::time::Duration;

use chrono::Utc;
use onramp::attestation::sas;
use serde_json::{Value, json};

use crate::mqtt::Client;
use crate::support::instance::{
    Instance, enroll_devices, enroll_group, random_key, symmetric_spec,
};

fn assert_throttled(status: u16, headers: &reqwest::header::HeaderMap, body: &Value) -> u64 {
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errorCode"], 429001, "{body}");
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains(&wait.to_string()),
        "{body}"
    );
    wait
}

async fn register(i: &Instance, id: &str, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    i.register(id, key, json!({"registrationId": id})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_over_the_instance_limit_wait_their_turn() {
    let i = Instance::with_limits(|l| l.registrations_per_second = 3).await;
    let devices = enroll_devices(&i, "rate", 5).await;
    for (id, key) in &devices[..3] {
        let (status, _, body) = register(&i, id, key).await;
        assert!(matches!(status, 200 | 202), "{status} {body}");
    }
    let (id, key) = &devices[3];
    let (status, headers, body) = register(&i, id, key).await;
    assert_eq!(assert_throttled(status, &headers, &body), 1);

    // MQTT: the status topic carries the wait.
    let (mqtt_id, mqtt_key) = &devices[4];
    let mut client = Client::device(&i, mqtt_id, mqtt_key).await;
    let (topic, body) = client.register("4", mqtt_id).await;
    assert_eq!(topic, "$dps/registrations/res/429/?$rid=4&retry-after=1");
    assert_eq!(body["errorCode"], 429001, "{body}");

    // Told to wait a second, each gets through.
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let (id, key) = &devices[3];
    let (status, _, body) = register(&i, id, key).await;
    assert!(matches!(status, 200 | 202), "{status} {body}");
    let (topic, body) = client.register("4", mqtt_id).await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    assert_eq!(body["status"], "assigned", "{body}");
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_group_is_held_back_alone() {
    let i = Instance::with_limits(|l| l.group_registrations_per_second = 2).await;
    let group_key = random_key();
    enroll_group(
        i.store(),
        "line-7",
        symmetric_spec(&group_key, &random_key()),
    )
    .await;
    let member = |n: usize| {
        let id = format!("line7-dev-{n}");
        let key = sas::derive_device_key(&group_key, &id).unwrap();
        (id, key)
    };
    for n in 0..2 {
        let (id, key) = member(n);
        let (status, _, body) = register(&i, &id, &key).await;
        assert!(matches!(status, 200 | 202), "{status} {body}");
    }
    let (id, key) = member(2);
    let (status, headers, body) = register(&i, &id, &key).await;
    assert_throttled(status, &headers, &body);

    // An individual enrollment is not in that group's allowance.
    let (id, key) = &enroll_devices(&i, "solo", 1).await[0];
    let (status, _, body) = register(&i, id, key).await;
    assert!(matches!(status, 200 | 202), "{status} {body}");
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_requests_are_counted_per_device_after_authentication() {
    let i = Instance::with_limits(|l| {
        l.polls_per_device = 2;
        l.poll_window_secs = 30;
    })
    .await;
    let devices = enroll_devices(&i, "poller", 2).await;
    let (id, key) = &devices[0];
    let (_, _, body) = register(&i, id, key).await;
    let operation = body["operationId"].as_str().unwrap().to_string();
    let token = i.token(id, key);
    let poll = format!("registrations/{id}/operations/{operation}");
    // Requests signed with a wrong key are refused before they count.
    let stranger = i.token(id, &random_key());
    for _ in 0..3 {
        let (status, _, _) = i.request("GET", &poll, Some(&stranger), None).await;
        assert_eq!(status, 401);
    }
    for _ in 0..2 {
        let (status, _, body) = i.request("GET", &poll, Some(&token), None).await;
        assert_eq!(status, 200, "{body}");
    }
    // The registration-status lookup shares the device's allowance.
    let lookup = format!("registrations/{id}");
    let (status, headers, body) = i
        .request(
            "POST",
            &lookup,
            Some(&token),
            Some(json!({"registrationId": id})),
        )
        .await;
    let wait = assert_throttled(status, &headers, &body);
    assert!((28..=30).contains(&wait), "{wait}");

    let (other, other_key) = &devices[1];
    let (status, _, body) = register(&i, other, other_key).await;
    assert!(matches!(status, 200 | 202), "{status} {body}");
    let operation = body["operationId"].as_str().unwrap();
    let poll = format!("registrations/{other}/operations/{operation}");
    let (status, _, body) = i
        .request("GET", &poll, Some(&i.token(other, other_key)), None)
        .await;
    assert_eq!(status, 200, "another device is not held back: {body}");
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_api_calls_are_counted_per_policy() {
    let i = Instance::with_limits(|l| l.service_api_calls_per_minute = 2).await;
    let owner = &i.state.instance.owner_policy;
    let expiry = Utc::now().timestamp() as u64 + 600;
    let token = sas::sign(&owner.primary_key, "localhost", expiry, Some(&owner.name)).unwrap();
    let url = format!("{}/enrollments/nobody?api-version=2021-10-01", i.url);
    let signed = || i.client.get(&url).header("Authorization", &token).send();
    for _ in 0..2 {
        assert_eq!(signed().await.unwrap().status(), 404);
    }
    let response = signed().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let body: Value = response.json().await.unwrap();
    let wait = assert_throttled(status, &headers, &body);
    assert!((58..=60).contains(&wait), "{wait}");
    // Unsigned calls are refused as before and use up nobody's allowance.
    let response = i.client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    i.finish().await;
}
