//! The Provisioner: the one registration state machine. HTTPS, MQTT and AMQP decode their wire format
//! into a `RegisterRequest` (or a poll), call this, and encode the reply; no transport holds a rule.
//!
//! A register request is authenticated, gets an operation, and is assigned right away: allocation,
//! the hub identity and twin, the registration record. When that finishes within the inline budget
//! (always, unless a custom-allocation webhook is slow) the reply already carries the final state,
//! and the operation is stored final, so a poll to any instance answers 200 at once. Otherwise the
//! operation is stored `assigning` and the assignment goes on in the background.
//!
//! Every attempt, refused or not, emits exactly one diagnostics event.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::allocation::{self, custom::Webhook};
use crate::attestation::sas::{self, SasError};
use crate::attestation::tpm::{self, TpmPublic};
use crate::attestation::x509::{self, PresentedChain, X509Error};
use crate::diagnostics::{DiagnosticsBus, Protocol, RegistrationEvent};
use crate::domain::ca::{self, DecodedCa};
use crate::domain::issuance::{self, Issuance, Signers};
use crate::domain::lifecycle;
use crate::domain::revocation::{CrlCache, CrlRefusal};
use crate::domain::throttle::{DeviceThrottles, RateLimit};
use crate::hubs::{Connectors, Identity, Provisioned, TwinWrite};
use crate::metrics::{AttemptOutcome, Metrics, Step};
use crate::model::*;
use crate::proto::device::{
    DeviceRegistration, DeviceRegistrationResult, RegistrationOperationStatus,
};
use crate::proto::error::code;
use crate::proto::{service as wire, timestamp};
use crate::store::{MAX_PAGE, Store, StoreError, fault_key};

/// `Retry-After` while an operation is still assigning. C# raises anything below 2 s to 2 s and
/// Python always waits 2 s first; C honours 1 s. (Node's HTTP transport ignores it and polls every
/// 2 s, which is why finished assignments are returned in the register reply itself.)
pub const RETRY_AFTER_SECS: u32 = 1;
/// What a throttled device or one the service failed waits: long enough that a fleet retrying
/// together does not keep a recovering database down.
pub const RETRY_AFTER_FAILURE_SECS: u32 = 3;

/// How long linked hubs, allocation settings and symmetric-key groups are cached. Changes reach
/// registrations this much later at most; a registration that matches nothing reloads at once.
const SNAPSHOT_TTL: Duration = Duration::from_secs(2);

/// How long a TPM device's challenge key signs its retry and polls.
const TPM_CHALLENGE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    None,
    /// A SAS token (HTTP `Authorization`, MQTT password, AMQP SASL PLAIN password).
    Sas(String),
    /// The certificate chain of the TLS handshake.
    X509(PresentedChain),
    /// A SAS login the connection checked (AMQP SASL PLAIN).
    Login(DeviceLogin),
}

impl Credential {
    /// What a request proves: a SAS token when it carries one (even over a TLS connection with a
    /// client certificate), else the connection's client certificate.
    pub fn from_parts(token: Option<&str>, chain: Option<&PresentedChain>) -> Credential {
        match (token.filter(|t| !t.is_empty()), chain) {
            (Some(token), _) => Credential::Sas(token.to_string()),
            (None, Some(chain)) => Credential::X509(chain.clone()),
            (None, None) => Credential::None,
        }
    }
}

/// A device's SAS login, checked once for its connection by [`Provisioner::check_login`]. The
/// connection's requests present it instead of the token: within `SNAPSHOT_TTL` of the check,
/// and while the token lasts, the check stands (sparing the enrollment read a register would
/// repeat right after the login); later requests check the token afresh. Only the Provisioner
/// makes one.
#[derive(Clone)]
pub struct DeviceLogin(Arc<CheckedLogin>);

struct CheckedLogin {
    registration_id: String,
    token: String,
    /// The token's `se`, in Unix seconds.
    expires: u64,
    checked: Instant,
    authenticated: Authenticated,
}

impl DeviceLogin {
    /// The standing check, for a request of the device that logged in.
    fn standing_for(&self, registration_id: &str) -> Option<&Authenticated> {
        let login = &self.0;
        let now = Utc::now().timestamp().max(0) as u64;
        let fresh = login.checked.elapsed() < SNAPSHOT_TTL && now < login.expires;
        let same_device = login.registration_id.eq_ignore_ascii_case(registration_id);
        (fresh && same_device).then_some(&login.authenticated)
    }
}

/// Names the device only: the token is a secret.
impl std::fmt::Debug for DeviceLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DeviceLogin")
            .field(&self.0.registration_id)
            .finish()
    }
}

impl PartialEq for DeviceLogin {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for DeviceLogin {}

#[derive(Debug, Clone)]
pub struct RegisterRequest {
    pub id_scope: String,
    pub registration_id: String,
    /// The DeviceRegistration JSON as received (empty is allowed: C# sends none over MQTT/AMQP).
    pub body: bytes::Bytes,
    pub credential: Credential,
    pub protocol: Protocol,
    pub client: Option<IpAddr>,
}

/// A poll, or a registration-status lookup.
#[derive(Debug, Clone)]
pub struct StatusRequest {
    pub id_scope: String,
    pub registration_id: String,
    pub credential: Credential,
    pub protocol: Protocol,
}

/// An operation as the device sees it, with the `Retry-After` to send while it is not final.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationReply {
    pub operation: RegistrationOperationStatus,
    pub retry_after_secs: u32,
    /// Test mode: the transport closes the connection instead of sending this reply.
    pub drop_connection: bool,
}

impl OperationReply {
    pub fn is_final(&self) -> bool {
        self.operation.status != RegistrationStatus::Assigning.as_str()
    }
}

/// What a TPM login's SRK round over AMQP answers.
#[derive(Debug)]
pub enum TpmLoginChallenge {
    /// The blob for the challenge key, which the store keeps for the signed answer.
    Issued(Vec<u8>),
    /// The enrollment does not back this TPM (reported already). The device still gets a blob,
    /// for a key kept nowhere, and learns the refusal at the SASL outcome: the SDKs read the
    /// outcome only after answering the blob's last piece (Node's never calls back on an earlier
    /// one), and the answer to an EK does not tell whether it is enrolled.
    Refused { decoy: Vec<u8>, reason: String },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProvisionError {
    #[error("{0}")]
    BadRequest(String),
    /// The reason is for diagnostics; devices are told less (see `client_message`).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("the ID scope {0:?} is not served here")]
    UnknownScope(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("internal error: {0}")]
    Internal(String),
    /// Over a rate limit (`domain::throttle`); the device may retry after this many seconds.
    #[error("throttled: {what}, retry after {retry_after} s")]
    Throttled {
        what: &'static str,
        retry_after: u32,
    },
    /// The store cannot be reached for now (the reason is for diagnostics).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Test mode: the operator asked for this error (an Azure code, status = code / 1000).
    #[error("injected fault (test mode): error {code}")]
    Injected { code: i64, retry_after: Option<u32> },
    /// A TPM device's first request: it must import the key in this activation blob (base64)
    /// and sign its retry with it.
    #[error("tpm: challenge issued")]
    TpmChallenge(String),
    /// The `csr` cannot be signed (the message says why; nothing was issued).
    #[error("csr refused: {0}")]
    CsrRefused(String),
}

impl ProvisionError {
    pub fn code(&self) -> i64 {
        match self {
            ProvisionError::BadRequest(_) => code::BAD_REQUEST,
            ProvisionError::Unauthorized(_) => code::UNAUTHORIZED,
            ProvisionError::UnknownScope(_) => code::UNKNOWN_ID_SCOPE,
            ProvisionError::NotFound(_) => code::NOT_FOUND,
            ProvisionError::TooLarge(_) => code::PAYLOAD_TOO_LARGE,
            ProvisionError::Throttled { .. } => code::THROTTLED,
            ProvisionError::Internal(_) => code::INTERNAL,
            ProvisionError::Unavailable(_) => code::SERVICE_UNAVAILABLE,
            ProvisionError::TpmChallenge(_) => code::UNAUTHORIZED,
            ProvisionError::CsrRefused(_) => code::CSR_REFUSED,
            ProvisionError::Injected { code, .. } => *code,
        }
    }

