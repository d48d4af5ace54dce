//! The activation blob ("authenticationKey"): a software TPM2_Duplicate of an HMAC key under the
//! device's SRK (inner wrapper keyed by `inner_key`, outer wrapper seeded to the SRK), and a
//! software TPM2_MakeCredential to the EK that delivers `inner_key`, bound to the SRK's name.
//! Only the TPM holding both keys recovers `inner_key` (ActivateCredential) and can then import
//! the HMAC key. Field order and every step: tpm-activation.md §2-§3.

use aes::{Aes128, Aes256};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use cfb_mode::cipher::{AsyncStreamCipher, BlockCipher, BlockEncryptMut, KeyInit, KeyIvInit};
use cfb_mode::{Decryptor, Encryptor};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use yasna::models::ObjectIdentifier;

use super::TpmError;
use super::public::{ALG_HMAC, ALG_KEYEDHASH, ALG_SHA256, PublicKey, TpmPublic, name_of};

/// The imported key's attributes: sign, noDA, userWithAuth (the SDK signs with a password
/// session); fixedTPM and fixedParent clear, or Import fails.
const IDENTITY_KEY_ATTRIBUTES: u32 = 0x0004_0440;
/// TPM_CC_PolicyCommandCode and TPM_CC_Duplicate: the identity key's policy allows duplication
/// only, as Microsoft's DRS emulation sets it.
const CC_POLICY_COMMAND_CODE: u32 = 0x16c;
const CC_DUPLICATE: u32 = 0x14b;

/// The random inputs of one blob, fresh for each (fixed only by the test vector).
#[derive(Clone)]
pub struct Randomness {
    /// The identity key's obfuscation value.
    pub seed_value: [u8; 32],
    /// The inner wrapper's AES-128 key: the credential. 16 bytes, as the C SDK expects.
    pub inner_key: [u8; 16],
    /// MakeCredential's seed, encrypted to an RSA EK (an ECC EK's comes from ECDH).
    pub credential_seed: [u8; 32],
    /// The outer wrapper's seed, encrypted to an RSA SRK (an ECC SRK's comes from ECDH).
    pub duplication_seed: [u8; 32],
}

impl Randomness {
    pub fn fresh() -> Randomness {
        let mut rng = rand::rngs::OsRng;
        let mut random = Randomness {
            seed_value: [0; 32],
            inner_key: [0; 16],
            credential_seed: [0; 32],
            duplication_seed: [0; 32],
        };
        rng.fill_bytes(&mut random.seed_value);
        rng.fill_bytes(&mut random.inner_key);
        rng.fill_bytes(&mut random.credential_seed);
        rng.fill_bytes(&mut random.duplication_seed);
        random
    }
}

/// An RSA TPM key's public part.
#[derive(Clone, Copy)]
pub struct RsaKey<'a> {
    pub modulus: &'a [u8],
    pub exponent: u32,
}

/// RSA-OAEP with SHA-256 to a TPM key, the label including its NUL.
pub type Encrypt<'a> = &'a dyn Fn(RsaKey<'_>, &str, &[u8]) -> Result<Vec<u8>, TpmError>;

/// The blob that hands `key` (16 to 64 bytes: the HMAC key the device will sign with) to the
/// TPM holding `ek` and `srk`.
pub fn activation_blob(
    ek: &TpmPublic,
    srk: &TpmPublic,
    key: &[u8],
    random: &Randomness,
) -> Result<Vec<u8>, TpmError> {
    build(ek, srk, key, random, Wrapping::Outer, &oaep)
}

/// Whether the duplicate has the outer wrapper seeded to the SRK, as TPM2_Duplicate with a new
/// parent makes it (what Onramp sends), or the inner one only (the note's second variant, which
/// the SDK accepts too; kept for the test vector).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrapping {
    Outer,
    #[cfg_attr(not(test), allow(dead_code))]
    InnerOnly,
}

