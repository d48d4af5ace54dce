//! TLS for every listener. On first start Onramp makes its own CA and a server certificate signed by
//! it (the CA goes to `<data-dir>/ca.pem` for clients to trust); later starts reuse both, and the
//! server certificate is re-issued only when the names it must cover change or it nears expiry.
//! A certificate and key the operator configures replace all of this.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::{Duration, OffsetDateTime};

use crate::config::Config;

const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";
const SERVER_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server-key.pem";

const CA_VALIDITY_DAYS: i64 = 3650;
const SERVER_VALIDITY_DAYS: i64 = 397;
/// Re-issue the server certificate when it has less than this left.
const RENEW_BEFORE_DAYS: i64 = 30;

/// The certificate chain and key a listener serves, and the CA clients should trust.
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The generated CA (absent when the operator supplied the certificate).
    pub ca_path: Option<PathBuf>,
}

/// Names the server certificate must cover: the configured host name, loopback names, and any
/// extra names (built-in hub host names).
pub fn required_names(config: &Config, extra: &[String]) -> Vec<String> {
    let defaults = [config.hostname.as_str(), "localhost", "127.0.0.1", "::1"];
    let mut names: Vec<String> = Vec::new();
    // Each name once (the host name is often `localhost` itself), the host name first: it is the CN.
    for name in defaults.into_iter().chain(extra.iter().map(String::as_str)) {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
            names.push(name.to_string());
        }
    }
    names
}

/// Loads the operator's certificate, or makes/reuses the generated one.
pub fn prepare(config: &Config, extra_names: &[String]) -> anyhow::Result<TlsMaterial> {
    if let (Some(cert), Some(key)) = (&config.tls.cert_path, &config.tls.key_path) {
        return Ok(TlsMaterial {
            chain: read_chain(cert)?,
            key: read_key(key)?,
            ca_path: None,
        });
    }
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let (ca_params, ca_key, ca_is_new) = load_or_create_ca(dir)?;
    let names = required_names(config, extra_names);
    let server_path = dir.join(SERVER_FILE);
    let server_key_path = dir.join(SERVER_KEY_FILE);
    if ca_is_new || !server_cert_is_current(&server_path, &server_key_path, &names)? {
        issue_server_cert(&ca_params, &ca_key, &names, &server_path, &server_key_path)?;
        tracing::info!(names = %names.join(", "), path = %server_path.display(), "issued server certificate");
    }
    let mut chain = read_chain(&server_path)?;
    chain.extend(read_chain(&dir.join(CA_FILE))?);
    Ok(TlsMaterial {
        chain,
        key: read_key(&server_key_path)?,
        ca_path: Some(std::path::absolute(dir.join(CA_FILE))?),
    })
}

