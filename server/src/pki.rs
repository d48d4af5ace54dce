//! Device certificates signed at provisioning (issue 21): the CSR check (x509-parser), the signing
//! (rcgen), and the making of an instance's own issuing CA. Pure functions of their inputs; which
//! policy and issuer apply is the Provisioner's business.

use chrono::{DateTime, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SerialNumber, SubjectPublicKeyInfo,
};
use rustls::pki_types::CertificateDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA1WITHRSA, OID_SHA1_WITH_RSA, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;

use crate::model::KeyType;

/// Certificates start this long before they are signed, for devices whose clocks run behind.
const BACKDATE: chrono::Duration = chrono::Duration::minutes(5);
const OWN_CA_VALIDITY_DAYS: i64 = 3650;

/// Why a CSR is refused; the message is what the device is told.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not a DER PKCS#10 certification request: {0}")]
    Malformed(String),
    #[error("the CSR's signature does not verify with its own key")]
    BadSignature,
    #[error("the CSR is signed with SHA-1, which is not accepted")]
    WeakSignature,
    #[error("the CSR's key type is not supported (EC P-256, P-384, RSA 2048/3072, Ed25519 are)")]
    UnsupportedKey,
    #[error("the credential policy does not allow {0} keys (it allows {1})")]
    KeyTypeNotAllowed(&'static str, String),
    #[error("the CSR's subject CN must be the registration ID {expected:?}, not {found:?}")]
    CommonNameMismatch { expected: String, found: String },
}

/// A CSR that passed the policy's checks: its key, ready to be certified.
#[derive(Debug, Clone)]
pub struct CheckedCsr {
    pub key_type: KeyType,
    /// The DER SubjectPublicKeyInfo, copied into the certificate as it came.
    spki: Vec<u8>,
}

/// Parses a DER PKCS#10 request and checks it: a valid self-signature (SHA-256 or better), one of
/// `allowed` key types, and the subject CN equal to the registration ID (as X.509 attestation
/// compares it: ASCII case-insensitive). Nothing else of the request is used: the certificate's
/// contents come from the policy, never from what the device asks for.
pub fn check_csr(
    der: &[u8],
    registration_id: &str,
    allowed: &[KeyType],
) -> Result<CheckedCsr, CsrError> {
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Malformed(
            "trailing bytes after the request".into(),
        ));
    }
    let info = &csr.certification_request_info;
    let key_type = key_type(&info.subject_pki)?;
    let signature = &csr.signature_algorithm.algorithm;
    if *signature == OID_PKCS1_SHA1WITHRSA || *signature == OID_SHA1_WITH_RSA {
        return Err(CsrError::WeakSignature);
    }
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;
    if !allowed.contains(&key_type) {
        let names: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
        return Err(CsrError::KeyTypeNotAllowed(
            key_type.as_str(),
            names.join(", "),
        ));
    }
    let names: Vec<&str> = info
        .subject
        .iter_common_name()
        .map(|cn| cn.as_str().unwrap_or(""))
        .collect();
    match names.as_slice() {
        [cn] if cn.eq_ignore_ascii_case(registration_id) => {}
        _ => {
            return Err(CsrError::CommonNameMismatch {
                expected: registration_id.into(),
                found: names.join(", "),
            });
        }
    }
    Ok(CheckedCsr {
        key_type,
        spki: info.subject_pki.raw.to_vec(),
    })
}

fn key_type(spki: &x509_parser::x509::SubjectPublicKeyInfo<'_>) -> Result<KeyType, CsrError> {
    let algorithm = &spki.algorithm.algorithm;
    if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        return match curve {
            Some(c) if c == OID_EC_P256 => Ok(KeyType::EcP256),
            Some(c) if c == OID_NIST_EC_P384 => Ok(KeyType::EcP384),
            _ => Err(CsrError::UnsupportedKey),
        };
    }
    if *algorithm == OID_SIG_ED25519 {
        return Ok(KeyType::Ed25519);
    }
    if *algorithm == OID_PKCS1_RSAENCRYPTION {
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = spki.parsed() else {
            return Err(CsrError::UnsupportedKey);
        };
        return match modulus_bits(rsa.modulus) {
            2048 => Ok(KeyType::Rsa2048),
            3072 => Ok(KeyType::Rsa3072),
            _ => Err(CsrError::UnsupportedKey),
        };
    }
    Err(CsrError::UnsupportedKey)
}

fn modulus_bits(modulus: &[u8]) -> usize {
    let first = modulus.iter().position(|&b| b != 0);
    first.map_or(0, |at| {
        (modulus.len() - at) * 8 - modulus[at].leading_zeros() as usize
    })
}

