//! The IoT Hub service REST subset of the built-in hubs: `GET/PUT/DELETE /devices/{id}` and
//! `GET/PATCH /twins/{id}`, on the HTTPS listener. The hub is the one the request's `Host` names
//! (every built-in hub's name is in the server certificate). Authorized by the instance's shared
//! access policies with a token whose `sr` is the hub's host name: reads need
//! `RegistrationStatusRead`, changes `RegistrationStatusWrite` (the built-in hubs belong to the
//! instance, so its policies govern them; Azure's `iothubowner` rights have no separate names here).

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::http_util::json_response;
use super::service_api::{Result, ServiceError, if_match, json_body};
use crate::config::Config;
use crate::domain::access;
use crate::domain::device_hub::DeviceHub;
use crate::domain::device_hub::IdentitySettings;
use crate::domain::device_hub::TwinError;
use crate::model::*;
use crate::proto::error::code;
use crate::proto::twin;
use crate::state::AppState;
use crate::store::Store;
use crate::store::StoreError;
use std::sync::Arc;

/// What the built-in hubs' REST subset uses: reads (hubs, policies) and the hubs' device side.
#[derive(Clone)]
pub struct HubApiState {
    pub store: Arc<dyn Store>,
    pub device_hub: Arc<DeviceHub>,
    pub config: Arc<Config>,
}

impl FromRef<AppState> for HubApiState {
    fn from_ref(state: &AppState) -> Self {
        HubApiState {
            store: state.store.clone(),
            device_hub: state.device_hub.clone(),
            config: state.config.clone(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let state = HubApiState::from_ref(&state);
    Router::new()
        .route(
            "/devices/{id}",
            get(get_device).put(put_device).delete(delete_device),
        )
        .route("/twins/{id}", get(get_twin).patch(patch_twin))
        .route("/devices/{id}/recentMessages", get(recent_messages))
        .with_state(state)
}

/// The built-in hub the request is for, once its token checks out.
async fn hub_for(state: &HubApiState, headers: &HeaderMap, right: Right) -> Result<String> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name))
        .unwrap_or_default()
        .to_string();
    let linked = state.store.list_hubs().await?;
    let hub = linked
        .iter()
        .find(|h| h.connector == ConnectorKind::BuiltIn && h.host_name.eq_ignore_ascii_case(&host))
        .ok_or_else(|| {
            ServiceError::NotFound(
                code::RESOURCE_NOT_FOUND,
                format!("{host:?} is not a built-in hub of this instance."),
            )
        })?;
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    access::authorize(state.store.as_ref(), authorization, &hub.host_name, right).await?;
    Ok(hub.host_name.clone())
}

async fn device(state: &HubApiState, hub: &str, id: &str) -> Result<HubDevice> {
    state
        .store
        .get_hub_device(hub, id)
        .await?
        .ok_or_else(|| not_found(id))
}

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(
        code::RESOURCE_NOT_FOUND,
        format!("Device {id:?} does not exist on this hub."),
    )
}

async fn get_device(
    State(state): State<HubApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let hub = hub_for(&state, &headers, Right::RegistrationStatusRead).await?;
    let device = device(&state, &hub, &id).await?;
    let connected = state.device_hub.is_connected(&hub, &id);
    Ok(json_response(
        StatusCode::OK,
        &device_json(&device, connected),
    ))
}

/// Creates or updates an identity: status, symmetric keys (generated when left out) and the
/// IoT Edge capability. A new identity starts with an empty twin; an update keeps the twin.
async fn put_device(
    State(state): State<HubApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response> {
    let hub = hub_for(&state, &headers, Right::RegistrationStatusWrite).await?;
    let body = json_body(&state.config, &headers, body).await?;
    let settings = identity_settings(&body, &id)?;
    let cond = if_match(&headers);
    let saved = state
        .device_hub
        .put_identity(&hub, &id, settings, cond)
        .await?;
    let connected = state.device_hub.is_connected(&hub, &id);
    Ok(json_response(
        StatusCode::OK,
        &device_json(&saved, connected),
    ))
}

/// A device identity body (`PUT /devices/{id}`): status, authentication, capabilities.
pub fn identity_settings(body: &Value, path_id: &str) -> Result<IdentitySettings> {
    if body
        .get("deviceId")
        .and_then(Value::as_str)
        .is_some_and(|given| given != path_id)
    {
        return Err(ServiceError::BadRequest(
            "the body's deviceId differs from the one in the path".into(),
        ));
    }
    let enabled = match body.get("status").and_then(Value::as_str) {
        None | Some("enabled") => true,
        Some("disabled") => false,
        Some(other) => {
            return Err(ServiceError::BadRequest(format!(
                "status must be enabled or disabled, not {other:?}"
            )));
        }
    };
    let auth = device_auth(body.get("authentication"))?;
    let iot_edge = body
        .pointer("/capabilities/iotEdge")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(IdentitySettings {
        enabled,
        auth,
        iot_edge,
    })
}

/// `{"type": "sas", "symmetricKey": {...}}` (keys generated when missing), or nothing (SAS with
/// generated keys). X.509 identities come with X.509 attestation.
fn device_auth(authentication: Option<&Value>) -> Result<DeviceAuth> {
    let kind = authentication
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("sas");
    if kind != "sas" {
        return Err(ServiceError::BadRequest(format!(
            "authentication type {kind:?} is not supported by the built-in hub yet (use sas)"
        )));
    }
    let key = |name: &str| -> Result<String> {
        match authentication.and_then(|a| a.pointer(&format!("/symmetricKey/{name}"))) {
            None | Some(Value::Null) => Ok(random_key(32)),
            Some(Value::String(key)) => match check_symmetric_key(key) {
                Ok(()) => Ok(key.clone()),
                Err(why) => Err(ServiceError::BadRequest(format!(
                    "symmetricKey.{name} {why}"
                ))),
            },
            Some(_) => Err(ServiceError::BadRequest(format!(
                "symmetricKey.{name} must be a base64 string"
            ))),
        }
    };
    Ok(DeviceAuth::Sas {
        primary_key: key("primaryKey")?,
        secondary_key: key("secondaryKey")?,
    })
}

async fn delete_device(
    State(state): State<HubApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let hub = hub_for(&state, &headers, Right::RegistrationStatusWrite).await?;
    let cond = if_match(&headers);
    match state.device_hub.delete_identity(&hub, &id, cond).await? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(not_found(&id)),
    }
}

