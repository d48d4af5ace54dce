//! Onramp's own administration resources on the service API (Azure manages these elsewhere):
//! linked hubs, allocation settings, shared access policies, CA certificates and lifecycle event
//! sinks. All need the ServiceConfig right; the rules are in `domain::admin`, shared with the
//! command line.

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http_util::json_response;
use super::service_api::{
    Caller, Result, ServiceApiState, ServiceError, authorize, json_body, observed,
};
use crate::domain::admin::{self, AllocationSettingsView, HubSettings, KeySlot, SinkInput};
use crate::domain::ca;
use crate::model::{AccessPolicy, EventSink, LinkedHub, Right};
use crate::proto::service as wire;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let state = ServiceApiState::from_ref(&state);
    let router = Router::new()
        .route("/linkedHubs", get(list_hubs))
        .route(
            "/linkedHubs/{host}",
            get(get_hub).put(put_hub).delete(delete_hub),
        )
        .route(
            "/allocationSettings",
            get(get_allocation).put(put_allocation),
        )
        .route("/accessPolicies", get(list_policies))
        .route(
            "/accessPolicies/{name}",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .route("/accessPolicies/{name}/regenerateKey", post(regenerate_key))
        .route("/certificates", get(list_cas))
        .route(
            "/certificates/{name}",
            get(get_ca).put(put_ca).delete(delete_ca),
        )
        .route(
            "/certificates/{name}/generateVerificationCode",
            post(generate_verification_code),
        )
        .route("/certificates/{name}/verify", post(verify_ca))
        .route("/eventSinks", get(list_sinks))
        .route(
            "/eventSinks/{name}",
            get(get_sink).put(put_sink).delete(delete_sink),
        );
    observed(router, state)
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| ServiceError::BadRequest(format!("invalid body: {e}")))
}

async fn hub_json(state: &ServiceApiState, hub: &LinkedHub) -> Result<Value> {
    Ok(json!({
        "hostName": hub.host_name,
        "connector": hub.connector.as_str(),
        "region": hub.region,
        "allocationWeight": hub.allocation_weight,
        "applyAllocationPolicy": hub.apply_allocation_policy,
        "devices": state.store.count_hub_devices(&hub.host_name).await?,
    }))
}

async fn list_hubs(State(state): State<ServiceApiState>, caller: Caller) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let mut hubs = Vec::new();
    for hub in state.store.list_hubs().await? {
        hubs.push(hub_json(&state, &hub).await?);
    }
    Ok(json_response(StatusCode::OK, &hubs))
}

async fn get_hub(
    State(state): State<ServiceApiState>,
    Path(host): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let hub = state
        .store
        .get_hub(&host)
        .await?
        .ok_or(admin::AdminError::NotFound(format!("linked hub {host:?}")))?;
    Ok(json_response(
        StatusCode::OK,
        &hub_json(&state, &hub).await?,
    ))
}

async fn put_hub(
    State(state): State<ServiceApiState>,
    Path(host): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let settings: HubSettings = match json_body(&state.config, &headers, body).await? {
        Value::Null => HubSettings::default(),
        value => parse(value)?,
    };
    let hub = state.admin.put_hub(&actor, &host, settings).await?;
    Ok(json_response(
        StatusCode::OK,
        &hub_json(&state, &hub).await?,
    ))
}

async fn delete_hub(
    State(state): State<ServiceApiState>,
    Path(host): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    state.admin.delete_hub(&actor, &host).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_allocation(State(state): State<ServiceApiState>, caller: Caller) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    Ok(json_response(
        StatusCode::OK,
        &state.admin.allocation_settings().await?,
    ))
}

async fn put_allocation(
    State(state): State<ServiceApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let view: AllocationSettingsView = parse(json_body(&state.config, &headers, body).await?)?;
    state.admin.set_allocation_settings(&actor, view).await?;
    Ok(json_response(
        StatusCode::OK,
        &state.admin.allocation_settings().await?,
    ))
}

fn policy_json(state: &ServiceApiState, policy: &AccessPolicy, with_keys: bool) -> Value {
    let rights: Vec<&str> = policy.rights.iter().map(|r| r.as_str()).collect();
    let mut value = json!({ "name": policy.name, "rights": rights });
    if with_keys {
        value["primaryKey"] = json!(policy.primary_key);
        value["secondaryKey"] = json!(policy.secondary_key);
        value["connectionString"] = json!(format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            state.config.hostname, policy.name, policy.primary_key
        ));
    }
    value
}

