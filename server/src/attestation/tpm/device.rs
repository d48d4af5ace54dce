//! The device's side of the activation, in software: what a TPM's ActivateCredential and Import
//! do with the blob, given the EK's and SRK's private keys. Onramp never holds those; this is
//! for the tests and the load generator, which play devices without a TPM, and it checks every
//! integrity value the TPM would.

use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey};
use sha2::{Digest, Sha256};

use super::TpmError;
use super::activation::{Cfb, cfb_with, hmac, kdfa, sized};
use super::public::{ALG_AES, ALG_CFB, ALG_NULL, ALG_RSA, ALG_SHA256, Name, TpmPublic, name_of};

/// The EK's attributes in the SDKs' template: fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt; and its PolicySecret(endorsement) policy.
const EK_ATTRIBUTES: u32 = 0x0003_00b2;
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// The SRK's: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA, restricted, decrypt.
const SRK_ATTRIBUTES: u32 = 0x0003_0472;

/// The TPM2B_PUBLIC an SDK sends for an EK with this key.
pub fn endorsement_key(key: &RsaPrivateKey) -> Vec<u8> {
    public_area(key, EK_ATTRIBUTES, &EK_POLICY)
}

/// The TPM2B_PUBLIC an SDK sends for an SRK with this key.
pub fn storage_root_key(key: &RsaPrivateKey) -> Vec<u8> {
    public_area(key, SRK_ATTRIBUTES, &[])
}

/// An RSA-2048 restricted decryption key with AES-128-CFB for its children, as TPM2B_PUBLIC.
fn public_area(key: &RsaPrivateKey, attributes: u32, policy: &[u8]) -> Vec<u8> {
    let modulus = key.n().to_bytes_be();
    let mut area = Vec::new();
    for part in [ALG_RSA, ALG_SHA256] {
        area.extend_from_slice(&part.to_be_bytes());
    }
    area.extend_from_slice(&attributes.to_be_bytes());
    area.extend_from_slice(&sized(policy));
    for part in [ALG_AES, 128, ALG_CFB, ALG_NULL, 2048] {
        area.extend_from_slice(&part.to_be_bytes());
    }
    area.extend_from_slice(&0u32.to_be_bytes()); // the default exponent, 65537
    area.extend_from_slice(&sized(&modulus));
    sized(&area)
}

/// The HMAC key inside `blob`, recovered as the TPM holding `ek` and `srk` would.
pub fn activate(
    blob: &[u8],
    (ek, ek_private): (&TpmPublic, &RsaPrivateKey),
    (srk, srk_private): (&TpmPublic, &RsaPrivateKey),
) -> Result<Vec<u8>, TpmError> {
    let mut fields = Fields(blob);
    let id_object = fields.next()?;
    let secret = fields.next()?;
    let duplicate = fields.next()?;
    let sym_seed = fields.next()?;
    let identity = fields.next()?;
    fields.next()?; // encUriData
    let inner_key = activate_credential(id_object, secret, ek, ek_private, &srk.name())?;
    import(duplicate, sym_seed, identity, srk, srk_private, &inner_key)
}

/// ActivateCredential: the credential (the inner wrapper key), if bound to the SRK's name.
fn activate_credential(
    id_object: &[u8],
    secret: &[u8],
    ek: &TpmPublic,
    ek_private: &RsaPrivateKey,
    srk_name: &Name,
) -> Result<Vec<u8>, TpmError> {
    let seed = oaep_open(ek_private, "IDENTITY\0", secret)?;
    let mut object = Fields(id_object);
    let integrity = object.next()?;
    let mut identity = object.0.to_vec();
    let expected = hmac(&kdfa(&seed, "INTEGRITY", &[], 256), &[&identity, srk_name]);
    if integrity != expected {
        return Err(TpmError::Crypto(
            "the credential's integrity check failed".into(),
        ));
    }
    cfb_open(
        &kdfa(&seed, "STORAGE", srk_name, ek.symmetric_bits),
        &mut identity,
    )?;
    Ok(Fields(&identity).next()?.to_vec())
}

