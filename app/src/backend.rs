//! The server side of the console: the domain services server functions call. The server crate
//! implements it and provides it by context, so the console holds no rule of its own. Changes
//! take the acting user's name for the audit trail.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use leptos::prelude::*;

use crate::model::*;

pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BackendError>> + Send + 'a>>;

/// Why the backend did not do what a page asked.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendError {
    /// The input breaks a rule; the message says which, for the user.
    Invalid(String),
    NotFound(String),
    /// The store did not answer (details are in the server log).
    Unavailable,
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendError::Invalid(m) | BackendError::NotFound(m) => f.write_str(m),
            BackendError::Unavailable => f.write_str("the store did not answer; try again"),
        }
    }
}

/// A backend refusal as a server function error, with the HTTP status that fits.
pub fn refused(e: BackendError) -> ServerFnError {
    let status = match e {
        BackendError::Invalid(_) => http::StatusCode::BAD_REQUEST,
        BackendError::NotFound(_) => http::StatusCode::NOT_FOUND,
        BackendError::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
    };
    if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
        response.set_status(status);
    }
    ServerFnError::new(e.to_string())
}

/// A form's whole number, or a refusal naming `what`.
pub fn whole_number(text: &str, what: &str) -> Result<u32, ServerFnError> {
    text.trim().parse().map_err(|_| {
        refused(BackendError::Invalid(format!(
            "{what} must be a whole number, not {text:?}"
        )))
    })
}

pub trait ConsoleBackend: Send + Sync + 'static {
    fn summary(&self) -> BackendFuture<'_, InstanceSummary>;
    /// Linked hubs with the number of devices on each.
    fn hubs(&self) -> BackendFuture<'_, Vec<HubSummary>>;
    /// Individual enrollments, or groups when `filter.kind` is "group".
    fn list_enrollments(&self, filter: EnrollmentFilter) -> BackendFuture<'_, EnrollmentPage>;
    fn enrollment<'a>(
        &'a self,
        id: &'a str,
        group: bool,
        with_keys: bool,
    ) -> BackendFuture<'a, Option<EnrollmentDetail>>;
    /// Creates (`create`: fails if it exists) or updates an individual enrollment or a group.
    fn save_enrollment<'a>(
        &'a self,
        actor: &'a str,
        form: EnrollmentForm,
        group: bool,
        create: bool,
    ) -> BackendFuture<'a, ()>;
    fn set_enrollment_status<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        enabled: bool,
    ) -> BackendFuture<'a, ()>;
    fn delete_enrollment<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
    ) -> BackendFuture<'a, ()>;
    /// Replaces the primary (or secondary) symmetric key with a fresh one.
    fn roll_key<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        secondary: bool,
    ) -> BackendFuture<'a, ()>;
    /// Test mode: sets the fault the next registrations through it get.
    fn set_test_fault<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        form: TestFaultForm,
    ) -> BackendFuture<'a, ()>;
    fn clear_test_fault<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
    ) -> BackendFuture<'a, ()>;
    /// The device key a group member signs with: base64(HMAC-SHA256(group key, registration ID)).
    fn derive_device_key<'a>(
        &'a self,
        group_id: &'a str,
        registration_id: &'a str,
    ) -> BackendFuture<'a, String>;
    fn audit(&self, limit: u32) -> BackendFuture<'_, Vec<AuditRow>>;
    fn policies(&self) -> BackendFuture<'_, Vec<PolicyRow>>;
    fn users(&self) -> BackendFuture<'_, Vec<UserRow>>;
    /// Creates a user, or sets an existing user's password and role.
    fn save_user<'a>(
        &'a self,
        actor: &'a str,
        username: &'a str,
        password: &'a str,
        role: Role,
    ) -> BackendFuture<'a, ()>;
    fn set_user_disabled<'a>(
        &'a self,
        actor: &'a str,
        username: &'a str,
        disabled: bool,
    ) -> BackendFuture<'a, ()>;
    /// Creates a policy (fresh keys) or changes its rights.
    fn save_policy<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        rights: Vec<String>,
    ) -> BackendFuture<'a, ()>;
    fn rekey_policy<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        secondary: bool,
    ) -> BackendFuture<'a, ()>;
    fn delete_policy<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()>;
    /// Lifecycle event sinks with their delivery status.
    fn sinks(&self) -> BackendFuture<'_, Vec<SinkRow>>;
    fn save_sink<'a>(&'a self, actor: &'a str, form: SinkForm) -> BackendFuture<'a, ()>;
    fn delete_sink<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()>;
    fn cas(&self) -> BackendFuture<'_, Vec<CaRow>>;
    /// Uploads (or replaces) a CA certificate; `verified` trusts it without proof of possession.
    fn upload_ca<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        pem: &'a str,
        verified: bool,
    ) -> BackendFuture<'a, ()>;
    fn generate_ca_code<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()>;
    /// Verifies the CA with a certificate for its code, signed by its key.
    fn verify_ca<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        proof_pem: &'a str,
    ) -> BackendFuture<'a, ()>;
    fn delete_ca<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()>;
    /// Credential policies and issuers.
    fn credentials(&self) -> BackendFuture<'_, CredentialsOverview>;
    /// Creates or replaces a credential policy.
    fn save_credential_policy<'a>(
        &'a self,
        actor: &'a str,
        form: CredentialPolicyForm,
    ) -> BackendFuture<'a, ()>;
    fn delete_credential_policy<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
    ) -> BackendFuture<'a, ()>;
    /// Uploads an intermediate CA with its key as an issuer.
    fn upload_issuer<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        chain_pem: &'a str,
        key_pem: &'a str,
    ) -> BackendFuture<'a, ()>;
    fn delete_issuer<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()>;
    /// Revokes one of a device's issued certificates (`serial`), or all of them.
    fn revoke_certificates<'a>(
        &'a self,
        actor: &'a str,
        registration_id: &'a str,
        serial: Option<&'a str>,
    ) -> BackendFuture<'a, ()>;
    fn list_registrations(&self, filter: RegistrationFilter)
    -> BackendFuture<'_, RegistrationPage>;
    fn registration<'a>(
        &'a self,
        registration_id: &'a str,
    ) -> BackendFuture<'a, Option<RegistrationDetail>>;
    /// Forgets the record, so the device's next registration starts fresh.
    fn delete_registration<'a>(
        &'a self,
        actor: &'a str,
        registration_id: &'a str,
    ) -> BackendFuture<'a, ()>;
    fn save_hub<'a>(&'a self, actor: &'a str, hub: HubSummary) -> BackendFuture<'a, ()>;
    fn remove_hub<'a>(&'a self, actor: &'a str, host_name: &'a str) -> BackendFuture<'a, ()>;
    fn allocation(&self) -> BackendFuture<'_, AllocationForm>;
    fn save_allocation<'a>(&'a self, actor: &'a str, form: AllocationForm)
    -> BackendFuture<'a, ()>;
    fn what_if<'a>(
        &'a self,
        registration_id: &'a str,
        client_address: &'a str,
        group_id: &'a str,
    ) -> BackendFuture<'a, WhatIfAnswer>;
}

pub type SharedBackend = Arc<dyn ConsoleBackend>;

/// The backend provided to this request, or an error a server function can return.
pub fn backend() -> Result<SharedBackend, ServerFnError> {
    use_context::<SharedBackend>().ok_or_else(|| ServerFnError::new("console backend missing"))
}