async fn list_policies(State(state): State<ServiceApiState>, caller: Caller) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let policies: Vec<Value> = state
        .store
        .list_policies()
        .await?
        .iter()
        .map(|p| policy_json(&state, p, false))
        .collect();
    Ok(json_response(StatusCode::OK, &policies))
}

async fn get_policy(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let policy = state
        .store
        .get_policy(&name)
        .await?
        .ok_or(admin::AdminError::NotFound(format!("policy {name:?}")))?;
    Ok(json_response(
        StatusCode::OK,
        &policy_json(&state, &policy, true),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyBody {
    rights: Vec<String>,
}

async fn put_policy(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let body: PolicyBody = parse(json_body(&state.config, &headers, body).await?)?;
    let rights = admin::parse_rights(&body.rights)?;
    let policy = state.admin.put_policy(&actor, &name, rights).await?;
    Ok(json_response(
        StatusCode::OK,
        &policy_json(&state, &policy, true),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegenerateBody {
    key: KeySlot,
}

async fn regenerate_key(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let body: RegenerateBody = parse(json_body(&state.config, &headers, body).await?)?;
    let policy = state.admin.rekey_policy(&actor, &name, body.key).await?;
    Ok(json_response(
        StatusCode::OK,
        &policy_json(&state, &policy, true),
    ))
}

async fn delete_policy(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    state.admin.delete_policy(&actor, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_cas(State(state): State<ServiceApiState>, caller: Caller) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let cas = state.store.list_ca_certificates().await?;
    let views: Vec<Value> = cas.iter().map(ca::view).collect();
    Ok(json_response(StatusCode::OK, &json!({ "value": views })))
}

async fn get_ca(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let found = ca::get(state.store.as_ref(), &name).await?;
    Ok(json_response(StatusCode::OK, &ca::view(&found)))
}

/// The certificate to upload or the proof of possession, in Azure's resource shape
/// (`{"properties": {...}}`) or flat.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CertificateBody {
    certificate: String,
    #[serde(default)]
    is_verified: bool,
}

fn certificate_body(value: Value) -> Result<CertificateBody> {
    match value {
        Value::Object(mut map) if map.len() == 1 && map.contains_key("properties") => {
            parse(map.remove("properties").unwrap_or_default())
        }
        other => parse(other),
    }
}

async fn put_ca(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let body = certificate_body(json_body(&state.config, &headers, body).await?)?;
    let (pem, verified) = (&body.certificate, body.is_verified);
    let stored = state.admin.put_ca(&actor, &name, pem, verified).await?;
    Ok(json_response(StatusCode::OK, &ca::view(&stored)))
}

async fn generate_verification_code(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let stored = state.admin.generate_ca_code(&actor, &name).await?;
    Ok(json_response(StatusCode::OK, &ca::view(&stored)))
}

async fn verify_ca(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let body = certificate_body(json_body(&state.config, &headers, body).await?)?;
    let stored = state
        .admin
        .verify_ca(&actor, &name, &body.certificate)
        .await?;
    Ok(json_response(StatusCode::OK, &ca::view(&stored)))
}

async fn delete_ca(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    state.admin.delete_ca(&actor, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_sinks(State(state): State<ServiceApiState>, caller: Caller) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let overview = state.admin.event_sinks().await?;
    let sinks: Vec<Value> = overview
        .sinks
        .iter()
        .map(|sink| wire::event_sink(sink, overview.last_seq))
        .collect();
    Ok(json_response(StatusCode::OK, &sinks))
}

async fn get_sink(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let sink = state.admin.event_sink(&name).await?;
    sink_response(&state, &sink).await
}

/// One sink with its lag behind the newest event.
async fn sink_response(state: &ServiceApiState, sink: &EventSink) -> Result<Response> {
    let last_seq = state.store.last_event_seq().await?;
    Ok(json_response(
        StatusCode::OK,
        &wire::event_sink(sink, last_seq),
    ))
}

async fn put_sink(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let input: SinkInput = parse(json_body(&state.config, &headers, body).await?)?;
    let sink = state.admin.put_event_sink(&actor, &name, input).await?;
    sink_response(&state, &sink).await
}

async fn delete_sink(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    match state.admin.delete_event_sink(&actor, &name).await? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(admin::AdminError::NotFound(format!("event sink {name:?}")).into()),
    }
}
