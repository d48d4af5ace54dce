//! The DPS service API over HTTPS, as the official service SDKs call it: individual enrollments and
//! enrollment groups (get, create-or-update with ETags, delete, attestation mechanism, query with
//! paging, bulk), and registration records. Authorized by shared access policies per operation.
//! Paths are matched case-insensitively and a trailing slash is ignored, as Azure does (the Node
//! SDK calls `/enrollments/` and `/enrollmentgroups/...`).

use axum::Router;
use axum::body::Body;
use axum::extract::FromRef;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

use super::http_util::{TooLarge, azure_error, json_response, read_body};
use crate::config::Config;
use crate::domain::access::{self, AccessError};
use crate::domain::admin::Admin;
use crate::domain::admin::{AdminError, Resource};
use crate::domain::provisioner::registration_result;
use crate::domain::throttle::RateLimit;
use crate::metrics::Metrics;
use crate::model::*;
use crate::proto::error::code;
use crate::state::AppState;
use crate::store::Store;
use crate::store::StoreError;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// What the service API (and Onramp's admin resources beside it) use: reads, the admin service
/// for every change, and the configuration (host name, limits).
#[derive(Clone)]
pub struct ServiceApiState {
    pub store: Arc<dyn Store>,
    pub admin: Arc<Admin>,
    pub config: Arc<Config>,
    pub calls: Arc<RateLimit>,
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for ServiceApiState {
    fn from_ref(state: &AppState) -> Self {
        ServiceApiState {
            store: state.store.clone(),
            admin: state.admin.clone(),
            config: state.config.clone(),
            calls: state.service_api_calls.clone(),
            metrics: state.metrics.clone(),
        }
    }
}

/// Page size when the client sends no `x-ms-max-item-count`.
const DEFAULT_PAGE: u32 = 100;
/// Items in one bulk operation, like Azure.
const MAX_BULK: usize = 10;

pub fn router(state: AppState) -> Router {
    let state = ServiceApiState::from_ref(&state);
    let router = Router::new()
        .route("/enrollments", post(bulk::<Enrollment>))
        .route("/enrollments/query", post(query::<Enrollment>))
        .route(
            "/enrollments/{id}",
            get(get_one::<Enrollment>)
                .put(put_one::<Enrollment>)
                .delete(delete_one::<Enrollment>),
        )
        .route(
            "/enrollments/{id}/attestationmechanism",
            post(attestation::<Enrollment>),
        )
        .route(
            "/enrollments/{id}/testFault",
            get(get_fault::<Enrollment>)
                .put(put_fault::<Enrollment>)
                .delete(delete_fault::<Enrollment>),
        )
        .route("/enrollmentGroups", post(bulk::<EnrollmentGroup>))
        .route("/enrollmentGroups/query", post(query::<EnrollmentGroup>))
        .route(
            "/enrollmentGroups/{id}",
            get(get_one::<EnrollmentGroup>)
                .put(put_one::<EnrollmentGroup>)
                .delete(delete_one::<EnrollmentGroup>),
        )
        .route(
            "/enrollmentGroups/{id}/attestationmechanism",
            post(attestation::<EnrollmentGroup>),
        )
        .route(
            "/enrollmentGroups/{id}/testFault",
            get(get_fault::<EnrollmentGroup>)
                .put(put_fault::<EnrollmentGroup>)
                .delete(delete_fault::<EnrollmentGroup>),
        )
        .route(
            "/registrations/{id}",
            get(get_registration).delete(delete_registration),
        )
        .route("/registrations/{id}/query", post(query_registrations));
    observed(router, state)
}

/// Counts and logs every call of `router`'s routes (the ServiceOperations log): operation (method
/// and route), the policy it signed with, status and latency. Shared with the admin API.
pub(super) fn observed(router: Router<ServiceApiState>, state: ServiceApiState) -> Router {
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            observe_call,
        ))
        .with_state(state)
}

/// The access policy a call signed with, filled in by `authorize` for its log line.
#[derive(Clone, Default)]
struct CallPolicy(Arc<OnceLock<String>>);

