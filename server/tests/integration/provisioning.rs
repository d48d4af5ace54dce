//! The HTTPS device API against the real domain and store: assignment, polling, group keys,
//! reprovisioning, custom allocation, refusals and diagnostics events. Every case runs on SQLite
//! and on PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use onramp::attestation::sas;
use onramp::diagnostics::Protocol;
use onramp::model::*;
use serde_json::{Value, json};

use crate::support::HUB;
use crate::support::instance::{Instance, enroll, enroll_group, random_key, symmetric_spec};
use crate::support::webhook::{slow_webhook, webhook};

crate::backend_suite!(
    an_individual_enrollment_is_assigned_in_the_register_reply,
    group_devices_use_derived_keys,
    an_individual_enrollment_overrides_its_group,
    a_disabled_enrollment_ends_disabled,
    refusals_carry_the_azure_error_body,
    reprovisioning_follows_the_policy,
    custom_allocation_uses_the_webhook,
    failing_webhooks_fail_the_registration,
    a_slow_webhook_answers_assigning_and_the_poll_finishes,
    static_and_geo_allocation,
    every_attempt_emits_one_event,
    any_instance_answers_a_poll,
    old_operations_are_swept,
);

async fn an_individual_enrollment_is_assigned_in_the_register_reply(i: &Instance) {
    let (primary, secondary) = (random_key(), random_key());
    enroll(
        i.store(),
        "Device-001",
        Some("thermostat-1"),
        symmetric_spec(&primary, &secondary),
    )
    .await;
    let (status, headers, body) = i
        .register(
            "Device-001",
            &primary,
            json!({"registrationId": "Device-001"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(headers["retry-after"], "1");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(body["status"], "assigned", "{body}");
    let state = &body["registrationState"];
    assert_eq!(state["assignedHub"], HUB);
    assert_eq!(state["deviceId"], "thermostat-1");
    assert_eq!(state["substatus"], "initialAssignment");
    assert_eq!(state["registrationId"], "Device-001");
    assert!(state["createdDateTimeUtc"].as_str().unwrap().ends_with('Z'));

    let operation_id = body["operationId"].as_str().unwrap();
    let token = i.token("Device-001", &primary);
    let (status, _, polled) = i
        .request(
            "GET",
            &format!("registrations/Device-001/operations/{operation_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(polled, body, "the poll answers the same final state");

    // The secondary key works too, and the status lookup returns the record.
    let token = i.token("Device-001", &secondary);
    let (status, _, record) = i
        .request(
            "POST",
            "registrations/Device-001",
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["assignedHub"], HUB);
    assert_eq!(record["status"], "assigned");

    let device = i
        .store()
        .get_hub_device(HUB, "thermostat-1")
        .await
        .unwrap()
        .expect("identity on the hub");
    assert_eq!(device.desired.properties["telemetryInterval"], 30);
    assert_eq!(device.tags["site"], "plant-7");
    assert_eq!(
        device.auth,
        DeviceAuth::Sas {
            primary_key: primary,
            secondary_key: secondary
        }
    );
    let stored = i
        .store()
        .get_registration("device-001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, RegistrationStatus::Assigned);
    assert_eq!(stored.substatus, Some(Substatus::InitialAssignment));
}

async fn group_devices_use_derived_keys(i: &Instance) {
    let group_key = random_key();
    enroll_group(
        i.store(),
        "floor-3",
        symmetric_spec(&group_key, &random_key()),
    )
    .await;
    for device in ["sensor-a", "sensor-b"] {
        let key = sas::derive_device_key(&group_key, device).unwrap();
        let (status, _, body) = i
            .register(device, &key, json!({"registrationId": device}))
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (202, Some("assigned")),
            "{body}"
        );
        assert_eq!(body["registrationState"]["deviceId"], device);
        assert_eq!(
            body["registrationState"]["symmetricKey"]["enrollmentGroupId"],
            "floor-3"
        );
        let identity = i
            .store()
            .get_hub_device(HUB, device)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(identity.auth, DeviceAuth::Sas { ref primary_key, .. } if *primary_key == key)
        );
        let record = i.store().get_registration(device).await.unwrap().unwrap();
        assert_eq!(record.enrollment, EnrollmentRef::Group("floor-3".into()));
    }
    // The group key itself is not a device key.
    let (status, _, _) = i.register("sensor-c", &group_key, json!({})).await;
    assert_eq!(status, 401);
}

async fn an_individual_enrollment_overrides_its_group(i: &Instance) {
    let group_key = random_key();
    enroll_group(
        i.store(),
        "fleet",
        symmetric_spec(&group_key, &random_key()),
    )
    .await;
    let mut revoked = symmetric_spec(&random_key(), &random_key());
    revoked.provisioning_status = ProvisioningStatus::Disabled;
    enroll(i.store(), "stolen-1", None, revoked).await;
    let derived = sas::derive_device_key(&group_key, "stolen-1").unwrap();
    let (status, _, body) = i.register("stolen-1", &derived, json!({})).await;
    assert_eq!(
        status, 401,
        "the group key no longer admits a device with its own enrollment: {body}"
    );
}

async fn a_disabled_enrollment_ends_disabled(i: &Instance) {
    let key = random_key();
    let mut spec = symmetric_spec(&key, &random_key());
    spec.provisioning_status = ProvisioningStatus::Disabled;
    enroll(i.store(), "off-1", None, spec).await;
    let (status, _, body) = i.register("off-1", &key, json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(body["status"], "disabled", "{body}");
    assert!(body["registrationState"]["assignedHub"].is_null());
    assert!(
        i.store()
            .get_hub_device(HUB, "off-1")
            .await
            .unwrap()
            .is_none(),
        "nothing assigned"
    );
    assert_eq!(
        i.store()
            .get_registration("off-1")
            .await
            .unwrap()
            .unwrap()
            .status,
        RegistrationStatus::Disabled
    );
}

fn assert_azure_error(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    body: &Value,
    want_status: u16,
    want_code: i64,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["errorCode"], want_code, "{body}");
    assert_eq!(
        headers["x-ms-error-code"].to_str().unwrap(),
        want_code.to_string()
    );
    assert!(uuid::Uuid::parse_str(body["trackingId"].as_str().unwrap()).is_ok());
    assert!(!body["message"].as_str().unwrap().is_empty());
    let ts = body["timestampUtc"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
}

async fn refusals_carry_the_azure_error_body(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "dev-1",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;

    let (s, h, b) = i.register("dev-1", &random_key(), json!({})).await;
    assert_azure_error(s, &h, &b, 401, 401002);
    assert_eq!(b["message"], "Unauthorized");

    let resource = format!("{}/registrations/dev-1", i.scope());
    let expired = sas::sign(&key, &resource, Utc::now().timestamp() as u64 - 10, None).unwrap();
    let (s, h, b) = i
        .request(
            "PUT",
            "registrations/dev-1/register",
            Some(&expired),
            Some(json!({})),
        )
        .await;
    assert_azure_error(s, &h, &b, 401, 401002);
    assert!(b["message"].as_str().unwrap().contains("expired"));

    let (s, h, b) = i
        .request("PUT", "registrations/dev-1/register", None, Some(json!({})))
        .await;
    assert_azure_error(s, &h, &b, 401, 401002);
    let (s, h, b) = i.register("nobody", &key, json!({})).await;
    assert_azure_error(s, &h, &b, 401, 401002);

    let url = format!("{}/0ne00000000/registrations/dev-1/register", i.url);
    let response = i
        .client
        .put(url)
        .header("Authorization", i.token("dev-1", &key))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (s, h) = (response.status().as_u16(), response.headers().clone());
    assert_azure_error(s, &h, &response.json().await.unwrap(), 404, 404001);

    let (s, h, b) = i.register("-bad-id", &key, json!({})).await;
    assert_azure_error(s, &h, &b, 400, 400004);
    let (s, h, b) = i
        .register("dev-1", &key, json!({"registrationId": "dev-2"}))
        .await;
    assert_azure_error(s, &h, &b, 400, 400004);
    let url = format!("{}/{}/registrations/dev-1/register", i.url, i.scope());
    let token = i.token("dev-1", &key);
    let malformed = i
        .client
        .put(&url)
        .header("Authorization", &token)
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (s, h) = (malformed.status().as_u16(), malformed.headers().clone());
    assert_azure_error(s, &h, &malformed.json().await.unwrap(), 400, 400004);
    let huge = json!({"registrationId": "dev-1", "payload": "x".repeat(100 * 1024)});
    let (s, h, b) = i.register("dev-1", &key, huge).await;
    assert_azure_error(s, &h, &b, 413, 413001);

    let (s, h, b) = i
        .request(
            "GET",
            "registrations/dev-1/operations/4.0.nope",
            Some(&token),
            None,
        )
        .await;
    assert_azure_error(s, &h, &b, 404, 404202);
    assert!(
        i.store().get_registration("dev-1").await.unwrap().is_none(),
        "refusals store nothing"
    );

    // Bodies that Azure clients send are accepted: none at all, `payload: null`, Content-Encoding.
    let empty = i
        .client
        .put(&url)
        .header("Authorization", &token)
        .header("Content-Encoding", "utf-8")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), 202);
    let (s, _, _) = i
        .register(
            "dev-1",
            &key,
            json!({"registrationId": "DEV-1", "payload": null}),
        )
        .await;
    assert_eq!(s, 202);
}

async fn reprovisioning_follows_the_policy(i: &Instance) {
    i.link_hub("hub-a.localhost", 1, None, true).await;
    i.link_hub("hub-b.localhost", 1, None, true).await;
    let key = random_key();
    let mut spec = symmetric_spec(&key, &random_key());
    spec.iot_hubs = vec!["hub-a.localhost".into()];
    enroll(i.store(), "mover", None, spec.clone()).await;
    let (_, _, body) = i.register("mover", &key, json!({})).await;
    assert_eq!(
        body["registrationState"]["assignedHub"], "hub-a.localhost",
        "{body}"
    );
    report(i, "hub-a.localhost", "mover", json!({"firmware": "1.0"})).await;

    // Migrate: the device moves to hub-b with its twin; hub-a forgets it.
    spec.iot_hubs = vec!["hub-b.localhost".into()];
    enroll(i.store(), "mover", None, spec.clone()).await;
    let (_, _, body) = i.register("mover", &key, json!({})).await;
    assert_eq!(
        body["registrationState"]["assignedHub"], "hub-b.localhost",
        "{body}"
    );
    assert_eq!(body["registrationState"]["substatus"], "deviceDataMigrated");
    let moved = i
        .store()
        .get_hub_device("hub-b.localhost", "mover")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        moved.reported.properties["firmware"], "1.0",
        "reported state migrated"
    );
    assert!(
        i.store()
            .get_hub_device("hub-a.localhost", "mover")
            .await
            .unwrap()
            .is_none()
    );

    // Reset: back to hub-a with the enrollment's initial twin only.
    spec.iot_hubs = vec!["hub-a.localhost".into()];
    spec.reprovision_policy = ReprovisionPolicy {
        update_hub_assignment: true,
        migrate_device_data: false,
    };
    spec.initial_twin
        .as_mut()
        .unwrap()
        .desired
        .insert("telemetryInterval".into(), json!(5));
    enroll(i.store(), "mover", None, spec.clone()).await;
    let (_, _, body) = i.register("mover", &key, json!({})).await;
    assert_eq!(body["registrationState"]["assignedHub"], "hub-a.localhost");
    assert_eq!(body["registrationState"]["substatus"], "deviceDataReset");
    let reset = i
        .store()
        .get_hub_device("hub-a.localhost", "mover")
        .await
        .unwrap()
        .unwrap();
    assert!(reset.reported.properties.is_empty(), "reported state reset");
    assert_eq!(reset.desired.properties["telemetryInterval"], 5);
    assert!(
        i.store()
            .get_hub_device("hub-b.localhost", "mover")
            .await
            .unwrap()
            .is_none()
    );

    // Never: the device stays where it is, twin untouched, whatever the enrollment now says.
    report(i, "hub-a.localhost", "mover", json!({"firmware": "2.0"})).await;
    spec.iot_hubs = vec!["hub-b.localhost".into()];
    spec.reprovision_policy = ReprovisionPolicy {
        update_hub_assignment: false,
        migrate_device_data: false,
    };
    enroll(i.store(), "mover", None, spec).await;
    let (_, _, body) = i.register("mover", &key, json!({})).await;
    assert_eq!(body["registrationState"]["assignedHub"], "hub-a.localhost");
    assert_eq!(
        body["registrationState"]["substatus"],
        "reprovisionedToInitialAssignment"
    );
    let kept = i
        .store()
        .get_hub_device("hub-a.localhost", "mover")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(kept.reported.properties["firmware"], "2.0");

    // A deleted record means the next registration starts fresh.
    i.store()
        .delete_registration("mover", IfMatch::Any, &[])
        .await
        .unwrap();
    let (_, _, body) = i.register("mover", &key, json!({})).await;
    assert_eq!(body["registrationState"]["substatus"], "initialAssignment");
}

async fn report(i: &Instance, hub: &str, device: &str, reported: Value) {
    let mut d = i
        .store()
        .get_hub_device(hub, device)
        .await
        .unwrap()
        .unwrap();
    d.reported.properties = reported.as_object().unwrap().clone();
    d.reported.version += 1;
    i.store().put_hub_device(d, IfMatch::Any).await.unwrap();
}

fn custom_spec(key: &str, url: &str) -> EnrollmentSpec {
    let mut spec = symmetric_spec(key, &random_key());
    spec.allocation_policy = Some(AllocationPolicy::Custom);
    spec.custom_allocation = Some(CustomAllocationDefinition {
        webhook_url: url.into(),
        api_version: "2019-03-31".into(),
    });
    spec
}

async fn custom_allocation_uses_the_webhook(i: &Instance) {
    i.link_hub("hub-b.localhost", 1, None, true).await;
    let reply = json!({
        "iotHubHostName": "hub-b.localhost",
        "initialTwin": {"tags": {"from": "webhook"}, "properties": {"desired": {"mode": "eco"}}},
        "payload": {"greeting": "hello device"}
    });
    let (url, seen) = webhook(200, reply).await;
    let key = random_key();
    enroll(i.store(), "custom-1", None, custom_spec(&key, &url)).await;
    let (status, _, body) = i
        .register(
            "custom-1",
            &key,
            json!({"registrationId": "custom-1", "payload": {"model": "m1"}}),
        )
        .await;
    assert_eq!(status, 202);
    let state = &body["registrationState"];
    assert_eq!(state["assignedHub"], "hub-b.localhost", "{body}");
    assert_eq!(state["payload"], json!({"greeting": "hello device"}));
    let twin = i
        .store()
        .get_hub_device("hub-b.localhost", "custom-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twin.tags["from"], "webhook");
    assert_eq!(twin.desired.properties["mode"], "eco");

    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(
        request["deviceRuntimeContext"]["registrationId"],
        "custom-1"
    );
    assert_eq!(
        request["deviceRuntimeContext"]["payload"],
        json!({"model": "m1"})
    );
    assert_eq!(
        request["individualEnrollment"]["registrationId"],
        "custom-1"
    );
    assert!(
        !request.to_string().contains(&key),
        "keys never go to the webhook"
    );
    let hubs: Vec<&str> = request["linkedHubs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        hubs.contains(&"hub-b.localhost") && hubs.contains(&HUB),
        "{hubs:?}"
    );

    // Re-registration tells the webhook where the device is now.
    i.register("custom-1", &key, json!({})).await;
    let again = seen.lock().unwrap()[1].clone();
    assert_eq!(
        again["deviceRuntimeContext"]["currentIotHubHostName"],
        "hub-b.localhost"
    );
    assert_eq!(again["deviceRuntimeContext"]["currentDeviceId"], "custom-1");
}

async fn failing_webhooks_fail_the_registration(i: &Instance) {
    let (url, _) = webhook(500, json!({"error": "boom"})).await;
    let key = random_key();
    enroll(i.store(), "custom-2", None, custom_spec(&key, &url)).await;
    let (status, _, body) = i.register("custom-2", &key, json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(body["status"], "failed", "{body}");
    assert_eq!(body["registrationState"]["errorCode"], 400207);
    assert_eq!(
        body["registrationState"]["errorMessage"],
        "Custom allocation failed with status code: 500"
    );
    let record = i
        .store()
        .get_registration("custom-2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.status, record.error_code),
        (RegistrationStatus::Failed, Some(400207))
    );

    let (url, _) = webhook(200, json!({"iotHubHostName": "elsewhere.example"})).await;
    enroll(i.store(), "custom-3", None, custom_spec(&key, &url)).await;
    let (_, _, body) = i.register("custom-3", &key, json!({})).await;
    assert_eq!(body["registrationState"]["errorCode"], 400208, "{body}");

    enroll(
        i.store(),
        "custom-4",
        None,
        custom_spec(&key, "http://127.0.0.1:9/unreachable"),
    )
    .await;
    let (_, _, body) = i.register("custom-4", &key, json!({})).await;
    assert_eq!(body["registrationState"]["errorCode"], 400207, "{body}");
    assert!(
        !body.to_string().contains("code="),
        "webhook keys stay out of messages"
    );
}

/// The instance waits 500 ms inline and gives the webhook 2 s.
async fn a_slow_webhook_answers_assigning_and_the_poll_finishes(i: &Instance) {
    let reply = json!({"iotHubHostName": HUB, "payload": {"late": true}});
    let (url, _) = slow_webhook(200, reply, Duration::from_millis(1200)).await;
    let key = random_key();
    enroll(i.store(), "slow-1", None, custom_spec(&key, &url)).await;
    let (status, headers, body) = i.register("slow-1", &key, json!({})).await;
    assert_eq!(status, 202);
    assert_eq!(body["status"], "assigning", "{body}");
    assert_eq!(body["registrationState"]["status"], "assigning");
    assert_eq!(headers["retry-after"], "1");
    let operation_id = body["operationId"].as_str().unwrap();
    let token = i.token("slow-1", &key);
    let path = format!("registrations/slow-1/operations/{operation_id}");
    let (status, headers, polled) = i.request("GET", &path, Some(&token), None).await;
    assert_eq!(
        (status, polled["status"].as_str()),
        (202, Some("assigning")),
        "{polled}"
    );
    assert_eq!(headers["retry-after"], "1");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, polled) = i.request("GET", &path, Some(&token), None).await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(
        polled["registrationState"]["payload"],
        json!({"late": true})
    );

    // Past its timeout the webhook has failed the registration.
    let (url, _) = slow_webhook(200, json!({"iotHubHostName": HUB}), Duration::from_secs(4)).await;
    enroll(i.store(), "slow-2", None, custom_spec(&key, &url)).await;
    let (_, _, body) = i.register("slow-2", &key, json!({})).await;
    let operation_id = body["operationId"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let token = i.token("slow-2", &key);
    let (status, _, polled) = i
        .request(
            "GET",
            &format!("registrations/slow-2/operations/{operation_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["status"], "failed");
    assert_eq!(polled["registrationState"]["errorCode"], 400207);
    assert!(
        polled["registrationState"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{polled}"
    );
}

async fn static_and_geo_allocation(i: &Instance) {
    i.link_hub("eu.localhost", 1, Some("eu"), true).await;
    i.link_hub("local.localhost", 1, Some("loopback"), true)
        .await;
    i.link_hub("spare.localhost", 1, None, false).await;
    let key = random_key();
    let mut spec = symmetric_spec(&key, &random_key());
    spec.allocation_policy = Some(AllocationPolicy::Static);
    spec.iot_hubs = vec!["spare.localhost".into()];
    enroll(i.store(), "static-1", None, spec.clone()).await;
    let (_, _, body) = i.register("static-1", &key, json!({})).await;
    assert_eq!(
        body["registrationState"]["assignedHub"], "spare.localhost",
        "an enrollment may name a non-allocating hub"
    );

    spec.iot_hubs = vec![];
    enroll(i.store(), "static-2", None, spec.clone()).await;
    let (_, _, body) = i.register("static-2", &key, json!({})).await;
    assert_eq!(
        body["status"], "failed",
        "static needs exactly one hub: {body}"
    );
    assert_eq!(body["registrationState"]["errorCode"], 400208);

    i.store()
        .put_setting(
            setting::REGION_MAP,
            r#"[["127.0.0.0/8","loopback"],["10.0.0.0/8","eu"]]"#,
        )
        .await
        .unwrap();
    i.state.provisioner.invalidate();
    spec.allocation_policy = Some(AllocationPolicy::GeoLatency);
    for n in 0..5 {
        let id = format!("geo-{n}");
        enroll(i.store(), &id, None, spec.clone()).await;
        let (_, _, body) = i.register(&id, &key, json!({})).await;
        assert_eq!(
            body["registrationState"]["assignedHub"], "local.localhost",
            "{body}"
        );
    }
}

async fn every_attempt_emits_one_event(i: &Instance) {
    let mut events = i.state.bus.subscribe();
    let key = random_key();
    enroll(
        i.store(),
        "watched",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    i.register("watched", &key, json!({})).await;
    i.register("watched", &random_key(), json!({})).await;
    i.register("watched", &key, json!({"payload": "x".repeat(100 * 1024)}))
        .await;
    let mut events_seen = Vec::new();
    for _ in 0..3 {
        events_seen.push(
            tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let ok = &events_seen[0];
    assert_eq!(ok.registration_id, "watched");
    assert_eq!(ok.protocol, Protocol::Https);
    assert_eq!(ok.status, RegistrationStatus::Assigned);
    assert_eq!(ok.hub.as_deref(), Some(HUB));
    assert_eq!(ok.attestation, Some(AttestationKind::SymmetricKey));
    assert_eq!(
        ok.enrollment,
        Some(EnrollmentRef::Individual("watched".into()))
    );
    assert!(ok.latency_ms < 5_000);
    let wrong_key = &events_seen[1];
    assert_eq!(
        (wrong_key.status, wrong_key.error_code),
        (RegistrationStatus::Failed, Some(401002))
    );
    assert!(
        wrong_key
            .error_message
            .as_deref()
            .unwrap()
            .contains("matches no key"),
        "the event says why"
    );
    assert_eq!(events_seen[2].error_code, Some(413001));
    assert!(events.try_recv().is_err(), "exactly one event per attempt");
}

async fn any_instance_answers_a_poll(i: &Instance) {
    let other = i.sibling().await;
    let key = random_key();
    enroll(
        i.store(),
        "roamer",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let (_, _, body) = i.register("roamer", &key, json!({})).await;
    let operation_id = body["operationId"].as_str().unwrap();
    let token = other.token("roamer", &key);
    let (status, _, polled) = other
        .request(
            "GET",
            &format!("registrations/roamer/operations/{operation_id}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{polled}");
    assert_eq!(polled["registrationState"]["assignedHub"], HUB);
    other.finish().await;
}

async fn old_operations_are_swept(i: &Instance) {
    let key = random_key();
    enroll(
        i.store(),
        "sweepme",
        None,
        symmetric_spec(&key, &random_key()),
    )
    .await;
    let (_, _, body) = i.register("sweepme", &key, json!({})).await;
    let path = format!(
        "registrations/sweepme/operations/{}",
        body["operationId"].as_str().unwrap()
    );
    let token = i.token("sweepme", &key);
    let retention = Duration::from_secs(3600);
    let now = Utc::now();
    let swept = onramp::janitor::sweep(i.store().as_ref(), now, retention)
        .await
        .unwrap();
    assert_eq!(swept.operations, 0, "a fresh operation stays");
    assert_eq!(i.request("GET", &path, Some(&token), None).await.0, 200);
    let later = now + chrono::Duration::hours(2);
    let challenge = TpmChallenge {
        registration_id: "sweepme-tpm".into(),
        hmac_key: vec![1; 32],
        storage_root_key: vec![9; 284],
        expires: now + chrono::Duration::minutes(10),
    };
    i.store().put_tpm_challenge(&challenge).await.unwrap();
    let swept = onramp::janitor::sweep(i.store().as_ref(), later, retention)
        .await
        .unwrap();
    assert_eq!((swept.operations, swept.tpm_challenges), (1, 1));
    let (status, _, gone) = i.request("GET", &path, Some(&token), None).await;
    assert_eq!((status, &gone["errorCode"]), (404, &json!(404202)));
    assert!(
        i.store()
            .get_registration("sweepme")
            .await
            .unwrap()
            .is_some(),
        "the record stays"
    );
}

/// A registration still in flight when the server is told to stop finishes in the grace period,
/// and its diagnostics event is stored before the store closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_keeps_the_event_of_a_registration_in_flight() {
    use crate::support::instance::Backend;
    let mut i = Instance::start(Backend::Sqlite).await.unwrap();
    let (url, _) = slow_webhook(
        200,
        json!({"iotHubHostName": HUB}),
        Duration::from_millis(300),
    )
    .await;
    let key = random_key();
    enroll(i.store(), "late-1", None, custom_spec(&key, &url)).await;
    let (registered, ()) = tokio::join!(i.register("late-1", &key, json!({})), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        i.begin_shutdown();
    });
    assert_eq!(
        (registered.0, registered.2["status"].as_str()),
        (202, Some("assigned"))
    );
    let database_url = i.database_url.clone();
    i.stop().await;
    let store = onramp::store::open(&database_url, 1).await.unwrap();
    let minutes = store
        .registration_minutes(chrono::Utc::now() - chrono::Duration::hours(1))
        .await
        .unwrap();
    let recorded: u64 = minutes.iter().map(|m| m.count).sum();
    assert_eq!(
        recorded, 1,
        "the event of the registration in flight was stored"
    );
    store.close().await;
    i.finish().await;
}
