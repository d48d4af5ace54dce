//! X.509 attestation: what a device's TLS client certificate chain proves, shared by every
//! transport. The TLS layer only checks that the client holds the key of the leaf it presented;
//! this module decides whether the chain is acceptable: the leaf's CN is the registration ID, the
//! leaf is in its validity period, and for groups the chain leads, signature by signature, to a CA
//! verified on this instance. rustls-webpki builds and checks the path (signatures, validity,
//! basic constraints, name constraints, extended key usage); x509-parser reads the fields and the
//! key usage webpki leaves alone. Nothing here panics on input.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// The chain a client presented in its TLS handshake, leaf first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedChain(pub Arc<[CertificateDer<'static>]>);

impl PresentedChain {
    pub fn leaf(&self) -> Option<&CertificateDer<'static>> {
        self.0.first()
    }
}

/// Why a certificate or chain is refused. The text goes to diagnostics, never to the device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X509Error {
    #[error("the certificate cannot be read: {0}")]
    Unreadable(String),
    #[error("the device certificate has no subject common name")]
    NoCommonName,
    #[error("the device certificate's common name {0:?} differs from the registration ID")]
    CommonNameMismatch(String),
    #[error("the device certificate is not valid now (valid from {0} to {1})")]
    LeafNotValidNow(String, String),
    #[error("the certificate chain leads to the CA {0:?}, which is not verified")]
    UnverifiedCa(String),
    #[error("the certificate chain leads to no known CA (unknown issuer)")]
    UnknownCa,
    #[error("a signature in the certificate chain does not verify (tampered or wrong issuer)")]
    BadSignature,
    #[error("a certificate in the chain is expired or not yet valid")]
    ChainNotValidNow,
    #[error("the certificate chain is invalid: {0}")]
    InvalidChain(String),
}

/// Azure's `X509CertificateInfo`, as registration results and the service API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateInfo {
    pub subject_name: String,
    pub sha1_thumbprint: String,
    pub sha256_thumbprint: String,
    pub issuer_name: String,
    pub not_before_utc: String,
    pub not_after_utc: String,
    pub serial_number: String,
    pub version: u32,
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, X509Error> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(X509Error::Unreadable(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(X509Error::Unreadable(e.to_string())),
    }
}

/// Upper-case hex SHA-256 of the DER, the thumbprint Onramp stores and compares.
pub fn sha256_thumbprint(der: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(der))
}

fn rfc3339(time: x509_parser::time::ASN1Time) -> String {
    chrono::DateTime::from_timestamp(time.timestamp(), 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// The certificate's description, Azure style.
pub fn describe(der: &[u8]) -> Result<CertificateInfo, X509Error> {
    let cert = parse(der)?;
    Ok(CertificateInfo {
        subject_name: cert.subject().to_string(),
        sha1_thumbprint: hex::encode_upper(Sha1::digest(der)),
        sha256_thumbprint: sha256_thumbprint(der),
        issuer_name: cert.issuer().to_string(),
        not_before_utc: rfc3339(cert.validity().not_before),
        not_after_utc: rfc3339(cert.validity().not_after),
        serial_number: hex::encode_upper(cert.raw_serial()),
        version: cert.version().0 + 1,
    })
}

/// The subject's first common name.
pub fn common_name(der: &[u8]) -> Result<String, X509Error> {
    let cert = parse(der)?;
    let cn = cert.subject().iter_common_name().next();
    cn.and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
        .ok_or(X509Error::NoCommonName)
}

/// True when the certificate says it is a CA (basic constraints `cA`).
pub fn is_ca(der: &[u8]) -> Result<bool, X509Error> {
    let cert = parse(der)?;
    Ok(cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca))
}

fn valid_at(cert: &X509Certificate<'_>, now: UnixTime) -> bool {
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = cert.validity();
    validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp()
}

/// Certificates given as PEM (one or more) or as one bare base64 DER (Azure accepts both).
pub fn parse_certificates(text: &str) -> Result<Vec<CertificateDer<'static>>, X509Error> {
    use base64::Engine;
    let text = text.trim();
    let certs = if text.starts_with("-----BEGIN") {
        rustls_pemfile::certs(&mut text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| X509Error::Unreadable(e.to_string()))?
    } else {
        let compact: String = text.split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|_| X509Error::Unreadable("neither PEM nor base64 DER".into()))?;
        vec![CertificateDer::from(der)]
    };
    if certs.is_empty() {
        return Err(X509Error::Unreadable("no certificate found".into()));
    }
    for cert in &certs {
        parse(cert)?;
    }
    Ok(certs)
}

