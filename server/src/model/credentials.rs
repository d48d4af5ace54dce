//! Certificates Onramp issues at provisioning (issue 21): the credential policies enrollments
//! name, the CAs that sign (issuers), and the record of every certificate issued.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::Etag;

/// The issuer every instance creates at first start (its own issuing CA).
pub const OWN_ISSUER: &str = "onramp";

/// A device key a policy may accept in a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyType {
    #[serde(rename = "ecP256")]
    EcP256,
    #[serde(rename = "ecP384")]
    EcP384,
    #[serde(rename = "rsa2048")]
    Rsa2048,
    #[serde(rename = "rsa3072")]
    Rsa3072,
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Rsa2048,
        KeyType::Rsa3072,
        KeyType::Ed25519,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ecP256",
            KeyType::EcP384 => "ecP384",
            KeyType::Rsa2048 => "rsa2048",
            KeyType::Rsa3072 => "rsa3072",
            KeyType::Ed25519 => "ed25519",
        }
    }

    pub fn parse(s: &str) -> Option<KeyType> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
    }
}

/// How certificates are issued to the devices of the enrollments that name this policy: the
/// subject is always CN = registration ID, the extended key usage always clientAuth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialPolicy {
    pub name: String,
    /// The `CertificateIssuer` that signs.
    pub issuer: String,
    pub validity_days: u32,
    /// Device keys accepted in a CSR; anything else is refused.
    pub key_types: Vec<KeyType>,
    /// A device presenting a certificate of this policy may renew it this long before it
    /// expires (earlier CSRs are refused, so a device cannot mint certificates at will).
    pub renewal_window_days: u32,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// A CA that signs device certificates: the instance's own (made at first start) or an
/// intermediate the operator uploads with its key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateIssuer {
    pub name: String,
    /// The issuing certificate first, then the ones above it up to the root (PEM).
    pub chain_pem: String,
    /// PKCS#8 PEM. A secret: never logged, never returned.
    pub key_pem: String,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

/// The key is a secret: never printed.
impl std::fmt::Debug for CertificateIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateIssuer")
            .field("name", &self.name)
            .field("chain_pem", &self.chain_pem)
            .finish_non_exhaustive()
    }
}

/// One certificate Onramp signed, kept for revocation and the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedCertificate {
    /// Lower-case hex, as openssl prints it.
    pub serial: String,
    pub registration_id: String,
    pub issuer: String,
    pub policy: String,
    pub key_type: KeyType,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    pub revoked: Option<DateTime<Utc>>,
    pub created: DateTime<Utc>,
}