async fn observe_call(
    State(metrics): State<Arc<Metrics>>,
    matched: Option<axum::extract::MatchedPath>,
    mut request: Request,
    next: axum::middleware::Next,
) -> Response {
    let route = matched.as_ref().map_or("(unmatched)", |m| m.as_str());
    let operation = format!("{} {route}", request.method());
    let policy = CallPolicy::default();
    request.extensions_mut().insert(policy.clone());
    let caller = request
        .extensions()
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let started = Instant::now();
    let response = next.run(request).await;
    let took = started.elapsed();
    let status = response.status().as_u16();
    metrics.service_call(&operation, status, took);
    if status == StatusCode::TOO_MANY_REQUESTS {
        metrics.throttled("service_api_calls_per_minute");
    }
    tracing::info!(
        target: "onramp::service_operations",
        operation,
        policy = policy.0.get().map_or("-", String::as_str),
        status,
        latency_ms = took.as_millis() as u64,
        caller = ?caller,
        "service operation"
    );
    response
}

/// Rewrites service paths to their canonical spelling before routing: `/EnrollmentGroups/x/` →
/// `/enrollmentGroups/x`. Device paths (which start with the ID scope) pass unchanged.
pub fn canonical_path(mut request: Request) -> Request {
    let path = request.uri().path();
    let mut segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let Some(first) = segments.first() else {
        return request;
    };
    let canonical = match first.to_ascii_lowercase().as_str() {
        "enrollments" => "enrollments",
        "enrollmentgroups" => "enrollmentGroups",
        "registrations" => "registrations",
        _ => return request,
    };
    segments[0] = canonical;
    if segments.len() > 1 && segments.last() == Some(&"") {
        segments.pop();
    }
    let keyword = |s: &str| match s.to_ascii_lowercase().as_str() {
        "query" => Some("query"),
        "attestationmechanism" => Some("attestationmechanism"),
        "testfault" => Some("testFault"),
        _ => None,
    };
    let rewritten: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i > 0 && (i == segments.len() - 1) {
                keyword(s).unwrap_or(s)
            } else {
                s
            }
        })
        .collect();
    let mut path_and_query = format!("/{}", rewritten.join("/"));
    if let Some(query) = request.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    if let Ok(uri) = path_and_query.parse::<Uri>() {
        *request.uri_mut() = uri;
    }
    request
}

/// A service API failure, answered with the Azure error body.
#[derive(Debug)]
pub enum ServiceError {
    BadRequest(String),
    Access(AccessError),
    NotFound(i64, String),
    Store(StoreError),
    TooLarge(usize),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e)
    }
}

impl From<AdminError> for ServiceError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(m) => ServiceError::BadRequest(m),
            AdminError::NotFound(what) => {
                ServiceError::NotFound(code::RESOURCE_NOT_FOUND, format!("No {what}."))
            }
            AdminError::Store(e) => ServiceError::Store(e),
        }
    }
}

impl From<AccessError> for ServiceError {
    fn from(e: AccessError) -> Self {
        ServiceError::Access(e)
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let (code, message) = match self {
            ServiceError::BadRequest(m) => (code::BAD_REQUEST, m),
            ServiceError::Access(AccessError::Unauthorized(why)) if why == access::EXPIRED => {
                (code::UNAUTHORIZED, "The SAS token has expired.".into())
            }
            ServiceError::Access(AccessError::Unauthorized(why)) => {
                tracing::info!(reason = %why, "service API call refused");
                (code::UNAUTHORIZED, "Unauthorized".into())
            }
            ServiceError::Access(e @ AccessError::MissingRight { .. }) => {
                (code::UNAUTHORIZED, e.to_string())
            }
            ServiceError::Access(AccessError::Store(e)) => internal(e),
            ServiceError::Access(e @ AccessError::Throttled { retry_after }) => {
                let mut response = azure_error(code::THROTTLED, e.to_string());
                let value = HeaderValue::from(retry_after);
                response.headers_mut().insert(header::RETRY_AFTER, value);
                return response;
            }
            ServiceError::NotFound(code, m) => (code, m),
            ServiceError::Store(StoreError::PreconditionFailed) => (
                code::PRECONDITION_FAILED,
                "The ETag does not match the stored record (If-Match).".into(),
            ),
            ServiceError::Store(StoreError::Conflict) => {
                (code::CONFLICT, "The record already exists.".into())
            }
            ServiceError::Store(StoreError::NotFound) => (code::NOT_FOUND, "Not found.".into()),
            ServiceError::Store(e) => internal(e.to_string()),
            ServiceError::TooLarge(limit) => (
                code::PAYLOAD_TOO_LARGE,
                format!("The request body is larger than {limit} bytes."),
            ),
        };
        azure_error(code, message)
    }
}

