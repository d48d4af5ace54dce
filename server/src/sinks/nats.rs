//! The NATS sink: each event published to `{subject}.{type}` with `Nats-Msg-Id` set to the
//! event ID. When a JetStream stream holds the subject, publishes wait for the stream's ack (and
//! the stream drops redeliveries within its duplicate window); otherwise core NATS, delivered once
//! the connection flushed.

use async_nats::jetstream;
use async_trait::async_trait;

use super::{DeliveryError, Sink, body_of, channel_of};
use crate::model::StoredEvent;

pub struct Nats {
    url: String,
    subject: String,
    connection: Option<Connection>,
}

struct Connection {
    client: async_nats::Client,
    /// Set when a stream holds the subject.
    jetstream: Option<jetstream::Context>,
}

impl Nats {
    pub fn new(url: &str, subject: &str) -> Nats {
        Nats {
            url: url.to_string(),
            subject: subject.to_string(),
            connection: None,
        }
    }

    async fn connect(&self) -> Result<Connection, DeliveryError> {
        let options = async_nats::ConnectOptions::new()
            .connection_timeout(std::time::Duration::from_secs(5))
            .name("onramp lifecycle events");
        let client = options
            .connect(self.url.as_str())
            .await
            .map_err(|e| format!("nats: cannot connect: {e}"))?;
        let context = jetstream::new(client.clone());
        let probe = format!("{}.enrollment.created", self.subject);
        let jetstream = match context.stream_by_subject(probe).await {
            Ok(stream) => {
                tracing::info!(subject = %self.subject, %stream,
                    "lifecycle events go through JetStream (acknowledged, de-duplicated)");
                Some(context)
            }
            Err(_) => None,
        };
        Ok(Connection { client, jetstream })
    }
}

#[async_trait]
impl Sink for Nats {
    async fn deliver(&mut self, events: &[StoredEvent]) -> Result<(), DeliveryError> {
        if self.connection.is_none() {
            self.connection = Some(self.connect().await?);
        }
        let connection = self.connection.as_ref().expect("connected above");
        let result = publish(connection, &self.subject, events).await;
        if result.is_err() {
            // Start afresh next time (and look for a stream again).
            self.connection = None;
        }
        result
    }
}

async fn publish(
    connection: &Connection,
    subject: &str,
    events: &[StoredEvent],
) -> Result<(), DeliveryError> {
    let headers = |event: &StoredEvent| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.event.id.as_str());
        headers
    };
    match &connection.jetstream {
        Some(context) => {
            let mut acks = Vec::with_capacity(events.len());
            for event in events {
                let ack = context
                    .publish_with_headers(
                        channel_of(subject, '.', event),
                        headers(event),
                        body_of(event).into(),
                    )
                    .await
                    .map_err(|e| format!("jetstream: {e}"))?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(|e| format!("jetstream ack: {e}"))?;
            }
        }
        None => {
            for event in events {
                connection
                    .client
                    .publish_with_headers(
                        channel_of(subject, '.', event),
                        headers(event),
                        body_of(event).into(),
                    )
                    .await
                    .map_err(|e| format!("nats: {e}"))?;
            }
            connection
                .client
                .flush()
                .await
                .map_err(|e| format!("nats flush: {e}"))?;
        }
    }
    Ok(())
}
