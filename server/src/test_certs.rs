//! Certificates made for tests and benchmarks (rcgen): roots, intermediates and device leaves,
//! and the files the SDK scripts read (`<prefix>.pem` with the chain, `<prefix>-key.pem`). Not
//! used by the server itself.

use std::path::Path;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// A real EK (TPM2B_PUBLIC, base64): the one swtpm made for the SDK's EK template. Its
/// registration ID, as the SDKs derive it, is [`TPM_REGISTRATION_ID`].
pub const TPM_ENDORSEMENT_KEY: &str = "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEA9H8/o+ksqsrqBBqtlHyjAYeot5Y0F0fzx45U9FXvVNMkDAIkMoEKJh+qJYB4lflHgw/3X0rICngUTbOatiL7cPiCCdGy17aZRrfcV2iVhspzKFIIe6nc26CcNtGhJCCdes59ZfOD82IktCKo8131VyCXsirOIU/eiejheJPhOu5aThbxvG/YrDMC5+d0oH83VIAGDylM50p+UFmUGzthaxoHO7vYJPXcjQdSi1NNXA/0/mc6rsY7JUnd66Q3JumKY0FYmu+Mzlzd0EAGmz9L4rMVqn/I8XMu9/n30HjhBPSZe9sjh9DjV9cPPDvIU3VwT5+z4X7HcwPwbapoKJJLKw==";
pub const TPM_REGISTRATION_ID: &str = "xogahhqpanzatedqqaszk4c2x4qkkn5fjwg4ojh6vwprj2ut7lcq";

pub struct TestCert {
    pub der: CertificateDer<'static>,
    pub cert: Certificate,
    pub params: CertificateParams,
    pub key: KeyPair,
}

impl TestCert {
    fn new(cert: Certificate, params: CertificateParams, key: KeyPair) -> TestCert {
        TestCert {
            der: cert.der().clone(),
            cert,
            params,
            key,
        }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes `<dir>/<name>.pem` (this certificate, then `chain`) and `<dir>/<name>-key.pem`, and
    /// returns the prefix the SDK scripts take.
    pub fn write(&self, dir: &Path, name: &str, chain: &[&TestCert]) -> String {
        let mut pem = self.pem();
        for issuer in chain {
            pem.push_str(&issuer.pem());
        }
        self.write_pem(dir, name, &pem)
    }

    /// The same certificate with one bit of its signature flipped.
    pub fn tampered_pem(&self) -> String {
        let mut der = self.der.to_vec();
        let last = der.len() - 1;
        der[last] ^= 0x01;
        crate::attestation::x509::to_pem(&der)
    }

    /// Writes a prefix whose certificate is `pem` with this certificate's key.
    pub fn write_pem(&self, dir: &Path, name: &str, pem: &str) -> String {
        std::fs::write(dir.join(format!("{name}.pem")), pem).unwrap();
        std::fs::write(
            dir.join(format!("{name}-key.pem")),
            self.key.serialize_pem(),
        )
        .unwrap();
        dir.join(name).to_str().unwrap().to_string()
    }
}

fn params(cn: &str, ca: bool, valid_days: (i64, i64)) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    let now = OffsetDateTime::now_utc();
    p.not_before = now + Duration::days(valid_days.0);
    p.not_after = now + Duration::days(valid_days.1);
    if ca {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
    } else {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    p
}

/// A self-signed certificate: a root CA, or (with `ca` false) a device's self-signed leaf.
pub fn self_signed(cn: &str, ca: bool) -> TestCert {
    let key = KeyPair::generate().unwrap();
    let params = params(cn, ca, (-1, 365));
    let cert = params.clone().self_signed(&key).unwrap();
    TestCert::new(cert, params, key)
}

/// A certificate signed by `issuer`, valid from `valid_days.0` to `valid_days.1` days from now.
pub fn signed(issuer: &TestCert, cn: &str, ca: bool, valid_days: (i64, i64)) -> TestCert {
    let key = KeyPair::generate().unwrap();
    let params = params(cn, ca, valid_days);
    let cert = params
        .clone()
        .signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap();
    TestCert::new(cert, params, key)
}

/// A device certificate signed by `issuer`, valid now.
pub fn device(issuer: &TestCert, cn: &str) -> TestCert {
    signed(issuer, cn, false, (-1, 30))
}

/// A device certificate signed by `issuer` that names the CRL at `crl_url`.
pub fn device_with_crl(issuer: &TestCert, cn: &str, crl_url: &str) -> TestCert {
    let key = KeyPair::generate().unwrap();
    let mut params = params(cn, false, (-1, 30));
    params.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
        uris: vec![crl_url.to_string()],
    }];
    let cert = params
        .clone()
        .signed_by(&key, &issuer.cert, &issuer.key)
        .unwrap();
    TestCert::new(cert, params, key)
}

/// `issuer`'s CRL (DER) listing `revoked`, current for an hour.
pub fn crl(issuer: &TestCert, revoked: &[&TestCert]) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let revoked_certs = revoked
        .iter()
        .map(|cert| rcgen::RevokedCertParams {
            serial_number: cert.params.serial_number.clone().unwrap_or_else(|| {
                let (_, parsed) = x509_parser::parse_x509_certificate(&cert.der).unwrap();
                rcgen::SerialNumber::from_slice(parsed.raw_serial())
            }),
            revocation_time: now,
            reason_code: None,
            invalidity_date: None,
        })
        .collect();
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - Duration::minutes(1),
        next_update: now + Duration::hours(1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    params
        .signed_by(&issuer.cert, &issuer.key)
        .unwrap()
        .der()
        .to_vec()
}
