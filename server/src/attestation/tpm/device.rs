//! The device's side of the activation, in software: what a TPM's ActivateCredential and Import
//! do with the blob, given the EK's and SRK's private keys. Onramp never holds those; this is
//! for the tests and the load generator, which play devices without a TPM, and it checks every
//! integrity value the TPM would.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, PrivateDecryptingKey,
};
use sha2::{Digest, Sha256};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as SpkiKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::TpmError;
use super::activation::{Cfb, cfb_with, hmac, kdfa, kdfe, sized};
use super::public::{
    ALG_AES, ALG_CFB, ALG_ECC, ALG_NULL, ALG_RSA, ALG_SHA256, ECC_NIST_P256, Name, PublicKey,
    TpmPublic, name_of,
};

/// The EK's attributes in the SDKs' template: fixedTPM, fixedParent, sensitiveDataOrigin,
/// adminWithPolicy, restricted, decrypt; and its PolicySecret(endorsement) policy.
const EK_ATTRIBUTES: u32 = 0x0003_00b2;
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// The SRK's: fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth, noDA, restricted, decrypt.
const SRK_ATTRIBUTES: u32 = 0x0003_0472;

/// An RSA-2048 TPM key's private half, with its modulus.
pub struct RsaTpmKey {
    private: OaepPrivateDecryptingKey,
    modulus: Vec<u8>,
}

impl RsaTpmKey {
    pub fn generate() -> Result<RsaTpmKey, TpmError> {
        let crypto = |e: &dyn std::fmt::Display| TpmError::Crypto(e.to_string());
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048).map_err(|e| crypto(&e))?;
        let spki = private.public_key().as_der().map_err(|e| crypto(&e))?;
        let parsed = SubjectPublicKeyInfo::from_der(spki.as_ref()).map(|(_, key)| key);
        let modulus = match parsed.as_ref().map(|key| key.parsed()) {
            Ok(Ok(SpkiKey::RSA(rsa))) => rsa.modulus.to_vec(),
            _ => {
                return Err(TpmError::Crypto(
                    "the generated key has no RSA modulus".into(),
                ));
            }
        };
        let leading_zeros = modulus.iter().take_while(|b| **b == 0).count();
        Ok(RsaTpmKey {
            private: OaepPrivateDecryptingKey::new(private).map_err(|e| crypto(&e))?,
            modulus: modulus[leading_zeros..].to_vec(),
        })
    }
}

/// The TPM2B_PUBLIC an SDK sends for an EK with this key.
pub fn endorsement_key(key: &RsaTpmKey) -> Vec<u8> {
    public_area(key, EK_ATTRIBUTES, &EK_POLICY)
}

/// The TPM2B_PUBLIC an SDK sends for an SRK with this key.
pub fn storage_root_key(key: &RsaTpmKey) -> Vec<u8> {
    public_area(key, SRK_ATTRIBUTES, &[])
}

/// The TPM2B_PUBLIC of an ECC EK (the TCG EK profile's NIST P-256 template) with this key.
pub fn ecc_endorsement_key(key: &p256::SecretKey) -> Vec<u8> {
    let point = p256::EncodedPoint::from(key.public_key());
    let mut area = Vec::new();
    for part in [ALG_ECC, ALG_SHA256] {
        area.extend_from_slice(&part.to_be_bytes());
    }
    area.extend_from_slice(&EK_ATTRIBUTES.to_be_bytes());
    area.extend_from_slice(&sized(&EK_POLICY));
    for part in [ALG_AES, 128, ALG_CFB, ALG_NULL, ECC_NIST_P256, ALG_NULL] {
        area.extend_from_slice(&part.to_be_bytes());
    }
    for coordinate in [point.x(), point.y()] {
        area.extend_from_slice(&sized(coordinate.map(|c| c.as_slice()).unwrap_or_default()));
    }
    sized(&area)
}

/// An RSA-2048 restricted decryption key with AES-128-CFB for its children, as TPM2B_PUBLIC.
fn public_area(key: &RsaTpmKey, attributes: u32, policy: &[u8]) -> Vec<u8> {
    let modulus = &key.modulus;
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
    area.extend_from_slice(&sized(modulus));
    sized(&area)
}

/// A TPM played in software: an EK (RSA-2048 or NIST P-256) and an RSA-2048 SRK, each with the
/// TPM2B_PUBLIC an SDK sends for it.
pub struct SoftTpm {
    ek: (TpmPublic, Box<dyn SeedKey + Send + Sync>, Vec<u8>),
    srk: (TpmPublic, RsaTpmKey, Vec<u8>),
}

impl SoftTpm {
    /// With an RSA-2048 EK, as the SDKs' template makes it.
    pub fn rsa() -> Result<SoftTpm, TpmError> {
        let (ek, private, bytes) = rsa_key(endorsement_key)?;
        Ok(SoftTpm {
            ek: (ek, Box::new(private), bytes),
            srk: rsa_key(storage_root_key)?,
        })
    }

    /// With a NIST P-256 EK (the TCG EK profile's ECC template).
    pub fn ecc() -> Result<SoftTpm, TpmError> {
        let private = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let bytes = ecc_endorsement_key(&private);
        Ok(SoftTpm {
            ek: (TpmPublic::parse(&bytes)?, Box::new(private), bytes),
            srk: rsa_key(storage_root_key)?,
        })
    }

    /// The EK's TPM2B_PUBLIC, as enrolled and sent.
    pub fn endorsement_key(&self) -> &[u8] {
        &self.ek.2
    }

    /// The SRK's TPM2B_PUBLIC, as sent.
    pub fn storage_root_key(&self) -> &[u8] {
        &self.srk.2
    }

