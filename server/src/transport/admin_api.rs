//! Onramp's own administration resources on the service API (Azure manages these elsewhere):
//! linked hubs, allocation settings and shared access policies. All need the ServiceConfig right;
//! the rules are in `domain::admin`, shared with the command line.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::http_util::json_response;
use super::service_api::{Result, ServiceError, authorize, json_body};
use crate::domain::admin::{self, AllocationSettingsView, HubSettings, KeySlot};
use crate::domain::{AccessPolicy, LinkedHub, Right};
use crate::service::AppState;

pub fn router(state: AppState) -> Router {
    Router::new()
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
        .with_state(state)
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value)
        .map_err(|e| ServiceError::BadRequest(format!("invalid body: {e}")))
}

async fn hub_json(state: &AppState, hub: &LinkedHub) -> Result<Value> {
    Ok(json!({
        "hostName": hub.host_name,
        "connector": hub.connector.as_str(),
        "region": hub.region,
        "allocationWeight": hub.allocation_weight,
        "applyAllocationPolicy": hub.apply_allocation_policy,
        "devices": state.store.count_hub_devices(&hub.host_name).await?,
    }))
}

async fn list_hubs(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    let mut hubs = Vec::new();
    for hub in state.store.list_hubs().await? {
        hubs.push(hub_json(&state, &hub).await?);
    }
    Ok(json_response(StatusCode::OK, &hubs))
}

async fn get_hub(
    State(state): State<AppState>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
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
    State(state): State<AppState>,
    Path(host): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    let settings: HubSettings = match json_body(&state, &headers, body).await? {
        Value::Null => HubSettings::default(),
        value => parse(value)?,
    };
    let hub = admin::put_hub(state.store.as_ref(), &host, settings).await?;
    state.provisioner.invalidate();
    Ok(json_response(
        StatusCode::OK,
        &hub_json(&state, &hub).await?,
    ))
}

async fn delete_hub(
    State(state): State<AppState>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    admin::delete_hub(state.store.as_ref(), &host).await?;
    state.provisioner.invalidate();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_allocation(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    Ok(json_response(
        StatusCode::OK,
        &admin::allocation_settings(state.store.as_ref()).await?,
    ))
}

async fn put_allocation(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    let view: AllocationSettingsView = parse(json_body(&state, &headers, body).await?)?;
    admin::set_allocation_settings(state.store.as_ref(), view).await?;
    state.provisioner.invalidate();
    Ok(json_response(
        StatusCode::OK,
        &admin::allocation_settings(state.store.as_ref()).await?,
    ))
}

fn policy_json(state: &AppState, policy: &AccessPolicy, with_keys: bool) -> Value {
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

async fn list_policies(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
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
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
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
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    let body: PolicyBody = parse(json_body(&state, &headers, body).await?)?;
    let rights = admin::parse_rights(&body.rights)?;
    let policy = admin::put_policy(state.store.as_ref(), &name, rights).await?;
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
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    let body: RegenerateBody = parse(json_body(&state, &headers, body).await?)?;
    let policy = admin::rekey_policy(state.store.as_ref(), &name, body.key).await?;
    Ok(json_response(
        StatusCode::OK,
        &policy_json(&state, &policy, true),
    ))
}

async fn delete_policy(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&state, &headers, Right::ServiceConfig).await?;
    admin::delete_policy(state.store.as_ref(), &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
