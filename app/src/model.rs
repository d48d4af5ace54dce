//! What the console shows, as it travels between server and browser.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSummary {
    pub id_scope: String,
    pub enrollments: u64,
    pub groups: u64,
    pub registrations: u64,
    pub hubs: Vec<HubSummary>,
    /// The last 60 minutes, oldest first.
    pub minutes: Vec<MinuteBar>,
    /// The latest failed or disabled attempts, newest first.
    pub failures: Vec<FailureRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinuteBar {
    /// "HH:MM" (UTC).
    pub label: String,
    pub assigned: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRow {
    pub at: String,
    pub registration_id: String,
    pub protocol: String,
    pub status: String,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub hint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubSummary {
    pub host_name: String,
    pub connector: String,
    pub region: Option<String>,
    pub allocation_weight: u32,
    pub apply_allocation_policy: bool,
    pub devices: u64,
}

/// What a console user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedIn {
    pub username: String,
    pub role: Role,
}

/// The browser's session as the console sees it: the CSRF token every change must carry, and the
/// user when signed in. The server puts it in each request's extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub csrf: String,
    pub user: Option<SignedIn>,
}

/// The enrollment list's query string.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentFilter {
    /// Registration ID prefix (case-insensitive).
    #[serde(default)]
    pub q: String,
    /// "", "enabled" or "disabled".
    #[serde(default)]
    pub status: String,
    /// "", "symmetricKey", "x509" or "tpm".
    #[serde(default)]
    pub attestation: String,
    /// Continue after this registration ID.
    #[serde(default)]
    pub after: String,
    /// "" for individual enrollments, "group" for enrollment groups.
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentRow {
    pub registration_id: String,
    pub device_id: Option<String>,
    pub attestation: String,
    pub status: String,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentPage {
    pub rows: Vec<EnrollmentRow>,
    /// The `after` of the next page, when there is one.
    pub next: Option<String>,
}

/// An individual enrollment as the edit form holds it (text fields, as typed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentForm {
    pub registration_id: String,
    pub device_id: String,
    /// "enabled" or "disabled".
    pub provisioning_status: String,
    /// `{"tags": {...}, "properties": {"desired": {...}}}`, or empty for none.
    pub initial_twin: String,
    /// "migrate", "reset" or "never".
    pub reprovision: String,
    /// "" (the instance default), "hashed", "geoLatency" or "static".
    pub allocation_policy: String,
    /// Candidate hub host names, comma-separated; empty: every linked hub.
    pub iot_hubs: String,
    /// The custom allocation webhook (with allocation policy "custom").
    #[serde(default)]
    pub webhook_url: String,
    /// "symmetricKey", "x509" or "tpm".
    #[serde(default)]
    pub attestation: String,
    /// X.509: the device's certificates (individual) or signing certificates (group), PEM.
    #[serde(default)]
    pub primary_certificate: String,
    #[serde(default)]
    pub secondary_certificate: String,
    /// X.509 groups: the name of a CA certificate registered on the instance.
    #[serde(default)]
    pub ca_reference: String,
    /// TPM (individual enrollments): the device's endorsement key, base64.
    #[serde(default)]
    pub endorsement_key: String,
    /// The credential policy whose issuer signs the devices' CSRs; empty: none are signed.
    #[serde(default)]
    pub credential_policy: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentDetail {
    pub form: EnrollmentForm,
    pub attestation: String,
    /// Symmetric keys; only roles that may edit enrollments get them.
    pub keys: Option<(String, String)>,
    pub created: String,
    pub updated: String,
    /// The device's registration record, if it registered: status, hub and device ID.
    pub registration: Option<RegistrationSummary>,
    /// Test mode: the fault its next registrations get, in words (spent ones too).
    pub test_fault: Option<String>,
}

/// A test-mode fault as the console form holds it (numbers as typed; empty: not set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestFaultForm {
    pub remaining: String,
    pub error_code: String,
    pub retry_after_seconds: String,
    pub latency_ms: String,
    /// The checkbox's value when ticked, absent otherwise.
    #[serde(default)]
    pub drop_connection: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationSummary {
    pub status: String,
    pub substatus: Option<String>,
    pub assigned_hub: Option<String>,
    pub device_id: Option<String>,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRow {
    pub at: String,
    pub actor: String,
    /// The front end the change came through: "console", "service-api" or "cli".
    pub via: String,
    /// The caller's address, where the front end knows it.
    pub address: Option<String>,
    pub action: String,
    pub target: String,
}

/// One registration attempt as the live log shows it (from the server's diagnostics bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent {
    pub at: String,
    pub registration_id: String,
    pub protocol: String,
    pub attestation: Option<String>,
    pub enrollment: Option<String>,
    pub hub: Option<String>,
    pub status: String,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// The likely cause of a failure, in an operator's words.
    pub hint: Option<String>,
    pub latency_ms: u64,
}

/// The instance's allocation defaults as the settings form holds them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AllocationForm {
    /// "hashed", "geoLatency" or "static".
    pub default_policy: String,
    /// One `CIDR region` pair per line.
    pub region_map: String,
}