/// aws-lc's RSA-OAEP: several times faster than a pure-Rust big-number one, and each blob
/// takes two encryptions.
fn oaep(key: RsaKey<'_>, label: &str, message: &[u8]) -> Result<Vec<u8>, TpmError> {
    let crypto = |e: &dyn std::fmt::Display| TpmError::Crypto(e.to_string());
    let public = PublicEncryptingKey::from_der(&rsa_spki(key)).map_err(|e| crypto(&e))?;
    let public = OaepPublicEncryptingKey::new(public).map_err(|e| crypto(&e))?;
    let mut sealed = vec![0; public.ciphertext_size()];
    let length = public
        .encrypt(
            &OAEP_SHA256_MGF1SHA256,
            message,
            &mut sealed,
            Some(label.as_bytes()),
        )
        .map_err(|e| crypto(&e))?
        .len();
    sealed.truncate(length);
    Ok(sealed)
}

/// The key as an X.509 SubjectPublicKeyInfo (DER), the form the library reads.
pub(crate) fn rsa_spki(key: RsaKey<'_>) -> Vec<u8> {
    const RSA_ENCRYPTION: [u64; 7] = [1, 2, 840, 113_549, 1, 1, 1];
    let rsa_public_key = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_bigint_bytes(key.modulus, true);
            w.next().write_u32(key.exponent);
        })
    });
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&ObjectIdentifier::from_slice(&RSA_ENCRYPTION));
                w.next().write_null();
            });
            w.next()
                .write_bitvec_bytes(&rsa_public_key, rsa_public_key.len() * 8);
        })
    })
}

pub(crate) fn build(
    ek: &TpmPublic,
    srk: &TpmPublic,
    key: &[u8],
    random: &Randomness,
    wrapping: Wrapping,
    encrypt: Encrypt<'_>,
) -> Result<Vec<u8>, TpmError> {
    if !(16..=64).contains(&key.len()) {
        return Err(TpmError::Crypto(
            "an HMAC key of other than 16 to 64 bytes".into(),
        ));
    }
    let identity = identity_public(key, &random.seed_value);
    let identity_name = name_of(&identity);
    let srk_name = srk.name();

    // The duplicate: the sensitive area under the inner wrapper, then the outer one.
    let sensitive = sized(&sensitive_area(key, &random.seed_value));
    let inner_integrity = Sha256::new()
        .chain_update(&sensitive)
        .chain_update(identity_name)
        .finalize();
    let mut inner = sized(&inner_integrity);
    inner.extend_from_slice(&sensitive);
    cfb(&random.inner_key, &mut inner)?;
    let (duplicate, sym_seed) = match wrapping {
        Wrapping::InnerOnly => (inner, Vec::new()),
        Wrapping::Outer => {
            let (seed, sym_seed) = seeded(srk, "DUPLICATE\0", &random.duplication_seed, encrypt)?;
            let seed = &seed;
            let mut outer = inner;
            cfb(
                &kdfa(seed, "STORAGE", &identity_name, srk.symmetric_bits),
                &mut outer,
            )?;
            let outer_hmac = hmac(
                &kdfa(seed, "INTEGRITY", &[], 256),
                &[&outer, &identity_name],
            );
            ([sized(&outer_hmac), outer].concat(), sym_seed)
        }
    };

    // The credential: `inner_key`, for the TPM that has the EK and an object named `srk_name`.
    let (seed, secret) = seeded(ek, "IDENTITY\0", &random.credential_seed, encrypt)?;
    let seed = &seed;
    let mut identity_secret = sized(&random.inner_key);
    cfb(
        &kdfa(seed, "STORAGE", &srk_name, ek.symmetric_bits),
        &mut identity_secret,
    )?;
    let integrity = hmac(
        &kdfa(seed, "INTEGRITY", &[], 256),
        &[&identity_secret, &srk_name],
    );
    let id_object = [sized(&integrity), identity_secret].concat();

    let empty_uri_data: &[u8] = &[];
    let fields: [&[u8]; 6] = [
        &id_object,
        &secret,
        &duplicate,
        &sym_seed,
        &identity,
        empty_uri_data,
    ];
    Ok(fields.iter().flat_map(|f| sized(f)).collect())
}

