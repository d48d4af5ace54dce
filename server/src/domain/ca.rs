//! CA certificates registered on the instance, with Azure's proof of possession: upload a CA, get
//! a verification code, upload a certificate whose CN is that code signed by the CA's key, and the
//! CA is verified. Only verified CAs authenticate devices (see `attestation::x509`). Shared by the
//! service API, the command line and the console.

use chrono::Utc;
use rustls::pki_types::CertificateDer;

use super::admin::AdminError;
use super::admin::settings::check_name;
use super::lifecycle;
use crate::attestation::x509;
use crate::model::*;
use crate::store::Store;

/// Azure's limit of CA certificates per instance.
pub const MAX_CAS: usize = 25;

fn invalid(why: impl std::fmt::Display) -> AdminError {
    AdminError::Invalid(why.to_string())
}

fn not_found(name: &str) -> AdminError {
    AdminError::NotFound(format!("CA certificate {name:?}"))
}

/// Uploads a CA certificate (PEM or base64 DER) under `name`, or replaces the one there. A new or
/// changed certificate starts unverified unless `verified` says the operator vouches for it.
pub(in crate::domain) async fn put_ca(
    store: &dyn Store,
    name: &str,
    certificate: &str,
    verified: bool,
) -> Result<CaCertificate, AdminError> {
    check_name("CA certificate", name)?;
    let der = x509::first_certificate(certificate).map_err(invalid)?;
    if !x509::is_ca(&der).map_err(invalid)? {
        return Err(invalid(
            "the certificate is not a CA certificate (basic constraints cA=false)",
        ));
    }
    let thumbprint = x509::sha256_thumbprint(&der);
    let pem = x509::to_pem(&der);
    let now = Utc::now();
    let existing = store.get_ca_certificate(name).await?;
    let was_verified = existing.as_ref().is_some_and(|ca| ca.verified);
    let ca = match existing {
        Some(ca) if ca.sha256_thumbprint == thumbprint => CaCertificate {
            verified: ca.verified || verified,
            ..ca
        },
        Some(ca) => CaCertificate {
            pem,
            sha256_thumbprint: thumbprint,
            verified,
            verification_code: None,
            ..ca
        },
        None => {
            if store.list_ca_certificates().await?.len() >= MAX_CAS {
                return Err(invalid(format!(
                    "an instance holds at most {MAX_CAS} CA certificates"
                )));
            }
            CaCertificate {
                name: name.to_string(),
                pem,
                sha256_thumbprint: thumbprint,
                verified,
                verification_code: None,
                etag: Etag::new(),
                created: now,
                updated: now,
            }
        }
    };
    let events: Vec<_> = (ca.verified && !was_verified)
        .then(|| lifecycle::ca_verified(&ca))
        .into_iter()
        .collect();
    Ok(store.put_ca_certificate(ca, IfMatch::Any, &events).await?)
}

/// Issues a fresh verification code (replacing any earlier one).
pub(in crate::domain) async fn generate_verification_code(
    store: &dyn Store,
    name: &str,
) -> Result<CaCertificate, AdminError> {
    let mut ca = get(store, name).await?;
    let cond = IfMatch::Etag(ca.etag.clone());
    ca.verification_code = Some(x509::new_verification_code());
    Ok(store.put_ca_certificate(ca, cond, &[]).await?)
}

/// Verifies the CA with a proof-of-possession certificate for its current verification code.
pub(in crate::domain) async fn verify(
    store: &dyn Store,
    name: &str,
    proof: &str,
) -> Result<CaCertificate, AdminError> {
    let mut ca = get(store, name).await?;
    let code = ca
        .verification_code
        .clone()
        .ok_or_else(|| invalid("generate a verification code first"))?;
    let ca_der = x509::first_certificate(&ca.pem).map_err(invalid)?;
    let proof_der = x509::first_certificate(proof).map_err(invalid)?;
    x509::check_proof_of_possession(&ca_der, &proof_der, &code).map_err(|e| {
        invalid(format!(
            "the verification certificate does not prove possession of the CA key: {e}"
        ))
    })?;
    let cond = IfMatch::Etag(ca.etag.clone());
    let events = match ca.verified {
        true => Vec::new(),
        false => vec![lifecycle::ca_verified(&ca)],
    };
    ca.verified = true;
    ca.verification_code = None;
    Ok(store.put_ca_certificate(ca, cond, &events).await?)
}

