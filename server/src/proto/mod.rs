//! Wire types of the Azure DPS APIs (serde), kept apart from the domain: what the official SDKs put
//! on the wire and what they need back (docs/ARCHITECTURE.md, "The one registration path").

pub mod device;
pub mod error;
pub mod service;
pub mod twin;

use chrono::{DateTime, SecondsFormat, Utc};

/// Azure writes timestamps with 7 fractional digits and `Z`; clients parse any RFC 3339, so the
/// extra digit is cosmetic but kept for fidelity.
pub fn timestamp(at: DateTime<Utc>) -> String {
    let micros = at.to_rfc3339_opts(SecondsFormat::Micros, true);
    format!("{}0Z", micros.trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_have_seven_fractional_digits() {
        let at = chrono::DateTime::parse_from_rfc3339("2022-08-31T22:02:50.516335Z")
            .unwrap()
            .to_utc();
        assert_eq!(super::timestamp(at), "2022-08-31T22:02:50.5163350Z");
    }
}