    pub fn status(&self) -> u16 {
        (self.code() / 1000) as u16
    }

    /// When the device should try again: after throttling and after any failure of the
    /// service's own (HTTP `Retry-After`, MQTT `retry-after`, AMQP's info map).
    pub fn retry_after_secs(&self) -> Option<u32> {
        match self {
            ProvisionError::Throttled { retry_after, .. } => Some(*retry_after),
            ProvisionError::Injected {
                retry_after: Some(secs),
                ..
            } => Some(*secs),
            ProvisionError::Injected { .. } if self.status() == 429 => {
                Some(RETRY_AFTER_FAILURE_SECS)
            }
            _ => (self.status() >= 500).then_some(RETRY_AFTER_FAILURE_SECS),
        }
    }

    /// What the device is told: enough to fix its own mistake, nothing that helps guess keys or IDs.
    pub fn client_message(&self) -> String {
        match self {
            ProvisionError::Unauthorized(reason) if reason == EXPIRED => {
                "The SAS token has expired.".into()
            }
            ProvisionError::Unauthorized(_) => "Unauthorized".into(),
            ProvisionError::Internal(_) => "Internal server error".into(),
            ProvisionError::Unavailable(_) => "Service unavailable, retry later".into(),
            ProvisionError::Throttled { retry_after, .. } => {
                format!("Too many requests, retry after {retry_after} seconds")
            }
            ProvisionError::TpmChallenge(_) => {
                "Authorization required, resend request using supplied key".into()
            }
            other => other.to_string(),
        }
    }
}

const EXPIRED: &str = "the SAS token has expired";

impl From<StoreError> for ProvisionError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            ProvisionError::Unavailable(e.to_string())
        } else {
            ProvisionError::Internal(e.to_string())
        }
    }
}

impl From<issuance::Revoked> for ProvisionError {
    fn from(e: issuance::Revoked) -> Self {
        match e {
            issuance::Revoked::Revoked(_) => ProvisionError::Unauthorized(e.to_string()),
            issuance::Revoked::Store(e) => e.into(),
        }
    }
}

impl From<CrlRefusal> for ProvisionError {
    fn from(e: CrlRefusal) -> Self {
        match e {
            CrlRefusal::Revoked { .. } => ProvisionError::Unauthorized(e.to_string()),
            CrlRefusal::Unknown(_) => ProvisionError::Unavailable(e.to_string()),
        }
    }
}

impl From<crate::hubs::HubError> for ProvisionError {
    fn from(e: crate::hubs::HubError) -> Self {
        ProvisionError::Internal(e.to_string())
    }
}

/// A test-mode fault's effect before the registration goes on: its latency, then its error.
async fn inject(fault: &FaultInjection) -> Result<(), ProvisionError> {
    tokio::time::sleep(Duration::from_millis(fault.latency_ms.into())).await;
    match fault.error_code {
        Some(code) => Err(ProvisionError::Injected {
            code,
            retry_after: fault.retry_after_seconds,
        }),
        None => Ok(()),
    }
}

