//! Certificates issued at provisioning on the service API: credential policies and issuers
//! (ServiceConfig), a device's issued certificates and their revocation (registration rights),
//! and each issuer's CRL (`crl`, public at `/crl/{issuer}.crl` as the certificates' distribution
//! point says, routed by `https`). The rules are in `domain::admin::credentials` and `domain::issuance`.

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::Value;

use super::admin_api::parse;
use super::http_util::json_response;
use super::service_api::{
    Caller, Result, ServiceApiState, ServiceError, authorize, json_body, observed,
};
use crate::domain::admin::{PolicyInput, issued_view, issuer_view, policy_view};
use crate::domain::issuance;
use crate::model::Right;
use crate::proto::error::code;
use crate::state::AppState;

pub fn router(state: AppState) -> Router {
    let state = ServiceApiState::from_ref(&state);
    let router = Router::new()
        .route("/credentialPolicies", get(list_policies))
        .route(
            "/credentialPolicies/{name}",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .route("/certificateIssuers", get(list_issuers))
        .route(
            "/certificateIssuers/{name}",
            get(get_issuer).put(put_issuer).delete(delete_issuer),
        )
        .route("/registrations/{id}/certificates", get(list_issued))
        .route("/registrations/{id}/certificates/revoke", post(revoke));
    observed(router, state)
}

fn not_found(what: String) -> ServiceError {
    ServiceError::NotFound(code::RESOURCE_NOT_FOUND, format!("No {what}."))
}

async fn list_policies(State(state): State<ServiceApiState>, caller: Caller) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let policies = state.store.list_credential_policies().await?;
    let views: Vec<Value> = policies.iter().map(policy_view).collect();
    Ok(json_response(StatusCode::OK, &views))
}

async fn get_policy(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let policy = state
        .store
        .get_credential_policy(&name)
        .await?
        .ok_or_else(|| not_found(format!("credential policy {name:?}")))?;
    Ok(json_response(StatusCode::OK, &policy_view(&policy)))
}

async fn put_policy(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let input: PolicyInput = parse(json_body(&state.config, &headers, body).await?)?;
    let policy = state
        .admin
        .put_credential_policy(&actor, &name, input)
        .await?;
    Ok(json_response(StatusCode::OK, &policy_view(&policy)))
}

async fn delete_policy(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    state.admin.delete_credential_policy(&actor, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_issuers(State(state): State<ServiceApiState>, caller: Caller) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let issuers = state.store.list_issuers().await?;
    let views: Vec<Value> = issuers.iter().map(issuer_view).collect();
    Ok(json_response(StatusCode::OK, &views))
}

async fn get_issuer(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::ServiceConfig).await?;
    let issuer = state
        .store
        .get_issuer(&name)
        .await?
        .ok_or_else(|| not_found(format!("issuer {name:?}")))?;
    Ok(json_response(StatusCode::OK, &issuer_view(&issuer)))
}

/// An issuer upload: the CA chain and the CA's key, both PEM. The key is never returned.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerBody {
    certificates: String,
    key: String,
}

async fn put_issuer(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    let body: IssuerBody = parse(json_body(&state.config, &headers, body).await?)?;
    let issuer = state
        .admin
        .put_issuer(&actor, &name, &body.certificates, &body.key)
        .await?;
    Ok(json_response(StatusCode::OK, &issuer_view(&issuer)))
}

async fn delete_issuer(
    State(state): State<ServiceApiState>,
    Path(name): Path<String>,
    caller: Caller,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::ServiceConfig).await?;
    state.admin.delete_issuer(&actor, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_issued(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
) -> Result<Response> {
    authorize(&state, &caller, Right::RegistrationStatusRead).await?;
    let issued = state.store.issued_certificates(&id).await?;
    let views: Vec<Value> = issued.iter().map(issued_view).collect();
    Ok(json_response(StatusCode::OK, &views))
}

/// `{"serialNumber": "..."}` revokes one certificate; an empty body or `{}` all of the device's.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevokeBody {
    #[serde(default)]
    serial_number: Option<String>,
}

async fn revoke(
    State(state): State<ServiceApiState>,
    Path(id): Path<String>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let actor = authorize(&state, &caller, Right::RegistrationStatusWrite).await?;
    let body = match json_body(&state.config, &headers, body).await? {
        Value::Null => RevokeBody::default(),
        value => parse(value)?,
    };
    let revoked = state
        .admin
        .revoke_certificates(&actor, &id, body.serial_number.as_deref())
        .await?;
    let views: Vec<Value> = revoked.iter().map(issued_view).collect();
    Ok(json_response(StatusCode::OK, &views))
}

/// The CRL, signed when asked (one signature; relying parties cache it until its next update).
/// Public, outside the service API: `transport::https` routes it.
pub(super) async fn crl(
    State(state): State<ServiceApiState>,
    Path(file): Path<String>,
) -> Result<Response> {
    let issuer = file
        .strip_suffix(".crl")
        .ok_or_else(|| not_found(format!("CRL {file:?}")))?;
    let crl = issuance::crl(state.store.as_ref(), issuer)
        .await?
        .ok_or_else(|| not_found(format!("issuer {issuer:?}")))?;
    let headers = [
        (header::CONTENT_TYPE, "application/pkix-crl"),
        (header::CACHE_CONTROL, "max-age=300"),
    ];
    Ok((StatusCode::OK, headers, crl).into_response())
}