fn internal(detail: String) -> (i64, String) {
    tracing::error!(error = %detail, "service API failure");
    (code::INTERNAL, "Internal server error".into())
}

pub(super) type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Who calls the service API: the `Authorization` it sent and the address it came from.
pub struct Caller {
    authorization: Option<String>,
    address: Option<std::net::IpAddr>,
    policy: Option<CallPolicy>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller {
            authorization: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(String::from),
            address: parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
            policy: parts.extensions.get::<CallPolicy>().cloned(),
        })
    }
}

/// Checks the caller's right; the policy it signed with is the actor of any change it makes.
pub(super) async fn authorize(
    state: &ServiceApiState,
    caller: &Caller,
    right: Right,
) -> Result<Actor> {
    let authorization = caller.authorization.as_deref();
    let policy = access::authorize_call(
        state.store.as_ref(),
        &state.calls,
        authorization,
        &state.config.hostname,
        right,
    )
    .await?;
    if let Some(slot) = &caller.policy {
        let _ = slot.0.set(policy.name.clone());
    }
    Ok(Actor::service_api(&policy.name, caller.address))
}

pub(super) async fn json_body(config: &Config, headers: &HeaderMap, body: Body) -> Result<Value> {
    let bytes = read_body(body, headers, config.limits.max_body_bytes)
        .await
        .map_err(|TooLarge(limit)| ServiceError::TooLarge(limit))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ServiceError::BadRequest(format!("malformed JSON body: {e}")))
}

pub(super) fn if_match(headers: &HeaderMap) -> IfMatch {
    IfMatch::from_header(headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()))
}

fn not_found<R: Resource>(id: &str) -> ServiceError {
    ServiceError::NotFound(
        code::ENROLLMENT_NOT_FOUND,
        format!("No {} {id:?}.", R::NOT_FOUND),
    )
}

async fn get_one<R: Resource>(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::EnrollmentRead).await?;
    let item = R::fetch(state.store.as_ref(), &id)
        .await?
        .ok_or_else(|| not_found::<R>(&id))?;
    let mut json = item.to_json(false);
    item.decorate(state.store.as_ref(), &mut json).await?;
    Ok(json_response(StatusCode::OK, &json))
}

async fn attestation<R: Resource>(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::EnrollmentRead).await?;
    let item = R::fetch(state.store.as_ref(), &id)
        .await?
        .ok_or_else(|| not_found::<R>(&id))?;
    Ok(json_response(
        StatusCode::OK,
        &item.to_json(true)["attestation"],
    ))
}

/// Test mode (Onramp's own, not Azure's): the fault this enrollment or group injects into its
/// next registrations (`model::fault`).
async fn get_fault<R: Resource>(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::EnrollmentRead).await?;
    let fault = state.admin.fault::<R>(&id).await?.ok_or_else(|| {
        ServiceError::NotFound(
            code::RESOURCE_NOT_FOUND,
            format!("No test fault is set on {} {id:?}.", R::NOT_FOUND),
        )
    })?;
    Ok(json_response(StatusCode::OK, &fault))
}