/// The identity key's TPMT_PUBLIC: a keyed-hash HMAC-SHA256 signing key.
fn identity_public(key: &[u8], seed_value: &[u8; 32]) -> Vec<u8> {
    let policy = Sha256::new()
        .chain_update([0u8; 32])
        .chain_update(CC_POLICY_COMMAND_CODE.to_be_bytes())
        .chain_update(CC_DUPLICATE.to_be_bytes())
        .finalize();
    let unique = Sha256::new()
        .chain_update(seed_value)
        .chain_update(key)
        .finalize();
    let mut area = Vec::with_capacity(80);
    area.extend_from_slice(&ALG_KEYEDHASH.to_be_bytes());
    area.extend_from_slice(&ALG_SHA256.to_be_bytes());
    area.extend_from_slice(&IDENTITY_KEY_ATTRIBUTES.to_be_bytes());
    area.extend_from_slice(&sized(&policy));
    area.extend_from_slice(&ALG_HMAC.to_be_bytes());
    area.extend_from_slice(&ALG_SHA256.to_be_bytes());
    area.extend_from_slice(&sized(&unique));
    area
}

/// TPMT_SENSITIVE: keyed-hash, no auth value (the SDK uses an empty password), the seed, the key.
fn sensitive_area(key: &[u8], seed_value: &[u8; 32]) -> Vec<u8> {
    let mut area = ALG_KEYEDHASH.to_be_bytes().to_vec();
    area.extend_from_slice(&sized(&[]));
    area.extend_from_slice(&sized(seed_value));
    area.extend_from_slice(&sized(key));
    area
}

/// A TPM2B: the bytes after their u16 size. Every field here is far below 64 KiB.
pub(crate) fn sized(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A wrapper's seed and the secret that hands it to `key` (Part 1 §24, "Secret Sharing"): for an
/// RSA key `rsa_seed` itself, RSA-OAEP encrypted; for an ECC key the seed that ECDH with a fresh
/// key gives (KDFe over the shared x, `label`, the fresh key's x and the key's x), and the fresh
/// public point as the secret.
fn seeded(
    key: &TpmPublic,
    label: &str,
    rsa_seed: &[u8; 32],
    encrypt: Encrypt<'_>,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    match &key.key {
        PublicKey::Rsa { modulus, exponent } => {
            let key = RsaKey {
                modulus,
                exponent: *exponent,
            };
            Ok((rsa_seed.to_vec(), encrypt(key, label, rsa_seed)?))
        }
        PublicKey::Ecc { x, y } => {
            let theirs = p256::PublicKey::from_sec1_bytes(&[&[4u8][..], x, y].concat())
                .map_err(|e| TpmError::Crypto(e.to_string()))?;
            let ephemeral = p256::ecdh::EphemeralSecret::random(&mut rand::rngs::OsRng);
            let point = p256::EncodedPoint::from(ephemeral.public_key());
            let (ours_x, ours_y) = (point.x(), point.y());
            let (Some(ours_x), Some(ours_y)) = (ours_x, ours_y) else {
                return Err(TpmError::Crypto("the fresh point is the identity".into()));
            };
            let shared = ephemeral.diffie_hellman(&theirs);
            let seed = kdfe(shared.raw_secret_bytes(), label, ours_x, x);
            Ok((seed.to_vec(), [sized(ours_x), sized(ours_y)].concat()))
        }
    }
}

/// KDFe (Part 1 §11.4.10.3): SP 800-56A's concatenation KDF with SHA-256, one block (256 bits);
/// `label` as given, with its NUL.
pub(crate) fn kdfe(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(1u32.to_be_bytes())
        .chain_update(z)
        .chain_update(label.as_bytes())
        .chain_update(party_u)
        .chain_update(party_v)
        .finalize()
        .into()
}

