//! The device API: the register request (DeviceRegistration) and the RegistrationOperationStatus /
//! DeviceRegistrationResult replies.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The register body. Every field is optional: C# over MQTT/AMQP sends nothing at all, Python sends
/// `"payload": null`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistration {
    #[serde(default)]
    pub registration_id: Option<String>,
    #[serde(default)]
    pub payload: Option<Value>,
    #[serde(default)]
    pub tpm: Option<Value>,
    #[serde(default)]
    pub csr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationOperationStatus {
    pub operation_id: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registration_state: Option<DeviceRegistrationResult>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceRegistrationResult {
    pub registration_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_date_time_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned_hub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substatus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_updated_date_time_utc: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symmetric_key: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub x509: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<Value>,
    /// The certificate issued for the request's `csr`: base64 DER, leaf first, up to the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_certificate_chain: Option<Vec<String>>,
}