/// A rustls server configuration (TLS 1.2 and 1.3, HTTP/2 and HTTP/1.1 by ALPN) that asks for a
/// client certificate without requiring one (see `OptionalClientCert`).
pub fn server_config(
    material: &TlsMaterial,
    alpn: &[&[u8]],
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM with SHA-256 first, chosen by the server whatever the client's order: as safe
    // here as the 256-bit suite (the key exchange and the certificate are 128-bit strong), and
    // SHA-256 runs on the CPU's SHA extensions where the 256-bit suite's SHA-384 does not
    // (measured: SHA-512 blocks were 4% of the server's CPU under a registration flood).
    provider
        .cipher_suites
        .sort_by_key(|suite| !is_aes128_gcm_sha256(suite));
    let provider = Arc::new(provider);
    let client_auth = Arc::new(OptionalClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(client_auth)
        .with_single_cert(material.chain.clone(), material.key.clone_key())
        .context("the server certificate does not match its key")?;
    config.ignore_client_order = true;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn is_aes128_gcm_sha256(suite: &rustls::SupportedCipherSuite) -> bool {
    use rustls::CipherSuite::*;
    matches!(
        suite.suite(),
        TLS13_AES_128_GCM_SHA256
            | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

/// Requests a client certificate but does not require one, so browsers and SAS clients share the
/// port with X.509 devices. Any chain is accepted here, as long as the client proves it holds the
/// leaf's private key (the handshake signature); whether the chain is trusted is decided by
/// `attestation::x509` for the identity the device claims, because trust depends on enrollments.
#[derive(Debug)]
struct OptionalClientCert {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::server::danger::ClientCertVerifier for OptionalClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The certificate chain the client presented in its handshake, if any.
pub fn presented_chain(
    connection: &rustls::ServerConnection,
) -> Option<crate::attestation::x509::PresentedChain> {
    let certs = connection.peer_certificates()?;
    if certs.is_empty() {
        return None;
    }
    let owned: Vec<CertificateDer<'static>> =
        certs.iter().map(|c| c.clone().into_owned()).collect();
    Some(crate::attestation::x509::PresentedChain(owned.into()))
}

fn load_or_create_ca(dir: &Path) -> anyhow::Result<(CertificateParams, KeyPair, bool)> {
    let cert_path = dir.join(CA_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if cert_path.exists() && key_path.exists() {
        let key = KeyPair::from_pem(&read_text(&key_path)?)
            .with_context(|| format!("{} is not a private key", key_path.display()))?;
        let params = CertificateParams::from_ca_cert_pem(&read_text(&cert_path)?)
            .with_context(|| format!("{} is not a CA certificate", cert_path.display()))?;
        return Ok((params, key, false));
    }
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Onramp");
    dn.push(
        DnType::CommonName,
        format!("Onramp local CA {}", hex::encode(rand::random::<[u8; 4]>())),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    let cert = params.clone().self_signed(&key)?;
    write_secret(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    tracing::info!(path = %cert_path.display(), "created the local CA");
    Ok((params, key, true))
}

fn issue_server_cert(
    ca_params: &CertificateParams,
    ca_key: &KeyPair,
    names: &[String],
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<()> {
    let issuer = ca_params.clone().self_signed(ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Onramp");
    dn.push(DnType::CommonName, names[0].clone());
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(SERVER_VALIDITY_DAYS);
    let cert = params.signed_by(&key, &issuer, ca_key)?;
    write_secret(key_path, &key.serialize_pem())?;
    std::fs::write(cert_path, cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    Ok(())
}

/// True when the stored server certificate exists, covers `names` and is not near expiry.
fn server_cert_is_current(
    cert_path: &Path,
    key_path: &Path,
    names: &[String],
) -> anyhow::Result<bool> {
    if !cert_path.exists() || !key_path.exists() {
        return Ok(false);
    }
    let pem_text = read_text(cert_path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| anyhow!("{} is not a PEM certificate: {e}", cert_path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow!("{}: {e}", cert_path.display()))?;
    let renew_at = OffsetDateTime::now_utc() + Duration::days(RENEW_BEFORE_DAYS);
    if cert.validity().not_after.to_datetime() < renew_at {
        return Ok(false);
    }
    // Exactly the required names, each once: a certificate of an older version listed `localhost`
    // twice and is re-issued.
    let covered = cert_names(&cert);
    Ok(covered.len() == names.len()
        && names
            .iter()
            .all(|n| covered.iter().any(|c| c.eq_ignore_ascii_case(n))))
}

fn cert_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            GeneralName::IPAddress(bytes) => ip_from_bytes(bytes).map(|ip| ip.to_string()),
            _ => None,
        })
        .collect()
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let text = read_text(path)?;
    let chain = rustls_pemfile::certs(&mut text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds an unreadable certificate", path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(chain)
}

fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let text = read_text(path)?;
    rustls_pemfile::private_key(&mut text.as_bytes())
        .with_context(|| format!("{} holds an unreadable private key", path.display()))?
        .ok_or_else(|| anyhow!("{} holds no PEM private key", path.display()))
}

/// Writes a private key readable by the owner only.
fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        }
    }

    #[test]
    fn first_start_creates_and_later_starts_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let first = prepare(&config, &[]).unwrap();
        let ca = std::fs::read_to_string(dir.path().join(CA_FILE)).unwrap();
        let server = std::fs::read_to_string(dir.path().join(SERVER_FILE)).unwrap();
        let second = prepare(&config, &[]).unwrap();
        assert_eq!(
            first.chain, second.chain,
            "a second start reuses the certificates"
        );
        assert_eq!(
            ca,
            std::fs::read_to_string(dir.path().join(CA_FILE)).unwrap()
        );
        assert_eq!(
            server,
            std::fs::read_to_string(dir.path().join(SERVER_FILE)).unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the CA key is private");
    }

    #[test]
    fn server_certificate_covers_the_required_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config_in(dir.path());
        config.hostname = "dps.example.test".into();
        let material = prepare(&config, &["hub1.localhost".into()]).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&material.chain[0]).unwrap();
        let names = cert_names(&cert);
        for want in [
            "dps.example.test",
            "localhost",
            "127.0.0.1",
            "::1",
            "hub1.localhost",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
    }

    #[test]
    fn the_server_certificate_lists_each_name_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        assert_eq!(config.hostname, "localhost");
        let hubs = ["hub.localhost".to_string(), "HUB.localhost".to_string()];
        let material = prepare(&config, &hubs).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&material.chain[0]).unwrap();
        let names = cert_names(&cert);
        assert_eq!(names, ["localhost", "127.0.0.1", "::1", "hub.localhost"]);
    }

    #[test]
    fn a_certificate_listing_a_name_twice_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let (ca_params, ca_key, _) = load_or_create_ca(dir.path()).unwrap();
        let (cert, key) = (
            dir.path().join(SERVER_FILE),
            dir.path().join(SERVER_KEY_FILE),
        );
        let twice: Vec<String> = ["localhost", "localhost", "127.0.0.1", "::1"]
            .map(String::from)
            .into();
        issue_server_cert(&ca_params, &ca_key, &twice, &cert, &key).unwrap();
        let names = required_names(&config, &[]);
        assert!(!server_cert_is_current(&cert, &key, &names).unwrap());
        issue_server_cert(&ca_params, &ca_key, &names, &cert, &key).unwrap();
        assert!(server_cert_is_current(&cert, &key, &names).unwrap());
    }

    #[test]
    fn a_new_name_reissues_the_server_certificate_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let config = config_in(dir.path());
        let first = prepare(&config, &[]).unwrap();
        let second = prepare(&config, &["hub2.localhost".into()]).unwrap();
        assert_ne!(first.chain[0], second.chain[0], "re-issued");
        assert_eq!(first.chain[1], second.chain[1], "same CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(&second.chain[0]).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&second.chain[1]).unwrap();
        assert_eq!(leaf.issuer(), ca.subject());
        leaf.verify_signature(Some(ca.public_key()))
            .expect("signed by the stored CA");
    }

    #[test]
    fn operator_certificates_replace_the_generated_ones() {
        let dir = tempfile::tempdir().unwrap();
        let generated = prepare(&config_in(dir.path()), &[]).unwrap();
        let mut config = config_in(&dir.path().join("other"));
        config.tls.cert_path = Some(dir.path().join(SERVER_FILE));
        config.tls.key_path = Some(dir.path().join(SERVER_KEY_FILE));
        let material = prepare(&config, &[]).unwrap();
        assert!(material.ca_path.is_none());
        assert_eq!(material.chain[0], generated.chain[0]);
        assert!(!dir.path().join("other").exists(), "nothing generated");
        server_config(&material, &[b"h2"]).unwrap();
    }

    #[test]
    fn unreadable_material_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bogus = dir.path().join("bogus.pem");
        std::fs::write(&bogus, "not a certificate").unwrap();
        let mut config = config_in(dir.path());
        config.tls.cert_path = Some(bogus.clone());
        config.tls.key_path = Some(bogus.clone());
        let err = prepare(&config, &[]).err().unwrap().to_string();
        assert!(err.contains("bogus.pem"), "{err}");
    }
}