/// Registration IDs: 1-128 characters, alphanumerics and `- . _ :`, starting with an alphanumeric
/// and ending with an alphanumeric or `-` (Azure DPS rules).
pub fn validate_registration_id(id: &str) -> Result<(), ProvisionError> {
    let bad = |why: &str| {
        Err(ProvisionError::BadRequest(format!(
            "invalid registration ID: {why}"
        )))
    };
    if id.is_empty() || id.len() > 128 {
        return bad("it must have 1 to 128 characters");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
    {
        return bad("only letters, digits and - . _ : are allowed");
    }
    let (first, last) = (id.chars().next().unwrap(), id.chars().last().unwrap());
    if !first.is_ascii_alphanumeric() || !(last.is_ascii_alphanumeric() || last == '-') {
        return bad("it must start with a letter or digit and end with a letter, digit or '-'");
    }
    Ok(())
}

/// The enrollment a device authenticated through.
#[derive(Debug, Clone)]
enum Source {
    Individual(Enrollment),
    Group(EnrollmentGroup),
}

impl Source {
    fn spec(&self) -> &EnrollmentSpec {
        match self {
            Source::Individual(e) => &e.spec,
            Source::Group(g) => &g.spec,
        }
    }

    fn reference(&self) -> EnrollmentRef {
        match self {
            Source::Individual(e) => EnrollmentRef::Individual(e.registration_id.clone()),
            Source::Group(g) => EnrollmentRef::Group(g.group_id.clone()),
        }
    }

    /// Groups name devices by registration ID; an individual enrollment may set its own device ID.
    fn device_id(&self, registration_id: &str) -> String {
        match self {
            Source::Individual(e) => e
                .device_id
                .clone()
                .unwrap_or_else(|| registration_id.to_string()),
            Source::Group(_) => registration_id.to_string(),
        }
    }

    /// The request shape the custom-allocation webhook gets (keys left out).
    fn webhook_enrollment(&self) -> (&'static str, Value) {
        match self {
            Source::Individual(e) => (
                "individualEnrollment",
                wire::individual_enrollment(e, false),
            ),
            Source::Group(g) => ("enrollmentGroup", wire::enrollment_group(g, false)),
        }
    }
}

#[derive(Clone)]
struct Authenticated {
    source: Source,
    /// How the device's hub identity authenticates: its own keys (derived ones for a group), or
    /// its certificate.
    hub_auth: DeviceAuth,
    /// The attestation's part of the registration result (`symmetricKey` or `x509`).
    details: AttestationDetails,
}

#[derive(Clone)]
enum AttestationDetails {
    None,
    SymmetricKey(Value),
    X509(Value),
    /// The device's hub key, sent in a blob for its TPM as `authenticationKey`. The blob (two
    /// public-key operations) is built only when a result is written, not for every poll.
    Tpm {
        endorsement_key: Vec<u8>,
        storage_root_key: Vec<u8>,
        hub_key: [u8; 32],
    },
}

impl Authenticated {
    fn describe(&self, state: &mut DeviceRegistrationResult) -> Result<(), ProvisionError> {
        match &self.details {
            AttestationDetails::None => {}
            AttestationDetails::SymmetricKey(v) => state.symmetric_key = Some(v.clone()),
            AttestationDetails::X509(v) => state.x509 = Some(v.clone()),
            AttestationDetails::Tpm {
                endorsement_key,
                storage_root_key,
                hub_key,
            } => {
                let blob = tpm_blob(endorsement_key, storage_root_key, hub_key)?;
                state.tpm = Some(json!({ "authenticationKey": BASE64.encode(blob) }));
            }
        }
        Ok(())
    }
}

/// An X.509 enrollment group with its signing certificates decoded.
struct X509Group {
    group: EnrollmentGroup,
    signers: Vec<CertificateDer<'static>>,
}

/// What rarely changes and every registration reads.
struct Snapshot {
    loaded: Instant,
    hubs: Vec<LinkedHub>,
    settings: AllocationSettings,
    key_groups: Vec<EnrollmentGroup>,
    x509_groups: Vec<X509Group>,
    cas: Vec<DecodedCa>,
    /// `fault_key`s of enrollments and groups with a test-mode fault left.
    faults: HashSet<String>,
    signers: Signers,
}

impl Snapshot {
    /// The X.509 group whose signing certificate, or referenced CA, is `cert`.
    fn group_signed_by(&self, cert: &CertificateDer<'_>) -> Option<&EnrollmentGroup> {
        let ca_name = self
            .cas
            .iter()
            .find(|ca| ca.der == *cert)
            .map(|ca| ca.name.as_str());
        self.x509_groups
            .iter()
            .find(|g| {
                g.signers.iter().any(|s| s == cert)
                    || matches!(&g.group.spec.attestation, Attestation::X509 { ca_references, .. }
                        if ca_name.is_some_and(|name| ca_references.iter().any(|r| r.eq_ignore_ascii_case(name))))
            })
            .map(|g| &g.group)
    }
}

pub struct Provisioner {
    store: Arc<dyn Store>,
    connectors: Connectors,
    bus: DiagnosticsBus,
    webhook: Webhook,
    id_scope: String,
    inline_budget: Duration,
    throttles: DeviceThrottles,
    metrics: Arc<Metrics>,
    snapshot: Mutex<Option<Arc<Snapshot>>>,
    /// Where devices reach this instance (the CRLs in issued certificates point here).
    public_url: String,
    /// CRL checks for devices of uploaded CAs (`limits.crl_max_age_secs`; `None`: off).
    crls: Option<CrlCache>,
}

/// The attempt's outcome, for its diagnostics event.
#[derive(Default)]
struct Attempt {
    source: Option<EnrollmentRef>,
    attestation: Option<AttestationKind>,
    /// The attestation the device tried, once it is being checked (metrics count a refusal).
    presented: Option<&'static str>,
    fault: Option<String>,
}

/// What the device sent beside its identity, which allocation reads, and how it came.
struct Arrival {
    payload: Option<Value>,
    client: Option<IpAddr>,
    protocol: Protocol,
    /// The accepted `csr`, signed once the device is assigned.
    issuance: Option<Issuance>,
}

impl Provisioner {
    pub fn new(
        store: Arc<dyn Store>,
        connectors: Connectors,
        bus: DiagnosticsBus,
        id_scope: String,
        config: &crate::config::Config,
        metrics: Arc<Metrics>,
    ) -> Arc<Provisioner> {
        let limits = &config.limits;
        Arc::new(Provisioner {
            store,
            connectors,
            bus,
            webhook: Webhook::new(Duration::from_secs(limits.webhook_timeout_secs)),
            id_scope,
            inline_budget: Duration::from_millis(limits.inline_assignment_ms),
            throttles: limits.into(),
            metrics,
            snapshot: Mutex::new(None),
            public_url: config.https_url(),
            crls: CrlCache::new(
                Duration::from_secs(limits.crl_max_age_secs),
                Duration::from_secs(limits.crl_fetch_timeout_secs),
            ),
        })
    }

    pub fn id_scope(&self) -> &str {
        &self.id_scope
    }

    /// Forgets cached hubs, settings and groups (after an operator changes them here).
    pub fn invalidate(&self) {
        *self.snapshot.lock().unwrap() = None;
    }

    /// Register: authenticate, assign, and answer with the operation.
    pub async fn register(
        self: &Arc<Self>,
        request: RegisterRequest,
    ) -> Result<OperationReply, ProvisionError> {
        let started = Instant::now();
        let tracking_id = uuid::Uuid::new_v4().to_string();
        let mut attempt = Attempt::default();
        let result = self.register_inner(&request, &mut attempt).await;
        self.emit(
            &request.registration_id,
            request.protocol,
            &tracking_id,
            started,
            attempt,
            &result,
        );
        result
    }

    async fn register_inner(
        self: &Arc<Self>,
        request: &RegisterRequest,
        attempt: &mut Attempt,
    ) -> Result<OperationReply, ProvisionError> {
        self.check_scope(&request.id_scope)?;
        // Held until the assignment ends, in the background too: the bound covers all the work.
        let slot = self.in_flight_slot()?;
        let instance_limit = (&self.throttles.registrations, "registrations_per_second");
        self.admit(instance_limit, "", "registrations")?;
        validate_registration_id(&request.registration_id)?;
        let body = parse_registration(&request.body)?;
        let differs = |id: &&String| !id.eq_ignore_ascii_case(&request.registration_id);
        if let Some(body_id) = body.registration_id.as_ref().filter(differs) {
            return Err(ProvisionError::BadRequest(format!(
                "the body's registrationId {body_id:?} differs from the one in the request path"
            )));
        }
        if let (Credential::None, Some(tpm)) = (&request.credential, body.tpm.as_ref()) {
            return Err(self.challenge_tpm(&request.registration_id, tpm).await);
        }
        attempt.presented = Some(presented_attestation(&request.credential, &body));
        // The device's previous record is read while it authenticates (one wait instead of two:
        // each store call is a round trip to a database thread); a refused device wastes a read.
        let protocol = request.protocol.as_str();
        let authenticated = self.timed(
            protocol,
            Step::Authenticate,
            self.authenticate(&request.registration_id, &request.credential),
        );
        let (auth, previous) = tokio::join!(
            authenticated,
            self.store.get_registration(&request.registration_id),
        );
        let (auth, previous) = (auth?, previous?);
        attempt.source = Some(auth.source.reference());
        attempt.attestation = Some(auth.source.spec().attestation.kind());
        if let Source::Group(group) = &auth.source {
            let limit = (
                &self.throttles.group_registrations,
                "group_registrations_per_second",
            );
            self.admit(limit, &group.group_id, "registrations through this group")?;
        }
        let fault = self.take_fault(&auth.source.reference()).await?;
        attempt.fault = fault.as_ref().map(FaultInjection::describe);
        let drop_connection = fault.as_ref().is_some_and(|f| f.drop_connection);
        if let Some(fault) = fault {
            inject(&fault).await?;
        }

        let issuance = match &body.csr {
            Some(csr) => Some(self.accept_csr(csr, request, &auth).await?),
            None => None,
        };
        let operation_id = new_operation_id();
        let this = self.clone();
        let registration_id = request.registration_id.clone();
        let arrival = Arrival {
            payload: body.payload,
            client: request.client,
            protocol: request.protocol,
            issuance,
        };
        let op_id = operation_id.clone();
        let mut task = tokio::spawn(async move {
            let _slot = slot;
            this.assign(&op_id, &registration_id, auth, previous, arrival)
                .await
        });
        let state = match tokio::time::timeout(self.inline_budget, &mut task).await {
            Ok(joined) => joined.map_err(|e| ProvisionError::Internal(e.to_string()))??,
            Err(_) => {
                // Still assigning: store that, unless the task has just finished and stored the end.
                let now = Utc::now();
                let pending = RegistrationOperation {
                    operation_id: operation_id.clone(),
                    registration_id: request.registration_id.clone(),
                    status: RegistrationStatus::Assigning,
                    result: None,
                    created: now,
                    updated: now,
                };
                self.store.put_operation_if_absent(pending).await?;
                return Ok(OperationReply {
                    operation: assigning(&operation_id, &request.registration_id),
                    retry_after_secs: RETRY_AFTER_SECS,
                    drop_connection,
                });
            }
        };
        Ok(OperationReply {
            operation: RegistrationOperationStatus {
                operation_id,
                status: state.status.clone(),
                registration_state: Some(state),
            },
            retry_after_secs: RETRY_AFTER_SECS,
            drop_connection,
        })
    }

    /// The enrollment's credential policy's verdict on the device's CSR (a policy created a moment
    /// ago is found: a miss reloads the snapshot). A device renewing with a certificate issued
    /// here is held to the policy's renewal window.
    async fn accept_csr(
        &self,
        csr: &str,
        request: &RegisterRequest,
        auth: &Authenticated,
    ) -> Result<Issuance, ProvisionError> {
        let policy = auth.source.spec().credential_policy_name.as_deref();
        let mut snapshot = self.snapshot(false).await?;
        if policy.is_some_and(|name| !snapshot.signers.has_policy(name)) {
            snapshot = self.snapshot(true).await?;
        }
        let renewing = match &request.credential {
            Credential::X509(chain) => match chain.leaf() {
                Some(leaf) => issuance::issued_leaf(self.store.as_ref(), leaf).await?,
                None => None,
            },
            _ => None,
        };
        let candidate = issuance::Candidate {
            policy,
            csr,
            registration_id: &request.registration_id,
            renewing: renewing.as_ref(),
        };
        snapshot
            .signers
            .accept(candidate, Utc::now())
            .map_err(ProvisionError::CsrRefused)
    }

    /// A slot for one more registration, or 503 at once: an overloaded instance answers the
    /// devices it cannot serve soon instead of queueing them (they retry, maybe elsewhere).
    fn in_flight_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ProvisionError> {
        let slots = &self.throttles.in_flight;
        slots.clone().try_acquire_owned().map_err(|_| {
            self.metrics.throttled("max_registrations_in_flight");
            ProvisionError::Unavailable("overloaded: every registration slot is taken".into())
        })
    }

    /// Counts a request against a limit (named by its `limits` key); over it, the device is
    /// told when to come back.
    fn admit(
        &self,
        (limit, name): (&RateLimit, &'static str),
        key: &str,
        what: &'static str,
    ) -> Result<(), ProvisionError> {
        limit.admit(key).map_err(|retry_after| {
            self.metrics.throttled(name);
            ProvisionError::Throttled { what, retry_after }
        })
    }

    /// Runs one step of a registration and records how long it took.
    async fn timed<T>(
        &self,
        protocol: &'static str,
        step: Step,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let started = Instant::now();
        let output = work.await;
        self.metrics.step(protocol, step, started.elapsed());
        output
    }

    /// Counts a linked hub's failure before it is passed on.
    fn hub_failed<T, E>(
        &self,
        hub: &LinkedHub,
        operation: &'static str,
        result: Result<T, E>,
    ) -> Result<T, E> {
        if result.is_err() {
            self.metrics.hub_error(&hub.host_name, operation);
        }
        result
    }

    /// Counts a status request of an authenticated device (counted after authentication, so
    /// nobody else can use up a device's allowance).
    fn admit_poll(&self, registration_id: &str) -> Result<(), ProvisionError> {
        let key = registration_id.to_ascii_lowercase();
        self.admit(
            (&self.throttles.polls, "polls_per_device"),
            &key,
            "status requests of this device",
        )
    }

    /// A poll: the operation's current state, for the device that owns it.
    pub async fn operation_status(
        &self,
        request: StatusRequest,
        operation_id: &str,
    ) -> Result<OperationReply, ProvisionError> {
        self.check_scope(&request.id_scope)?;
        validate_registration_id(&request.registration_id)?;
        self.authenticate(&request.registration_id, &request.credential)
            .await?;
        self.admit_poll(&request.registration_id)?;
        let operation = self
            .store
            .get_operation(operation_id)
            .await?
            .filter(|op| {
                op.registration_id
                    .eq_ignore_ascii_case(&request.registration_id)
            })
            .ok_or_else(|| {
                ProvisionError::NotFound(format!("no operation {operation_id:?} for this device"))
            })?;
        let reply = match operation.result {
            Some(state) if operation.status.is_final() => {
                let state: DeviceRegistrationResult = serde_json::from_value(state)
                    .map_err(|e| ProvisionError::Internal(e.to_string()))?;
                RegistrationOperationStatus {
                    operation_id: operation.operation_id,
                    status: state.status.clone(),
                    registration_state: Some(state),
                }
            }
            _ => assigning(&operation.operation_id, &operation.registration_id),
        };
        Ok(OperationReply {
            operation: reply,
            retry_after_secs: RETRY_AFTER_SECS,
            drop_connection: false,
        })
    }

    /// The registration-status lookup: the device's registration record.
    pub async fn registration_status(
        &self,
        request: StatusRequest,
    ) -> Result<DeviceRegistrationResult, ProvisionError> {
        self.check_scope(&request.id_scope)?;
        validate_registration_id(&request.registration_id)?;
        self.authenticate(&request.registration_id, &request.credential)
            .await?;
        self.admit_poll(&request.registration_id)?;
        let record = self
            .store
            .get_registration(&request.registration_id)
            .await?
            .ok_or_else(|| {
                ProvisionError::NotFound("this device has no registration record".into())
            })?;
        Ok(registration_result(&record))
    }

    /// A connection-level login (AMQP SASL PLAIN): the device's scope, ID and SAS token are
    /// checked as a request's would be, before any request is read. A refusal is an attempt like
    /// any other: it is reported on the bus.
    pub async fn check_login(
        &self,
        id_scope: &str,
        registration_id: &str,
        token: &str,
        protocol: Protocol,
    ) -> Result<DeviceLogin, ProvisionError> {
        let checked = async {
            self.check_scope(id_scope)?;
            validate_registration_id(registration_id)?;
            let authenticated = self.authenticate_sas(registration_id, token).await?;
            let expires = sas::parse(token).map(|t| t.se).unwrap_or(0);
            Ok(DeviceLogin(Arc::new(CheckedLogin {
                registration_id: registration_id.to_string(),
                token: token.to_string(),
                expires,
                checked: Instant::now(),
                authenticated,
            })))
        };
        let result = checked.await;
        if let Err(refusal) = &result {
            self.report_refusal(registration_id, protocol, refusal);
        }
        result
    }

    /// Emits the event of an attempt a transport refused before it could be decoded (e.g. an
    /// oversized body), so that it is observable like any other.
    pub fn report_refusal(
        &self,
        registration_id: &str,
        protocol: Protocol,
        error: &ProvisionError,
    ) {
        let attempt = Attempt::default();
        let tracking_id = uuid::Uuid::new_v4().to_string();
        self.emit(
            registration_id,
            protocol,
            &tracking_id,
            Instant::now(),
            attempt,
            &Err(error.clone()),
        );
    }

    fn check_scope(&self, scope: &str) -> Result<(), ProvisionError> {
        if scope.eq_ignore_ascii_case(&self.id_scope) {
            Ok(())
        } else {
            Err(ProvisionError::UnknownScope(scope.to_string()))
        }
    }

    /// An individual enrollment for the ID decides alone (it overrides any group, which is how a
    /// disabled individual enrollment revokes one device of a group); otherwise a group.
    async fn authenticate(
        &self,
        registration_id: &str,
        credential: &Credential,
    ) -> Result<Authenticated, ProvisionError> {
        match credential {
            Credential::Sas(token) => self.authenticate_sas(registration_id, token).await,
            Credential::X509(chain) => self.authenticate_x509(registration_id, chain).await,
            Credential::Login(login) => match login.standing_for(registration_id) {
                Some(authenticated) => Ok(authenticated.clone()),
                None => self.authenticate_sas(registration_id, &login.0.token).await,
            },
            Credential::None => Err(ProvisionError::Unauthorized(
                "no SAS token or client certificate was presented".into(),
            )),
        }
    }

    /// The individual enrollment's key, or the symmetric-key group whose derived key signed.
    async fn authenticate_sas(
        &self,
        registration_id: &str,
        token: &str,
    ) -> Result<Authenticated, ProvisionError> {
        let unauthorized = |why: &str| ProvisionError::Unauthorized(why.to_string());
        let token = sas::parse(token).map_err(|e| ProvisionError::Unauthorized(e.to_string()))?;
        let resource = format!("{}/registrations/{}", self.id_scope, registration_id);
        let now = Utc::now().timestamp().max(0) as u64;
        let refused = |e: SasError| match e {
            SasError::Expired => unauthorized(EXPIRED),
            SasError::BadSignature => {
                unauthorized("the SAS signature matches no key of the enrollment")
            }
            other => ProvisionError::Unauthorized(other.to_string()),
        };
        if let Some(enrollment) = self.store.get_enrollment(registration_id).await? {
            if let Attestation::Tpm { .. } = &enrollment.spec.attestation {
                return self
                    .authenticate_tpm(enrollment, &token, &resource, now)
                    .await;
            }
            let Attestation::SymmetricKey {
                primary_key,
                secondary_key,
            } = &enrollment.spec.attestation
            else {
                return Err(unauthorized("the enrollment does not use symmetric keys"));
            };
            let keys = [decode_key(primary_key), decode_key(secondary_key)];
            token
                .verify(&resource, &[&keys[0], &keys[1]], now)
                .map_err(refused)?;
            let hub_auth = sas_auth(primary_key.clone(), secondary_key.clone());
            return Ok(Authenticated {
                source: Source::Individual(enrollment),
                hub_auth,
                details: AttestationDetails::None,
            });
        }
        // Expiry and resource do not depend on the key: refuse those before trying groups.
        token.verify(&resource, &[], now).or_else(|e| match e {
            SasError::BadSignature => Ok(0),
            other => Err(refused(other)),
        })?;
        for fresh in [false, true] {
            let snapshot = self.snapshot(fresh).await?;
            for group in &snapshot.key_groups {
                let Attestation::SymmetricKey {
                    primary_key,
                    secondary_key,
                } = &group.spec.attestation
                else {
                    continue;
                };
                let derive =
                    |k: &str| sas::derive_device_key(k, registration_id).unwrap_or_default();
                let keys = (derive(primary_key), derive(secondary_key));
                let raw = [decode_key(&keys.0), decode_key(&keys.1)];
                if token.verify(&resource, &[&raw[0], &raw[1]], now).is_ok() {
                    return Ok(Authenticated {
                        source: Source::Group(group.clone()),
                        hub_auth: sas_auth(keys.0, keys.1),
                        details: AttestationDetails::SymmetricKey(
                            json!({ "enrollmentGroupId": group.group_id }),
                        ),
                    });
                }
            }
        }
        Err(unauthorized(
            "no enrollment or enrollment group matches this device and key",
        ))
    }

    /// The individual enrollment holding the device's certificate, or the group whose signing
    /// certificate (or referenced CA) is nearest to the leaf on the verified path to a CA.
    async fn authenticate_x509(
        &self,
        registration_id: &str,
        chain: &PresentedChain,
    ) -> Result<Authenticated, ProvisionError> {
        let refused = |e: X509Error| ProvisionError::Unauthorized(e.to_string());
        let unauthorized = |why: &str| ProvisionError::Unauthorized(why.to_string());
        let now = rustls::pki_types::UnixTime::now();
        let leaf = chain
            .leaf()
            .ok_or_else(|| unauthorized("no client certificate was presented"))?;
        let leaf_info = x509::check_leaf(leaf, registration_id, now).map_err(refused)?;
        let issued_here = issuance::check_not_revoked(self.store.as_ref(), leaf).await?;
        if let Some(enrollment) = self.store.get_enrollment(registration_id).await? {
            let Attestation::X509 { certificates, .. } = &enrollment.spec.attestation else {
                return Err(unauthorized(
                    "the enrollment does not use X.509 certificates",
                ));
            };
            // Each slot's first certificate is the device's own (a PEM may carry its chain).
            let enrolled: Vec<CertificateDer<'static>> = certificates
                .iter()
                .filter_map(|text| x509::first_certificate(text).ok())
                .collect();
            if !enrolled.iter().any(|c| c == leaf) {
                return Err(unauthorized(
                    "the client certificate is not the one enrolled for this device",
                ));
            }
            let mut thumbprints = enrolled.iter().map(|c| x509::sha256_thumbprint(c));
            return Ok(Authenticated {
                source: Source::Individual(enrollment),
                hub_auth: DeviceAuth::SelfSigned {
                    primary_thumbprint: thumbprints.next().unwrap_or_default(),
                    secondary_thumbprint: thumbprints.next(),
                },
                details: AttestationDetails::X509(json!({ "certificateInfo": leaf_info })),
            });
        }
        for fresh in [false, true] {
            let snapshot = self.snapshot(fresh).await?;
            let cas = |verified: bool| ca::certificates(&snapshot.cas, verified);
            let signers: Vec<_> = snapshot
                .x509_groups
                .iter()
                .flat_map(|g| g.signers.iter().cloned())
                .collect();
            let path =
                match x509::path_to_verified_ca(&chain.0, &cas(true), &signers, &cas(false), now) {
                    Ok(path) => path,
                    Err(e) if fresh => return Err(refused(e)),
                    Err(_) => continue,
                };
            for cert in &path {
                if let Some(group) = snapshot.group_signed_by(cert) {
                    if let Some(crls) = self.crls.as_ref().filter(|_| !issued_here) {
                        crls.check(leaf, &path).await?;
                    }
                    let details = json!({
                        "certificateInfo": leaf_info,
                        "enrollmentGroupId": group.group_id,
                        "signingCertificateInfo": x509::describe(cert).ok(),
                    });
                    return Ok(Authenticated {
                        source: Source::Group(group.clone()),
                        hub_auth: DeviceAuth::CertificateAuthority,
                        details: AttestationDetails::X509(details),
                    });
                }
            }
        }
        Err(unauthorized(
            "the certificate chain is valid but no enrollment group matches it",
        ))
    }

    /// A TPM device's first request (no token): when its EK is the one its enabled individual
    /// enrollment holds, a fresh key is stored for it (any instance checks the retry) and sent
    /// wrapped to its TPM; anything else is refused.
    async fn challenge_tpm(&self, registration_id: &str, tpm: &Value) -> ProvisionError {
        let issued = async {
            let ek = tpm_field(tpm, "endorsementKey")?;
            let srk = tpm_field(tpm, "storageRootKey")?;
            self.issue_tpm_challenge(registration_id, &ek, &srk).await
        };
        match issued.await {
            Ok(blob) => ProvisionError::TpmChallenge(BASE64.encode(blob)),
            Err(refusal) => refusal,
        }
    }

    /// AMQP's SASL `TPM` mechanism: the activation blob for a device that named its scope, ID,
    /// EK and SRK, or the refusal (reported on the bus, as is the challenge).
    pub async fn tpm_login_challenge(
        &self,
        id_scope: &str,
        registration_id: &str,
        (ek, srk): (&[u8], &[u8]),
        protocol: Protocol,
    ) -> Result<TpmLoginChallenge, ProvisionError> {
        let issued = async {
            self.check_scope(id_scope)?;
            validate_registration_id(registration_id)?;
            self.issue_tpm_challenge(registration_id, ek, srk).await
        };
        let result = issued.await;
        let reported = match &result {
            Ok(blob) => ProvisionError::TpmChallenge(BASE64.encode(blob)),
            Err(refusal) => refusal.clone(),
        };
        self.report_refusal(registration_id, protocol, &reported);
        match result {
            Ok(blob) => Ok(TpmLoginChallenge::Issued(blob)),
            Err(ProvisionError::Unauthorized(reason)) => Ok(TpmLoginChallenge::Refused {
                decoy: tpm_blob(ek, srk, &random_key())?,
                reason,
            }),
            Err(refusal) => Err(refusal),
        }
    }

    /// The blob, once the EK is the enabled individual enrollment's (compared in constant time).
    async fn issue_tpm_challenge(
        &self,
        registration_id: &str,
        ek_bytes: &[u8],
        srk_bytes: &[u8],
    ) -> Result<Vec<u8>, ProvisionError> {
        let unauthorized = |why: &str| ProvisionError::Unauthorized(why.to_string());
        let enrollment = self
            .store
            .get_enrollment(registration_id)
            .await?
            .ok_or_else(|| {
                unauthorized("tpm: unknown endorsement key (no individual enrollment for the ID)")
            })?;
        let Attestation::Tpm {
            endorsement_key, ..
        } = &enrollment.spec.attestation
        else {
            return Err(unauthorized(
                "tpm: the enrollment does not use TPM attestation",
            ));
        };
        let enrolled = BASE64.decode(endorsement_key.trim()).unwrap_or_default();
        if !bool::from(enrolled.as_slice().ct_eq(ek_bytes)) {
            return Err(unauthorized(
                "tpm: unknown endorsement key (not the enrolled one)",
            ));
        }
        if enrollment.spec.provisioning_status != ProvisioningStatus::Enabled {
            return Err(unauthorized("tpm: the enrollment is disabled"));
        }
        let key = random_key();
        let blob = tpm_blob(ek_bytes, srk_bytes, &key)?;
        let challenge = TpmChallenge {
            registration_id: registration_id.to_string(),
            hmac_key: key.to_vec(),
            storage_root_key: srk_bytes.to_vec(),
            expires: Utc::now() + TPM_CHALLENGE_TTL,
        };
        self.store.put_tpm_challenge(&challenge).await?;
        Ok(blob)
    }

    /// A TPM device's signed request: the token must be signed with the key it was challenged
    /// with. Its hub key is fresh each time, sent in a blob for the same TPM (the final result
    /// carries it; the device signs its hub tokens with it).
    async fn authenticate_tpm(
        &self,
        enrollment: Enrollment,
        token: &sas::SasToken<'_>,
        resource: &str,
        now: u64,
    ) -> Result<Authenticated, ProvisionError> {
        let unauthorized = |why: &str| ProvisionError::Unauthorized(why.to_string());
        let challenge = self
            .store
            .get_tpm_challenge(&enrollment.registration_id, Utc::now())
            .await?
            .ok_or_else(|| unauthorized("tpm: no open challenge (expired, or never issued)"))?;
        token
            .verify(resource, &[&challenge.hmac_key], now)
            .map_err(|e| match e {
                SasError::Expired => unauthorized(EXPIRED),
                _ => unauthorized("tpm: signature mismatch"),
            })?;
        let Attestation::Tpm {
            endorsement_key, ..
        } = &enrollment.spec.attestation
        else {
            return Err(unauthorized("the enrollment does not use TPM attestation"));
        };
        let endorsement_key = BASE64.decode(endorsement_key.trim()).unwrap_or_default();
        let hub_key = random_key();
        Ok(Authenticated {
            source: Source::Individual(enrollment),
            hub_auth: sas_auth(BASE64.encode(hub_key), BASE64.encode(random_key())),
            details: AttestationDetails::Tpm {
                endorsement_key,
                storage_root_key: challenge.storage_root_key,
                hub_key,
            },
        })
    }

    /// Uses one registration of the test-mode fault set on this enrollment or group. The
    /// snapshot knows which have one, so the rest pay no store round trip.
    async fn take_fault(
        &self,
        source: &EnrollmentRef,
    ) -> Result<Option<FaultInjection>, ProvisionError> {
        if !self
            .snapshot(false)
            .await?
            .faults
            .contains(&fault_key(source))
        {
            return Ok(None);
        }
        Ok(self.store.take_fault_injection(source).await?)
    }

    async fn snapshot(&self, fresh: bool) -> Result<Arc<Snapshot>, ProvisionError> {
        let cached = self.snapshot.lock().unwrap().clone();
        if let Some(snapshot) = cached.filter(|s| !fresh && s.loaded.elapsed() < SNAPSHOT_TTL) {
            return Ok(snapshot);
        }
        let snapshot = Arc::new(Snapshot {
            loaded: Instant::now(),
            hubs: self.store.list_hubs().await?,
            settings: allocation_settings(self.store.as_ref()).await?,
            key_groups: self.groups_of(AttestationKind::SymmetricKey).await?,
            x509_groups: self.x509_groups().await?,
            cas: ca::decoded(self.store.as_ref()).await?,
            faults: self.store.live_fault_targets().await?.into_iter().collect(),
            signers: Signers::load(self.store.as_ref()).await?,
        });
        for hub in &snapshot.hubs {
            self.metrics.declare_hub(&hub.host_name);
        }
        *self.snapshot.lock().unwrap() = Some(snapshot.clone());
        Ok(snapshot)
    }

    async fn x509_groups(&self) -> Result<Vec<X509Group>, StoreError> {
        let groups = self.groups_of(AttestationKind::X509).await?;
        Ok(groups
            .into_iter()
            .map(|group| {
                let signers = match &group.spec.attestation {
                    Attestation::X509 { certificates, .. } => certificates
                        .iter()
                        .filter_map(|text| x509::parse_certificates(text).ok())
                        .flatten()
                        .collect(),
                    _ => Vec::new(),
                };
                X509Group { group, signers }
            })
            .collect())
    }

    async fn groups_of(&self, kind: AttestationKind) -> Result<Vec<EnrollmentGroup>, StoreError> {
        let mut query = ListQuery {
            attestation: Some(kind),
            limit: MAX_PAGE,
            ..Default::default()
        };
        let mut groups = Vec::new();
        loop {
            let page = self.store.list_groups(&query).await?;
            groups.extend(page.items);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(groups),
            }
        }
    }

    /// Assigns the device and stores the outcome (record and final operation). Allocation
    /// failures end the registration `failed`; only store or hub faults are errors.
    async fn assign(
        &self,
        operation_id: &str,
        registration_id: &str,
        mut auth: Authenticated,
        previous: Option<RegistrationRecord>,
        mut arrival: Arrival,
    ) -> Result<DeviceRegistrationResult, ProvisionError> {
        let protocol = arrival.protocol.as_str();
        let now = Utc::now();
        let issuance = arrival.issuance.take();
        if issuance.is_some() {
            // The device will use the issued certificate at its hub, which trusts the issuer.
            auth.hub_auth = DeviceAuth::CertificateAuthority;
        }
        let mut record = RegistrationRecord {
            registration_id: registration_id.to_string(),
            enrollment: auth.source.reference(),
            attestation: auth.source.spec().attestation.kind(),
            assigned_hub: None,
            device_id: None,
            status: RegistrationStatus::Assigned,
            substatus: None,
            error_code: None,
            error_message: None,
            payload: None,
            etag: Etag::new(),
            created: previous.as_ref().map_or(now, |p| p.created),
            updated: now,
        };
        let (mut identity, mut replaced) = (None, None);
        if auth.source.spec().provisioning_status == ProvisioningStatus::Disabled {
            record.status = RegistrationStatus::Disabled;
        } else {
            match self
                .place(registration_id, &auth, previous.as_ref(), arrival)
                .await?
            {
                Ok(placed) => {
                    record.assigned_hub = Some(placed.hub);
                    record.device_id = Some(placed.device_id);
                    record.substatus = Some(placed.substatus);
                    record.payload = placed.payload;
                    (identity, replaced) = (placed.identity, placed.replaced);
                }
                Err((error_code, message)) => {
                    record.status = RegistrationStatus::Failed;
                    record.error_code = Some(error_code);
                    record.error_message = Some(message);
                }
            }
        }
        // The hub identity, the record and the operation that reports them commit together, so
        // a device polling never sees one without the others. A first registration raced by
        // another one for the same ID may report a `createdDateTimeUtc` a moment off the stored one.
        let issued = match issuance.filter(|_| record.status == RegistrationStatus::Assigned) {
            Some(issuance) => Some(
                issuance
                    .issue(registration_id, now, &self.public_url)
                    .map_err(|e| ProvisionError::Internal(format!("signing failed: {e}")))?,
            ),
            None => None,
        };
        let mut state = registration_result(&record);
        auth.describe(&mut state)?;
        state.issued_certificate_chain = issued.as_ref().map(|i| i.chain.clone());
        let operation = RegistrationOperation {
            operation_id: operation_id.to_string(),
            registration_id: registration_id.to_string(),
            status: record.status,
            result: Some(
                serde_json::to_value(&state)
                    .map_err(|e| ProvisionError::Internal(e.to_string()))?,
            ),
            created: now,
            updated: now,
        };
        let events: Vec<_> = lifecycle::registration_finished(previous.as_ref(), &record)
            .into_iter()
            .collect();
        let commit = self.store.finish_registration(
            identity,
            record,
            operation,
            issued.map(|i| i.record),
            &events,
        );
        self.timed(protocol, Step::Commit, commit).await?;
        if let Some((old_hub, old_device)) = replaced {
            // The device is assigned elsewhere now; a leftover old identity cannot be used by it
            // (its registration points away) and is reported rather than failing the device.
            let removed = self
                .connectors
                .for_hub(&old_hub)
                .remove(&old_hub, &old_device)
                .await;
            if let Err(e) = self.hub_failed(&old_hub, "remove", removed) {
                tracing::warn!(hub = %old_hub.host_name, device = %old_device, error = %e,
                    "the identity a device left could not be removed");
            }
        }
        Ok(state)
    }

    /// Chooses the hub, applies the reprovisioning policy, and writes the identity. The inner
    /// `Err` is a registration failure (error code, message) the device is told about.
    async fn place(
        &self,
        registration_id: &str,
        auth: &Authenticated,
        previous: Option<&RegistrationRecord>,
        arrival: Arrival,
    ) -> Result<Result<Placed, (i64, String)>, ProvisionError> {
        let protocol = arrival.protocol.as_str();
        let allocating = Instant::now();
        let spec = auth.source.spec();
        let snapshot = self.snapshot(false).await?;
        let device_id = auth.source.device_id(registration_id);
        let linked = |name: &str| {
            snapshot
                .hubs
                .iter()
                .find(|h| h.host_name.eq_ignore_ascii_case(name))
        };
        // The hub this device is on now, if it is assigned and that hub is still linked.
        let current = previous
            .filter(|p| p.status == RegistrationStatus::Assigned)
            .and_then(|p| Some((linked(p.assigned_hub.as_deref()?)?, p.device_id.clone()?)));
        let policy = spec
            .allocation_policy
            .unwrap_or(snapshot.settings.default_policy);

        let (hub, custom_twin, returned_payload) = match &current {
            Some((hub, _)) if !spec.reprovision_policy.update_hub_assignment => (*hub, None, None),
            _ if policy == AllocationPolicy::Custom => {
                let request = self.webhook_request(
                    auth,
                    registration_id,
                    current.as_ref(),
                    arrival.payload,
                    &snapshot,
                );
                let Some(definition) = &spec.custom_allocation else {
                    return Ok(Err((
                        code::CUSTOM_ALLOCATION_FAILED,
                        "the enrollment has no custom allocation webhook".into(),
                    )));
                };
                match self
                    .webhook
                    .allocate(&definition.webhook_url, &request)
                    .await
                {
                    Ok(answer) => match linked(&answer.hub) {
                        Some(hub) => (hub, answer.initial_twin, answer.payload),
                        None => {
                            let message = format!(
                                "the custom allocation webhook chose {:?}, which is not a linked hub",
                                answer.hub
                            );
                            return Ok(Err((code::NO_HUB, message)));
                        }
                    },
                    Err(e) => return Ok(Err((code::CUSTOM_ALLOCATION_FAILED, e.to_string()))),
                }
            }
            _ => match choose_builtin(spec, policy, &snapshot, registration_id, arrival.client) {
                Ok(hub) => (hub, None, None),
                Err(e) => return Ok(Err((code::NO_HUB, e.to_string()))),
            },
        };

        let initial = || spec.initial_twin.clone().unwrap_or_default();
        let (twin, substatus) = match &current {
            None => (
                TwinWrite::Initial(custom_twin.unwrap_or_else(initial)),
                Substatus::InitialAssignment,
            ),
            Some(_) if !spec.reprovision_policy.update_hub_assignment => {
                (TwinWrite::Keep, Substatus::ReprovisionedToInitialAssignment)
            }
            // A twin from the webhook overrides the enrollment's twin and its migration setting.
            Some(_) if custom_twin.is_some() => (
                TwinWrite::Initial(custom_twin.unwrap()),
                Substatus::DeviceDataReset,
            ),
            Some((old_hub, old_device)) if spec.reprovision_policy.migrate_device_data => {
                let connector = self.connectors.for_hub(old_hub);
                let read = connector.read_twin(old_hub, old_device).await;
                match self.hub_failed(old_hub, "read_twin", read)? {
                    Some(state) => (TwinWrite::Migrated(state), Substatus::DeviceDataMigrated),
                    None => (TwinWrite::Initial(initial()), Substatus::DeviceDataMigrated),
                }
            }
            Some(_) => (TwinWrite::Initial(initial()), Substatus::DeviceDataReset),
        };

        let identity = Identity {
            device_id: device_id.clone(),
            auth: auth.hub_auth.clone(),
            iot_edge: spec.iot_edge,
        };
        self.metrics
            .step(protocol, Step::Allocate, allocating.elapsed());
        let write = self.connectors.for_hub(hub).provision(hub, identity, twin);
        let written = self.timed(protocol, Step::HubWrite, write).await;
        let identity = match self.hub_failed(hub, "provision", written)? {
            Provisioned::Done => None,
            Provisioned::WithRecord(device) => Some(*device),
        };
        let replaced = current.filter(|(old_hub, old_device)| {
            !old_hub.host_name.eq_ignore_ascii_case(&hub.host_name) || *old_device != device_id
        });
        Ok(Ok(Placed {
            hub: hub.host_name.clone(),
            device_id,
            substatus,
            payload: returned_payload,
            identity,
            replaced: replaced.map(|(old_hub, old_device)| (old_hub.clone(), old_device)),
        }))
    }

    fn webhook_request(
        &self,
        auth: &Authenticated,
        registration_id: &str,
        current: Option<&(&LinkedHub, String)>,
        payload: Option<Value>,
        snapshot: &Snapshot,
    ) -> Value {
        let (kind, enrollment) = auth.source.webhook_enrollment();
        let mut context = json!({ "registrationId": registration_id, "symmetricKey": {} });
        if let Some((hub, device)) = current {
            context["currentIotHubHostName"] = json!(hub.host_name);
            context["currentDeviceId"] = json!(device);
        }
        if let Some(payload) = payload.filter(|p| !p.is_null()) {
            context["payload"] = payload;
        }
        let candidates = allocation::candidates(&snapshot.hubs, &auth.source.spec().iot_hubs);
        json!({
            kind: enrollment,
            "deviceRuntimeContext": context,
            "linkedHubs": candidates.iter().map(|h| h.host_name.as_str()).collect::<Vec<_>>(),
        })
    }

    fn emit(
        &self,
        registration_id: &str,
        protocol: Protocol,
        tracking_id: &str,
        started: Instant,
        attempt: Attempt,
        result: &Result<OperationReply, ProvisionError>,
    ) {
        let (status, hub, error_code, error_message) = match result {
            Ok(reply) => {
                let state = reply.operation.registration_state.as_ref();
                (
                    RegistrationStatus::parse(&reply.operation.status)
                        .unwrap_or(RegistrationStatus::Assigning),
                    state.and_then(|s| s.assigned_hub.clone()),
                    state.and_then(|s| s.error_code),
                    state.and_then(|s| s.error_message.clone()),
                )
            }
            Err(e) => (
                RegistrationStatus::Failed,
                None,
                Some(e.code()),
                Some(e.to_string()),
            ),
        };
        if let Err(e) = result {
            tracing::info!(registration_id, tracking_id, error = %e, "registration refused");
        }
        let latency = started.elapsed();
        let attestation = match (attempt.attestation, attempt.presented) {
            (Some(kind), _) => Some((kind.as_str(), true)),
            (None, Some(presented)) => Some((presented, false)),
            (None, None) => None,
        };
        self.metrics.attempt(&AttemptOutcome {
            protocol: protocol.as_str(),
            status: status.as_str(),
            hub: hub.as_deref(),
            attestation,
            error_code,
            latency,
        });
        self.bus.emit(RegistrationEvent {
            at: Utc::now(),
            tracking_id: tracking_id.to_string(),
            registration_id: registration_id.to_string(),
            protocol,
            attestation: attempt.attestation,
            enrollment: attempt.source,
            hub,
            status,
            error_code,
            error_message,
            latency_ms: latency.as_millis() as u64,
            fault: attempt.fault,
        });
    }
}

/// The attestation a request attempts, before it is known to hold: a TPM-signed token comes
/// with the TPM's keys in the body.
fn presented_attestation(credential: &Credential, body: &DeviceRegistration) -> &'static str {
    match credential {
        _ if body.tpm.is_some() => AttestationKind::Tpm.as_str(),
        Credential::Sas(_) | Credential::Login(_) => AttestationKind::SymmetricKey.as_str(),
        Credential::X509(_) => AttestationKind::X509.as_str(),
        Credential::None => "none",
    }
}

