//! TPM attestation: the device proves it holds an enrolled endorsement key (EK) by importing a
//! key Onramp sends it wrapped so that only that TPM can (the activation blob), then signing its
//! SAS tokens with it. `public` parses the EK and SRK, `activation` builds the blob. The recipe,
//! checked against the official Node SDK and a software TPM, is in the shared notes
//! (tpm-activation.md); `testvector.json` is its byte-exact vector.

pub mod activation;
pub mod device;
pub mod public;

use data_encoding::BASE32_NOPAD;
use sha2::{Digest, Sha256};

pub use activation::{Randomness, activation_blob};
pub use public::{PublicKey, TpmPublic};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TpmError {
    #[error("the TPM key is truncated in {0}")]
    Truncated(&'static str),
    #[error("malformed TPM key: {0}")]
    Malformed(String),
    #[error("unsupported TPM key: {0}")]
    Unsupported(String),
    #[error("the activation could not be built: {0}")]
    Crypto(String),
}

/// The registration ID the SDKs derive from an EK when none is configured: the lower-case
/// base32 (no padding) of SHA-256 over the TPM2B_PUBLIC as sent.
pub fn default_registration_id(endorsement_key: &[u8]) -> String {
    BASE32_NOPAD
        .encode(&Sha256::digest(endorsement_key))
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use crate::attestation::sas::{self, SasError};

    /// The vector's evidence: the registration SAS the TPM signed with the imported key checks
    /// out with the key the blob carried, and with no other.
    #[test]
    fn the_sas_a_tpm_signed_verifies_with_the_blobs_key() {
        let vector: serde_json::Value =
            serde_json::from_str(include_str!("testvector.json")).unwrap();
        let evidence = &vector["vectors"][0]["sdkEvidence"]["registrationSas"];
        let signed = evidence["stringToSign"].as_str().unwrap();
        let (sr, se) = signed.split_once('\n').unwrap();
        let sig = evidence["sigB64FromTpm"].as_str().unwrap();
        let sig = percent_encoding::utf8_percent_encode(sig, percent_encoding::NON_ALPHANUMERIC);
        let token = format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=registration");
        let token = sas::parse(&token).unwrap();
        let resource =
            "0ne0000TPM1/registrations/eeywvipcaan2nza6vrnvlg2ucoqm34ywfu6awx5vtnw2myi54aya";
        let now = se.parse::<u64>().unwrap() - 60;
        let key = hex::decode(evidence["verifiedWithKHex"].as_str().unwrap()).unwrap();
        assert_eq!(token.verify(resource, &[&key], now), Ok(0));
        let other = hex::decode(
            vector["vectors"][0]["input"]["params2"]["hmacKey"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            token.verify(resource, &[&other], now),
            Err(SasError::BadSignature)
        );
    }
}
