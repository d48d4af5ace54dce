//! Linked hubs and the identities and twins of the built-in hub.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Etag;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectorKind {
    /// Identities and twins in Onramp's own store; devices connect to Onramp itself.
    BuiltIn,
}

impl ConnectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::BuiltIn => "builtIn",
        }
    }

    pub fn parse(s: &str) -> Option<ConnectorKind> {
        (s == "builtIn").then_some(ConnectorKind::BuiltIn)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkedHub {
    pub host_name: String,
    pub connector: ConnectorKind,
    /// Region for geo/latency allocation.
    pub region: Option<String>,
    /// 1..=1000, like Azure.
    pub allocation_weight: u32,
    /// False: only used when an enrollment names this hub.
    pub apply_allocation_policy: bool,
    /// Connector settings (connection strings and the like; secrets never leave the store).
    pub settings: Value,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum DeviceAuth {
    Sas {
        #[serde(rename = "primaryKey")]
        primary_key: String,
        #[serde(rename = "secondaryKey")]
        secondary_key: String,
    },
    SelfSigned {
        #[serde(rename = "primaryThumbprint")]
        primary_thumbprint: String,
        #[serde(rename = "secondaryThumbprint")]
        secondary_thumbprint: Option<String>,
    },
    CertificateAuthority,
}

/// One side of a twin: its properties and a version that grows with every change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TwinProperties {
    pub properties: Map<String, Value>,
    pub version: i64,
}

/// A device identity on a built-in hub, with its twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubDevice {
    pub hub: String,
    pub device_id: String,
    pub enabled: bool,
    pub auth: DeviceAuth,
    pub iot_edge: bool,
    pub generation_id: String,
    pub tags: Map<String, Value>,
    pub desired: TwinProperties,
    pub reported: TwinProperties,
    pub etag: Etag,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}

impl HubDevice {
    /// A new identity: enabled, with an empty twin and a generation from its creation time (a
    /// device deleted and created again gets a new one, as on IoT Hub).
    pub fn new(hub: &str, device_id: &str, auth: DeviceAuth, now: DateTime<Utc>) -> HubDevice {
        HubDevice {
            hub: hub.to_string(),
            device_id: device_id.to_string(),
            enabled: true,
            auth,
            iot_edge: false,
            generation_id: now.timestamp_micros().to_string(),
            tags: Map::new(),
            desired: TwinProperties::default(),
            reported: TwinProperties::default(),
            etag: Etag::new(),
            created: now,
            updated: now,
        }
    }
}