/// The first certificate of a PEM text or base64 DER: a device's own certificate when the text
/// also carries its chain, or a CA.
pub fn first_certificate(text: &str) -> Result<CertificateDer<'static>, X509Error> {
    parse_certificates(text)?
        .into_iter()
        .next()
        .ok_or_else(|| X509Error::Unreadable("no certificate found".into()))
}

/// The description of the first certificate of a PEM text or base64 DER: what the service API
/// shows beside an enrollment's certificate and a CA's.
pub fn describe_text(text: &str) -> Result<CertificateInfo, X509Error> {
    describe(&first_certificate(text)?)
}

/// Checks the device's own certificate: readable, its CN is the registration ID (compared like
/// registration IDs, without regard to case), and valid now.
pub fn check_leaf(
    leaf: &[u8],
    registration_id: &str,
    now: UnixTime,
) -> Result<CertificateInfo, X509Error> {
    let cn = common_name(leaf)?;
    if !cn.eq_ignore_ascii_case(registration_id) {
        return Err(X509Error::CommonNameMismatch(cn));
    }
    let cert = parse(leaf)?;
    if !valid_at(&cert, now) {
        let validity = cert.validity();
        return Err(X509Error::LeafNotValidNow(
            rfc3339(validity.not_before),
            rfc3339(validity.not_after),
        ));
    }
    describe(leaf)
}

