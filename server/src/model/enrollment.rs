//! Individual enrollments and enrollment groups: who may register, how they prove it, and where
//! they go.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Etag;

/// How a device proves its identity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Attestation {
    SymmetricKey {
        #[serde(rename = "primaryKey")]
        primary_key: String,
        #[serde(rename = "secondaryKey")]
        secondary_key: String,
    },
    X509 {
        /// PEM certificates: a device's own (individual) or signing certificates (group).
        #[serde(default)]
        certificates: Vec<String>,
        /// Names of CA certificates registered on the instance (groups only).
        #[serde(default, rename = "caReferences")]
        ca_references: Vec<String>,
    },
    Tpm {
        #[serde(rename = "endorsementKey")]
        endorsement_key: String,
        #[serde(default, rename = "storageRootKey")]
        storage_root_key: Option<String>,
    },
}

impl Attestation {
    pub fn kind(&self) -> AttestationKind {
        match self {
            Attestation::SymmetricKey { .. } => AttestationKind::SymmetricKey,
            Attestation::X509 { .. } => AttestationKind::X509,
            Attestation::Tpm { .. } => AttestationKind::Tpm,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttestationKind {
    SymmetricKey,
    X509,
    Tpm,
}

impl AttestationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AttestationKind::SymmetricKey => "symmetricKey",
            AttestationKind::X509 => "x509",
            AttestationKind::Tpm => "tpm",
        }
    }

    pub fn parse(s: &str) -> Option<AttestationKind> {
        [
            AttestationKind::SymmetricKey,
            AttestationKind::X509,
            AttestationKind::Tpm,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ProvisioningStatus {
    #[default]
    Enabled,
    Disabled,
}

impl ProvisioningStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisioningStatus::Enabled => "enabled",
            ProvisioningStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<ProvisioningStatus> {
        match s.to_ascii_lowercase().as_str() {
            "enabled" => Some(ProvisioningStatus::Enabled),
            "disabled" => Some(ProvisioningStatus::Disabled),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AllocationPolicy {
    Hashed,
    #[serde(alias = "geolatency", alias = "GeoLatency")]
    GeoLatency,
    Static,
    Custom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReprovisionPolicy {
    pub update_hub_assignment: bool,
    pub migrate_device_data: bool,
}

impl Default for ReprovisionPolicy {
    fn default() -> Self {
        ReprovisionPolicy {
            update_hub_assignment: true,
            migrate_device_data: true,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitialTwin {
    #[serde(default)]
    pub tags: serde_json::Map<String, Value>,
    #[serde(default)]
    pub desired: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CustomAllocationDefinition {
    pub webhook_url: String,
    pub api_version: String,
}

/// What an operator sets on an enrollment or a group: everything but identity and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentSpec {
    pub attestation: Attestation,
    #[serde(default)]
    pub provisioning_status: ProvisioningStatus,
    #[serde(default)]
    pub iot_edge: bool,
    #[serde(default)]
    pub initial_twin: Option<InitialTwin>,
    #[serde(default)]
    pub reprovision_policy: ReprovisionPolicy,
    /// None: the instance's default policy.
    #[serde(default)]
    pub allocation_policy: Option<AllocationPolicy>,
    /// Candidate hubs (host names); empty: every linked hub.
    #[serde(default)]
    pub iot_hubs: Vec<String>,
    #[serde(default)]
    pub custom_allocation: Option<CustomAllocationDefinition>,
    /// The `CredentialPolicy` that signs the CSRs of this enrollment's devices; None: a CSR is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_policy_name: Option<String>,
}

impl EnrollmentSpec {
    /// An enabled enrollment with this attestation and every other setting at its default.
    pub fn new(attestation: Attestation) -> EnrollmentSpec {
        EnrollmentSpec {
            attestation,
            provisioning_status: ProvisioningStatus::Enabled,
            iot_edge: false,
            initial_twin: None,
            reprovision_policy: ReprovisionPolicy::default(),
            allocation_policy: None,
            iot_hubs: vec![],
            custom_allocation: None,
            credential_policy_name: None,
        }
    }

    /// True for symmetric-key attestation with a key left empty (to keep or generate).
    pub fn lacks_keys(&self) -> bool {
        matches!(&self.attestation, Attestation::SymmetricKey { primary_key, secondary_key }
            if primary_key.is_empty() || secondary_key.is_empty())
    }

    /// Symmetric keys left empty are kept from the stored version, or generated (64 random bytes,
    /// like Azure).
    pub fn fill_missing_keys(&mut self, existing: Option<&EnrollmentSpec>) {
        let Attestation::SymmetricKey {
            primary_key,
            secondary_key,
        } = &mut self.attestation
        else {
            return;
        };
        let old = match existing.map(|e| &e.attestation) {
            Some(Attestation::SymmetricKey {
                primary_key,
                secondary_key,
            }) => Some((primary_key, secondary_key)),
            _ => None,
        };
        for (key, kept) in [
            (primary_key, old.map(|o| o.0)),
            (secondary_key, old.map(|o| o.1)),
        ] {
            if key.is_empty() {
                *key = kept.cloned().unwrap_or_else(|| super::random_key(64));
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    pub registration_id: String,
    pub device_id: Option<String>,
    pub spec: EnrollmentSpec,
    pub optional_device_information: Option<Value>,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnrollmentGroup {
    pub group_id: String,
    pub spec: EnrollmentSpec,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// A page request for a list of enrollments, groups or records: keyset paging on the lower-case ID.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    /// Only IDs starting with this (case-insensitive).
    pub id_prefix: Option<String>,
    pub status: Option<ProvisioningStatus>,
    pub attestation: Option<AttestationKind>,
    /// Only records of this group (registration records).
    pub group_id: Option<String>,
    /// Continue after this (lower-case) ID.
    pub after: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The `after` value of the next page, when there is one.
    pub next: Option<String>,
}
