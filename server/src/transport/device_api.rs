//! The DPS device API over HTTPS: `PUT .../register`, `GET .../operations/{id}` and the status
//! lookup `POST /{scope}/registrations/{id}`. Decodes, calls the Provisioner, encodes; every error
//! leaves as an HTTP status with the Azure error body. Any `api-version` is accepted.

use std::net::SocketAddr;

use super::http_util::{TooLarge, azure_error, azure_error_with, json_response, read_body};
use crate::attestation::x509::PresentedChain;
use crate::config::Config;
use crate::diagnostics::Protocol;
use crate::domain::provisioner::Provisioner;
use crate::domain::provisioner::{
    Credential, OperationReply, ProvisionError, RegisterRequest, StatusRequest,
};
use crate::state::AppState;
use axum::Extension;
use axum::Router;
use axum::extract::FromRef;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::{get, post, put};
use std::sync::Arc;

/// What the device API uses: the registration path and the request limits.
#[derive(Clone)]
pub struct DeviceApiState {
    pub provisioner: Arc<Provisioner>,
    pub config: Arc<Config>,
}

impl FromRef<AppState> for DeviceApiState {
    fn from_ref(state: &AppState) -> Self {
        DeviceApiState {
            provisioner: state.provisioner.clone(),
            config: state.config.clone(),
        }
    }
}

pub fn router(state: AppState) -> Router {
    let state = DeviceApiState::from_ref(&state);
    Router::new()
        .route(
            "/{scope}/registrations/{registration_id}/register",
            put(register),
        )
        .route(
            "/{scope}/registrations/{registration_id}/operations/{operation_id}",
            get(operation_status),
        )
        .route(
            "/{scope}/registrations/{registration_id}",
            post(registration_status),
        )
        .with_state(state)
}

async fn register(
    State(state): State<DeviceApiState>,
    Path((scope, registration_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.config.limits.max_body_bytes;
    let body = match read_body(body, &parts.headers, limit).await {
        Ok(body) => body,
        Err(TooLarge(limit)) => {
            let e = ProvisionError::TooLarge(limit);
            state
                .provisioner
                .report_refusal(&registration_id, Protocol::Https, &e);
            return error_response(&e);
        }
    };
    let request = RegisterRequest {
        id_scope: scope.clone(),
        registration_id: registration_id.clone(),
        body,
        credential: Credential::from_parts(
            token(&parts.headers),
            parts.extensions.get::<PresentedChain>(),
        ),
        protocol: Protocol::Https,
        client: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    };
    match state.provisioner.register(request).await {
        Ok(reply) if reply.drop_connection => dropped_connection(),
        Ok(reply) => {
            let location = format!(
                "{}/{scope}/registrations/{registration_id}/register",
                state.config.https_url()
            );
            let mut response = operation_response(StatusCode::ACCEPTED, &reply);
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response
        }
        Err(e) => error_response(&e),
    }
}

async fn operation_status(
    State(state): State<DeviceApiState>,
    Path((scope, registration_id, operation_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    chain: Option<Extension<PresentedChain>>,
) -> Response {
    let chain = chain.map(|Extension(c)| c);
    let credential = Credential::from_parts(token(&headers), chain.as_ref());
    let request = status_request(scope, registration_id, credential);
    match state
        .provisioner
        .operation_status(request, &operation_id)
        .await
    {
        Ok(reply) if reply.is_final() => operation_response(StatusCode::OK, &reply),
        Ok(reply) => operation_response(StatusCode::ACCEPTED, &reply),
        Err(e) => error_response(&e),
    }
}

async fn registration_status(
    State(state): State<DeviceApiState>,
    Path((scope, registration_id)): Path<(String, String)>,
    headers: HeaderMap,
    chain: Option<Extension<PresentedChain>>,
) -> Response {
    let chain = chain.map(|Extension(c)| c);
    let credential = Credential::from_parts(token(&headers), chain.as_ref());
    let request = status_request(scope, registration_id, credential);
    match state.provisioner.registration_status(request).await {
        Ok(result) => json_response(StatusCode::OK, &result),
        Err(e) => error_response(&e),
    }
}

fn status_request(
    id_scope: String,
    registration_id: String,
    credential: Credential,
) -> StatusRequest {
    StatusRequest {
        id_scope,
        registration_id,
        credential,
        protocol: Protocol::Https,
    }
}

fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

fn operation_response(status: StatusCode, reply: &OperationReply) -> Response {
    let mut response = json_response(status, &reply.operation);
    if !reply.is_final() || status == StatusCode::ACCEPTED {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(reply.retry_after_secs),
        );
    }
    response
}

/// Test mode: a body that fails before its first byte, so hyper closes the connection instead of
/// finishing the reply (HTTP's nearest to an MQTT connection dropped before the answer).
fn dropped_connection() -> Response {
    let failed = std::io::Error::other("test mode: connection dropped before the reply");
    let body = futures::stream::once(async { Err::<bytes::Bytes, _>(failed) });
    Response::new(axum::body::Body::from_stream(body))
}

/// The Azure error body for a provisioning error.
pub fn error_response(e: &ProvisionError) -> Response {
    let mut response = match e {
        // The SDKs read `authenticationKey` (Node) and `keyName` (C) beside the message.
        ProvisionError::TpmChallenge(blob) => {
            let mut challenge = serde_json::Map::new();
            challenge.insert("authenticationKey".into(), blob.as_str().into());
            challenge.insert("keyName".into(), "registration".into());
            azure_error_with(e.code(), e.client_message(), challenge)
        }
        _ => azure_error(e.code(), e.client_message()),
    };
    if let Some(secs) = e.retry_after_secs() {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}
