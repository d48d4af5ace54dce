//! Shared access signatures: parsing, verification and group key derivation.
//!
//! Token: `SharedAccessSignature sr=<resource>&sig=<b64 HMAC>&se=<expiry>[&skn=<key name>]`, fields in
//! any order. The signature is HMAC-SHA256(base64decode(key), "<sr as sent>\n<se>"). SDKs disagree on
//! how they encode `sr` (Node symmetric-key sends it raw, Python percent-encodes, Embedded C uses
//! lower-case escapes) but each signs exactly what it sends, so the literal value is tried first and
//! canonical encodings only as a fallback. All comparisons of secrets run in constant time.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted; real ones are about 200 bytes.
const MAX_TOKEN_LEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SasToken<'a> {
    /// `sr` exactly as sent (what was signed).
    pub sr_raw: &'a str,
    /// `sr` percent-decoded (what it names).
    pub sr: String,
    pub sig: Vec<u8>,
    pub se: u64,
    pub skn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SasError {
    #[error("malformed SAS token: {0}")]
    Malformed(&'static str),
    #[error("SAS token expired")]
    Expired,
    #[error("SAS token is for another resource")]
    WrongResource,
    #[error("SAS signature does not match")]
    BadSignature,
}

/// Parses a token (with or without the `SharedAccessSignature ` prefix). Never panics.
pub fn parse(value: &str) -> Result<SasToken<'_>, SasError> {
    if value.len() > MAX_TOKEN_LEN {
        return Err(SasError::Malformed("too long"));
    }
    let body = value.trim();
    let body = match body.get(..21) {
        Some(prefix) if prefix.eq_ignore_ascii_case("SharedAccessSignature") => {
            body[21..].trim_start()
        }
        _ => body,
    };
    let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
    for field in body.split('&').filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or(SasError::Malformed("field without '='"))?;
        let slot = match key {
            "sr" => &mut sr,
            "sig" => &mut sig,
            "se" => &mut se,
            "skn" => &mut skn,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(SasError::Malformed("repeated field"));
        }
    }
    let sr_raw = sr.ok_or(SasError::Malformed("no sr"))?;
    let decode = |v: &str| percent_decode_str(v).decode_utf8().map(|s| s.into_owned());
    let sig = decode(sig.ok_or(SasError::Malformed("no sig"))?)
        .map_err(|_| SasError::Malformed("sig"))?;
    let sig = BASE64
        .decode(sig.as_bytes())
        .map_err(|_| SasError::Malformed("sig is not base64"))?;
    let se =
        decode(se.ok_or(SasError::Malformed("no se"))?).map_err(|_| SasError::Malformed("se"))?;
    let se = se
        .parse()
        .map_err(|_| SasError::Malformed("se is not a number"))?;
    Ok(SasToken {
        sr_raw,
        sr: decode(sr_raw).map_err(|_| SasError::Malformed("sr"))?,
        sig,
        se,
        skn: skn
            .map(decode)
            .transpose()
            .map_err(|_| SasError::Malformed("skn"))?,
    })
}

impl SasToken<'_> {
    /// Checks expiry (`now` in Unix seconds), that the token names `resource` (case-insensitive),
    /// and the signature against each key in turn; returns the index of the key that signed it.
    pub fn verify(&self, resource: &str, keys: &[&[u8]], now: u64) -> Result<usize, SasError> {
        if self.se < now {
            return Err(SasError::Expired);
        }
        if !self.sr.eq_ignore_ascii_case(resource) {
            return Err(SasError::WrongResource);
        }
        let signed_forms = [
            self.sr_raw.to_string(),
            self.sr.clone(),
            encode(&self.sr),
            encode(&self.sr).to_ascii_lowercase(),
        ];
        for (index, key) in keys.iter().enumerate() {
            for form in signed_forms.iter() {
                let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(string_to_sign(form, self.se).as_bytes());
                if mac.verify_slice(&self.sig).is_ok() {
                    return Ok(index);
                }
            }
        }
        Err(SasError::BadSignature)
    }
}

