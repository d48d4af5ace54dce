//! A TPM key's public area as the device sends it (TPM2B_PUBLIC, TPM 2.0 Part 2 §12.2.5): the
//! endorsement key and the storage root key. Only what the activation needs is kept: the RSA
//! modulus and exponent or the ECC point, the symmetric key size of the parent's wrappers, and
//! the TPMT_PUBLIC bytes its name is hashed over. Anything but a restricted RSA-2048 or NIST P-256
//! decryption key with SHA-256 names and AES-CFB is refused with a reason.

use sha2::{Digest, Sha256};

use super::TpmError;

pub const ALG_RSA: u16 = 0x0001;
pub const ALG_HMAC: u16 = 0x0005;
pub const ALG_AES: u16 = 0x0006;
pub const ALG_KEYEDHASH: u16 = 0x0008;
pub const ALG_SHA256: u16 = 0x000b;
pub const ALG_NULL: u16 = 0x0010;
pub const ALG_ECC: u16 = 0x0023;
pub const ALG_CFB: u16 = 0x0043;
pub const ECC_NIST_P256: u16 = 0x0003;

/// `objectAttributes` bits (Part 2 §8.3).
const RESTRICTED: u32 = 1 << 16;
const DECRYPT: u32 = 1 << 17;

/// A name: the name algorithm's ID, then the digest of the TPMT_PUBLIC.
pub type Name = [u8; 34];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TpmPublic {
    /// The TPMT_PUBLIC: the TPM2B without its size.
    area: Vec<u8>,
    pub key: PublicKey,
    /// The AES key size (bits) of what is encrypted to this key as a parent.
    pub symmetric_bits: u16,
}

/// What secrets are sent to: RSA-OAEP for an RSA key, ECDH for an ECC one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa {
        modulus: Vec<u8>,
        exponent: u32,
    },
    /// A point on NIST P-256 (checked to be on the curve).
    Ecc {
        x: [u8; 32],
        y: [u8; 32],
    },
}

impl TpmPublic {
    /// Parses a TPM2B_PUBLIC; every byte must belong to it.
    pub fn parse(tpm2b: &[u8]) -> Result<TpmPublic, TpmError> {
        let mut outer = Reader(tpm2b);
        let area = outer.sized("the public area")?;
        if !outer.0.is_empty() {
            return Err(TpmError::Malformed("bytes after the public area".into()));
        }
        let mut r = Reader(area);
        let key_type = r.u16("the key type")?;
        if !matches!(key_type, ALG_RSA | ALG_ECC) {
            return Err(TpmError::Unsupported(format!("key type {key_type:#06x}")));
        }
        if r.u16("the name algorithm")? != ALG_SHA256 {
            return Err(TpmError::Unsupported(
                "a name algorithm other than SHA-256".into(),
            ));
        }
        let attributes = r.u32("the attributes")?;
        if attributes & (RESTRICTED | DECRYPT) != RESTRICTED | DECRYPT {
            return Err(TpmError::Unsupported(
                "a key that is not a restricted decryption key".into(),
            ));
        }
        r.sized("the auth policy")?;
        let symmetric_bits = symmetric_definition(&mut r)?;
        if r.u16("the scheme")? != ALG_NULL {
            return Err(TpmError::Unsupported("a scheme other than NULL".into()));
        }
        let key = match key_type {
            ALG_RSA => rsa_parameters(&mut r)?,
            _ => ecc_parameters(&mut r)?,
        };
        if !r.0.is_empty() {
            return Err(TpmError::Malformed("bytes after the key".into()));
        }
        Ok(TpmPublic {
            area: area.to_vec(),
            key,
            symmetric_bits,
        })
    }

    /// The TPMT_PUBLIC bytes (the TPM2B without its size).
    pub fn area(&self) -> &[u8] {
        &self.area
    }

    pub fn name(&self) -> Name {
        name_of(&self.area)
    }
}

/// `SHA-256 ‖ digest(TPMT_PUBLIC)` (Part 1 §16).
pub fn name_of(area: &[u8]) -> Name {
    let mut name = [0u8; 34];
    name[..2].copy_from_slice(&ALG_SHA256.to_be_bytes());
    name[2..].copy_from_slice(&Sha256::digest(area));
    name
}

/// TPMS_RSA_PARMS' key size and exponent, and the modulus: RSA-2048.
fn rsa_parameters(r: &mut Reader<'_>) -> Result<PublicKey, TpmError> {
    if r.u16("the key size")? != 2048 {
        return Err(TpmError::Unsupported(
            "an RSA key size other than 2048".into(),
        ));
    }
    let exponent = match r.u32("the exponent")? {
        0 => 65537,
        e => e,
    };
    let modulus = r.sized("the modulus")?.to_vec();
    if modulus.len() != 256 {
        return Err(TpmError::Malformed(
            "the modulus is not the key's 256 bytes".into(),
        ));
    }
    Ok(PublicKey::Rsa { modulus, exponent })
}

/// TPMS_ECC_PARMS' curve and KDF, and the point: NIST P-256, no KDF of its own.
fn ecc_parameters(r: &mut Reader<'_>) -> Result<PublicKey, TpmError> {
    if r.u16("the curve")? != ECC_NIST_P256 {
        return Err(TpmError::Unsupported(
            "an ECC curve other than NIST P-256".into(),
        ));
    }
    if r.u16("the KDF scheme")? != ALG_NULL {
        return Err(TpmError::Unsupported(
            "an ECC KDF scheme other than NULL".into(),
        ));
    }
    let mut coordinate = |what| -> Result<[u8; 32], TpmError> {
        r.sized(what)?
            .try_into()
            .map_err(|_| TpmError::Malformed(format!("{what} is not 32 bytes")))
    };
    let (x, y) = (coordinate("the point's x")?, coordinate("the point's y")?);
    let sec1 = [&[4u8][..], &x, &y].concat();
    if p256::PublicKey::from_sec1_bytes(&sec1).is_err() {
        return Err(TpmError::Malformed("the point is not on P-256".into()));
    }
    Ok(PublicKey::Ecc { x, y })
}

/// TPMT_SYM_DEF_OBJECT: a parent's wrappers are AES-CFB of 128 or 256 bits.
fn symmetric_definition(r: &mut Reader<'_>) -> Result<u16, TpmError> {
    if r.u16("the symmetric algorithm")? != ALG_AES {
        return Err(TpmError::Unsupported(
            "a symmetric algorithm other than AES".into(),
        ));
    }
    let bits = r.u16("the symmetric key size")?;
    if r.u16("the symmetric mode")? != ALG_CFB || !matches!(bits, 128 | 256) {
        return Err(TpmError::Unsupported(
            "a symmetric definition other than AES-128/256-CFB".into(),
        ));
    }
    Ok(bits)
}

/// Big-endian TPM marshalling, every read checked against the bytes left.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TpmError> {
        if self.0.len() < n {
            return Err(TpmError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, TpmError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, TpmError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A TPM2B: a u16 size, then that many bytes.
    fn sized(&mut self, what: &'static str) -> Result<&'a [u8], TpmError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
}
