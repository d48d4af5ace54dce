//! Test mode for device makers: faults an operator sets on one enrollment or group so that a
//! firmware team can exercise its device's retry code against a real endpoint. Nothing is
//! injected unless an operator sets it, each change is audited, and every registration it
//! touches says so in its diagnostics event.

use serde::{Deserialize, Serialize};

/// What the next `remaining` registrations through an enrollment or group get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultInjection {
    /// How many more registrations it applies to; at 0 it is spent.
    pub remaining: u32,
    /// Refuse them with this Azure error code (the HTTP status is code / 1000): 429001, 503001,
    /// 401002, ... Nothing is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    /// The `Retry-After` of an injected 429 or 5xx (default: the service's own, 3 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u32>,
    /// Wait this long before answering.
    #[serde(default)]
    pub latency_ms: u32,
    /// Register, then close the connection instead of sending the reply.
    #[serde(default)]
    pub drop_connection: bool,
}

impl FaultInjection {
    /// One line for diagnostics and the console: what was injected and how many are left.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(code) = self.error_code {
            parts.push(format!("error {code}"));
        }
        if self.latency_ms > 0 {
            parts.push(format!("{} ms latency", self.latency_ms));
        }
        if self.drop_connection {
            parts.push("connection dropped before the reply".to_string());
        }
        format!(
            "test mode: injected {} ({} left)",
            parts.join(", "),
            self.remaining
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_effect() {
        let fault = FaultInjection {
            remaining: 2,
            error_code: Some(503001),
            retry_after_seconds: None,
            latency_ms: 250,
            drop_connection: false,
        };
        assert_eq!(
            fault.describe(),
            "test mode: injected error 503001, 250 ms latency (2 left)"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let parsed = serde_json::from_str::<FaultInjection>(r#"{"remaining":1,"errorcode":1}"#);
        assert!(parsed.is_err());
    }
}
