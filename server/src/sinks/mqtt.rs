//! The MQTT sink: each event published with QoS 1 to `{topic}/{type}`, delivered when the broker
//! acknowledged every one (PUBACK). A connection lasts one batch: an idle sink holds none.

use std::time::Duration;

use async_trait::async_trait;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::{DeliveryError, Sink, body_of, channel_of};
use crate::model::StoredEvent;

pub struct Mqtt {
    url: String,
    topic: String,
}

impl Mqtt {
    pub fn new(url: &str, topic: &str) -> Mqtt {
        Mqtt {
            url: url.to_string(),
            topic: topic.to_string(),
        }
    }
}

/// The host and port of an `mqtt://host[:port]` URL (1883 by default).
pub fn broker_of(url: &str) -> Result<(String, u16), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if parsed.scheme() != "mqtt" {
        return Err("the URL must start with mqtt://".into());
    }
    let host = parsed.host_str().ok_or("the URL has no host")?;
    Ok((
        host.trim_matches(['[', ']']).to_string(),
        parsed.port().unwrap_or(1883),
    ))
}

#[async_trait]
impl Sink for Mqtt {
    async fn deliver(&mut self, events: &[StoredEvent]) -> Result<(), DeliveryError> {
        let (host, port) = broker_of(&self.url)?;
        let client_id = format!("onramp-events-{}", uuid::Uuid::new_v4().simple());
        let mut options = MqttOptions::new(client_id, host, port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_clean_session(true);
        // Room for the whole batch, so every publish queues before the event loop runs.
        let (client, mut event_loop) = AsyncClient::new(options, events.len() + 1);
        for event in events {
            client
                .publish(
                    channel_of(&self.topic, '/', event),
                    QoS::AtLeastOnce,
                    false,
                    body_of(event),
                )
                .await
                .map_err(|e| format!("mqtt: {e}"))?;
        }
        let mut acked = 0;
        while acked < events.len() {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => return Err(format!("mqtt: {e}")),
            }
        }
        let _ = client.disconnect().await;
        // Lets the DISCONNECT leave; the broker drops the session either way.
        let _ = tokio::time::timeout(Duration::from_millis(100), event_loop.poll()).await;
        Ok(())
    }
}
