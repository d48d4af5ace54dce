//! Throttling as DPS does it (issue 18, point 3), each limit set low in `limits`: registrations
//! per instance and per enrollment group, status requests per device, service API calls per
//! policy. Over a limit: 429 with error code 429001 and `Retry-After` (MQTT: `res/429` with
//! `retry-after`); the limited caller gets through once told to, others are not held back. The
//! official SDKs waiting it out are in sdk.rs. Overload (point 4): registrations in flight are
//! bounded, and one more is answered 503 at once.

use std::time::{Duration, Instant};

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
    let token = i.owner_token();
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

/// Issue 18, point 4: with every registration slot taken, one more device is answered 503 with
/// `Retry-After` at once instead of waiting for a slot; the slot comes back when its registration
/// ends, a refused one included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_instance_answers_at_once_instead_of_queueing() {
    let i = Instance::with_limits(|l| l.max_registrations_in_flight = 1).await;
    let devices = enroll_devices(&i, "busy", 2).await;
    let ((slow, slow_key), (other, other_key)) = (&devices[0], &devices[1]);
    // Test mode makes the slow device's registration hold the one slot for 1.5 s.
    let fault = json!({"remaining": 1, "latencyMs": 1500});
    let path = format!("enrollments/{slow}/testFault");
    let (status, _, body) = i.service_call("PUT", &path, Some(fault)).await;
    assert_eq!(status, 200, "{body}");

    let refused_meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = Instant::now();
        let reply = register(&i, other, other_key).await;
        (reply, started.elapsed())
    };
    let (slow_reply, ((status, headers, body), waited)) =
        tokio::join!(register(&i, slow, slow_key), refused_meanwhile);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errorCode"], 503001, "{body}");
    assert_eq!(headers["retry-after"], "3");
    assert!(
        waited < Duration::from_millis(700),
        "answered at once, not after the slot came back: {waited:?}"
    );
    assert_eq!(slow_reply.2["status"], "assigned", "{:?}", slow_reply.2);

    let (status, _, body) = register(&i, other, &random_key()).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = register(&i, other, other_key).await;
    assert_eq!(
        body["status"], "assigned",
        "the slots came back: {status} {body}"
    );
    i.finish().await;
}
