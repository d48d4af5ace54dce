//! The Azure error body `{errorCode, trackingId, message, timestampUtc}` and the error codes Onramp
//! uses. errorCode = HTTP status × 1000 + subcode; clients derive the status from it (C# AMQP).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub error_code: i64,
    pub tracking_id: String,
    pub message: String,
    pub timestamp_utc: String,
}

impl ErrorBody {
    /// A fresh error body (new tracking ID, current time).
    pub fn new(error_code: i64, message: String) -> ErrorBody {
        ErrorBody {
            error_code,
            tracking_id: uuid::Uuid::new_v4().to_string(),
            message,
            timestamp_utc: super::timestamp(chrono::Utc::now()),
        }
    }
}

/// Error codes. Documented ones are marked; the rest follow IoT Hub's pattern (UNCONFIRMED for DPS;
/// chosen so status = code / 1000 always holds).
pub mod code {
    /// Malformed body, bad registration ID, mismatched IDs (IoT Hub's ArgumentInvalid).
    pub const BAD_REQUEST: i64 = 400_004;
    /// Documented: custom allocation webhook failed ("Custom allocation failed with status code: N").
    pub const CUSTOM_ALLOCATION_FAILED: i64 = 400_207;
    /// Documented (C SDK DPS_HUB_ERROR_NO_HUB): no hub could be chosen.
    pub const NO_HUB: i64 = 400_208;
    /// The register request's `csr` is refused: malformed, a bad signature, a key type or subject
    /// its credential policy does not allow, or no policy (UNCONFIRMED: DPS's preview has no
    /// documented code; the message says which).
    pub const CSR_REFUSED: i64 = 400_209;
    /// Documented: authentication failed (bad, expired or missing SAS; unknown device).
    pub const UNAUTHORIZED: i64 = 401_002;
    /// The ID scope names no instance here.
    pub const UNKNOWN_ID_SCOPE: i64 = 404_001;
    /// Documented: no enrollment for this registration ID.
    pub const ENROLLMENT_NOT_FOUND: i64 = 404_201;
    /// No registration record or operation for this ID (service API uses 404202 too).
    pub const NOT_FOUND: i64 = 404_202;
    /// Onramp's own resources (linked hubs, access policies) that do not exist.
    pub const RESOURCE_NOT_FOUND: i64 = 404_004;
    pub const CONFLICT: i64 = 409_001;
    pub const PRECONDITION_FAILED: i64 = 412_001;
    pub const PAYLOAD_TOO_LARGE: i64 = 413_001;
    pub const THROTTLED: i64 = 429_001;
    pub const INTERNAL: i64 = 500_001;
    /// The database cannot be reached for now; the device retries after `Retry-After`.
    pub const SERVICE_UNAVAILABLE: i64 = 503_001;
}
