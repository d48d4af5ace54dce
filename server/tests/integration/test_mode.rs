//! Test mode for device makers (issue 18, point 8): a fault set on an enrollment or group through
//! the service API answers its next registrations with an error, a delay or a dropped
//! connection, over HTTPS and MQTT; then registrations go on as before. Each change is audited,
//! each registration it touched says so in its diagnostics event, and other devices are not
//! touched.

use std::sync::Arc;
use std::time::{Duration, Instant};

use onramp::attestation::sas;
use onramp::model::{EnrollmentRef, RegistrationEvent};
use serde_json::{Value, json};

use crate::mqtt::Client;
use crate::support::instance::{
    Instance, enroll_devices, enroll_group, random_key, symmetric_spec,
};

async fn register(i: &Instance, id: &str, key: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    i.register(id, key, json!({"registrationId": id})).await
}

/// The next registration event of `id` on the bus.
async fn event_of(
    events: &mut tokio::sync::broadcast::Receiver<Arc<RegistrationEvent>>,
    id: &str,
) -> Arc<RegistrationEvent> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("no registration event")
            .unwrap();
        if event.registration_id == id {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_error_answers_the_next_registrations_then_stops() {
    let i = Instance::with_limits(|_| {}).await;
    let devices = enroll_devices(&i, "fw", 2).await;
    let ((id, key), (other, other_key)) = (&devices[0], &devices[1]);
    let path = format!("enrollments/{id}/testFault");
    assert_eq!(
        i.service_call("GET", &path, None).await.0,
        404,
        "off by default"
    );
    let fault = json!({"remaining": 2, "errorCode": 503001, "retryAfterSeconds": 7});
    let (status, _, body) = i.service_call("PUT", &path, Some(fault)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["remaining"], 2);

    let mut events = i.state.bus.subscribe();
    let (status, headers, body) = register(&i, id, key).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["errorCode"], 503001, "{body}");
    assert_eq!(headers["retry-after"], "7");
    let event = event_of(&mut events, id).await;
    assert_eq!(event.error_code, Some(503001));
    assert_eq!(
        event.fault.as_deref(),
        Some("test mode: injected error 503001 (1 left)")
    );
    assert_eq!(
        event.enrollment,
        Some(EnrollmentRef::Individual(id.clone()))
    );

    // Another device is not touched; the MQTT status topic carries the second fault.
    let (status, _, body) = register(&i, other, other_key).await;
    assert!(matches!(status, 200 | 202), "{status} {body}");
    assert!(event_of(&mut events, other).await.fault.is_none());
    let mut client = Client::device(&i, id, key).await;
    let (topic, body) = client.register("1", id).await;
    assert_eq!(topic, "$dps/registrations/res/503/?$rid=1&retry-after=7");
    assert_eq!(body["errorCode"], 503001, "{body}");
    let event = event_of(&mut events, id).await;
    assert!(
        event.fault.as_ref().unwrap().ends_with("(0 left)"),
        "{event:?}"
    );

    // Spent: registrations go on, and nothing was registered while it lasted.
    let (_, _, body) = i.service_call("GET", &path, None).await;
    assert_eq!(body["remaining"], 0, "{body}");
    let (topic, body) = client.register("2", id).await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    assert_eq!(body["status"], "assigned", "{body}");
    assert!(event_of(&mut events, id).await.fault.is_none());

    // Audited with the actor, set and cleared.
    assert_eq!(i.service_call("DELETE", &path, None).await.0, 204);
    assert_eq!(i.service_call("GET", &path, None).await.0, 404);
    let audit = i.store().recent_audit(20).await.unwrap();
    let target = format!("enrollment/{id}");
    let actions: Vec<&str> = audit
        .iter()
        .filter(|a| a.target == target)
        .map(|a| a.action.as_str())
        .collect();
    assert!(actions.contains(&"enrollment.testFault.set"), "{actions:?}");
    assert!(
        actions.contains(&"enrollment.testFault.clear"),
        "{actions:?}"
    );
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_and_a_dropped_connection_then_the_device_retries() {
    let i = Instance::with_limits(|_| {}).await;
    let devices = enroll_devices(&i, "slow", 2).await;
    let ((id, key), (dropped, dropped_key)) = (&devices[0], &devices[1]);
    let fault = json!({"remaining": 1, "latencyMs": 600});
    let (status, _, body) = i
        .service_call("PUT", &format!("enrollments/{id}/testFault"), Some(fault))
        .await;
    assert_eq!(status, 200, "{body}");
    let started = Instant::now();
    let (status, _, body) = register(&i, id, key).await;
    assert!(matches!(status, 200 | 202), "{status} {body}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    register(&i, id, key).await;
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "the fault is spent"
    );

    // MQTT: the registration happens, the reply does not; the device's retry finds it assigned.
    let fault = json!({"remaining": 2, "dropConnection": true});
    let path = format!("enrollments/{dropped}/testFault");
    assert_eq!(i.service_call("PUT", &path, Some(fault)).await.0, 200);
    let mut events = i.state.bus.subscribe();
    let mut client = Client::device(&i, dropped, dropped_key).await;
    let topic = "$dps/registrations/PUT/iotdps-register/?$rid=1";
    let payload = format!(r#"{{"registrationId":"{dropped}"}}"#).into_bytes();
    let publish =
        rumqttc::mqttbytes::v4::Publish::new(topic, rumqttc::mqttbytes::QoS::AtMostOnce, payload);
    client
        .send(rumqttc::mqttbytes::v4::Packet::Publish(publish))
        .await;
    assert!(client.closed().await, "the connection is dropped");
    let event = event_of(&mut events, dropped).await;
    assert_eq!(event.status.as_str(), "assigned");
    assert!(event.fault.clone().unwrap().contains("connection dropped"));
    // HTTPS: the connection closes before a reply.
    let url = format!(
        "{}/{}/registrations/{dropped}/register?api-version=2019-03-31",
        i.url,
        i.scope()
    );
    let sent = i
        .client
        .put(url)
        .header("Authorization", i.token(dropped, dropped_key))
        .json(&json!({"registrationId": dropped}))
        .send()
        .await;
    let body = match sent {
        Ok(response) => response.text().await.err(),
        Err(e) => Some(e),
    };
    assert!(body.is_some(), "no reply arrives intact");
    let mut client = Client::device(&i, dropped, dropped_key).await;
    let (topic, body) = client.register("2", dropped).await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    assert_eq!(body["status"], "assigned", "{body}");
    assert_eq!(
        body["registrationState"]["deviceId"],
        dropped.as_str(),
        "{body}"
    );
    i.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_faults_touch_its_members_and_bad_faults_are_refused() {
    let i = Instance::with_limits(|_| {}).await;
    let group_key = random_key();
    enroll_group(
        i.store(),
        "line-9",
        symmetric_spec(&group_key, &random_key()),
    )
    .await;
    let path = "enrollmentGroups/line-9/testFault";
    for (bad, why) in [
        (json!({"remaining": 0, "errorCode": 429001}), "remaining"),
        (json!({"remaining": 1, "errorCode": 200}), "errorCode"),
        (json!({"remaining": 1}), "needs"),
        (
            json!({"remaining": 1, "errorCode": 429001, "dropConnection": true}),
            "dropConnection",
        ),
        (
            json!({"remaining": 1, "errorcode": 429001}),
            "unknown field",
        ),
    ] {
        let (status, _, body) = i.service_call("PUT", path, Some(bad)).await;
        assert_eq!(status, 400, "{body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{body}");
    }
    let (status, _, _) = i
        .service_call(
            "PUT",
            "enrollmentGroups/nobody/testFault",
            Some(json!({"remaining": 1, "errorCode": 429001})),
        )
        .await;
    assert_eq!(status, 404);

    let fault = json!({"remaining": 1, "errorCode": 429001});
    assert_eq!(i.service_call("PUT", path, Some(fault)).await.0, 200);
    let member = "line9-dev-1";
    let key = sas::derive_device_key(&group_key, member).unwrap();
    let (status, headers, body) = register(&i, member, &key).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["errorCode"], 429001, "{body}");
    assert_eq!(headers["retry-after"], "3");
    let (status, _, body) = register(&i, member, &key).await;
    assert!(matches!(status, 200 | 202), "{status} {body}");

    // Deleting the group deletes its fault: a new group of that name starts clean.
    assert_eq!(
        i.service_call("PUT", path, Some(json!({"remaining": 5, "latencyMs": 10})))
            .await
            .0,
        200
    );
    assert_eq!(
        i.service_call("DELETE", "enrollmentGroups/line-9", None)
            .await
            .0,
        204
    );
    enroll_group(
        i.store(),
        "line-9",
        symmetric_spec(&group_key, &random_key()),
    )
    .await;
    assert_eq!(i.service_call("GET", path, None).await.0, 404);
    i.finish().await;
}