/// A hub by a built-in policy among the enrollment's candidates.
fn choose_builtin<'a>(
    spec: &EnrollmentSpec,
    policy: AllocationPolicy,
    snapshot: &'a Snapshot,
    registration_id: &str,
    client: Option<IpAddr>,
) -> Result<&'a LinkedHub, allocation::AllocationError> {
    let candidates = allocation::candidates(&snapshot.hubs, &spec.iot_hubs);
    allocation::choose(
        policy,
        &candidates,
        registration_id,
        client,
        &snapshot.settings,
    )
}

/// What a registration would do now, without doing it (the console's what-if tool).
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    /// The enrollment that would decide; None when nothing matches.
    pub enrollment: Option<EnrollmentRef>,
    pub policy: Option<AllocationPolicy>,
    /// The hub the device would get, or why it would get none.
    pub outcome: Result<String, String>,
    /// The hub the device is assigned to now, if any.
    pub current_hub: Option<String>,
}

impl Provisioner {
    /// Answers with the current enrollments, hubs and settings, as a registration of
    /// `registration_id` from `client` would: the individual enrollment if there is one, else the
    /// group named (a symmetric-key group is found by the device's key, which a what-if lacks).
    /// Custom allocation is not called: its webhook would decide.
    pub async fn what_if(
        &self,
        registration_id: &str,
        client: Option<IpAddr>,
        group_id: Option<&str>,
    ) -> Result<WhatIf, ProvisionError> {
        let source = match self.store.get_enrollment(registration_id).await? {
            Some(e) => Some(Source::Individual(e)),
            None => match group_id {
                Some(id) => self.store.get_group(id).await?.map(Source::Group),
                None => None,
            },
        };
        let previous = self.store.get_registration(registration_id).await?;
        let current_hub = previous
            .filter(|p| p.status == RegistrationStatus::Assigned)
            .and_then(|p| p.assigned_hub);
        let Some(source) = source else {
            return Ok(WhatIf {
                enrollment: None,
                policy: None,
                outcome: Err(match group_id {
                    Some(id) => {
                        format!("no individual enrollment for this ID, and no group {id:?}")
                    }
                    None => "no individual enrollment for this ID; name a group to try it".into(),
                }),
                current_hub,
            });
        };
        let snapshot = self.snapshot(true).await?;
        let spec = source.spec();
        let policy = spec
            .allocation_policy
            .unwrap_or(snapshot.settings.default_policy);
        let outcome = if spec.provisioning_status == ProvisioningStatus::Disabled {
            Err("the enrollment is disabled: the device would get status disabled".into())
        } else if let Some(hub) = current_hub
            .as_ref()
            .filter(|_| !spec.reprovision_policy.update_hub_assignment)
        {
            Ok(hub.clone())
        } else if policy == AllocationPolicy::Custom {
            Err(match &spec.custom_allocation {
                Some(c) => format!(
                    "the custom allocation webhook {} would decide",
                    c.webhook_url
                ),
                None => "the enrollment has no custom allocation webhook".into(),
            })
        } else {
            choose_builtin(spec, policy, &snapshot, registration_id, client)
                .map(|hub| hub.host_name.clone())
                .map_err(|e| e.to_string())
        };
        Ok(WhatIf {
            enrollment: Some(source.reference()),
            policy: Some(policy),
            outcome,
            current_hub,
        })
    }
}