async fn put_fault<R: Resource>(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::EnrollmentWrite).await?;
    let fault = serde_json::from_value(json_body(&state.config, &headers, body).await?)
        .map_err(|e| ServiceError::BadRequest(format!("invalid test fault: {e}")))?;
    let fault = state.admin.set_fault::<R>(&actor, &id, fault).await?;
    Ok(json_response(StatusCode::OK, &fault))
}

async fn delete_fault<R: Resource>(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::EnrollmentWrite).await?;
    state.admin.clear_fault::<R>(&actor, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn put_one<R: Resource>(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::EnrollmentWrite).await?;
    let value = json_body(&state.config, &headers, body).await?;
    let stored: R = state
        .admin
        .put_enrollment(&actor, &value, Some(&id), if_match(&headers))
        .await?;
    Ok(json_response(StatusCode::OK, &stored.to_json(true)))
}

async fn delete_one<R: Resource>(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::EnrollmentWrite).await?;
    let admin = &state.admin;
    if admin
        .delete_enrollment::<R>(&actor, &id, if_match(&headers))
        .await?
    {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found::<R>(&id))
    }
}

/// Paging from `x-ms-max-item-count` and the opaque `x-ms-continuation`.
fn page_request(headers: &HeaderMap) -> Result<ListQuery> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
    };
    let limit = match text("x-ms-max-item-count") {
        Some(n) => n
            .parse::<u32>()
            .map_err(|_| ServiceError::BadRequest("x-ms-max-item-count must be a number".into()))?,
        None => DEFAULT_PAGE,
    };
    let after = match text("x-ms-continuation") {
        Some(token) => Some(
            URL_SAFE_NO_PAD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ServiceError::BadRequest("invalid x-ms-continuation".into()))?,
        ),
        None => None,
    };
    Ok(ListQuery {
        after,
        limit: if limit == 0 { DEFAULT_PAGE } else { limit },
        ..Default::default()
    })
}

fn page_response(
    items: Vec<Value>,
    next: Option<String>,
    limit: u32,
    item_type: &'static str,
) -> Response {
    let mut response = json_response(StatusCode::OK, &items);
    let headers = response.headers_mut();
    headers.insert("x-ms-item-type", HeaderValue::from_static(item_type));
    headers.insert("x-ms-max-item-count", HeaderValue::from(limit));
    let token = next.and_then(|next| HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(next)).ok());
    if let Some(token) = token {
        headers.insert("x-ms-continuation", token);
    }
    response
}

/// Every query string the SDKs send (`*`, `SELECT *`, `SELECT * FROM enrollments`) selects all.
async fn query<R: Resource>(
    State(state): State<ServiceApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&state, &caller, Right::EnrollmentRead).await?;
    json_body(&state.config, &headers, body).await?;
    let request = page_request(&headers)?;
    let page = R::page(state.store.as_ref(), &request).await?;
    let items = page.items.iter().map(|item| item.to_json(false)).collect();
    Ok(page_response(items, page.next, request.limit, R::ITEM_TYPE))
}