/// An issuer ready to sign: its key, its certificate's name and key identifier, and the chain
/// devices get above their own certificate.
pub struct SigningCa {
    /// rcgen's view of the issuer (name, key identifier); only its parameters are used.
    issuer: rcgen::Certificate,
    key: KeyPair,
    chain: Vec<CertificateDer<'static>>,
}

/// A certificate just signed.
#[derive(Debug, Clone)]
pub struct Signed {
    pub der: Vec<u8>,
    /// Lower-case hex.
    pub serial: String,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
}

/// What a certificate issued now says besides the device's key.
pub struct LeafTerms<'a> {
    pub registration_id: &'a str,
    pub validity: chrono::Duration,
    pub crl_url: Option<&'a str>,
    pub now: DateTime<Utc>,
}

impl SigningCa {
    /// `chain_pem`: the issuing certificate first, then those above it. The key must be the
    /// issuing certificate's, and that certificate a CA.
    pub fn from_pem(chain_pem: &str, key_pem: &str) -> anyhow::Result<SigningCa> {
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut chain_pem.as_bytes()).collect::<Result<_, _>>()?;
        let first = chain
            .first()
            .ok_or_else(|| anyhow::anyhow!("the chain holds no certificate"))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| anyhow::anyhow!("the key cannot be read: {e}"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(first)
            .map_err(|e| anyhow::anyhow!("the issuing certificate cannot be parsed: {e}"))?;
        if cert.public_key().raw != key.public_key_der().as_slice() {
            anyhow::bail!("the key is not the issuing certificate's");
        }
        if !cert.is_ca() {
            anyhow::bail!("the issuing certificate is not a CA (basicConstraints cA)");
        }
        // Revocation needs the CRL signed by the same key: both uses must be allowed.
        let usage = cert.key_usage().ok().flatten().map(|ext| ext.value);
        if usage.is_some_and(|u| !u.key_cert_sign() || !u.crl_sign()) {
            anyhow::bail!("the issuing certificate's keyUsage must allow keyCertSign and cRLSign");
        }
        let params = CertificateParams::from_ca_cert_der(first)?;
        let issuer = params.self_signed(&key)?;
        Ok(SigningCa { issuer, key, chain })
    }

    /// Signs a certificate for `csr`'s key: CN = registration ID, clientAuth, not a CA, a fresh
    /// random serial, the issuer's key identifier, and the CRL's address when there is one.
    pub fn sign(&self, csr: &CheckedCsr, terms: &LeafTerms<'_>) -> anyhow::Result<Signed> {
        let key = SubjectPublicKeyInfo::from_der(&csr.spki)
            .map_err(|e| anyhow::anyhow!("the CSR's key cannot be certified: {e}"))?;
        let mut serial: [u8; 16] = rand::random();
        // Positive and 16 bytes long in DER, so its hex is the same everywhere it is printed.
        serial[0] = (serial[0] & 0x3f) | 0x40;
        let not_before = terms.now - BACKDATE;
        let not_after = terms.now + terms.validity;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(terms.registration_id);
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = offset(not_before)?;
        params.not_after = offset(not_after)?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = match csr.key_type {
            KeyType::Rsa2048 | KeyType::Rsa3072 => vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            _ => vec![KeyUsagePurpose::DigitalSignature],
        };
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        if let Some(url) = terms.crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_string()],
            }];
        }
        let cert = params.signed_by(&key, &self.issuer, &self.key)?;
        Ok(Signed {
            der: cert.der().to_vec(),
            serial: hex::encode(serial),
            not_before: truncate_to_second(not_before),
            not_after: truncate_to_second(not_after),
        })
    }

    /// A CRL (DER) listing `revoked` (serial in hex, when), valid for `lifetime`. Its number is
    /// the signing time in seconds, so it grows whichever instance signs.
    pub fn crl(
        &self,
        revoked: &[(String, DateTime<Utc>)],
        now: DateTime<Utc>,
        lifetime: chrono::Duration,
    ) -> anyhow::Result<Vec<u8>> {
        let revoked_certs = revoked
            .iter()
            .map(|(serial, at)| {
                Ok(rcgen::RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(serial)?),
                    revocation_time: offset(*at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let params = rcgen::CertificateRevocationListParams {
            this_update: offset(now)?,
            next_update: offset(now + lifetime)?,
            crl_number: SerialNumber::from(now.timestamp().max(0) as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.issuer.params().key_identifier_method.clone(),
        };
        Ok(params.signed_by(&self.issuer, &self.key)?.der().to_vec())
    }

    /// The certificates above a device's: the issuing one first, up to the root.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }
}

/// A new self-signed issuing CA (ECDSA P-256): its certificate and PKCS#8 key, both PEM.
pub fn new_issuing_ca(common: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(common);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = Utc::now();
    params.not_before = offset(now - BACKDATE)?;
    params.not_after = offset(now + chrono::Duration::days(OWN_CA_VALIDITY_DAYS))?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, cn);
    name
}

fn offset(at: DateTime<Utc>) -> anyhow::Result<time::OffsetDateTime> {
    Ok(time::OffsetDateTime::from_unix_timestamp(at.timestamp())?)
}

/// The http(s) addresses of a certificate's CRL distribution points (none if it is unreadable).
pub fn crl_urls(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else {
            continue;
        };
        for point in points.iter() {
            if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                urls.extend(names.iter().filter_map(|name| match name {
                    GeneralName::URI(uri)
                        if uri.starts_with("http://") || uri.starts_with("https://") =>
                    {
                        Some(uri.to_string())
                    }
                    _ => None,
                }));
            }
        }
    }
    urls
}