/// Import: the key from the duplicate, after both wrappers' integrity checks.
fn import(
    duplicate: &[u8],
    sym_seed: &[u8],
    identity: &[u8],
    srk: &TpmPublic,
    srk_private: &RsaPrivateKey,
    inner_key: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let name = name_of(identity);
    let seed = oaep_open(srk_private, "DUPLICATE\0", sym_seed)?;
    let mut outer = Fields(duplicate);
    let outer_hmac = outer.next()?;
    let mut inner = outer.0.to_vec();
    if outer_hmac != hmac(&kdfa(&seed, "INTEGRITY", &[], 256), &[&inner, &name]) {
        return Err(TpmError::Crypto(
            "the duplicate's outer integrity check failed".into(),
        ));
    }
    cfb_open(
        &kdfa(&seed, "STORAGE", &name, srk.symmetric_bits),
        &mut inner,
    )?;
    cfb_open(inner_key, &mut inner)?;
    let mut plain = Fields(&inner);
    let integrity = plain.next()?;
    let sensitive = plain.0;
    let expected = Sha256::new()
        .chain_update(sensitive)
        .chain_update(name)
        .finalize();
    if integrity != expected.as_slice() {
        return Err(TpmError::Crypto(
            "the duplicate's inner integrity check failed".into(),
        ));
    }
    // TPM2B_SENSITIVE: size, type, authValue, seedValue, then the key.
    let mut area = Fields(Fields(sensitive).next()?);
    area.take(2)?;
    area.next()?;
    area.next()?;
    Ok(area.next()?.to_vec())
}

fn oaep_open(key: &RsaPrivateKey, label: &str, sealed: &[u8]) -> Result<Vec<u8>, TpmError> {
    key.decrypt(Oaep::new_with_label::<Sha256, _>(label), sealed)
        .map_err(|e| TpmError::Crypto(e.to_string()))
}

fn cfb_open(key: &[u8], data: &mut [u8]) -> Result<(), TpmError> {
    cfb_with(key, data, Cfb::Decrypt)
}

/// Consecutive TPM2B fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        if self.0.len() < n {
            return Err(TpmError::Truncated("the activation blob"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<&'a [u8], TpmError> {
        let size = self.take(2)?;
        self.take(usize::from(u16::from_be_bytes([size[0], size[1]])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::tpm::{Randomness, activation_blob};

    fn key() -> (TpmPublic, RsaPrivateKey, Vec<u8>) {
        let private = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let bytes = storage_root_key(&private);
        (TpmPublic::parse(&bytes).unwrap(), private, bytes)
    }

    #[test]
    fn the_blob_opens_only_in_the_tpm_it_was_made_for() {
        let (ek, ek_private, _) = key();
        let (srk, srk_private, _) = key();
        let parsed_ek = TpmPublic::parse(&endorsement_key(&ek_private)).unwrap();
        assert_eq!(parsed_ek.modulus, ek.modulus);
        let hmac_key = [5u8; 32];
        let blob = activation_blob(&ek, &srk, &hmac_key, &Randomness::fresh()).unwrap();
        let opened = activate(&blob, (&ek, &ek_private), (&srk, &srk_private)).unwrap();
        assert_eq!(opened, hmac_key);
        // Another SRK (the credential is bound to its name) or a flipped byte: refused.
        let (other, other_private, _) = key();
        assert!(activate(&blob, (&ek, &ek_private), (&other, &other_private)).is_err());
        for at in [10, 400, 600] {
            let mut tampered = blob.clone();
            tampered[at] ^= 1;
            let opened = activate(&tampered, (&ek, &ek_private), (&srk, &srk_private));
            assert!(opened.is_err(), "a flipped byte at {at} went unnoticed");
        }
    }
}