struct Placed {
    hub: String,
    device_id: String,
    substatus: Substatus,
    payload: Option<Value>,
    /// A built-in hub identity to commit with the registration record.
    identity: Option<HubDevice>,
    /// The identity the device leaves (migration or a new device ID), removed once the new
    /// assignment is committed.
    replaced: Option<(LinkedHub, String)>,
}

/// The register body: empty or whitespace means no fields; anything else must be a JSON object.
pub fn parse_registration(body: &[u8]) -> Result<DeviceRegistration, ProvisionError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DeviceRegistration::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ProvisionError::BadRequest(format!("malformed request body: {e}")))
}

/// Operation IDs look like Azure's (`4.<16 hex>.<uuid>`); clients treat them as opaque.
fn new_operation_id() -> String {
    format!("4.{:016x}.{}", rand::random::<u64>(), uuid::Uuid::new_v4())
}

fn assigning(operation_id: &str, registration_id: &str) -> RegistrationOperationStatus {
    RegistrationOperationStatus {
        operation_id: operation_id.to_string(),
        status: RegistrationStatus::Assigning.as_str().into(),
        // The IoT Edge identity service needs registrationState even while assigning.
        registration_state: Some(DeviceRegistrationResult {
            registration_id: registration_id.to_string(),
            status: RegistrationStatus::Assigning.as_str().into(),
            ..Default::default()
        }),
    }
}

