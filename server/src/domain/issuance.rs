//! Certificates issued at provisioning: which credential policy and issuer apply to a device's CSR,
//! the signing of an accepted one, and the instance's own issuing CA made at first start. The
//! Provisioner calls this from the one registration path; `pki` does the cryptography.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, Utc};

use super::ca;
use crate::model::*;
use crate::pki::{self, CheckedCsr, LeafTerms, SigningCa};
use crate::store::{Store, StoreError};

/// What a fresh instance's default credential policy is called.
pub const DEFAULT_POLICY: &str = "default";
const DEFAULT_VALIDITY_DAYS: u32 = 90;
const DEFAULT_RENEWAL_WINDOW_DAYS: u32 = 30;

/// The credential policies and the issuers that sign for them, loaded together (the
/// Provisioner's snapshot keeps them with the groups and hubs).
#[derive(Default)]
pub struct Signers {
    policies: Vec<CredentialPolicy>,
    issuers: Vec<(String, Arc<SigningCa>)>,
}

/// A register request's CSR and what decides it.
pub struct Candidate<'a> {
    /// The enrollment's `credentialPolicyName`.
    pub policy: Option<&'a str>,
    /// Base64 DER, as the request carries it.
    pub csr: &'a str,
    pub registration_id: &'a str,
    /// The issued certificate the device authenticated with, when it renews with one.
    pub renewing: Option<&'a IssuedCertificate>,
}

/// A CSR its enrollment's policy accepts, and what will sign it.
pub struct Issuance {
    csr: CheckedCsr,
    policy: CredentialPolicy,
    /// The issuer's name as stored (revocation lists go by it).
    issuer: String,
    signer: Arc<SigningCa>,
}

/// How long a CRL is valid; relying parties fetch a fresh one before then.
const CRL_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

/// A certificate issued for a registration: the chain the device gets (base64 DER, leaf to root)
/// and the record kept of it.
pub struct Issued {
    pub chain: Vec<String>,
    pub record: IssuedCertificate,
}

impl Signers {
    /// Every policy and every issuer that can sign (an issuer whose key or chain no longer
    /// parses is left out and logged: its policies' devices are refused with a clear reason).
    pub async fn load(store: &dyn Store) -> Result<Signers, StoreError> {
        let policies = store.list_credential_policies().await?;
        let issuers = store
            .list_issuers()
            .await?
            .into_iter()
            .filter_map(
                |issuer| match SigningCa::from_pem(&issuer.chain_pem, &issuer.key_pem) {
                    Ok(signer) => Some((issuer.name, Arc::new(signer))),
                    Err(e) => {
                        tracing::error!(issuer = %issuer.name, error = %e, "a certificate issuer cannot sign");
                        None
                    }
                },
            )
            .collect();
        Ok(Signers { policies, issuers })
    }

    pub fn has_policy(&self, name: &str) -> bool {
        self.policy(name).is_some()
    }

