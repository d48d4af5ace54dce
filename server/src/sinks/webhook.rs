//! The webhook sink: one POST per event, its body signed with the sink's secret
//! (`X-Onramp-Signature: sha256=<hex HMAC-SHA256 of the body>`), delivered when the receiver
//! answers 2xx.

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{DeliveryError, Sink, body_of};
use crate::model::StoredEvent;

pub struct Webhook {
    client: reqwest::Client,
    url: String,
    secret: String,
}

impl Webhook {
    pub fn new(url: &str, secret: &str) -> Webhook {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(4))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Webhook {
            client,
            url: url.to_string(),
            secret: secret.to_string(),
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`: what a receiver recomputes.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The error and what caused it (`error sending request: … Connection refused`), without the
/// URL: it may carry a token in its query.
fn causes(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait]
impl Sink for Webhook {
    async fn deliver(&mut self, events: &[StoredEvent]) -> Result<(), DeliveryError> {
        for event in events {
            let body = body_of(event);
            let response = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .header("x-onramp-event-id", &event.event.id)
                .header("x-onramp-event-type", event.event.event_type.as_str())
                .header("x-onramp-signature", signature(&self.secret, &body))
                .body(body)
                .send()
                .await
                .map_err(|e| format!("webhook: {}", causes(e)))?;
            if !response.status().is_success() {
                return Err(format!("webhook answered {}", response.status()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