/// A registration record in the wire shape devices (and the service API) read.
pub fn registration_result(record: &RegistrationRecord) -> DeviceRegistrationResult {
    DeviceRegistrationResult {
        registration_id: record.registration_id.clone(),
        created_date_time_utc: Some(timestamp(record.created)),
        assigned_hub: record.assigned_hub.clone(),
        device_id: record.device_id.clone(),
        status: record.status.as_str().into(),
        substatus: record.substatus.map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        }),
        error_code: record.error_code,
        error_message: record.error_message.clone(),
        last_updated_date_time_utc: Some(timestamp(record.updated)),
        // Azure's registration etags are base64 of a quoted string.
        etag: Some(BASE64.encode(record.etag.quoted())),
        payload: record.payload.clone(),
        ..Default::default()
    }
}

/// The instance's allocation defaults, from the store's settings.
pub async fn allocation_settings(store: &dyn Store) -> Result<AllocationSettings, StoreError> {
    let default_policy = match store.setting(setting::DEFAULT_ALLOCATION_POLICY).await? {
        Some(p) => serde_json::from_value(Value::String(p)).unwrap_or(AllocationPolicy::Hashed),
        None => AllocationPolicy::Hashed,
    };
    let region_map = match store.setting(setting::REGION_MAP).await? {
        Some(json) => serde_json::from_str(&json)?,
        None => Vec::new(),
    };
    Ok(AllocationSettings {
        default_policy,
        region_map,
    })
}

