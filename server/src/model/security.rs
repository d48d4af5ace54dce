//! Who may do what: service access policies, CA certificates, console users and sessions, and the
//! audit trail of every change.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Etag;

/// Rights of a shared access policy (Azure DPS names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Right {
    ServiceConfig,
    EnrollmentRead,
    EnrollmentWrite,
    RegistrationStatusRead,
    RegistrationStatusWrite,
}

impl Right {
    pub const ALL: [Right; 5] = [
        Right::ServiceConfig,
        Right::EnrollmentRead,
        Right::EnrollmentWrite,
        Right::RegistrationStatusRead,
        Right::RegistrationStatusWrite,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Right::ServiceConfig => "ServiceConfig",
            Right::EnrollmentRead => "EnrollmentRead",
            Right::EnrollmentWrite => "EnrollmentWrite",
            Right::RegistrationStatusRead => "RegistrationStatusRead",
            Right::RegistrationStatusWrite => "RegistrationStatusWrite",
        }
    }

    pub fn parse(s: &str) -> Option<Right> {
        Right::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    pub name: String,
    pub rights: Vec<Right>,
    /// Base64 keys; secrets: never logged.
    pub primary_key: String,
    pub secondary_key: String,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

impl AccessPolicy {
    /// The service connection string (primary key) the official service SDKs take.
    pub fn connection_string(&self, host: &str) -> String {
        format!(
            "HostName={host};SharedAccessKeyName={};SharedAccessKey={}",
            self.name, self.primary_key
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificate {
    pub name: String,
    pub pem: String,
    pub sha256_thumbprint: String,
    pub verified: bool,
    /// The code a proof-of-possession certificate must carry as its CN.
    pub verification_code: Option<String>,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsoleUser {
    pub username: String,
    /// argon2id PHC string.
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// A console session as the session layer stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSession {
    pub id: String,
    pub data: Vec<u8>,
    pub expires: DateTime<Utc>,
}

/// The key a TPM device was challenged with (the one its activation blob carries) and the SRK
/// (TPM2B_PUBLIC) it was wrapped to, kept until `expires` for the signed retry and the polls.
#[derive(Clone, PartialEq)]
pub struct TpmChallenge {
    pub registration_id: String,
    pub hmac_key: Vec<u8>,
    pub storage_root_key: Vec<u8>,
    pub expires: DateTime<Utc>,
}

/// The key is a secret: never printed.
impl std::fmt::Debug for TpmChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmChallenge")
            .field("registration_id", &self.registration_id)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The front end a change came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrontEnd {
    Console,
    ServiceApi,
    Cli,
}

impl FrontEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            FrontEnd::Console => "console",
            FrontEnd::ServiceApi => "service-api",
            FrontEnd::Cli => "cli",
        }
    }

    pub fn parse(s: &str) -> Option<FrontEnd> {
        [FrontEnd::Console, FrontEnd::ServiceApi, FrontEnd::Cli]
            .into_iter()
            .find(|f| f.as_str() == s)
    }
}

/// Who makes a change: a console user, a service API caller (the access policy it signed with,
/// and its address), or an operator at the command line (the OS user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub front_end: FrontEnd,
    pub address: Option<String>,
}

impl Actor {
    pub fn console(username: &str) -> Actor {
        Actor {
            name: username.into(),
            front_end: FrontEnd::Console,
            address: None,
        }
    }

    pub fn service_api(policy: &str, address: Option<std::net::IpAddr>) -> Actor {
        Actor {
            name: policy.into(),
            front_end: FrontEnd::ServiceApi,
            address: address.map(|a| a.to_string()),
        }
    }

    pub fn cli(os_user: &str) -> Actor {
        Actor {
            name: os_user.into(),
            front_end: FrontEnd::Cli,
            address: None,
        }
    }

    /// The console user making the change, if it is one (rules about "your own account").
    pub fn console_user(&self) -> Option<&str> {
        (self.front_end == FrontEnd::Console).then_some(self.name.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub front_end: FrontEnd,
    /// The caller's address, where the front end knows it (service API).
    pub address: Option<String>,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// An audit entry before the store numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub actor: Actor,
    pub action: String,
    pub target: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}
