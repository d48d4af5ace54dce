//! What the diagnostics bus carries and the store keeps: registration attempts, built-in hub
//! activity, and the dashboard's aggregates.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AttestationKind, EnrollmentRef, RegistrationStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    Https,
    Mqtt,
    MqttWs,
    Amqp,
    AmqpWs,
    HubMqtt,
}

impl Protocol {
    /// The name on the wire and in the console (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Https => "https",
            Protocol::Mqtt => "mqtt",
            Protocol::MqttWs => "mqtt-ws",
            Protocol::Amqp => "amqp",
            Protocol::AmqpWs => "amqp-ws",
            Protocol::HubMqtt => "hub-mqtt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationEvent {
    pub at: DateTime<Utc>,
    pub tracking_id: String,
    pub registration_id: String,
    pub protocol: Protocol,
    pub attestation: Option<AttestationKind>,
    pub enrollment: Option<EnrollmentRef>,
    pub hub: Option<String>,
    pub status: RegistrationStatus,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
    pub latency_ms: u64,
    /// The test-mode fault this attempt met (`FaultInjection::describe`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// What happened between a device and a built-in hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum HubActivity {
    Connected,
    /// CONNECT refused; the reason is for operators (the device only hears "not authorized").
    Refused {
        reason: String,
    },
    Disconnected,
    /// A newer connection of the same device took over.
    Replaced,
    ReportedPatched {
        version: i64,
    },
    DesiredPatched {
        version: i64,
        delivered: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubEvent {
    pub at: DateTime<Utc>,
    pub hub: String,
    pub device_id: String,
    pub protocol: Protocol,
    #[serde(flatten)]
    pub activity: HubActivity,
}

impl HubEvent {
    pub fn new(hub: &str, device_id: &str, activity: HubActivity) -> HubEvent {
        HubEvent {
            at: Utc::now(),
            hub: hub.to_string(),
            device_id: device_id.to_string(),
            protocol: Protocol::HubMqtt,
            activity,
        }
    }
}

/// One minute's attempts with one final status (dashboard chart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteCount {
    /// Minutes since the Unix epoch.
    pub minute: i64,
    pub status: RegistrationStatus,
    pub count: u64,
}

/// A failed or refused attempt as the store keeps it (dashboard's latest failures).
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedFailure {
    pub at: DateTime<Utc>,
    pub registration_id: String,
    pub protocol: String,
    pub status: RegistrationStatus,
    pub error_code: Option<i64>,
    pub error_message: Option<String>,
}