/// A base64 TPM2B field of the register body's `tpm` object.
fn tpm_field(tpm: &Value, name: &str) -> Result<Vec<u8>, ProvisionError> {
    let text = tpm[name]
        .as_str()
        .ok_or_else(|| ProvisionError::BadRequest(format!("tpm.{name} is missing")))?;
    BASE64
        .decode(text.trim())
        .map_err(|_| ProvisionError::BadRequest(format!("tpm.{name} is not base64")))
}

/// An activation blob carrying `key` for the TPM with this EK and SRK (TPM2B_PUBLIC each).
fn tpm_blob(ek: &[u8], srk: &[u8], key: &[u8]) -> Result<Vec<u8>, ProvisionError> {
    let bad = |e: tpm::TpmError| ProvisionError::BadRequest(e.to_string());
    let (ek, srk) = (
        TpmPublic::parse(ek).map_err(bad)?,
        TpmPublic::parse(srk).map_err(bad)?,
    );
    tpm::activation_blob(&ek, &srk, key, &tpm::Randomness::fresh())
        .map_err(|e| ProvisionError::Internal(e.to_string()))
}

/// 32 random bytes: a TPM device's challenge key or hub key.
fn random_key() -> [u8; 32] {
    rand::random()
}

fn sas_auth(primary_key: String, secondary_key: String) -> DeviceAuth {
    DeviceAuth::Sas {
        primary_key,
        secondary_key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_id_rules() {
        for ok in ["dev-1", "a", "Sensor.7:b_c", "x-", &"a".repeat(128)] {
            assert!(validate_registration_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-dev",
            "dev.",
            "dev_",
            "dév",
            "dev 1",
            "dev/1",
            &"a".repeat(129),
        ] {
            assert!(validate_registration_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_codes_carry_their_http_status() {
        assert_eq!(ProvisionError::Unauthorized("x".into()).status(), 401);
        assert_eq!(ProvisionError::UnknownScope("x".into()).status(), 404);
        assert_eq!(ProvisionError::BadRequest("x".into()).status(), 400);
        assert_eq!(ProvisionError::TooLarge(1).status(), 413);
        assert_eq!(
            ProvisionError::Unauthorized("wrong key".into()).client_message(),
            "Unauthorized"
        );
        assert_eq!(
            ProvisionError::Unauthorized(EXPIRED.into()).client_message(),
            "The SAS token has expired."
        );
    }

    #[test]
    fn register_bodies_never_panic() {
        assert_eq!(
            parse_registration(b"").unwrap(),
            DeviceRegistration::default()
        );
        assert_eq!(
            parse_registration(b" ").unwrap(),
            DeviceRegistration::default()
        );
        let body = parse_registration(br#"{"registrationId":"d","payload":null}"#).unwrap();
        assert_eq!(body.registration_id.as_deref(), Some("d"));
        assert!(parse_registration(b"[1,2]").is_err());
        assert!(parse_registration(br#"{"registrationId": 7}"#).is_err());
        for _ in 0..20_000 {
            let len = rand::random::<u8>() as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
            let _ = parse_registration(&bytes);
        }
    }

    #[test]
    fn operation_ids_are_unique_and_opaque() {
        let a = new_operation_id();
        assert!(a.starts_with("4.") && a.len() > 40);
        assert_ne!(a, new_operation_id());
    }
}
