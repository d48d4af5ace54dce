//! The DPS device API over HTTPS: `PUT .../register`, `GET .../operations/{id}` and the status
//! lookup `POST /{scope}/registrations/{id}`. Decodes, calls the Provisioner, encodes; every error
//! leaves as an HTTP status with the Azure error body. Any `api-version` is accepted.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Serialize;

use crate::diagnostics::Protocol;
use crate::domain::provisioner::{
    Credential, OperationReply, ProvisionError, RegisterRequest, StatusRequest,
};
use crate::proto::error::ErrorBody;
use crate::proto::timestamp;
use crate::service::AppState;

pub fn router(state: AppState) -> Router {
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

const JSON: &str = "application/json; charset=utf-8";

async fn register(
    State(state): State<AppState>,
    Path((scope, registration_id)): Path<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.config.limits.max_body_bytes;
    let body = match read_body(body, &parts.headers, limit).await {
        Ok(body) => body,
        Err(e) => {
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
        credential: credential(&parts.headers),
        protocol: Protocol::Https,
        client: parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    };
    match state.provisioner.register(request).await {
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
    State(state): State<AppState>,
    Path((scope, registration_id, operation_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let request = status_request(scope, registration_id, &headers);
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
    State(state): State<AppState>,
    Path((scope, registration_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let request = status_request(scope, registration_id, &headers);
    match state.provisioner.registration_status(request).await {
        Ok(result) => json_response(StatusCode::OK, &result),
        Err(e) => error_response(&e),
    }
}

fn status_request(id_scope: String, registration_id: String, headers: &HeaderMap) -> StatusRequest {
    StatusRequest {
        id_scope,
        registration_id,
        credential: credential(headers),
        protocol: Protocol::Https,
    }
}

fn credential(headers: &HeaderMap) -> Credential {
    match headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        Some(token) => Credential::Sas(token.to_string()),
        None => Credential::None,
    }
}

/// Reads the body, refusing more than `limit` bytes. Bodies up to 16 × the limit are read to the
/// end before the 413, so the client sees the answer instead of a reset mid-upload; anything larger
/// is cut off at once.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, ProvisionError> {
    let drain_limit = limit.saturating_mul(16);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > drain_limit) {
        return Err(ProvisionError::TooLarge(limit));
    }
    match axum::body::to_bytes(body, drain_limit).await {
        Ok(bytes) if bytes.len() <= limit => Ok(bytes),
        _ => Err(ProvisionError::TooLarge(limit)),
    }
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

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let body = serde_json::to_vec(body).expect("wire types serialize");
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert("x-ms-request-id", request_id());
    response
}

/// The Azure error body, with `x-ms-error-code`.
pub fn error_response(e: &ProvisionError) -> Response {
    let tracking_id = uuid::Uuid::new_v4().to_string();
    let body = ErrorBody {
        error_code: e.code(),
        tracking_id,
        message: e.client_message(),
        timestamp_utc: timestamp(chrono::Utc::now()),
    };
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, &body);
    response
        .headers_mut()
        .insert("x-ms-error-code", HeaderValue::from(e.code()));
    response
}

fn request_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid is a header value")
}
