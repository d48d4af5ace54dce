//! Registration records (the outcome per device) and registration operations (one per register
//! request, polled by devices; persisted so any instance can answer the poll).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AttestationKind, Etag};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RegistrationStatus {
    Unassigned,
    Assigning,
    Assigned,
    Failed,
    Disabled,
}

impl RegistrationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegistrationStatus::Unassigned => "unassigned",
            RegistrationStatus::Assigning => "assigning",
            RegistrationStatus::Assigned => "assigned",
            RegistrationStatus::Failed => "failed",
            RegistrationStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<RegistrationStatus> {
        [
            RegistrationStatus::Unassigned,
            RegistrationStatus::Assigning,
            RegistrationStatus::Assigned,
            RegistrationStatus::Failed,
            RegistrationStatus::Disabled,
        ]
        .into_iter()
        .find(|s2| s2.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RegistrationStatus::Assigning | RegistrationStatus::Unassigned
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Substatus {
    InitialAssignment,
    DeviceDataMigrated,
    DeviceDataReset,
    ReprovisionedToInitialAssignment,
}

/// Which enrollment a registration came through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "camelCase")]
pub enum EnrollmentRef {
    Individual(String),
    Group(String),
}

impl EnrollmentRef {
    /// `individual/{id}` or `group/{id}`, as logs and the console show it.
    pub fn label(&self) -> String {
        match self {
            EnrollmentRef::Individual(id) => format!("individual/{id}"),
            EnrollmentRef::Group(id) => format!("group/{id}"),
        }
    }

    pub fn group_id(&self) -> Option<&str> {
        match self {
            EnrollmentRef::Group(id) => Some(id),
            EnrollmentRef::Individual(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRecord {
    pub registration_id: String,
    pub enrollment: EnrollmentRef,
    pub attestation: AttestationKind,
    pub assigned_hub: Option<String>,
    pub device_id: Option<String>,
    pub status: RegistrationStatus,
    pub substatus: Option<Substatus>,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    /// What the custom-allocation webhook returned for the device.
    pub payload: Option<Value>,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOperation {
    pub operation_id: String,
    pub registration_id: String,
    pub status: RegistrationStatus,
    /// The registration state once final (the wire `registrationState`).
    pub result: Option<Value>,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}