pub(in crate::domain) async fn delete(store: &dyn Store, name: &str) -> Result<(), AdminError> {
    get(store, name).await?;
    Ok(store.delete_ca_certificate(name, IfMatch::Any).await?)
}

pub async fn get(store: &dyn Store, name: &str) -> Result<CaCertificate, AdminError> {
    store
        .get_ca_certificate(name)
        .await?
        .ok_or_else(|| not_found(name))
}

/// A registered CA decoded for chain building.
pub struct DecodedCa {
    pub name: String,
    pub verified: bool,
    pub der: CertificateDer<'static>,
}

/// The instance's CAs, decoded (a stored CA that no longer parses is left out).
pub async fn decoded(store: &dyn Store) -> Result<Vec<DecodedCa>, crate::store::StoreError> {
    let cas = store.list_ca_certificates().await?;
    Ok(cas
        .into_iter()
        .filter_map(|ca| {
            let der = x509::first_certificate(&ca.pem).ok()?;
            Some(DecodedCa {
                name: ca.name,
                verified: ca.verified,
                der,
            })
        })
        .collect())
}

/// The verified (or the unverified) CAs' certificates.
pub fn certificates(cas: &[DecodedCa], verified: bool) -> Vec<CertificateDer<'static>> {
    cas.iter()
        .filter(|ca| ca.verified == verified)
        .map(|ca| ca.der.clone())
        .collect()
}

/// The stored CA certificate's subject, validity and thumbprints (None if it no longer parses).
pub fn describe(ca: &CaCertificate) -> Option<x509::CertificateInfo> {
    x509::describe_text(&ca.pem).ok()
}

/// The CA as the service API and the console show it (Azure's certificate resource shape).
pub fn view(ca: &CaCertificate) -> serde_json::Value {
    let info = describe(ca);
    serde_json::json!({
        "name": ca.name,
        "etag": ca.etag.0,
        "properties": {
            "subject": info.as_ref().map(|i| i.subject_name.clone()),
            "expiry": info.as_ref().map(|i| i.not_after_utc.clone()),
            "thumbprint": info.as_ref().map(|i| i.sha1_thumbprint.clone()),
            "sha256Thumbprint": ca.sha256_thumbprint,
            "isVerified": ca.verified,
            "verificationCode": ca.verification_code,
            "certificate": ca.pem,
            "created": crate::proto::timestamp(ca.created),
            "updated": crate::proto::timestamp(ca.updated),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_certs::{self_signed, signed};

    fn pem(der: &[u8]) -> String {
        x509::to_pem(der)
    }

    #[tokio::test]
    async fn proof_of_possession_verifies_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = crate::store::open(&url, 2).await.unwrap();
        let store = store.as_ref();
        let ca = self_signed("fleet root", true);
        let uploaded = put_ca(store, "fleet", &pem(&ca.der), false).await.unwrap();
        assert!(!uploaded.verified);
        let err = verify(store, "fleet", &pem(&ca.der)).await.unwrap_err();
        assert!(err.to_string().contains("verification code first"), "{err}");
        let code = generate_verification_code(store, "fleet")
            .await
            .unwrap()
            .verification_code
            .unwrap();
        let forged = signed(&self_signed("fleet root", true), &code, false, (-1, 1));
        assert!(verify(store, "fleet", &pem(&forged.der)).await.is_err());
        let proof = signed(&ca, &code, false, (-1, 1));
        let verified = verify(store, "fleet", &pem(&proof.der)).await.unwrap();
        assert!(verified.verified && verified.verification_code.is_none());
        // Re-uploading the same certificate keeps it verified; another one starts over.
        assert!(
            put_ca(store, "fleet", &pem(&ca.der), false)
                .await
                .unwrap()
                .verified
        );
        let other = self_signed("other", true);
        assert!(
            !put_ca(store, "fleet", &pem(&other.der), false)
                .await
                .unwrap()
                .verified
        );
        let leaf = signed(&ca, "device", false, (-1, 1));
        assert!(put_ca(store, "leaf", &pem(&leaf.der), false).await.is_err());
        assert!(put_ca(store, "bad", "garbage", false).await.is_err());
        delete(store, "fleet").await.unwrap();
        assert!(matches!(
            delete(store, "fleet").await,
            Err(AdminError::NotFound(_))
        ));
    }
}