async fn bulk<R: Resource>(
    State(state): State<ServiceApiState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::EnrollmentWrite).await?;
    let value = json_body(&state.config, &headers, body).await?;
    let mode = value
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_ascii_lowercase();
    let items = value
        .get(R::BULK_FIELD)
        .and_then(Value::as_array)
        .ok_or_else(|| ServiceError::BadRequest(format!("`{}` must be an array", R::BULK_FIELD)))?;
    if items.is_empty() || items.len() > MAX_BULK {
        return Err(ServiceError::BadRequest(format!(
            "a bulk operation takes 1 to {MAX_BULK} items"
        )));
    }
    if !["create", "update", "updateifmatchetag", "delete"].contains(&mode.as_str()) {
        return Err(ServiceError::BadRequest(
            "`mode` must be create, update, updateIfMatchETag or delete".into(),
        ));
    }
    let mut errors = Vec::new();
    for item in items {
        let id = item
            .get(R::ID_FIELD)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let etag = || {
            IfMatch::Etag(Etag::parse(
                item.get("etag").and_then(Value::as_str).unwrap_or_default(),
            ))
        };
        let put = |cond| state.admin.put_enrollment::<R>(&actor, item, None, cond);
        let outcome = match mode.as_str() {
            "create" => put(IfMatch::Absent).await.map(drop).map_err(Into::into),
            "update" => put(IfMatch::Any).await.map(drop).map_err(Into::into),
            "updateifmatchetag" => put(etag()).await.map(drop).map_err(Into::into),
            _ => match state
                .admin
                .delete_enrollment::<R>(&actor, &id, IfMatch::Any)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(not_found::<R>(&id)),
                Err(e) => Err(ServiceError::from(e)),
            },
        };
        if let Err(e) = outcome {
            let response = e.into_response();
            let status = response.status().as_u16();
            let code = response
                .headers()
                .get("x-ms-error-code")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok());
            let mut error = serde_json::Map::new();
            error.insert(R::ID_FIELD.into(), json!(id));
            error.insert("errorCode".into(), json!(code));
            error.insert("errorStatus".into(), json!(status_text(status)));
            errors.push(Value::Object(error));
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({ "isSuccessful": errors.is_empty(), "errors": errors }),
    ))
}

fn status_text(status: u16) -> String {
    StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
        .to_string()
}

/// Registration etags travel base64-encoded (of the quoted tag); `If-Match` may carry either form.
fn registration_if_match(headers: &HeaderMap) -> IfMatch {
    match if_match(headers) {
        IfMatch::Etag(Etag(raw)) => {
            let decoded = BASE64
                .decode(&raw)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            IfMatch::Etag(decoded.map(|d| Etag::parse(&d)).unwrap_or(Etag(raw)))
        }
        other => other,
    }
}

fn registration_not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(code::NOT_FOUND, format!("No registration record {id:?}."))
}

async fn get_registration(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::RegistrationStatusRead).await?;
    let record = state
        .store
        .get_registration(&id)
        .await?
        .ok_or_else(|| registration_not_found(&id))?;
    Ok(json_response(StatusCode::OK, &registration_result(&record)))
}

async fn delete_registration(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::RegistrationStatusWrite).await?;
    let cond = registration_if_match(&headers);
    match state.admin.delete_registration(&actor, &id, cond).await? {
        true => Ok(StatusCode::NO_CONTENT.into_response()),
        false => Err(registration_not_found(&id)),
    }
}

async fn query_registrations(
    State(state): State<ServiceApiState>,
    Path(group_id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    authorize(&state, &caller, Right::RegistrationStatusRead).await?;
    json_body(&state.config, &headers, body).await?;
    let request = ListQuery {
        group_id: Some(group_id),
        ..page_request(&headers)?
    };
    let page = state.store.list_registrations(&request).await?;
    let items = page
        .items
        .iter()
        .map(|r| serde_json::to_value(registration_result(r)).unwrap_or(Value::Null))
        .collect();
    Ok(page_response(
        items,
        page.next,
        request.limit,
        "DeviceRegistration",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> String {
        canonical_path(Request::builder().uri(p).body(Body::empty()).unwrap())
            .uri()
            .to_string()
    }

    #[test]
    fn service_paths_are_case_insensitive() {
        assert_eq!(
            path("/enrollmentgroups/G1/AttestationMechanism?api-version=x"),
            "/enrollmentGroups/G1/attestationmechanism?api-version=x"
        );
        assert_eq!(
            path("/Enrollments/?api-version=1"),
            "/enrollments?api-version=1"
        );
        assert_eq!(path("/enrollments/Query"), "/enrollments/query");
        assert_eq!(path("/REGISTRATIONS/grp/query"), "/registrations/grp/query");
        assert_eq!(
            path("/enrollments/Dev-1"),
            "/enrollments/Dev-1",
            "IDs keep their spelling"
        );
        assert_eq!(
            path("/0ne0000/registrations/dev/register"),
            "/0ne0000/registrations/dev/register"
        );
    }
}
