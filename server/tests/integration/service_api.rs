//! The service API's refusals and wire details, against the real domain and store (SQLite and
//! PostgreSQL): each bad request gets its status and Azure error body, and nothing is stored.

use chrono::{Duration, Utc};
use onramp::attestation::sas;
use onramp::model::*;
use serde_json::{Value, json};

use crate::support::HUB;
use crate::support::instance::{Instance, random_key, registration_record};
use crate::support::webhook::webhook;

crate::backend_suite!(
    refusals_store_nothing,
    group_refusals_store_nothing,
    rights_are_checked_per_operation,
    etags_and_paths,
    paging_headers,
    linked_hubs_and_allocation_settings,
    access_policies,
    the_openapi_document_matches_the_routes,
    bulk_modes_report_per_item_errors,
    registration_records_page_by_group_and_delete_needs_its_right,
    an_individual_enrollment_round_trips_every_field,
    x509_certificates_come_back_with_their_info,
    tpm_endorsement_keys_are_checked_and_give_the_default_id,
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

/// The refusals individual enrollments and groups share under `/{collection}` (`enrollments` or
/// `enrollmentGroups`, whose documents carry their ID in `id_field`): bad credentials, malformed
/// JSON, an unknown attestation type, invalid, mismatched and unknown IDs, a short key and bad bulk
/// operations, each with its status and Azure error body.
async fn refuse_bad_writes(i: &Instance, collection: &str, id_field: &str) {
    let good = owner_token(i);
    let document = |id: &str, attestation: Value| {
        json!({id_field: id, "attestation": attestation}).to_string()
    };
    let symmetric = json!({"type": "symmetricKey"});
    let path = format!("/{collection}/dev-1");
    let body = document("dev-1", symmetric.clone());
    let mut wrong = i.state.instance.owner_policy.clone();
    wrong.primary_key = random_key();
    let wrong_key = call(
        i,
        "PUT",
        &path,
        &token(&wrong, Utc::now().timestamp() + 60),
        Some(&body),
        None,
    )
    .await;
    assert_error(&wrong_key, 401, 401002);
    let expired = call(
        i,
        "PUT",
        &path,
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
        &call(i, "PUT", &path, &other_host, Some(&body), None).await,
        401,
        401002,
    );
    assert_error(
        &call(i, "PUT", &path, "garbage", Some(&body), None).await,
        401,
        401002,
    );

    let malformed = format!("{{\"{id_field}\": ");
    assert_error(
        &call(i, "PUT", &path, &good, Some(&malformed), None).await,
        400,
        400004,
    );
    let unknown = document("dev-1", json!({"type": "password"}));
    let got = call(i, "PUT", &path, &good, Some(&unknown), None).await;
    assert_error(&got, 400, 400004);
    assert!(
        got.2["message"]
            .as_str()
            .unwrap()
            .contains("unknown attestation type"),
        "{}",
        got.2
    );
    let got = call(
        i,
        "PUT",
        &format!("/{collection}/-bad-"),
        &good,
        Some(&document("-bad-", symmetric.clone())),
        None,
    )
    .await;
    assert_error(&got, 400, 400004);
    assert!(
        got.2["message"]
            .as_str()
            .unwrap()
            .contains("invalid registration ID"),
        "{}",
        got.2
    );
    assert_error(
        &call(
            i,
            "PUT",
            &path,
            &good,
            Some(&document("dev-2", symmetric.clone())),
            None,
        )
        .await,
        400,
        400004,
    );
    let short_key = document(
        "dev-1",
        json!({"type": "symmetricKey", "symmetricKey": {"primaryKey": "c2hvcnQ="}}),
    );
    assert_error(
        &call(i, "PUT", &path, &good, Some(&short_key), None).await,
        400,
        400004,
    );
    let items = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|n| json!({id_field: format!("b{n}"), "attestation": {"type": "symmetricKey"}}))
            .collect()
    };
    for bulk in [
        json!({"mode": "create", collection: items(11)}),
        json!({"mode": "merge", collection: items(1)}),
        json!({"mode": "create", collection: []}),
    ] {
        assert_error(
            &call(
                i,
                "POST",
                &format!("/{collection}"),
                &good,
                Some(&bulk.to_string()),
                None,
            )
            .await,
            400,
            400004,
        );
    }
    for method in ["GET", "DELETE"] {
        assert_error(
            &call(
                i,
                method,
                &format!("/{collection}/nobody"),
                &good,
                None,
                None,
            )
            .await,
            404,
            404201,
        );
    }
}