/// KDFa (Part 1 §11.4.10.2): SP 800-108 counter mode with HMAC-SHA256; the label gets its NUL.
pub(crate) fn kdfa(key: &[u8], label: &str, context_u: &[u8], bits: u16) -> Vec<u8> {
    let wanted = usize::from(bits / 8);
    let mut out = Vec::with_capacity(wanted + 32);
    let mut counter = 1u32;
    while out.len() < wanted {
        let block = hmac(
            key,
            &[
                &counter.to_be_bytes(),
                label.as_bytes(),
                &[0],
                context_u,
                &u32::from(bits).to_be_bytes(),
            ],
        );
        out.extend_from_slice(&block);
        counter += 1;
    }
    out.truncate(wanted);
    out
}

pub(crate) fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Which way `cfb` runs: Onramp wraps, the device (in `device`) unwraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cfb {
    Encrypt,
    Decrypt,
}

/// AES-CFB (full 128-bit feedback) with a zero IV, in place; the key size picks AES-128 or -256.
pub(crate) fn cfb_with(key: &[u8], data: &mut [u8], way: Cfb) -> Result<(), TpmError> {
    fn run<C: BlockEncryptMut + BlockCipher + KeyInit>(
        key: &[u8],
        data: &mut [u8],
        way: Cfb,
    ) -> Result<(), TpmError> {
        let iv = [0u8; 16];
        let wrong = |e: cfb_mode::cipher::InvalidLength| TpmError::Crypto(e.to_string());
        match way {
            Cfb::Encrypt => Encryptor::<C>::new_from_slices(key, &iv)
                .map_err(wrong)?
                .encrypt(data),
            Cfb::Decrypt => Decryptor::<C>::new_from_slices(key, &iv)
                .map_err(wrong)?
                .decrypt(data),
        }
        Ok(())
    }
    match key.len() {
        16 => run::<Aes128>(key, data, way),
        32 => run::<Aes256>(key, data, way),
        n => Err(TpmError::Crypto(format!("an AES key of {n} bytes"))),
    }
}