/// Builds and verifies the path from the presented leaf to one of the `verified` CAs, using the
/// other presented certificates and `signers` (certificates uploaded into enrollment groups) as
/// intermediates. Returns the certificates above the leaf, nearest first, ending with the CA.
/// `unverified` CAs only make the refusal say which CA is missing its proof of possession.
pub fn path_to_verified_ca(
    chain: &[CertificateDer<'static>],
    verified: &[CertificateDer<'static>],
    signers: &[CertificateDer<'static>],
    unverified: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<Vec<CertificateDer<'static>>, X509Error> {
    let Some((leaf, presented)) = chain.split_first() else {
        return Err(X509Error::Unreadable("no certificate was presented".into()));
    };
    let mut intermediates: Vec<CertificateDer<'static>> = presented.to_vec();
    intermediates.extend(signers.iter().cloned());
    match build_path(leaf, verified, &intermediates, now) {
        Ok(path) => Ok(path),
        Err(webpki::Error::UnknownIssuer) => {
            // Would the chain verify if the unverified CAs or the groups' own certificates were
            // trusted? Then the missing piece is a proof of possession, and the refusal says so.
            let candidates: Vec<_> = unverified.iter().chain(signers).cloned().collect();
            match build_path(leaf, &candidates, presented, now) {
                Ok(path) => {
                    let ca = path.last().map(|c| describe(c)).transpose()?;
                    Err(X509Error::UnverifiedCa(
                        ca.map(|c| c.subject_name).unwrap_or_default(),
                    ))
                }
                Err(_) => Err(X509Error::UnknownCa),
            }
        }
        Err(e) => Err(explain(e)),
    }
}

fn explain(e: webpki::Error) -> X509Error {
    use webpki::Error as E;
    match e {
        E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => X509Error::BadSignature,
        E::CertExpired { .. } | E::CertNotValidYet { .. } => X509Error::ChainNotValidNow,
        E::BadDer | E::BadDerTime | E::TrailingData(_) => X509Error::Unreadable(format!("{e:?}")),
        other => X509Error::InvalidChain(format!("{other:?}")),
    }
}

/// webpki's path building plus what it leaves out: the CA's own validity period and key usage
/// (a CA certificate that states key usages must allow certificate signing).
fn build_path(
    leaf: &CertificateDer<'static>,
    anchors: &[CertificateDer<'static>],
    intermediates: &[CertificateDer<'static>],
    now: UnixTime,
) -> Result<Vec<CertificateDer<'static>>, webpki::Error> {
    let end_entity = webpki::EndEntityCert::try_from(leaf)?;
    let trust: Vec<_> = anchors
        .iter()
        .filter_map(|der| webpki::anchor_from_trusted_cert(der).ok())
        .collect();
    let issuers_may_sign = |path: &webpki::VerifiedPath<'_>| {
        let ok = path
            .intermediate_certificates()
            .all(|c| may_sign_certificates(c.der().as_ref()));
        if ok {
            Ok(())
        } else {
            Err(webpki::Error::EndEntityUsedAsCa)
        }
    };
    let path = end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        Some(&issuers_may_sign),
    )?;
    let mut above: Vec<CertificateDer<'static>> = path
        .intermediate_certificates()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let anchor = path.anchor();
    let ca = anchors
        .iter()
        .zip(&trust)
        .find(|(_, t)| {
            t.subject == anchor.subject
                && t.subject_public_key_info == anchor.subject_public_key_info
        })
        .map(|(der, _)| der.clone())
        .ok_or(webpki::Error::UnknownIssuer)?;
    let cert = X509Certificate::from_der(&ca)
        .map_err(|_| webpki::Error::BadDer)?
        .1;
    if !valid_at(&cert, now) {
        return Err(webpki::Error::CertExpired {
            time: now,
            not_after: UnixTime::since_unix_epoch(std::time::Duration::from_secs(
                cert.validity().not_after.timestamp().max(0) as u64,
            )),
        });
    }
    if !may_sign_certificates(&ca) {
        return Err(webpki::Error::EndEntityUsedAsCa);
    }
    above.push(ca);
    Ok(above)
}

fn may_sign_certificates(der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return false;
    };
    match cert.key_usage() {
        Ok(Some(usage)) => usage.value.key_cert_sign(),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// PEM text of a DER certificate (64-character lines).
pub fn to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A fresh proof-of-possession code: 48 upper-case hex digits, like Azure's.
pub fn new_verification_code() -> String {
    hex::encode_upper(rand::random::<[u8; 24]>())
}

/// Checks a proof of possession: `proof`'s subject CN is `code` and its signature verifies with
/// the public key of `ca` (so whoever made it holds the CA's private key).
pub fn check_proof_of_possession(ca: &[u8], proof: &[u8], code: &str) -> Result<(), X509Error> {
    let cn = common_name(proof)?;
    if cn != code {
        return Err(X509Error::InvalidChain(format!(
            "the verification certificate's CN {cn:?} is not the verification code"
        )));
    }
    let (ca, proof) = (parse(ca)?, parse(proof)?);
    proof
        .verify_signature(Some(ca.public_key()))
        .map_err(|_| X509Error::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_certs::{TestCert, self_signed, signed};

    fn root(cn: &str) -> TestCert {
        self_signed(cn, true)
    }

    fn issue(issuer: &TestCert, cn: &str, ca: bool, days: (i64, i64)) -> TestCert {
        signed(issuer, cn, ca, days)
    }

    fn now() -> UnixTime {
        UnixTime::now()
    }

    #[test]
    fn a_leaf_must_carry_the_registration_id_and_be_valid() {
        let ca = root("root");
        let leaf = issue(&ca, "device-1", false, (-1, 30));
        let info = check_leaf(&leaf.der, "DEVICE-1", now()).unwrap();
        assert_eq!(info.subject_name, "CN=device-1");
        assert_eq!(info.sha256_thumbprint, sha256_thumbprint(&leaf.der));
        assert_eq!(
            check_leaf(&leaf.der, "device-2", now()),
            Err(X509Error::CommonNameMismatch("device-1".into()))
        );
        let expired = issue(&ca, "device-1", false, (-30, -1));
        assert!(matches!(
            check_leaf(&expired.der, "device-1", now()),
            Err(X509Error::LeafNotValidNow(..))
        ));
    }

    #[test]
    fn a_chain_through_an_intermediate_reaches_the_verified_root() {
        let ca = root("root");
        let mid = issue(&ca, "intermediate", true, (-1, 100));
        let leaf = issue(&mid, "device-1", false, (-1, 30));
        let chain = [leaf.der.clone(), mid.der.clone()];
        let path =
            path_to_verified_ca(&chain, std::slice::from_ref(&ca.der), &[], &[], now()).unwrap();
        assert_eq!(path, vec![mid.der.clone(), ca.der.clone()]);
        // The intermediate may also come from a group instead of the device.
        let path = path_to_verified_ca(
            &chain[..1],
            std::slice::from_ref(&ca.der),
            std::slice::from_ref(&mid.der),
            &[],
            now(),
        )
        .unwrap();
        assert_eq!(path, vec![mid.der, ca.der]);
    }

    #[test]
    fn refusals_say_why() {
        let ca = root("root");
        let other = root("other");
        let leaf = issue(&ca, "device-1", false, (-1, 30));
        let chain = [leaf.der.clone()];
        assert_eq!(
            path_to_verified_ca(&chain, &[], &[], std::slice::from_ref(&ca.der), now()),
            Err(X509Error::UnverifiedCa("CN=root".into()))
        );
        assert_eq!(
            path_to_verified_ca(&chain, std::slice::from_ref(&other.der), &[], &[], now()),
            Err(X509Error::UnknownCa)
        );
        let mut tampered = leaf.der.to_vec();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        assert_eq!(
            path_to_verified_ca(
                &[tampered.into()],
                std::slice::from_ref(&ca.der),
                &[],
                &[],
                now()
            ),
            Err(X509Error::BadSignature)
        );
        let expired = issue(&ca, "device-1", false, (-30, -1));
        assert_eq!(
            path_to_verified_ca(
                &[expired.der],
                std::slice::from_ref(&ca.der),
                &[],
                &[],
                now()
            ),
            Err(X509Error::ChainNotValidNow)
        );
    }

    #[test]
    fn a_certificate_that_is_not_a_ca_cannot_sign_devices() {
        let ca = root("root");
        let not_ca = issue(&ca, "pretender", false, (-1, 100));
        let leaf = issue(&not_ca, "device-1", false, (-1, 30));
        let result = path_to_verified_ca(
            &[leaf.der, not_ca.der],
            std::slice::from_ref(&ca.der),
            &[],
            &[],
            now(),
        );
        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn proof_of_possession_needs_the_code_and_the_ca_key() {
        let ca = root("root");
        let code = new_verification_code();
        assert_eq!(code.len(), 48);
        let proof = issue(&ca, &code, false, (-1, 1));
        check_proof_of_possession(&ca.der, &proof.der, &code).unwrap();
        let wrong_cn = issue(&ca, "something else", false, (-1, 1));
        assert!(check_proof_of_possession(&ca.der, &wrong_cn.der, &code).is_err());
        let forged = issue(&root("root"), &code, false, (-1, 1));
        assert_eq!(
            check_proof_of_possession(&ca.der, &forged.der, &code),
            Err(X509Error::BadSignature)
        );
    }

    /// A deterministic sweep in the spirit of the `x509_chain` fuzz target, run with the unit
    /// tests: every truncation and every single-byte corruption of a real chain is refused
    /// without a panic (and never accepted as the original).
    #[test]
    fn corrupted_certificates_are_refused_without_panicking() {
        let ca = root("root");
        let leaf = issue(&ca, "device-1", false, (-1, 30));
        let anchors = std::slice::from_ref(&ca.der);
        assert!(
            path_to_verified_ca(std::slice::from_ref(&leaf.der), anchors, &[], &[], now()).is_ok()
        );
        let original = leaf.der.to_vec();
        let mut variants: Vec<Vec<u8>> = (0..original.len())
            .map(|n| original[..n].to_vec())
            .collect();
        for i in 0..original.len() {
            let mut flipped = original.clone();
            flipped[i] ^= 0x5a;
            variants.push(flipped);
        }
        for bytes in variants {
            let der = CertificateDer::from(bytes);
            let _ = describe(&der);
            let _ = check_leaf(&der, "device-1", now());
            let verdict = path_to_verified_ca(std::slice::from_ref(&der), anchors, &[], &[], now());
            // A flip inside an unsigned field may leave the leaf usable only if it still verifies,
            // which for a changed signed byte it cannot.
            assert!(verdict.is_err() || der.as_ref() == original.as_slice());
        }
    }

    #[test]
    fn certificates_read_as_pem_or_base64_and_garbage_is_refused() {
        use base64::Engine;
        let ca = root("root");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&ca.der);
        assert_eq!(parse_certificates(&b64).unwrap(), vec![ca.der.clone()]);
        let pem_text = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        assert_eq!(parse_certificates(&pem_text).unwrap(), vec![ca.der.clone()]);
        assert!(parse_certificates("not a certificate").is_err());
        assert!(parse_certificates("AAAA").is_err());
        assert!(describe(&[0x30, 0x82, 0xff]).is_err());
        assert!(is_ca(&ca.der).unwrap());
    }
}