    /// The key a blob carries, as this TPM imports it.
    pub fn activate(&self, blob: &[u8]) -> Result<Vec<u8>, TpmError> {
        activate(blob, (&self.ek.0, &*self.ek.1), (&self.srk.0, &self.srk.1))
    }
}

fn rsa_key(public: fn(&RsaTpmKey) -> Vec<u8>) -> Result<(TpmPublic, RsaTpmKey, Vec<u8>), TpmError> {
    let private = RsaTpmKey::generate()?;
    let bytes = public(&private);
    Ok((TpmPublic::parse(&bytes)?, private, bytes))
}

/// The HMAC key inside `blob`, recovered as the TPM holding `ek` and `srk` would.
pub fn activate(
    blob: &[u8],
    (ek, ek_private): (&TpmPublic, &dyn SeedKey),
    (srk, srk_private): (&TpmPublic, &dyn SeedKey),
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
    ek_private: &dyn SeedKey,
    srk_name: &Name,
) -> Result<Vec<u8>, TpmError> {
    let seed = ek_private.open_seed("IDENTITY\0", secret, ek)?;
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
    srk_private: &dyn SeedKey,
    inner_key: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let name = name_of(identity);
    let seed = srk_private.open_seed("DUPLICATE\0", sym_seed, srk)?;
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

/// A TPM key's private half, as far as recovering a seed from its secret goes.
pub trait SeedKey {
    fn open_seed(
        &self,
        label: &str,
        secret: &[u8],
        public: &TpmPublic,
    ) -> Result<Vec<u8>, TpmError>;
}

/// RSA-OAEP decryption.
impl SeedKey for RsaTpmKey {
    fn open_seed(&self, label: &str, secret: &[u8], _: &TpmPublic) -> Result<Vec<u8>, TpmError> {
        let mut opened = vec![0; self.private.min_output_size()];
        let algorithm = &OAEP_SHA256_MGF1SHA256;
        let seed = self
            .private
            .decrypt(algorithm, secret, &mut opened, Some(label.as_bytes()))
            .map_err(|e| TpmError::Crypto(e.to_string()))?;
        Ok(seed.to_vec())
    }
}

/// ECDH with the sender's point (the secret), then KDFe over both x coordinates.
impl SeedKey for p256::SecretKey {
    fn open_seed(
        &self,
        label: &str,
        secret: &[u8],
        public: &TpmPublic,
    ) -> Result<Vec<u8>, TpmError> {
        let PublicKey::Ecc { x: our_x, .. } = &public.key else {
            return Err(TpmError::Crypto("an ECC secret for a non-ECC key".into()));
        };
        let mut point = Fields(secret);
        let (x, y) = (point.next()?, point.next()?);
        let sender = p256::PublicKey::from_sec1_bytes(&[&[4u8][..], x, y].concat())
            .map_err(|e| TpmError::Crypto(e.to_string()))?;
        let shared = p256::ecdh::diffie_hellman(self.to_nonzero_scalar(), sender.as_affine());
        Ok(kdfe(shared.raw_secret_bytes(), label, x, our_x).to_vec())
    }
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

    fn key() -> (TpmPublic, RsaTpmKey, Vec<u8>) {
        rsa_key(storage_root_key).unwrap()
    }

    #[test]
    fn the_blob_opens_only_in_the_tpm_it_was_made_for() {
        let (ek, ek_private, _) = key();
        let (srk, srk_private, _) = key();
        let parsed_ek = TpmPublic::parse(&endorsement_key(&ek_private)).unwrap();
        assert_eq!(parsed_ek.key, ek.key);
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

    #[test]
    fn a_blob_for_an_ecc_endorsement_key_opens_with_its_private_key_only() {
        let ek_private = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let ek = TpmPublic::parse(&ecc_endorsement_key(&ek_private)).unwrap();
        assert!(matches!(ek.key, PublicKey::Ecc { .. }));
        let (srk, srk_private, _) = key();
        let hmac_key = [9u8; 32];
        let blob = activation_blob(&ek, &srk, &hmac_key, &Randomness::fresh()).unwrap();
        let opened = activate(&blob, (&ek, &ek_private), (&srk, &srk_private)).unwrap();
        assert_eq!(opened, hmac_key);
        let other = p256::SecretKey::random(&mut rand::rngs::OsRng);
        assert!(activate(&blob, (&ek, &other), (&srk, &srk_private)).is_err());
        // Each blob's secret is a fresh point: two blobs share no secret.
        let again = activation_blob(&ek, &srk, &hmac_key, &Randomness::fresh()).unwrap();
        assert_ne!(blob[54..54 + 70], again[54..54 + 70]);
    }

    #[test]
    fn an_ecc_key_off_the_curve_or_on_another_curve_is_refused() {
        let ek = ecc_endorsement_key(&p256::SecretKey::random(&mut rand::rngs::OsRng));
        let mut off_curve = ek.clone();
        let last = off_curve.len() - 1;
        off_curve[last] ^= 1;
        let refused = TpmPublic::parse(&off_curve);
        assert_eq!(
            refused,
            Err(TpmError::Malformed("the point is not on P-256".into()))
        );
        // The curve ID sits after type, nameAlg, attributes, policy, symmetric and scheme.
        let curve_at = 2 + 2 + 2 + 4 + 2 + 32 + 6 + 2;
        assert_eq!(ek[curve_at..curve_at + 2], ECC_NIST_P256.to_be_bytes());
        let mut p384 = ek;
        p384[curve_at + 1] = 0x04;
        assert!(matches!(
            TpmPublic::parse(&p384),
            Err(TpmError::Unsupported(_))
        ));
    }
}
