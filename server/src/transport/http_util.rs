//! What every HTTP API of Onramp answers the same way: JSON bodies, the Azure error body with
//! `x-ms-error-code`, and bounded request bodies.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::proto::error::ErrorBody;

const JSON: &str = "application/json; charset=utf-8";

pub fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let body = serde_json::to_vec(body).expect("wire types serialize");
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    headers.insert("x-ms-request-id", new_id());
    response
}

/// The Azure error body; the HTTP status is the error code / 1000.
pub fn azure_error(code: i64, message: String) -> Response {
    azure_error_with(code, message, serde_json::Map::new())
}

/// The Azure error body with fields of the error's own beside its four (a TPM challenge's key).
pub fn azure_error_with(
    code: i64,
    message: String,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut body = match serde_json::to_value(ErrorBody::new(code, message)) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    };
    body.extend(extra);
    let status =
        StatusCode::from_u16((code / 1000) as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = json_response(status, &body);
    response
        .headers_mut()
        .insert("x-ms-error-code", HeaderValue::from(code));
    response
}

/// The body was larger than the limit.
#[derive(Debug, Clone, Copy)]
pub struct TooLarge(pub usize);

/// Reads the body, refusing more than `limit` bytes. Bodies up to 16 × the limit are read to the
/// end before the refusal, so the client sees the answer instead of a reset mid-upload; anything
/// larger is cut off at once.
pub async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<bytes::Bytes, TooLarge> {
    let drain_limit = limit.saturating_mul(16);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > drain_limit) {
        return Err(TooLarge(limit));
    }
    match axum::body::to_bytes(body, drain_limit).await {
        Ok(bytes) if bytes.len() <= limit => Ok(bytes),
        _ => Err(TooLarge(limit)),
    }
}

fn new_id() -> HeaderValue {
    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid is a header value")
}