async fn assert_nothing_stored(i: &Instance) {
    assert_eq!(
        (
            i.store().count_enrollments().await.unwrap(),
            i.store().count_groups().await.unwrap()
        ),
        (0, 0),
        "nothing stored by refused requests"
    );
}

async fn refusals_store_nothing(i: &Instance) {
    refuse_bad_writes(i, "enrollments", "registrationId").await;
    assert_error(
        &call(
            i,
            "GET",
            "/registrations/nobody",
            &owner_token(i),
            None,
            None,
        )
        .await,
        404,
        404202,
    );
    assert_nothing_stored(i).await;
}

async fn group_refusals_store_nothing(i: &Instance) {
    refuse_bad_writes(i, "enrollmentGroups", "enrollmentGroupId").await;
    assert_nothing_stored(i).await;
}

/// A stored access policy `name` with only `rights`.
async fn policy_with(i: &Instance, name: &str, rights: Vec<Right>) -> AccessPolicy {
    let now = Utc::now();
    let policy = AccessPolicy {
        name: name.into(),
        rights,
        primary_key: random_key(),
        secondary_key: random_key(),
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    i.store().put_policy(policy, IfMatch::Any).await.unwrap()
}

async fn rights_are_checked_per_operation(i: &Instance) {
    let now = Utc::now();
    let reader = policy_with(i, "reader", vec![Right::EnrollmentRead]).await;
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

/// Runs a paged query (`POST {path}` with `query`) at `page_size` items a page, following
/// `x-ms-continuation` until the last page; checks the paging headers and returns the pages.
async fn query_pages(
    i: &Instance,
    path: &str,
    token: &str,
    query: &str,
    item_type: &str,
    page_size: usize,
) -> Vec<Vec<Value>> {
    let mut pages = Vec::new();
    let mut continuation: Option<String> = None;
    loop {
        let mut request = i
            .client
            .post(format!("{}{path}", i.url))
            .header("Authorization", token)
            .header("x-ms-max-item-count", page_size.to_string())
            .body(json!({ "query": query }).to_string());
        if let Some(c) = &continuation {
            request = request.header("x-ms-continuation", c);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-ms-item-type"], item_type);
        assert_eq!(
            response.headers()["x-ms-max-item-count"],
            page_size.to_string().as_str()
        );
        continuation = response
            .headers()
            .get("x-ms-continuation")
            .map(|v| v.to_str().unwrap().to_string());
        let page: Vec<Value> = response.json().await.unwrap();
        assert!(page.len() <= page_size, "{page:?}");
        pages.push(page);
        assert!(pages.len() <= 100, "the continuation never ends");
        if continuation.is_none() {
            return pages;
        }
    }
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
    let pages = query_pages(
        i,
        "/enrollments/query",
        &t,
        "SELECT * FROM enrollments",
        "Enrollment",
        2,
    )
    .await;
    let seen: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|e| e["registrationId"].as_str().unwrap())
        .collect();
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
    assert_eq!(names, ["hub-x.localhost", HUB]);

    // PUT on a linked hub changes it in place, whatever the spelling of its host name in the path.
    let before = i.store().get_hub("hub-x.localhost").await.unwrap().unwrap();
    let changed =
        json!({"region": "us", "allocationWeight": 9, "applyAllocationPolicy": true}).to_string();
    let (status, _, hub) = call(
        i,
        "PUT",
        "/linkedHubs/HUB-X.localhost",
        &t,
        Some(&changed),
        None,
    )
    .await;
    assert_eq!(status, 200, "{hub}");
    let updated = json!({"hostName": "hub-x.localhost", "connector": "builtIn", "region": "us", "allocationWeight": 9, "applyAllocationPolicy": true, "devices": 0});
    assert_eq!(hub, updated);
    assert_eq!(
        call(i, "GET", "/linkedHubs/hub-x.localhost", &t, None, None)
            .await
            .2,
        updated
    );
    let (_, _, hubs) = call(i, "GET", "/linkedHubs", &t, None, None).await;
    assert_eq!(hubs.as_array().unwrap().len(), 2, "{hubs}");
    assert_eq!(hubs[0], updated, "the list shows the change");
    let after = i.store().get_hub("hub-x.localhost").await.unwrap().unwrap();
    assert_eq!(
        (
            after.region.as_deref(),
            after.allocation_weight,
            after.apply_allocation_policy,
            after.created
        ),
        (Some("us"), 9, true, before.created)
    );
    assert_ne!(after.etag, before.etag);
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
        include_str!("../../src/transport/credentials_api.rs"),
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

/// `POST /{collection}` with `mode` and `items` as the owner; the reply must be 200.
async fn bulk_operation(i: &Instance, collection: &str, mode: &str, items: Vec<Value>) -> Value {
    let body = json!({ "mode": mode, collection: items }).to_string();
    let (status, _, reply) = call(
        i,
        "POST",
        &format!("/{collection}"),
        &owner_token(i),
        Some(&body),
        None,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn bulk_modes_report_per_item_errors(i: &Instance) {
    let item = |id: &str| json!({"registrationId": id, "attestation": {"type": "symmetricKey"}});
    let created = bulk_operation(
        i,
        "enrollments",
        "create",
        vec![item("bulk-0"), item("bulk-1"), item("bulk-2")],
    )
    .await;
    assert_eq!(created, json!({"isSuccessful": true, "errors": []}));
    let stored =
        |id: &'static str| async move { i.store().get_enrollment(id).await.unwrap().unwrap() };
    let first = stored("bulk-0").await;

    // create: an existing ID fails on its own; the other item is created.
    let reply = bulk_operation(
        i,
        "enrollments",
        "create",
        vec![item("bulk-0"), item("bulk-3")],
    )
    .await;
    assert_eq!(
        reply,
        json!({"isSuccessful": false, "errors": [
            {"registrationId": "bulk-0", "errorCode": 409001, "errorStatus": "Conflict"}
        ]})
    );
    assert_eq!(
        stored("bulk-0").await,
        first,
        "the existing one is untouched"
    );
    assert_eq!(i.store().count_enrollments().await.unwrap(), 4);

    // update: replaces whatever is stored; keys left out are kept.
    let mut disabled = item("bulk-0");
    disabled["provisioningStatus"] = json!("disabled");
    let mut tagged = item("bulk-3");
    tagged["initialTwin"] = json!({"tags": {"floor": 3}});
    let reply = bulk_operation(i, "enrollments", "update", vec![disabled, tagged]).await;
    assert_eq!(reply, json!({"isSuccessful": true, "errors": []}));
    let bulk_0 = stored("bulk-0").await;
    assert_eq!(
        bulk_0.spec.provisioning_status,
        ProvisioningStatus::Disabled
    );
    assert_eq!(bulk_0.spec.attestation, first.spec.attestation, "keys kept");
    assert_ne!(bulk_0.etag, first.etag);
    assert_eq!(
        stored("bulk-3").await.spec.initial_twin.unwrap().tags["floor"],
        3
    );

    // updateIfMatchETag: the item with its current (quoted) etag is applied, the one carrying the
    // etag bulk-0 had before the update fails with 412 and changes nothing.
    let bulk_1 = stored("bulk-1").await;
    let mut stale = item("bulk-0");
    stale["etag"] = json!(first.etag.quoted());
    stale["deviceId"] = json!("stale-device");
    let mut current = item("bulk-1");
    current["etag"] = json!(bulk_1.etag.quoted());
    current["deviceId"] = json!("fresh-device");
    let reply = bulk_operation(i, "enrollments", "updateIfMatchETag", vec![stale, current]).await;
    assert_eq!(
        reply,
        json!({"isSuccessful": false, "errors": [
            {"registrationId": "bulk-0", "errorCode": 412001, "errorStatus": "Precondition Failed"}
        ]})
    );
    assert_eq!(
        stored("bulk-0").await,
        bulk_0,
        "the stale item changed nothing"
    );
    let applied = stored("bulk-1").await;
    assert_eq!(applied.device_id.as_deref(), Some("fresh-device"));
    assert_ne!(applied.etag, bulk_1.etag);

    // delete: the items go; an unknown one fails on its own.
    let reply = bulk_operation(
        i,
        "enrollments",
        "delete",
        vec![item("bulk-1"), item("bulk-missing"), item("bulk-2")],
    )
    .await;
    assert_eq!(
        reply,
        json!({"isSuccessful": false, "errors": [
            {"registrationId": "bulk-missing", "errorCode": 404201, "errorStatus": "Not Found"}
        ]})
    );
    let mut left: Vec<String> = i
        .store()
        .list_enrollments(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.registration_id)
        .collect();
    left.sort();
    assert_eq!(left, ["bulk-0", "bulk-3"]);

    // Group bulk errors name the group.
    let group =
        |id: &str| json!({"enrollmentGroupId": id, "attestation": {"type": "symmetricKey"}});
    let reply = bulk_operation(i, "enrollmentGroups", "create", vec![group("floor-1")]).await;
    assert_eq!(reply, json!({"isSuccessful": true, "errors": []}));
    let reply = bulk_operation(
        i,
        "enrollmentGroups",
        "create",
        vec![group("floor-1"), group("floor-2")],
    )
    .await;
    assert_eq!(
        reply,
        json!({"isSuccessful": false, "errors": [
            {"enrollmentGroupId": "floor-1", "errorCode": 409001, "errorStatus": "Conflict"}
        ]})
    );
    assert_eq!(i.store().count_groups().await.unwrap(), 2);
}

async fn registration_records_page_by_group_and_delete_needs_its_right(i: &Instance) {
    for n in 0..5 {
        let record = registration_record(&format!("floor-dev-{n}"), Some("floor-1"));
        i.store()
            .put_registration(record, IfMatch::Any)
            .await
            .unwrap();
    }
    for record in [
        registration_record("other-dev", Some("floor-2")),
        registration_record("solo", None),
    ] {
        i.store()
            .put_registration(record, IfMatch::Any)
            .await
            .unwrap();
    }
    let t = owner_token(i);
    let pages = query_pages(
        i,
        "/registrations/floor-1/query",
        &t,
        "*",
        "DeviceRegistration",
        2,
    )
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [2, 2, 1],
        "{pages:?}"
    );
    let mut seen: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|r| r["registrationId"].as_str().unwrap())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        (0..5).map(|n| format!("floor-dev-{n}")).collect::<Vec<_>>(),
        "each of the group's records once, no other"
    );
    let first = &pages[0][0];
    assert_eq!(
        (&first["status"], &first["assignedHub"]),
        (&json!("assigned"), &json!("hub-a.localhost"))
    );

    // A policy that may read registration records may not delete one.
    let reader = policy_with(i, "status-reader", vec![Right::RegistrationStatusRead]).await;
    let reader_token = token(&reader, Utc::now().timestamp() + 600);
    let (status, _, record) = call(
        i,
        "GET",
        "/registrations/floor-dev-3",
        &reader_token,
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{record}");
    let refused = call(
        i,
        "DELETE",
        "/registrations/floor-dev-3",
        &reader_token,
        None,
        None,
    )
    .await;
    assert_error(&refused, 401, 401002);
    assert!(
        refused.2["message"]
            .as_str()
            .unwrap()
            .contains("RegistrationStatusWrite"),
        "{}",
        refused.2
    );
    assert!(
        i.store()
            .get_registration("floor-dev-3")
            .await
            .unwrap()
            .is_some(),
        "the refused delete kept the record"
    );

    // The owner deletes it with the etag it read (a stale one is refused).
    assert_error(
        &call(
            i,
            "DELETE",
            "/registrations/floor-dev-3",
            &t,
            None,
            Some("\"stale\""),
        )
        .await,
        412,
        412001,
    );
    let etag = record["etag"].as_str().unwrap();
    let (status, _, body) = call(
        i,
        "DELETE",
        "/registrations/floor-dev-3",
        &t,
        None,
        Some(etag),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_error(
        &call(i, "GET", "/registrations/floor-dev-3", &t, None, None).await,
        404,
        404202,
    );
    assert_eq!(i.store().count_registrations().await.unwrap(), 6);
}

/// Every IndividualEnrollment field a client sets comes back from GET as sent; after real device
/// registrations, GET also carries the read-only registration state.
async fn an_individual_enrollment_round_trips_every_field(i: &Instance) {
    i.link_hub("hub-b.localhost", 1, None, true).await;
    let (webhook_url, seen) = webhook(200, json!({"iotHubHostName": "hub-b.localhost"})).await;
    let (primary, secondary) = (random_key(), random_key());
    let mut sent = json!({
        "registrationId": "full-1",
        "deviceId": "full-device",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}},
        "capabilities": {"iotEdge": true},
        "initialTwin": {
            "tags": {"site": "plant-7", "line": {"number": 3}},
            "properties": {"desired": {"telemetryInterval": 30, "mode": "eco"}},
        },
        "provisioningStatus": "disabled",
        "reprovisionPolicy": {"updateHubAssignment": false, "migrateDeviceData": false},
        "allocationPolicy": "custom",
        "iotHubs": [HUB, "hub-b.localhost"],
        "customAllocationDefinition": {"webhookUrl": webhook_url, "apiVersion": "2021-10-01"},
        "optionalDeviceInformation": {"model": "m1", "firmware": {"version": "1.2.3"}},
    });
    let t = owner_token(i);
    let (status, _, put) = call(
        i,
        "PUT",
        "/enrollments/full-1",
        &t,
        Some(&sent.to_string()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{put}");
    let (status, _, got) = call(i, "GET", "/enrollments/full-1", &t, None, None).await;
    assert_eq!(status, 200, "{got}");
    for (field, value) in sent.as_object().unwrap() {
        assert_eq!(&put[field], value, "PUT returns {field}");
        if field != "attestation" {
            assert_eq!(&got[field], value, "GET returns {field}");
        }
    }
    assert_eq!(
        got["attestation"],
        json!({"type": "symmetricKey", "symmetricKey": {}}),
        "GET leaves keys out"
    );
    assert_eq!(got["etag"], put["etag"]);
    for stamp in ["createdDateTimeUtc", "lastUpdatedDateTimeUtc"] {
        assert_eq!(got[stamp], put[stamp]);
        assert!(got[stamp].as_str().unwrap().ends_with('Z'), "{got}");
    }
    assert!(
        got.get("registrationState").is_none(),
        "no registration yet: {got}"
    );

    // A device registering while the enrollment is disabled leaves a disabled record.
    let (status, _, registered) = i
        .register("full-1", &primary, json!({"registrationId": "full-1"}))
        .await;
    assert_eq!(
        (status, &registered["status"]),
        (202, &json!("disabled")),
        "{registered}"
    );
    let (_, _, got) = call(i, "GET", "/enrollments/full-1", &t, None, None).await;
    assert_eq!(got["registrationState"]["registrationId"], "full-1");
    assert_eq!(got["registrationState"]["status"], "disabled", "{got}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "no allocation while disabled"
    );

    // Enabled (with the right ETag), the device is placed by the webhook with the enrollment's twin.
    sent["provisioningStatus"] = json!("enabled");
    let etag = got["etag"].as_str().unwrap();
    let (status, _, put) = call(
        i,
        "PUT",
        "/enrollments/full-1",
        &t,
        Some(&sent.to_string()),
        Some(etag),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    let (_, _, registered) = i
        .register("full-1", &primary, json!({"registrationId": "full-1"}))
        .await;
    assert_eq!(registered["status"], "assigned", "{registered}");
    let (_, _, got) = call(i, "GET", "/enrollments/full-1", &t, None, None).await;
    let state = &got["registrationState"];
    assert_eq!(
        (&state["status"], &state["assignedHub"], &state["deviceId"]),
        (
            &json!("assigned"),
            &json!("hub-b.localhost"),
            &json!("full-device")
        ),
        "{got}"
    );
    let (_, _, record) = call(i, "GET", "/registrations/full-1", &t, None, None).await;
    assert_eq!(state, &record, "the same state as the registration record");
    assert_eq!(
        seen.lock().unwrap()[0]["individualEnrollment"]["optionalDeviceInformation"],
        sent["optionalDeviceInformation"]
    );
    let device = i
        .store()
        .get_hub_device("hub-b.localhost", "full-device")
        .await
        .unwrap()
        .expect("identity on the chosen hub");
    assert!(device.iot_edge);
    assert_eq!(
        Value::Object(device.tags),
        sent["initialTwin"]["tags"],
        "the enrollment's tags"
    );
    assert_eq!(
        Value::Object(device.desired.properties),
        sent["initialTwin"]["properties"]["desired"]
    );
}

/// Azure's read-only `X509CertificateInfo` as openssl reads the same certificate.
/// The serial as a number: Onramp (like .NET, which Azure runs on) shows the DER bytes, a leading
/// `00` included, where openssl prints the integer; each certificate here has a random serial.
fn serial_as_number(mut info: Value) -> Value {
    if let Some(serial) = info["serialNumber"].as_str() {
        let trimmed = serial.trim_start_matches('0').to_string();
        info["serialNumber"] = json!(trimmed);
    }
    info
}

fn openssl_info(pem: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cert.pem");
    std::fs::write(&file, pem).unwrap();
    let field = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-in", file.to_str().unwrap()])
            .args(args)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let (_, value) = text.trim().split_once('=').unwrap();
        value.trim().to_string()
    };
    let thumbprint = |digest: &str| field(&["-fingerprint", digest]).replace(':', "");
    // `2027-12-02 10:11:12Z` -> RFC 3339.
    let date = |which: &str| field(&[which, "-dateopt", "iso_8601"]).replace(' ', "T");
    json!({
        "subjectName": field(&["-subject", "-nameopt", "RFC2253"]),
        "sha1Thumbprint": thumbprint("-sha1"),
        "sha256Thumbprint": thumbprint("-sha256"),
        "issuerName": field(&["-issuer", "-nameopt", "RFC2253"]),
        "notBeforeUtc": date("-startdate"),
        "notAfterUtc": date("-enddate"),
        "serialNumber": field(&["-serial"]),
        "version": 3,
    })
}

/// `az iot dps enrollment show` displays the `info` Azure fills beside each certificate: on PUT,
/// GET and query results, for an individual enrollment's client certificates and a group's
/// signing certificate. A group referencing a CA has no certificate and so no `info`.
async fn x509_certificates_come_back_with_their_info(i: &Instance) {
    use onramp::test_certs;
    let t = &owner_token(i);
    let (a, b) = (
        test_certs::self_signed("x509-info-dev", false),
        test_certs::self_signed("x509-info-dev", false),
    );
    let root = test_certs::self_signed("x509-info-root", true);
    let (a_info, b_info, root_info) = (
        serial_as_number(openssl_info(&a.pem())),
        serial_as_number(openssl_info(&b.pem())),
        serial_as_number(openssl_info(&root.pem())),
    );

    let individual = json!({
        "registrationId": "x509-info-dev",
        "attestation": {"type": "x509", "x509": {"clientCertificates": {
            "primary": {"certificate": a.pem()}, "secondary": {"certificate": b.pem()},
        }}},
    });
    let group = json!({
        "enrollmentGroupId": "x509-info-group",
        "attestation": {"type": "x509", "x509": {"signingCertificates": {
            "primary": {"certificate": root.pem()},
        }}},
    });
    let by_reference = json!({
        "enrollmentGroupId": "x509-info-by-ca",
        "attestation": {"type": "x509", "x509": {"caReferences": {"primary": "some-ca"}}},
    });
    let put = |path: String, body: &Value| {
        let body = body.to_string();
        async move {
            let (status, _, stored) = call(i, "PUT", &path, t, Some(&body), None).await;
            assert!(status == 200 || status == 201, "{status}: {stored}");
            stored
        }
    };
    let get = |path: String| async move { call(i, "GET", &path, t, None, None).await.2 };
    let client_certs = |e: &Value| e["attestation"]["x509"]["clientCertificates"].clone();
    let signing_certs = |e: &Value| e["attestation"]["x509"]["signingCertificates"].clone();

    for stored in [
        put("/enrollments/x509-info-dev".into(), &individual).await,
        get("/enrollments/x509-info-dev".into()).await,
    ] {
        let certs = client_certs(&stored);
        let info = |slot: &str| serial_as_number(certs[slot]["info"].clone());
        assert_eq!(info("primary"), a_info, "{stored}");
        assert_eq!(info("secondary"), b_info, "{stored}");
        assert_eq!(certs["primary"]["certificate"], a.pem());
    }
    for stored in [
        put("/enrollmentGroups/x509-info-group".into(), &group).await,
        get("/enrollmentGroups/x509-info-group".into()).await,
    ] {
        let info = serial_as_number(signing_certs(&stored)["primary"]["info"].clone());
        assert_eq!(info, root_info, "{stored}");
        assert!(signing_certs(&stored)["secondary"].is_null(), "{stored}");
    }
    for stored in [
        put("/enrollmentGroups/x509-info-by-ca".into(), &by_reference).await,
        get("/enrollmentGroups/x509-info-by-ca".into()).await,
    ] {
        assert_eq!(
            stored["attestation"]["x509"],
            json!({"caReferences": {"primary": "some-ca"}}),
            "{stored}"
        );
    }

    let queried = |path: &'static str, item_type: &'static str| async move {
        let pages = query_pages(i, path, t, "SELECT *", item_type, 10).await;
        pages.into_iter().flatten().collect::<Vec<Value>>()
    };
    let enrollments = queried("/enrollments/query", "Enrollment").await;
    let dev = enrollments
        .iter()
        .find(|e| e["registrationId"] == "x509-info-dev")
        .unwrap();
    let secondary = serial_as_number(client_certs(dev)["secondary"]["info"].clone());
    assert_eq!(secondary, b_info, "{dev}");
    let groups = queried("/enrollmentGroups/query", "EnrollmentGroup").await;
    let signed = groups
        .iter()
        .find(|g| g["enrollmentGroupId"] == "x509-info-group")
        .unwrap();
    let info = serial_as_number(signing_certs(signed)["primary"]["info"].clone());
    assert_eq!(info, root_info, "{signed}");
}

/// A TPM enrollment's EK must be one the device endpoint can challenge; an enrollment given
/// without a registration ID gets the one the SDKs derive from the EK.
async fn tpm_endorsement_keys_are_checked_and_give_the_default_id(i: &Instance) {
    use onramp::test_certs::{TPM_ENDORSEMENT_KEY, TPM_REGISTRATION_ID};
    let good = owner_token(i);
    let tpm = |ek: &str| json!({"type": "tpm", "tpm": {"endorsementKey": ek}});
    let truncated = &TPM_ENDORSEMENT_KEY[..60];
    let refused = [
        (tpm("%%%"), "not base64"),
        (
            tpm(truncated),
            "endorsementKey` is not a TPM endorsement key",
        ),
    ];
    for (attestation, reason) in refused {
        let body = json!({"registrationId": "tpm-1", "attestation": attestation}).to_string();
        let got = call(i, "PUT", "/enrollments/tpm-1", &good, Some(&body), None).await;
        assert_error(&got, 400, 400004);
        let message = got.2["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{message}");
    }
    assert!(i.store().get_enrollment("tpm-1").await.unwrap().is_none());

    let bulk =
        json!({"mode": "create", "enrollments": [{"attestation": tpm(TPM_ENDORSEMENT_KEY)}]});
    let got = call(
        i,
        "POST",
        "/enrollments",
        &good,
        Some(&bulk.to_string()),
        None,
    )
    .await;
    assert_eq!(got.0, 200, "{}", got.2);
    let stored = i.store().get_enrollment(TPM_REGISTRATION_ID).await.unwrap();
    assert!(stored.is_some(), "{}", got.2);
}
