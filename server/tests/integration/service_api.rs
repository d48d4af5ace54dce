//! The service API's refusals and wire details, against the real domain and store (SQLite and
//! PostgreSQL): each bad request gets its status and Azure error body, and nothing is stored.

use chrono::{Duration, Utc};
use onramp::attestation::sas;
use onramp::domain::*;
use serde_json::{Value, json};

use crate::support::instance::{Instance, random_key};

crate::backend_suite!(
    refusals_store_nothing,
    rights_are_checked_per_operation,
    etags_and_paths,
    paging_headers,
    linked_hubs_and_allocation_settings,
    access_policies,
    the_openapi_document_matches_the_routes,
);

const HOST: &str = "localhost";

fn token(policy: &AccessPolicy, expiry: i64) -> String {
    sas::sign(&policy.primary_key, HOST, expiry as u64, Some(&policy.name)).unwrap()
}

fn owner_token(i: &Instance) -> String {
    token(
        &i.state.instance.owner_policy,
        Utc::now().timestamp() + 3600,
    )
}

async fn call(
    i: &Instance,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
    if_match: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = i
        .client
        .request(
            method.parse().unwrap(),
            format!("{}{path}?api-version=2021-10-01", i.url),
        )
        .header("Authorization", token);
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn enrollment_body(id: &str) -> String {
    json!({"registrationId": id, "attestation": {"type": "symmetricKey"}}).to_string()
}

fn assert_error(got: &(u16, reqwest::header::HeaderMap, Value), status: u16, code: i64) {
    assert_eq!(got.0, status, "{}", got.2);
    assert_eq!(got.2["errorCode"], code, "{}", got.2);
    assert_eq!(got.1["x-ms-error-code"].to_str().unwrap(), code.to_string());
    assert!(got.2["trackingId"].is_string() && got.2["timestampUtc"].is_string());
}

async fn refusals_store_nothing(i: &Instance) {
    let good = owner_token(i);
    let mut wrong = i.state.instance.owner_policy.clone();
    wrong.primary_key = random_key();
    let body = enrollment_body("dev-1");
    let wrong_key = call(
        i,
        "PUT",
        "/enrollments/dev-1",
        &token(&wrong, Utc::now().timestamp() + 60),
        Some(&body),
        None,
    )
    .await;
    assert_error(&wrong_key, 401, 401002);
    let expired = call(
        i,
        "PUT",
        "/enrollments/dev-1",
        &token(&i.state.instance.owner_policy, Utc::now().timestamp() - 5),
        Some(&body),
        None,
    )
    .await;
    assert_error(&expired, 401, 401002);
    assert!(expired.2["message"].as_str().unwrap().contains("expired"));
    let other_host = sas::sign(
        &i.state.instance.owner_policy.primary_key,
        "elsewhere.example",
        (Utc::now() + Duration::hours(1)).timestamp() as u64,
        Some(OWNER_POLICY),
    )
    .unwrap();
    assert_error(
        &call(
            i,
            "PUT",
            "/enrollments/dev-1",
            &other_host,
            Some(&body),
            None,
        )
        .await,
        401,
        401002,
    );
    assert_error(
        &call(i, "PUT", "/enrollments/dev-1", "garbage", Some(&body), None).await,
        401,
        401002,
    );

    assert_error(
        &call(
            i,
            "PUT",
            "/enrollments/dev-1",
            &good,
            Some("{\"registrationId\": "),
            None,
        )
        .await,
        400,
        400004,
    );
    let unknown =
        json!({"registrationId": "dev-1", "attestation": {"type": "password"}}).to_string();
    let got = call(i, "PUT", "/enrollments/dev-1", &good, Some(&unknown), None).await;
    assert_error(&got, 400, 400004);
    assert!(
        got.2["message"]
            .as_str()
            .unwrap()
            .contains("unknown attestation type"),
        "{}",
        got.2
    );
    assert_error(
        &call(
            i,
            "PUT",
            "/enrollments/-bad-",
            &good,
            Some(&enrollment_body("-bad-")),
            None,
        )
        .await,
        400,
        400004,
    );
    assert_error(
        &call(
            i,
            "PUT",
            "/enrollments/dev-1",
            &good,
            Some(&enrollment_body("dev-2")),
            None,
        )
        .await,
        400,
        400004,
    );
    let short_key = json!({"registrationId": "dev-1", "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "c2hvcnQ="}}}).to_string();
    assert_error(
        &call(
            i,
            "PUT",
            "/enrollments/dev-1",
            &good,
            Some(&short_key),
            None,
        )
        .await,
        400,
        400004,
    );
    let bulk = json!({"mode": "create", "enrollments": (0..11).map(|n| json!({"registrationId": format!("b{n}"), "attestation": {"type": "symmetricKey"}})).collect::<Vec<_>>()}).to_string();
    assert_error(
        &call(i, "POST", "/enrollments", &good, Some(&bulk), None).await,
        400,
        400004,
    );
    assert_error(
        &call(i, "DELETE", "/enrollments/nobody", &good, None, None).await,
        404,
        404201,
    );
    assert_error(
        &call(i, "GET", "/registrations/nobody", &good, None, None).await,
        404,
        404202,
    );

    assert_eq!(
        i.store().count_enrollments().await.unwrap(),
        0,
        "nothing stored by refused requests"
    );
}

async fn rights_are_checked_per_operation(i: &Instance) {
    let now = Utc::now();
    let reader = AccessPolicy {
        name: "reader".into(),
        rights: vec![Right::EnrollmentRead],
        primary_key: random_key(),
        secondary_key: random_key(),
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    let reader = i.store().put_policy(reader, IfMatch::Any).await.unwrap();
    let reader_token = token(&reader, now.timestamp() + 600);
    let body = enrollment_body("dev-r");
    let got = call(
        i,
        "PUT",
        "/enrollments/dev-r",
        &reader_token,
        Some(&body),
        None,
    )
    .await;
    assert_error(&got, 401, 401002);
    assert!(
        got.2["message"]
            .as_str()
            .unwrap()
            .contains("EnrollmentWrite"),
        "{}",
        got.2
    );
    assert!(i.store().get_enrollment("dev-r").await.unwrap().is_none());
    assert_eq!(
        call(
            i,
            "PUT",
            "/enrollments/dev-r",
            &owner_token(i),
            Some(&body),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(i, "GET", "/enrollments/dev-r", &reader_token, None, None)
            .await
            .0,
        200,
        "reading is allowed"
    );
    assert_error(
        &call(i, "GET", "/registrations/dev-r", &reader_token, None, None).await,
        401,
        401002,
    );
    let secondary = sas::sign(
        &reader.secondary_key,
        HOST,
        (now.timestamp() + 600) as u64,
        Some("reader"),
    )
    .unwrap();
    assert_eq!(
        call(
            i,
            "POST",
            "/enrollments/query",
            &secondary,
            Some("{\"query\":\"*\"}"),
            None
        )
        .await
        .0,
        200,
        "the secondary key works"
    );
}

async fn etags_and_paths(i: &Instance) {
    let t = owner_token(i);
    let (status, _, created) = call(
        i,
        "PUT",
        "/Enrollments/Dev-E",
        &t,
        Some(&enrollment_body("Dev-E")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let etag = created["etag"].as_str().unwrap().to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "quoted etag: {etag}"
    );
    let keys = &created["attestation"]["symmetricKey"];
    assert!(
        keys["primaryKey"].is_string() && keys["secondaryKey"].is_string(),
        "PUT returns generated keys"
    );
    let (_, _, read) = call(i, "GET", "/ENROLLMENTS/dev-e/", &t, None, None).await;
    assert_eq!(read["registrationId"], "Dev-E");
    assert!(
        read["attestation"]["symmetricKey"]
            .get("primaryKey")
            .is_none(),
        "GET leaves keys out"
    );
    let (_, _, mechanism) = call(
        i,
        "POST",
        "/enrollments/dev-e/AttestationMechanism",
        &t,
        None,
        None,
    )
    .await;
    assert_eq!(mechanism["symmetricKey"]["primaryKey"], keys["primaryKey"]);

    assert_error(
        &call(
            i,
            "PUT",
            "/enrollments/Dev-E",
            &t,
            Some(&enrollment_body("Dev-E")),
            Some("\"stale\""),
        )
        .await,
        412,
        412001,
    );
    assert_error(
        &call(
            i,
            "PUT",
            "/enrollments/new-one",
            &t,
            Some(&enrollment_body("new-one")),
            Some("*"),
        )
        .await,
        412,
        412001,
    );
    let (status, _, updated) = call(
        i,
        "PUT",
        "/enrollments/Dev-E",
        &t,
        Some(&enrollment_body("Dev-E")),
        Some(&etag),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        updated["attestation"]["symmetricKey"]["primaryKey"], keys["primaryKey"],
        "keys kept on update"
    );
    assert_eq!(
        call(
            i,
            "PUT",
            "/enrollments/Dev-E",
            &t,
            Some(&enrollment_body("Dev-E")),
            Some("*")
        )
        .await
        .0,
        200
    );
    assert_error(
        &call(i, "DELETE", "/enrollments/Dev-E", &t, None, Some(&etag)).await,
        412,
        412001,
    );
    let (status, _, body) = call(i, "DELETE", "/enrollments/Dev-E", &t, None, Some("*")).await;
    assert_eq!(status, 204, "{body}");
}

async fn paging_headers(i: &Instance) {
    let t = owner_token(i);
    for n in 0..5 {
        let id = format!("page-{n}");
        assert_eq!(
            call(
                i,
                "PUT",
                &format!("/enrollments/{id}"),
                &t,
                Some(&enrollment_body(&id)),
                None
            )
            .await
            .0,
            200
        );
    }
    let mut seen = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut request = i
            .client
            .post(format!("{}/enrollments/query", i.url))
            .header("Authorization", &t)
            .header("x-ms-max-item-count", "2")
            .body("{\"query\":\"SELECT * FROM enrollments\"}");
        if let Some(c) = &continuation {
            request = request.header("x-ms-continuation", c);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.headers()["x-ms-item-type"], "Enrollment");
        assert_eq!(response.headers()["x-ms-max-item-count"], "2");
        continuation = response
            .headers()
            .get("x-ms-continuation")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = response.json().await.unwrap();
        assert!(page.len() <= 2);
        seen.extend(
            page.into_iter()
                .map(|e| e["registrationId"].as_str().unwrap().to_string()),
        );
        if continuation.is_none() {
            break;
        }
    }
    assert_eq!(
        seen,
        (0..5).map(|n| format!("page-{n}")).collect::<Vec<_>>()
    );
    let bad = i
        .client
        .post(format!("{}/enrollments/query", i.url))
        .header("Authorization", &t)
        .header("x-ms-continuation", "%%%")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

async fn linked_hubs_and_allocation_settings(i: &Instance) {
    let t = owner_token(i);
    let body =
        json!({"region": "eu", "allocationWeight": 3, "applyAllocationPolicy": false}).to_string();
    let (status, _, hub) = call(
        i,
        "PUT",
        "/linkedHubs/hub-x.localhost",
        &t,
        Some(&body),
        None,
    )
    .await;
    assert_eq!(status, 200, "{hub}");
    assert_eq!(
        hub,
        json!({"hostName": "hub-x.localhost", "connector": "builtIn", "region": "eu", "allocationWeight": 3, "applyAllocationPolicy": false, "devices": 0})
    );
    let (_, _, hubs) = call(i, "GET", "/linkedHubs", &t, None, None).await;
    let names: Vec<&str> = hubs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["hostName"].as_str())
        .collect();
    assert_eq!(names, ["hub-x.localhost", "localhost"]);
    for bad in [
        json!({"allocationWeight": 0}),
        json!({"connector": "mqtt"}),
        json!({"weight": 2}),
    ] {
        assert_error(
            &call(
                i,
                "PUT",
                "/linkedHubs/hub-y.localhost",
                &t,
                Some(&bad.to_string()),
                None,
            )
            .await,
            400,
            400004,
        );
    }
    assert_error(
        &call(i, "PUT", "/linkedHubs/bad_host!", &t, Some("{}"), None).await,
        400,
        400004,
    );
    assert!(
        i.store()
            .get_hub("hub-y.localhost")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        call(i, "DELETE", "/linkedHubs/hub-x.localhost", &t, None, None)
            .await
            .0,
        204
    );
    assert_error(
        &call(i, "DELETE", "/linkedHubs/hub-x.localhost", &t, None, None).await,
        404,
        404004,
    );

    let settings = json!({"defaultPolicy": "geoLatency", "regionMap": [{"cidr": "10.0.0.0/8", "region": "eu"}]});
    let (status, _, stored) = call(
        i,
        "PUT",
        "/allocationSettings",
        &t,
        Some(&settings.to_string()),
        None,
    )
    .await;
    assert_eq!((status, &stored), (200, &settings));
    assert_eq!(
        call(i, "GET", "/allocationSettings", &t, None, None)
            .await
            .2,
        settings
    );
    let custom = json!({"defaultPolicy": "custom"}).to_string();
    assert_error(
        &call(i, "PUT", "/allocationSettings", &t, Some(&custom), None).await,
        400,
        400004,
    );
    let bad_cidr =
        json!({"defaultPolicy": "hashed", "regionMap": [{"cidr": "10.0.0.0/99", "region": "eu"}]})
            .to_string();
    assert_error(
        &call(i, "PUT", "/allocationSettings", &t, Some(&bad_cidr), None).await,
        400,
        400004,
    );
    assert_eq!(
        call(i, "GET", "/allocationSettings", &t, None, None)
            .await
            .2,
        settings,
        "refused changes store nothing"
    );
}

async fn access_policies(i: &Instance) {
    let t = owner_token(i);
    let body = json!({"rights": ["EnrollmentRead", "RegistrationStatusRead"]}).to_string();
    let (status, _, policy) =
        call(i, "PUT", "/accessPolicies/auditor", &t, Some(&body), None).await;
    assert_eq!(status, 200, "{policy}");
    assert_eq!(
        policy["rights"],
        json!(["EnrollmentRead", "RegistrationStatusRead"])
    );
    let conn = policy["connectionString"].as_str().unwrap();
    assert!(conn.starts_with("HostName=localhost;SharedAccessKeyName=auditor;SharedAccessKey="));
    let (_, _, listed) = call(i, "GET", "/accessPolicies", &t, None, None).await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("primaryKey").is_none()),
        "lists leave keys out"
    );

    // The new policy works for what it may do, and a re-keyed key stops working.
    let stored = i.store().get_policy("auditor").await.unwrap().unwrap();
    let auditor = token(&stored, Utc::now().timestamp() + 600);
    assert_eq!(
        call(i, "POST", "/enrollments/query", &auditor, Some("{}"), None)
            .await
            .0,
        200
    );
    assert_error(
        &call(i, "GET", "/accessPolicies", &auditor, None, None).await,
        401,
        401002,
    );
    let (_, _, rekeyed) = call(
        i,
        "POST",
        "/accessPolicies/auditor/regenerateKey",
        &t,
        Some("{\"key\":\"primary\"}"),
        None,
    )
    .await;
    assert_ne!(rekeyed["primaryKey"], policy["primaryKey"]);
    assert_eq!(rekeyed["secondaryKey"], policy["secondaryKey"]);
    assert_error(
        &call(i, "POST", "/enrollments/query", &auditor, Some("{}"), None).await,
        401,
        401002,
    );

    assert_error(
        &call(
            i,
            "PUT",
            "/accessPolicies/bad",
            &t,
            Some("{\"rights\":[\"Everything\"]}"),
            None,
        )
        .await,
        400,
        400004,
    );
    assert_eq!(
        call(i, "DELETE", "/accessPolicies/auditor", &t, None, None)
            .await
            .0,
        204
    );
    let last = call(
        i,
        "DELETE",
        &format!("/accessPolicies/{OWNER_POLICY}"),
        &t,
        None,
        None,
    )
    .await;
    assert_error(&last, 400, 400004);
    assert!(last.2["message"].as_str().unwrap().contains("last policy"));
}

/// Routes declared in the API sources, as (method, path): every `.route("path", get(..).put(..))`.
fn declared_routes() -> Vec<(String, String)> {
    let sources = [
        include_str!("../../src/transport/service_api.rs"),
        include_str!("../../src/transport/admin_api.rs"),
        include_str!("../../src/transport/hub_api.rs"),
    ];
    let mut routes = Vec::new();
    for source in sources {
        let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
        for part in compact.split(".route(\"").skip(1) {
            let (path, rest) = part.split_once('"').unwrap();
            let call = rest
                .split(".route(")
                .next()
                .unwrap()
                .split(".with_state")
                .next()
                .unwrap();
            for method in ["get", "put", "post", "delete", "patch"] {
                if call.starts_with(&format!(",{method}("))
                    || call.contains(&format!(").{method}("))
                {
                    routes.push((method.to_string(), path.to_string()));
                }
            }
        }
    }
    routes.sort();
    routes
}

async fn the_openapi_document_matches_the_routes(i: &Instance) {
    let document: Value = i
        .client
        .get(format!("{}/openapi.json", i.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.0.3");
    let mut documented = Vec::new();
    for (path, operations) in document["paths"].as_object().unwrap() {
        for method in operations.as_object().unwrap().keys() {
            documented.push((method.clone(), path.clone()));
        }
    }
    documented.sort();
    let declared = declared_routes();
    assert!(
        declared.len() >= 20,
        "the source scan found the routes: {declared:?}"
    );
    assert_eq!(
        documented, declared,
        "the OpenAPI document and the routes differ"
    );

    // Every documented operation is routed on a live instance: an answer from a handler (2xx or an
    // Azure error body), never the router's bare 404 or 405.
    let t = owner_token(i);
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", "nothing-here")
            .replace("{host}", "nothing.localhost")
            .replace("{name}", "nothing");
        let (status, _, body) =
            call(i, &method.to_uppercase(), &concrete, &t, Some("{}"), None).await;
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            status < 400 || body["errorCode"].is_i64(),
            "{method} {path} is not routed: {status} {body}"
        );
    }
}