/// Onramp's own: the device's most recent telemetry (kept in memory by the instance it sent to).
async fn recent_messages(
    State(state): State<HubApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let hub = hub_for(&state, &headers, Right::RegistrationStatusRead).await?;
    device(&state, &hub, &id).await?;
    let messages = state.device_hub.recent_telemetry(&hub, &id);
    Ok(json_response(StatusCode::OK, &messages))
}

async fn get_twin(
    State(state): State<HubApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    let hub = hub_for(&state, &headers, Right::RegistrationStatusRead).await?;
    let device = device(&state, &hub, &id).await?;
    Ok(json_response(StatusCode::OK, &twin_json(&device)))
}

/// `{"tags": {...}, "properties": {"desired": {...}}}`, merged as IoT Hub does; a desired change
/// reaches the device at once if it is connected.
async fn patch_twin(
    State(state): State<HubApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response> {
    let hub = hub_for(&state, &headers, Right::RegistrationStatusWrite).await?;
    let patch = json_body(&state.config, &headers, body).await?;
    let TwinPatch { tags, desired } = twin_patch(&patch)?;
    let hub_service: &DeviceHub = &state.device_hub;
    let saved = hub_service
        .patch_twin(
            &hub,
            &id,
            tags.as_ref(),
            desired.as_ref(),
            if_match(&headers),
        )
        .await
        .map_err(|e| match e {
            TwinError::Gone => not_found(&id),
            TwinError::Store(e) => e.into(),
            TwinError::BadPatch(m) => ServiceError::BadRequest(m),
            TwinError::Contended => ServiceError::Store(StoreError::PreconditionFailed),
        })?;
    Ok(json_response(StatusCode::OK, &twin_json(&saved)))
}

/// What a twin PATCH may change: tags and desired properties (reported ones are the device's).
pub struct TwinPatch {
    pub tags: Option<Map<String, Value>>,
    pub desired: Option<Map<String, Value>>,
}

/// Reads a twin PATCH body.
pub fn twin_patch(patch: &Value) -> Result<TwinPatch> {
    let object = |value: Option<&Value>, what: &str| match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map.clone())),
        Some(_) => Err(ServiceError::BadRequest(format!(
            "{what} must be an object"
        ))),
    };
    let tags = object(patch.get("tags"), "tags")?;
    let desired = object(
        patch.get("properties").and_then(|p| p.get("desired")),
        "properties.desired",
    )?;
    if patch
        .get("properties")
        .and_then(|p| p.get("reported"))
        .is_some()
    {
        return Err(ServiceError::BadRequest(
            "reported properties are the device's to write".into(),
        ));
    }
    Ok(TwinPatch { tags, desired })
}

fn status(device: &HubDevice) -> &'static str {
    if device.enabled {
        "enabled"
    } else {
        "disabled"
    }
}

/// IoT Hub's `Twin` shape; its `properties` keep `$version` last (`proto::twin`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TwinView<'a> {
    device_id: &'a str,
    etag: &'a str,
    status: &'static str,
    version: i64,
    tags: &'a Map<String, Value>,
    properties: twin::Document<'a>,
    capabilities: Value,
}

fn twin_json(device: &HubDevice) -> TwinView<'_> {
    TwinView {
        device_id: &device.device_id,
        etag: &device.etag.0,
        status: status(device),
        version: device.desired.version.max(1) + device.reported.version.max(1),
        tags: &device.tags,
        properties: twin::document(device),
        capabilities: json!({ "iotEdge": device.iot_edge }),
    }
}

/// IoT Hub's `Device` shape.
fn device_json(device: &HubDevice, connected: bool) -> Value {
    let authentication = match &device.auth {
        DeviceAuth::Sas {
            primary_key,
            secondary_key,
        } => json!({
            "type": "sas",
            "symmetricKey": { "primaryKey": primary_key, "secondaryKey": secondary_key },
        }),
        DeviceAuth::SelfSigned {
            primary_thumbprint,
            secondary_thumbprint,
        } => json!({
            "type": "selfSigned",
            "x509Thumbprint": {
                "primaryThumbprint": primary_thumbprint,
                "secondaryThumbprint": secondary_thumbprint,
            },
        }),
        DeviceAuth::CertificateAuthority => json!({ "type": "certificateAuthority" }),
    };
    json!({
        "deviceId": device.device_id,
        "generationId": device.generation_id,
        "etag": device.etag.0,
        "status": status(device),
        "connectionState": if connected { "Connected" } else { "Disconnected" },
        "authentication": authentication,
        "capabilities": { "iotEdge": device.iot_edge },
    })
}