/// Whether `crl` lists `cert`, once the CRL is shown to be `issuer`'s (its name and signature)
/// and current at `now` (a CRL past its nextUpdate proves nothing).
pub fn crl_lists(
    crl: &[u8],
    issuer: &[u8],
    cert: &[u8],
    now: DateTime<Utc>,
) -> anyhow::Result<bool> {
    let (_, crl) = x509_parser::parse_x509_crl(crl)
        .map_err(|e| anyhow::anyhow!("the CRL cannot be parsed: {e}"))?;
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer)
        .map_err(|e| anyhow::anyhow!("the CA certificate cannot be parsed: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| anyhow::anyhow!("the certificate cannot be parsed: {e}"))?;
    if crl.issuer() != issuer.subject() || crl.verify_signature(issuer.public_key()).is_err() {
        anyhow::bail!("the CRL is not signed by {}", issuer.subject());
    }
    if crl
        .next_update()
        .is_some_and(|next| next.timestamp() < now.timestamp())
    {
        anyhow::bail!("the CRL is past its nextUpdate");
    }
    let serial = cert.raw_serial();
    Ok(crl
        .iter_revoked_certificates()
        .any(|revoked| revoked.raw_serial() == serial))
}

/// Certificates hold whole seconds; the record says what the certificate says.
fn truncate_to_second(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_for(alg: &'static rcgen::SignatureAlgorithm, cn: &str) -> (KeyPair, Vec<u8>) {
        let key = match alg {
            a if *a == rcgen::PKCS_RSA_SHA256 => {
                let rsa = rsa_key(2048);
                KeyPair::from_pem_and_sign_algo(&rsa, &rcgen::PKCS_RSA_SHA256).unwrap()
            }
            a => KeyPair::generate_for(a).unwrap(),
        };
        let params = CertificateParams::new(vec![]).unwrap();
        let mut params = params;
        params.distinguished_name = common_name(cn);
        let der = params.serialize_request(&key).unwrap().der().to_vec();
        (key, der)
    }

    /// rcgen (ring) cannot generate RSA keys; openssl does, as the tests' device clients do.
    fn rsa_key(bits: u32) -> String {
        let out = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "RSA", "-pkeyopt"])
            .arg(format!("rsa_keygen_bits:{bits}"))
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    fn own_ca() -> SigningCa {
        let (cert, key) = new_issuing_ca("Test Issuing CA").unwrap();
        SigningCa::from_pem(&cert, &key).unwrap()
    }

    #[test]
    fn a_crl_is_checked_against_its_issuer_and_its_dates() {
        let ca = own_ca();
        let (_, csr) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256, "dev-crl");
        let checked = check_csr(&csr, "dev-crl", &KeyType::ALL).unwrap();
        let url = "http://crl.example/ca.crl";
        let terms = LeafTerms {
            registration_id: "dev-crl",
            now: Utc::now(),
            validity: chrono::Duration::days(1),
            crl_url: Some(url),
        };
        let leaf = ca.sign(&checked, &terms).unwrap();
        assert_eq!(crl_urls(&leaf.der), [url]);
        let issuer = ca.chain()[0].to_vec();
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        let empty = ca.crl(&[], now, hour).unwrap();
        assert!(!crl_lists(&empty, &issuer, &leaf.der, now).unwrap());
        let listing = ca.crl(&[(leaf.serial.clone(), now)], now, hour).unwrap();
        assert!(crl_lists(&listing, &issuer, &leaf.der, now).unwrap());
        // Stale, or signed by another CA: no answer either way.
        let later = now + chrono::Duration::hours(2);
        assert!(crl_lists(&listing, &issuer, &leaf.der, later).is_err());
        let other = own_ca().crl(&[], now, hour).unwrap();
        assert!(crl_lists(&other, &issuer, &leaf.der, now).is_err());
        assert!(crl_lists(b"junk", &issuer, &leaf.der, now).is_err());
    }

    #[test]
    fn an_issuer_must_be_allowed_to_sign_certificates_and_crls() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name("No CRLs");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = params.clone().self_signed(&key).unwrap();
        let refused = SigningCa::from_pem(&cert.pem(), &key.serialize_pem()).err();
        assert!(
            refused.is_some_and(|e| e.to_string().contains("cRLSign")),
            "refused for want of cRLSign"
        );
        // Without keyUsage every use is allowed (RFC 5280), and the CRL signs.
        params.key_usages = vec![];
        let cert = params.self_signed(&key).unwrap();
        let ca = SigningCa::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
        let crl = ca.crl(&[], Utc::now(), chrono::Duration::hours(1)).unwrap();
        assert!(x509_parser::parse_x509_crl(&crl).is_ok());
    }

    #[test]
    fn a_csr_is_checked_and_certified() {
        let ca = own_ca();
        for (alg, kind) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, KeyType::EcP256),
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyType::EcP384),
            (&rcgen::PKCS_ED25519, KeyType::Ed25519),
            (&rcgen::PKCS_RSA_SHA256, KeyType::Rsa2048),
        ] {
            let (key, der) = csr_for(alg, "dev-1");
            let checked = check_csr(&der, "DEV-1", &KeyType::ALL).unwrap();
            assert_eq!(checked.key_type, kind);
            let now = Utc::now();
            let terms = LeafTerms {
                registration_id: "dev-1",
                validity: chrono::Duration::days(30),
                crl_url: Some("https://onramp.example/crl/onramp.crl"),
                now,
            };
            let signed = ca.sign(&checked, &terms).unwrap();
            let (_, cert) = x509_parser::parse_x509_certificate(&signed.der).unwrap();
            assert_eq!(cert.public_key().raw, key.public_key_der().as_slice());
            let cn = cert.subject().iter_common_name().next().unwrap();
            assert_eq!(cn.as_str().unwrap(), "dev-1");
            assert_eq!(hex::encode(cert.raw_serial()), signed.serial);
            assert!(!cert.is_ca());
            let eku = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(eku.client_auth && !eku.server_auth);
            let issuer = x509_parser::parse_x509_certificate(&ca.chain()[0])
                .unwrap()
                .1;
            cert.verify_signature(Some(issuer.public_key())).unwrap();
            assert_eq!(
                cert.validity().not_after.timestamp(),
                signed.not_after.timestamp()
            );
        }
    }

    #[test]
    fn bad_csrs_are_refused() {
        let (_, der) = csr_for(&rcgen::PKCS_ECDSA_P256_SHA256, "dev-1");
        assert!(matches!(
            check_csr(&der, "dev-2", &KeyType::ALL),
            Err(CsrError::CommonNameMismatch { .. })
        ));
        assert!(matches!(
            check_csr(&der, "dev-1", &[KeyType::EcP384]),
            Err(CsrError::KeyTypeNotAllowed("ecP256", _))
        ));
        let mut tampered = der.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            check_csr(&tampered, "dev-1", &KeyType::ALL).unwrap_err(),
            CsrError::BadSignature
        );
        assert!(matches!(
            check_csr(b"not a csr", "dev-1", &KeyType::ALL),
            Err(CsrError::Malformed(_))
        ));
        let mut trailing = der;
        trailing.push(0);
        assert!(matches!(
            check_csr(&trailing, "dev-1", &KeyType::ALL),
            Err(CsrError::Malformed(_))
        ));
    }

    #[test]
    fn a_crl_lists_revoked_serials_and_verifies() {
        let ca = own_ca();
        let now = Utc::now();
        let revoked = vec![("4a0102".to_string(), now)];
        let der = ca.crl(&revoked, now, chrono::Duration::hours(24)).unwrap();
        let (_, crl) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| hex::encode(r.raw_serial()))
            .collect();
        assert_eq!(serials, ["4a0102"]);
        let issuer = x509_parser::parse_x509_certificate(&ca.chain()[0])
            .unwrap()
            .1;
        crl.verify_signature(issuer.public_key()).unwrap();
    }

    #[test]
    fn an_issuer_needs_its_own_ca_key() {
        let (cert, _) = new_issuing_ca("A").unwrap();
        let (_, other_key) = new_issuing_ca("B").unwrap();
        let refused = SigningCa::from_pem(&cert, &other_key).err().unwrap();
        assert!(
            refused
                .to_string()
                .contains("not the issuing certificate's")
        );
    }

    #[test]
    fn modulus_bits_ignore_leading_zeros() {
        assert_eq!(modulus_bits(&[0, 0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0x01, 0]), 9);
        assert_eq!(modulus_bits(&[]), 0);
    }
}