    fn policy(&self, name: &str) -> Option<&CredentialPolicy> {
        self.policies
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Checks a register request's `csr` (base64 DER) against the enrollment's policy. The
    /// error is what the device is told.
    pub fn accept(&self, candidate: Candidate<'_>, now: DateTime<Utc>) -> Result<Issuance, String> {
        let Candidate {
            policy: policy_name,
            csr,
            registration_id,
            renewing,
        } = candidate;
        let name = policy_name.ok_or(
            "the enrollment names no credential policy, so no certificate can be issued for it",
        )?;
        let policy = self
            .policy(name)
            .ok_or_else(|| format!("the enrollment's credential policy {name:?} does not exist"))?;
        let (issuer, signer) = self
            .issuers
            .iter()
            .find(|(issuer, _)| issuer.eq_ignore_ascii_case(&policy.issuer))
            .cloned()
            .ok_or_else(|| format!("the issuer of credential policy {name:?} cannot sign now"))?;
        if let Some(current) = renewing {
            let window = chrono::Duration::days(policy.renewal_window_days.into());
            let opens = current.not_after - window;
            if now < opens {
                return Err(format!(
                    "the certificate {} is not due for renewal before {} (the policy's renewal \
                     window is {} days); renew with the enrollment's other credential",
                    current.serial,
                    crate::proto::timestamp(opens),
                    policy.renewal_window_days
                ));
            }
        }
        let der = BASE64
            .decode(csr.trim())
            .map_err(|_| "the csr must be base64 DER (no PEM headers)".to_string())?;
        let csr =
            pki::check_csr(&der, registration_id, &policy.key_types).map_err(|e| e.to_string())?;
        Ok(Issuance {
            csr,
            policy: policy.clone(),
            issuer,
            signer,
        })
    }
}

impl Issuance {
    /// Signs the device's certificate; its CRL distribution point is under `public_url`.
    pub fn issue(
        &self,
        registration_id: &str,
        now: DateTime<Utc>,
        public_url: &str,
    ) -> anyhow::Result<Issued> {
        let crl_url = crl_url(public_url, &self.issuer);
        let terms = LeafTerms {
            registration_id,
            validity: chrono::Duration::days(self.policy.validity_days.into()),
            crl_url: Some(&crl_url),
            now,
        };
        let signed = self.signer.sign(&self.csr, &terms)?;
        let chain = std::iter::once(signed.der.as_slice())
            .chain(self.signer.chain().iter().map(|c| c.as_ref()))
            .map(|der| BASE64.encode(der))
            .collect();
        let record = IssuedCertificate {
            serial: signed.serial,
            registration_id: registration_id.to_string(),
            issuer: self.issuer.clone(),
            policy: self.policy.name.clone(),
            key_type: self.csr.key_type,
            not_before: signed.not_before,
            not_after: signed.not_after,
            revoked: None,
            created: now,
        };
        Ok(Issued { chain, record })
    }
}

/// The issuer's current CRL (DER), signed now; None when there is no such issuer. An issuer that
/// cannot sign is corrupt data (every stored one was checked on upload).
pub async fn crl(store: &dyn Store, issuer: &str) -> Result<Option<Vec<u8>>, StoreError> {
    let Some(issuer) = store.get_issuer(issuer).await? else {
        return Ok(None);
    };
    let corrupt = |e: anyhow::Error| StoreError::Corrupt(format!("issuer {}: {e}", issuer.name));
    let signer = SigningCa::from_pem(&issuer.chain_pem, &issuer.key_pem).map_err(corrupt)?;
    let now = Utc::now();
    let revoked: Vec<(String, DateTime<Utc>)> = store
        .revoked_certificates(&issuer.name, now)
        .await?
        .into_iter()
        .filter_map(|c| Some((c.serial, c.revoked?)))
        .collect();
    Ok(Some(
        signer.crl(&revoked, now, CRL_LIFETIME).map_err(corrupt)?,
    ))
}

/// The record of `leaf` when Onramp issued it (found by serial: 128 random bits).
pub async fn issued_leaf(
    store: &dyn Store,
    leaf: &[u8],
) -> Result<Option<IssuedCertificate>, StoreError> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) else {
        return Ok(None);
    };
    store
        .get_issued_certificate(&hex::encode(cert.raw_serial()))
        .await
}

/// Refuses a certificate Onramp issued and an operator revoked; says whether Onramp issued it
/// (others pass: their CAs' CRLs are `domain::revocation`'s).
pub async fn check_not_revoked(store: &dyn Store, leaf: &[u8]) -> Result<bool, Revoked> {
    match issued_leaf(store, leaf).await? {
        Some(issued) if issued.revoked.is_some() => Err(Revoked::Revoked(issued.serial)),
        issued => Ok(issued.is_some()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Revoked {
    #[error("the certificate {0} was revoked")]
    Revoked(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where an issuer's CRL is published (`transport::https` serves it).
pub fn crl_url(public_url: &str, issuer: &str) -> String {
    format!(
        "{}/crl/{}.crl",
        public_url.trim_end_matches('/'),
        key_of(issuer)
    )
}

/// First start: the instance's own issuing CA (first writer wins on a shared database), trusted
/// as a verified CA so the built-in hub and X.509 groups accept what it signs, and the default
/// credential policy that uses it.
pub async fn ensure_own_issuer(store: &dyn Store, id_scope: &str) -> anyhow::Result<()> {
    let issuer = match store.get_issuer(OWN_ISSUER).await? {
        Some(issuer) => issuer,
        None => create_own_issuer(store, id_scope).await?,
    };
    if store.get_ca_certificate(OWN_ISSUER).await?.is_none() {
        ca::put_ca(store, OWN_ISSUER, &issuer.chain_pem, true)
            .await
            .map_err(|e| anyhow::anyhow!("the issuing CA cannot be trusted: {e}"))?;
    }
    Ok(())
}

async fn create_own_issuer(store: &dyn Store, id_scope: &str) -> anyhow::Result<CertificateIssuer> {
    let (chain_pem, key_pem) =
        pki::new_issuing_ca(&format!("Onramp {id_scope} Device Issuing CA"))?;
    let now = Utc::now();
    let issuer = CertificateIssuer {
        name: OWN_ISSUER.into(),
        chain_pem,
        key_pem,
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    let issuer = match store.put_issuer(issuer, IfMatch::Absent).await {
        Ok(issuer) => issuer,
        // Another instance made it first: use theirs.
        Err(StoreError::Conflict) => store
            .get_issuer(OWN_ISSUER)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the issuing CA vanished"))?,
        Err(e) => return Err(e.into()),
    };
    let policy = CredentialPolicy {
        name: DEFAULT_POLICY.into(),
        issuer: OWN_ISSUER.into(),
        validity_days: DEFAULT_VALIDITY_DAYS,
        key_types: KeyType::ALL.to_vec(),
        renewal_window_days: DEFAULT_RENEWAL_WINDOW_DAYS,
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    match store.put_credential_policy(policy, IfMatch::Absent).await {
        Ok(_) | Err(StoreError::Conflict) => Ok(issuer),
        Err(e) => Err(e.into()),
    }
}