/// The what-if tool's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhatIfAnswer {
    /// "individual/{id}" or "group/{id}"; None when nothing matches.
    pub enrollment: Option<String>,
    pub policy: Option<String>,
    /// The hub the device would get...
    pub hub: Option<String>,
    /// ...or why it would get none.
    pub reason: Option<String>,
    pub current_hub: Option<String>,
}

/// The registration records list's query string.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistrationFilter {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub after: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationRow {
    pub registration_id: String,
    /// "individual/{id}" or "group/{id}".
    pub enrollment: String,
    pub status: String,
    pub assigned_hub: Option<String>,
    pub device_id: Option<String>,
    pub updated: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationPage {
    pub rows: Vec<RegistrationRow>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistrationDetail {
    pub row: RegistrationRow,
    pub attestation: String,
    pub substatus: Option<String>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// The custom allocation payload returned to the device, as pretty JSON.
    pub payload: Option<String>,
    pub created: String,
    /// The device's identity on its built-in hub, if it is assigned to one.
    #[serde(default)]
    pub on_hub: Option<HubDeviceView>,
    /// Certificates issued to the device at provisioning, newest first.
    #[serde(default)]
    pub issued: Vec<IssuedRow>,
}

/// A certificate issued to a device from its CSR.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuedRow {
    pub serial: String,
    pub policy: String,
    pub issuer: String,
    pub key_type: String,
    pub not_before: String,
    pub not_after: String,
    pub revoked: Option<String>,
}

/// How devices that send a CSR get certificates: which issuer signs, for how long, which keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialPolicyRow {
    pub name: String,
    pub issuer: String,
    pub validity_days: u32,
    pub key_types: Vec<String>,
    pub renewal_window_days: u32,
    pub updated: String,
}

/// A CA that signs issued certificates; its key stays on the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssuerRow {
    pub name: String,
    pub subject: String,
    pub expiry: String,
    /// The instance's own issuing CA, made at first start (it cannot be removed).
    pub own: bool,
}

/// The credentials page: policies and the issuers they may name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialsOverview {
    pub policies: Vec<CredentialPolicyRow>,
    pub issuers: Vec<IssuerRow>,
}

/// A credential policy as the editor submits it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialPolicyForm {
    pub name: String,
    pub issuer: String,
    pub validity_days: u32,
    pub key_types: Vec<String>,
    pub renewal_window_days: u32,
}

/// A device identity on a built-in hub: connection, twin and recent telemetry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubDeviceView {
    pub connected: bool,
    pub enabled: bool,
    /// "symmetric key", "X.509 (thumbprint)" or "X.509 (CA-signed)".
    pub authentication: String,
    /// Tags, desired and reported properties with their versions, as pretty JSON.
    pub twin: String,
    /// The newest first.
    pub telemetry: Vec<TelemetryRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryRow {
    pub received: String,
    pub properties: String,
    pub body: String,
    pub truncated: bool,
}

/// A shared access policy of the service API, as the admin console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRow {
    pub name: String,
    pub rights: Vec<String>,
    /// With the primary key: shown only to admins, on request.
    pub connection_string: String,
    pub updated: String,
}

/// A CA certificate registered on the instance (X.509 enrollment groups trust verified ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaRow {
    pub name: String,
    pub subject: String,
    pub expiry: String,
    pub sha256_thumbprint: String,
    pub verified: bool,
    /// The CN a proof-of-possession certificate must carry, once generated.
    pub verification_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRow {
    pub username: String,
    pub role: Role,
    pub disabled: bool,
    pub created: String,
}

/// A lifecycle event sink with its delivery status, as the admin console shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkRow {
    pub name: String,
    /// `webhook`, `nats` or `mqtt`.
    pub kind: String,
    pub url: String,
    /// The NATS subject or MQTT topic (none for a webhook).
    pub channel: Option<String>,
    pub enabled: bool,
    pub delivered_seq: i64,
    /// Events written but not delivered to this sink yet.
    pub lag: i64,
    pub last_delivered: Option<String>,
    pub last_error: Option<String>,
    pub failures: u64,
}

/// A sink to create or change; `secret` (webhook) left empty keeps the stored one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkForm {
    pub name: String,
    pub kind: String,
    pub url: String,
    pub channel: String,
    pub secret: String,
    pub enabled: bool,
}
