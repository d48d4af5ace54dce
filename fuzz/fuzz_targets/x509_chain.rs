//! Client certificate chains arrive from anyone in the TLS handshake, and enrollment and CA
//! certificates from operators: reading and verifying them must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::attestation::x509;
use rustls::pki_types::{CertificateDer, UnixTime};

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input into a presented chain and a trusted CA.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let (chain, ca) = rest.split_at(at);
    let chain = [CertificateDer::from(chain.to_vec())];
    let ca = [CertificateDer::from(ca.to_vec())];
    let now = UnixTime::now();
    let _ = x509::check_leaf(&chain[0], "device-1", now);
    let _ = x509::describe(&chain[0]);
    let _ = x509::is_ca(&ca[0]);
    let _ = x509::path_to_verified_ca(&chain, &ca, &ca, &ca, now);
    let _ = x509::check_proof_of_possession(&ca[0], &chain[0], "code");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = x509::parse_certificates(text);
    }
});
