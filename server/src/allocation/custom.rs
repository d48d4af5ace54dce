//! Custom allocation: POST the Azure AllocationRequest to the enrollment's webhook and honour its
//! AllocationResponse (`iotHubHostName`, `initialTwin`, `payload`). Bounded by a timeout; any failure
//! ends the registration `failed` with 400207, as on Azure.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::model::InitialTwin;

/// Largest webhook answer read (the device API's own limit).
const MAX_RESPONSE_BYTES: usize = 96 * 1024;

#[derive(Clone)]
pub struct Webhook {
    client: reqwest::Client,
    timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub hub: String,
    pub initial_twin: Option<InitialTwin>,
    pub payload: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("Custom allocation failed with status code: {0}")]
    Status(u16),
    #[error("Custom allocation failed: the webhook did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Custom allocation failed: the webhook is unreachable ({0})")]
    Unreachable(String),
    #[error("Custom allocation failed: the webhook's answer is invalid ({0})")]
    BadResponse(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllocationResponse {
    iot_hub_host_name: Option<String>,
    initial_twin: Option<WireTwin>,
    payload: Option<Value>,
}

#[derive(Deserialize)]
struct WireTwin {
    #[serde(default)]
    tags: Option<Map<String, Value>>,
    #[serde(default)]
    properties: Option<WireProperties>,
}

#[derive(Deserialize)]
struct WireProperties {
    #[serde(default)]
    desired: Option<Map<String, Value>>,
}

impl Webhook {
    pub fn new(timeout: Duration) -> Webhook {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("onramp/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("webhook client");
        Webhook { client, timeout }
    }

    /// Sends `request` (the AllocationRequest JSON) and reads the chosen hub.
    pub async fn allocate(&self, url: &str, request: &Value) -> Result<Allocation, WebhookError> {
        let response = self
            .client
            .post(url)
            .json(request)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    WebhookError::Timeout(self.timeout)
                } else {
                    WebhookError::Unreachable(without_url(&e))
                }
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(WebhookError::Status(status.as_u16()));
        }
        let body = read_limited(response).await?;
        let answer: AllocationResponse =
            serde_json::from_slice(&body).map_err(|e| WebhookError::BadResponse(e.to_string()))?;
        let hub = answer
            .iot_hub_host_name
            .filter(|h| !h.is_empty())
            .ok_or_else(|| WebhookError::BadResponse("no iotHubHostName".into()))?;
        let initial_twin = answer.initial_twin.map(|t| InitialTwin {
            tags: t.tags.unwrap_or_default(),
            desired: t.properties.and_then(|p| p.desired).unwrap_or_default(),
        });
        Ok(Allocation {
            hub,
            initial_twin,
            payload: answer.payload,
        })
    }
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, WebhookError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| WebhookError::Unreachable(without_url(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(WebhookError::BadResponse("answer too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Webhook URLs carry keys (`?code=...`): keep them out of messages and logs.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<webhook>");
    }
    text
}