fn string_to_sign(sr: &str, se: u64) -> String {
    format!("{sr}\n{se}")
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// An enrollment group's key for one device: base64(HMAC-SHA256(base64decode(groupKey), id)).
pub fn derive_device_key(
    group_key: &str,
    registration_id: &str,
) -> Result<String, base64::DecodeError> {
    let key = BASE64.decode(group_key)?;
    Ok(BASE64.encode(hmac(&key, registration_id.as_bytes())))
}

/// Signs a token for `resource` (as Node does: raw `sr`), for tests and the load generator.
pub fn sign(
    key: &str,
    resource: &str,
    expiry: u64,
    key_name: Option<&str>,
) -> Result<String, base64::DecodeError> {
    let key = BASE64.decode(key)?;
    let sig = BASE64.encode(hmac(&key, string_to_sign(resource, expiry).as_bytes()));
    let mut token = format!(
        "SharedAccessSignature sr={resource}&sig={}&se={expiry}",
        encode(&sig)
    );
    if let Some(name) = key_name {
        token.push_str(&format!("&skn={name}"));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESOURCE: &str = "0ne00000A0A/registrations/dev-1";
    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const NOW: u64 = 1_900_000_000;

    fn key_bytes(k: &str) -> Vec<u8> {
        BASE64.decode(k).unwrap()
    }

    #[test]
    fn group_key_derivation_matches_the_documented_vector() {
        let derived = derive_device_key(
            "8isrFI1sGsIlvvFSSFRiMfCNzv21fjbE/+ah/lSh3lF8e2YG1Te7w1KpZhJFFXJrqYKi9yegxkqIChbqOS9Egw==",
            "sn-007-888-abc-mac-a1-b2-c3-d4-e5-f6",
        )
        .unwrap();
        assert_eq!(derived, "Jsm0lyGpjaVYVP2g3FnmnmG9dI/9qU24wNoykUmermc=");
    }

    #[test]
    fn a_signed_token_verifies() {
        let token = sign(KEY, RESOURCE, NOW + 60, Some("registration")).unwrap();
        let parsed = parse(&token).unwrap();
        assert_eq!(parsed.skn.as_deref(), Some("registration"));
        assert_eq!(parsed.verify(RESOURCE, &[&key_bytes(KEY)], NOW), Ok(0));
    }

    #[test]
    fn fields_in_any_order_and_skn_optional() {
        let token = sign(KEY, RESOURCE, NOW + 60, None).unwrap();
        let body = token.strip_prefix("SharedAccessSignature ").unwrap();
        let mut fields: Vec<&str> = body.split('&').collect();
        fields.reverse();
        let reordered = format!("SharedAccessSignature {}", fields.join("&"));
        assert_eq!(
            parse(&reordered)
                .unwrap()
                .verify(RESOURCE, &[&key_bytes(KEY)], NOW),
            Ok(0)
        );
        assert_eq!(parse(body).unwrap().skn, None);
    }

    /// Python percent-encodes `sr` (upper-case escapes) and signs that; Embedded C uses lower case.
    #[test]
    fn encoded_resources_verify_over_what_was_signed() {
        for sr in [encode(RESOURCE), encode(RESOURCE).to_ascii_lowercase()] {
            let sig = BASE64.encode(hmac(
                &key_bytes(KEY),
                string_to_sign(&sr, NOW + 5).as_bytes(),
            ));
            let token = format!(
                "SharedAccessSignature sr={sr}&sig={}&se={}",
                encode(&sig),
                NOW + 5
            );
            let parsed = parse(&token).unwrap();
            assert!(parsed.sr.eq_ignore_ascii_case(RESOURCE));
            assert_eq!(
                parsed.verify(&RESOURCE.to_uppercase(), &[&key_bytes(KEY)], NOW),
                Ok(0)
            );
        }
    }

    #[test]
    fn the_secondary_key_is_tried_after_the_primary() {
        let secondary = "c2Vjb25kYXJ5LWtleS1zZWNvbmRhcnkta2V5LXNlY29uZA==";
        let token = sign(secondary, RESOURCE, NOW + 60, None).unwrap();
        let keys = [key_bytes(KEY), key_bytes(secondary)];
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        assert_eq!(parse(&token).unwrap().verify(RESOURCE, &keys, NOW), Ok(1));
    }

    #[test]
    fn refusals() {
        let token = sign(KEY, RESOURCE, NOW - 1, None).unwrap();
        assert_eq!(
            parse(&token)
                .unwrap()
                .verify(RESOURCE, &[&key_bytes(KEY)], NOW),
            Err(SasError::Expired)
        );
        let token = sign(KEY, RESOURCE, NOW + 60, None).unwrap();
        let other = "0ne00000A0A/registrations/dev-2";
        assert_eq!(
            parse(&token)
                .unwrap()
                .verify(other, &[&key_bytes(KEY)], NOW),
            Err(SasError::WrongResource)
        );
        let wrong = key_bytes("d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmc=");
        assert_eq!(
            parse(&token).unwrap().verify(RESOURCE, &[&wrong], NOW),
            Err(SasError::BadSignature)
        );
        // A signature with '+' kept literal (not turned into a space) still decodes.
        assert_eq!(
            parse("sr=a&sig=ab+/cQ==&se=1").unwrap().sig,
            BASE64.decode("ab+/cQ==").unwrap()
        );
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        for bad in [
            "",
            "SharedAccessSignature",
            "SharedAccessSignature sr=a&se=1",
            "sr=a&sig=!!!&se=1",
            "sr=a&sig=AAAA&se=soon",
            "sr=a&sr=b&sig=AAAA&se=1",
            "sr=%FF&sig=AAAA&se=1",
            "sig",
            "SharedAccessSignatureé",
            "ééééééééééééééééééééééé",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&"a".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }

    /// Random text and random mutations of a valid token: errors, never panics (the fuzz target in
    /// fuzz/ searches deeper).
    #[test]
    fn random_input_never_panics() {
        let valid = sign(KEY, RESOURCE, NOW + 60, Some("registration")).unwrap();
        let alphabet: Vec<char> = "sr=sig&se=skn%2F+/=0aZ é\n".chars().collect();
        for _ in 0..20_000 {
            let mut token: Vec<char> = valid.chars().collect();
            for _ in 0..(rand::random::<u8>() % 8) {
                let at = rand::random::<usize>() % token.len();
                token[at] = alphabet[rand::random::<usize>() % alphabet.len()];
            }
            let text: String = token.into_iter().collect();
            if let Ok(t) = parse(&text) {
                let _ = t.verify(RESOURCE, &[&key_bytes(KEY)], NOW);
            }
            let noise: String = (0..rand::random::<u8>())
                .map(|_| alphabet[rand::random::<usize>() % alphabet.len()])
                .collect();
            let _ = parse(&noise);
        }
    }
}