fn cfb(key: &[u8], data: &mut [u8]) -> Result<(), TpmError> {
    cfb_with(key, data, Cfb::Encrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attestation::tpm::device::{RsaTpmKey, SeedKey, storage_root_key};
    use serde_json::Value;

    fn vector() -> Value {
        serde_json::from_str(include_str!("testvector.json")).unwrap()
    }

    fn bytes(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().unwrap()).unwrap()
    }

    fn randomness(params: &Value) -> Randomness {
        let fixed = |name: &str| bytes(&params[name]);
        Randomness {
            seed_value: fixed("seedValue").try_into().unwrap(),
            inner_key: fixed("innerKey").try_into().unwrap(),
            credential_seed: fixed("credSeed").try_into().unwrap(),
            duplication_seed: fixed("dupSeed").try_into().unwrap(),
        }
    }

    /// MGF1 with SHA-256 (RFC 8017 B.2.1).
    fn mgf1(seed: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for counter in 0u32.. {
            if out.len() >= len {
                break;
            }
            out.extend(
                Sha256::new()
                    .chain_update(seed)
                    .chain_update(counter.to_be_bytes())
                    .finalize(),
            );
        }
        out.truncate(len);
        out
    }

    /// RSAES-OAEP (RFC 8017 §7.1.1) with the padding seed given, so that the vector's
    /// ciphertexts come out byte for byte; a library draws that seed itself.
    fn oaep_with_seed(key: RsaKey<'_>, label: &str, message: &[u8], seed: &[u8]) -> Vec<u8> {
        let k = key.modulus.len();
        let mut db = Sha256::digest(label.as_bytes()).to_vec();
        db.resize(k - message.len() - 32 - 2, 0); // lHash ‖ PS
        db.push(1);
        db.extend_from_slice(message);
        let masked_db: Vec<u8> = db
            .iter()
            .zip(mgf1(seed, db.len()))
            .map(|(a, b)| a ^ b)
            .collect();
        let masked_seed: Vec<u8> = seed
            .iter()
            .zip(mgf1(&masked_db, 32))
            .map(|(a, b)| a ^ b)
            .collect();
        let encoded = [&[0u8][..], &masked_seed, &masked_db].concat();
        let modulus = num_bigint::BigUint::from_bytes_be(key.modulus);
        let c = num_bigint::BigUint::from_bytes_be(&encoded)
            .modpow(&key.exponent.into(), &modulus)
            .to_bytes_be();
        [vec![0; k - c.len()], c].concat()
    }

    fn blob_of(input: &Value, params: &Value, key: &[u8]) -> Vec<u8> {
        let ek = TpmPublic::parse(&bytes(&input["endorsementKeyHex"])).unwrap();
        let srk = TpmPublic::parse(&bytes(&input["storageRootKeyHex"])).unwrap();
        let seeded = |key: RsaKey<'_>, label: &str, message: &[u8]| {
            let seed = match label {
                "IDENTITY\0" => bytes(&params["credOaepSeed"]),
                "DUPLICATE\0" => bytes(&params["dupOaepSeed"]),
                other => panic!("label {other:?}"),
            };
            Ok(oaep_with_seed(key, label, message, &seed))
        };
        let wrapping = match params["outer"].as_bool() {
            Some(false) => Wrapping::InnerOnly,
            _ => Wrapping::Outer,
        };
        build(&ek, &srk, key, &randomness(params), wrapping, &seeded).unwrap()
    }

    #[test]
    fn both_blobs_of_both_vectors_come_out_byte_for_byte() {
        let vector = vector();
        for (variant, name) in [(0, "outer-wrapper"), (1, "inner-only")] {
            let case = &vector["vectors"][variant];
            assert_eq!(case["name"], name);
            let (input, output) = (&case["input"], &case["output"]);
            for (params, blob) in [("params1", "blob1Hex"), ("params2", "blob2Hex")] {
                let mut params = input[params].clone();
                params["outer"] = case["outer"].clone();
                let key = bytes(&params["hmacKey"]);
                let built = hex::encode(blob_of(input, &params, &key));
                assert_eq!(built, output[blob].as_str().unwrap(), "{name} {blob}");
            }
        }
    }

    /// The vector's hand-padded OAEP (which the TPM accepted) and the library's production OAEP
    /// are the same scheme: each opens with the library's decryption under the same label.
    #[test]
    fn the_library_oaep_is_the_vectors_scheme() {
        let private = RsaTpmKey::generate().unwrap();
        let public_area = storage_root_key(&private);
        let public = TpmPublic::parse(&public_area).unwrap();
        let PublicKey::Rsa { modulus, exponent } = &public.key else {
            panic!("an RSA key");
        };
        let key = RsaKey {
            modulus,
            exponent: *exponent,
        };
        let (seed, label) = ([9u8; 32], "IDENTITY\0");
        let open = |sealed: &[u8], label| private.open_seed(label, sealed, &public);
        assert_eq!(
            open(&oaep(key, label, &seed).unwrap(), label).unwrap(),
            seed
        );
        let hand_padded = oaep_with_seed(key, label, &seed, &[3u8; 32]);
        assert_eq!(open(&hand_padded, label).unwrap(), seed);
        assert!(open(&oaep(key, label, &seed).unwrap(), "IDENTITY").is_err());
    }

    #[test]
    fn names_and_the_default_registration_id_match_the_vector() {
        let vector = vector();
        let outer = &vector["vectors"][0];
        let (input, intermediates) = (&outer["input"], &outer["output"]["intermediates1"]);
        let ek_bytes = bytes(&input["endorsementKeyHex"]);
        let ek = TpmPublic::parse(&ek_bytes).unwrap();
        let srk = TpmPublic::parse(&bytes(&input["storageRootKeyHex"])).unwrap();
        assert_eq!(
            hex::encode(ek.name()),
            intermediates["ekName"].as_str().unwrap()
        );
        assert_eq!(
            hex::encode(srk.name()),
            intermediates["srkName"].as_str().unwrap()
        );
        assert_eq!(ek.symmetric_bits, 128);
        assert!(matches!(
            ek.key,
            PublicKey::Rsa {
                exponent: 65537,
                ..
            }
        ));
        assert_eq!(
            super::super::default_registration_id(&ek_bytes),
            input["registrationId"].as_str().unwrap()
        );
        let params = &input["params1"];
        let (key, random) = (bytes(&params["hmacKey"]), randomness(params));
        let (dup_seed, cred_seed) = (&random.duplication_seed, &random.credential_seed);
        let identity = identity_public(&key, &random.seed_value);
        let identity_name = name_of(&identity);
        let sensitive = sized(&sensitive_area(&key, &random.seed_value));
        let inner_integrity = Sha256::new()
            .chain_update(&sensitive)
            .chain_update(identity_name)
            .finalize();
        let srk_name = srk.name();
        for (name, ours) in [
            ("idKeyTPMT_PUBLIC", identity.clone()),
            ("idKeyName", identity_name.to_vec()),
            ("TPM2B_SENSITIVE", sensitive),
            ("innerIntegrity", inner_integrity.to_vec()),
            ("dupSymKey", kdfa(dup_seed, "STORAGE", &identity_name, 128)),
            ("dupHmacKey", kdfa(dup_seed, "INTEGRITY", &[], 256)),
            ("credSymKey", kdfa(cred_seed, "STORAGE", &srk_name, 128)),
            ("credHmacKey", kdfa(cred_seed, "INTEGRITY", &[], 256)),
        ] {
            assert_eq!(
                hex::encode(ours),
                intermediates[name].as_str().unwrap(),
                "{name}"
            );
        }
    }

    #[test]
    fn a_library_oaep_blob_has_the_same_shape_and_fresh_secrets() {
        let vector = vector();
        let input = &vector["vectors"][0]["input"];
        let ek = TpmPublic::parse(&bytes(&input["endorsementKeyHex"])).unwrap();
        let srk = TpmPublic::parse(&bytes(&input["storageRootKeyHex"])).unwrap();
        let key = [7u8; 32];
        let first = activation_blob(&ek, &srk, &key, &Randomness::fresh()).unwrap();
        let second = activation_blob(&ek, &srk, &key, &Randomness::fresh()).unwrap();
        assert_eq!(first.len(), 798);
        assert_ne!(first, second);
        // The identity key's public area sits at the same place, and differs only in `unique`.
        assert_eq!(first[714..762], second[714..762]);
        assert!(activation_blob(&ek, &srk, &[1u8; 65], &Randomness::fresh()).is_err());
    }

    #[test]
    fn keys_the_activation_cannot_use_are_refused() {
        let vector = vector();
        let ek = bytes(&vector["vectors"][0]["input"]["endorsementKeyHex"]);
        for cut in [0, 1, 2, 10, ek.len() - 1] {
            assert!(TpmPublic::parse(&ek[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = ek.clone();
        trailing.push(0);
        assert!(TpmPublic::parse(&trailing).is_err());
        // RSA parameters read as ECC ones: the key size is no curve Onramp knows.
        let mut ecc = ek.clone();
        ecc[2..4].copy_from_slice(&0x0023u16.to_be_bytes());
        assert_eq!(
            TpmPublic::parse(&ecc),
            Err(TpmError::Unsupported(
                "an ECC curve other than NIST P-256".into()
            ))
        );
        let mut keyed_hash = ek.clone();
        keyed_hash[2..4].copy_from_slice(&0x0008u16.to_be_bytes());
        assert_eq!(
            TpmPublic::parse(&keyed_hash),
            Err(TpmError::Unsupported("key type 0x0008".into()))
        );
        let mut sha1 = ek.clone();
        sha1[4..6].copy_from_slice(&0x0004u16.to_be_bytes());
        assert!(matches!(
            TpmPublic::parse(&sha1),
            Err(TpmError::Unsupported(_))
        ));
        let mut signing = ek;
        signing[6..10].copy_from_slice(&0x0004_0072u32.to_be_bytes());
        assert!(matches!(
            TpmPublic::parse(&signing),
            Err(TpmError::Unsupported(_))
        ));
    }
}
