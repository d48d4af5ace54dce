//! Plain data: enrollments, groups, linked hubs, registration records and operations, access
//! policies, CA certificates, credential policies and issued certificates, test-mode faults,
//! built-in hub identities, console users, the audit trail, the diagnostics events, and the
//! lifecycle events with their sinks. No I/O and nothing from the rest of the crate: every layer
//! above shares these types (docs/ARCHITECTURE.md, "Layers").

pub mod credentials;
pub mod enrollment;
pub mod event;
pub mod fault;
pub mod hub;
pub mod instance;
pub mod lifecycle;
pub mod registration;
pub mod security;

pub use credentials::*;
pub use enrollment::*;
pub use event::*;
pub use fault::*;
pub use hub::*;
pub use instance::*;
pub use lifecycle::*;
pub use registration::*;
pub use security::*;

use serde::{Deserialize, Serialize};

/// An optimistic-concurrency tag, sent on the wire in quotes like Azure's (`"\"<uuid>\""`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Etag(pub String);

impl Etag {
    pub fn new() -> Etag {
        Etag(uuid::Uuid::new_v4().to_string())
    }

    /// Reads an `If-Match`/etag value whether or not the client kept the quotes.
    pub fn parse(value: &str) -> Etag {
        Etag(value.trim().trim_matches('"').to_string())
    }

    pub fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }
}

impl Default for Etag {
    fn default() -> Self {
        Etag::new()
    }
}

/// The precondition of a write: `If-Match` absent, `*`, or one etag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// Create or replace, whatever is stored.
    Any,
    /// Only if no record exists (create; a bulk `create` or `If-None-Match: *`).
    Absent,
    /// Only if a record exists (`If-Match: *`).
    Exists,
    /// Only if the stored record has this etag.
    Etag(Etag),
}

impl IfMatch {
    /// `*` means "if it exists", quoted or not: the IoT Hub service SDK sends `"*"`.
    pub fn from_header(value: Option<&str>) -> IfMatch {
        match value.map(str::trim) {
            None | Some("") => IfMatch::Any,
            Some("*" | "\"*\"") => IfMatch::Exists,
            Some(tag) => IfMatch::Etag(Etag::parse(tag)),
        }
    }
}

/// A stored base64 key's bytes (keys are validated when stored; a bad one matches nothing).
pub fn decode_key(key: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_default()
}

/// A symmetric key as Azure accepts it: base64 of 16 to 64 bytes.
pub fn check_symmetric_key(key: &str) -> Result<(), &'static str> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| "is not base64")?;
    match (16..=64).contains(&bytes.len()) {
        true => Ok(()),
        false => Err("must be 16 to 64 bytes"),
    }
}

/// A random base64 key of `len` bytes, as Azure makes them.
pub fn random_key(len: usize) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Registration IDs, group IDs and hub host names are case-insensitive: the store keys them in
/// lower case and keeps the spelling the operator chose.
pub fn key_of(id: &str) -> String {
    id.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_read_with_or_without_quotes() {
        let tag = Etag("abc".into());
        assert_eq!(Etag::parse(&tag.quoted()), tag);
        assert_eq!(Etag::parse("abc"), tag);
        assert_eq!(IfMatch::from_header(Some("*")), IfMatch::Exists);
        assert_eq!(IfMatch::from_header(Some("\"*\"")), IfMatch::Exists);
        assert_eq!(IfMatch::from_header(None), IfMatch::Any);
        assert_eq!(IfMatch::from_header(Some("\"abc\"")), IfMatch::Etag(tag));
    }
}
