//! Delivers lifecycle events from the outbox (`lifecycle_events`) to the configured sinks: a
//! task per sink reads the events after the sink's cursor, delivers them in order and then moves
//! the cursor. Delivery is at least once: a crash between a delivery and the cursor's move sends
//! the batch again, and consumers de-duplicate on the event ID. A failing sink retries with
//! backoff and holds back no other sink. On a shared database a lease lets one instance at a time
//! deliver each sink; a new instance takes over when the holder's lease runs out.

mod mqtt;
mod nats;
mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::model::{EventSink, SinkTarget, StoredEvent};
use crate::store::{Store, StoreError};

/// Events sent per delivery round (and per cursor write).
const BATCH: u32 = 200;
/// How often an idle sink looks for new events: the delivery latency when nothing else is due.
const POLL: Duration = Duration::from_millis(200);
/// How often the configured sinks are re-read (new, changed, disabled or removed ones).
const RECONCILE: Duration = Duration::from_secs(1);
/// A lease lasts this long and is renewed a third of the way in: after a crash, another instance
/// (or the same one restarted) takes the sink over within this time.
const LEASE: Duration = Duration::from_secs(15);
/// One delivery round may take this long before it counts as failed; well within a lease, so a
/// slow sink never has two instances delivering to it.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a sink says when a delivery failed; never holds a secret.
pub type DeliveryError = String;

/// One kind of sink. A delivery succeeds only when the sink has taken every event of the batch
/// (webhook 2xx, JetStream ack or core NATS flush, MQTT PUBACK).
#[async_trait]
trait Sink: Send {
    async fn deliver(&mut self, events: &[StoredEvent]) -> Result<(), DeliveryError>;
}

fn connect(target: &SinkTarget) -> Box<dyn Sink> {
    match target {
        SinkTarget::Webhook { url, secret } => Box::new(webhook::Webhook::new(url, secret)),
        SinkTarget::Nats { url, subject } => Box::new(nats::Nats::new(url, subject)),
        SinkTarget::Mqtt { url, topic } => Box::new(mqtt::Mqtt::new(url, topic)),
    }
}

/// Runs the sinks' delivery tasks until `shutdown`, starting and stopping them as the sink list
/// changes.
pub async fn run(store: Arc<dyn Store>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let owner = uuid::Uuid::new_v4().to_string();
    let mut running: HashMap<String, (EventSink, CancellationToken)> = HashMap::new();
    loop {
        match store.list_event_sinks().await {
            Ok(sinks) => {
                let wanted: HashMap<String, EventSink> = sinks
                    .into_iter()
                    .filter(|s| s.enabled)
                    .map(|s| (s.name.clone(), s))
                    .collect();
                running.retain(|name, (sink, stop)| {
                    let keep = wanted.get(name).is_some_and(|w| w.target == sink.target);
                    if !keep {
                        stop.cancel();
                    }
                    keep
                });
                for (name, sink) in wanted {
                    if running.contains_key(&name) {
                        continue;
                    }
                    let stop = shutdown.child_token();
                    let delivery = Delivery {
                        store: store.clone(),
                        metrics: metrics.clone(),
                        owner: owner.clone(),
                        name: name.clone(),
                    };
                    tokio::spawn(delivery.run(connect(&sink.target), stop.clone()));
                    running.insert(name, (sink, stop));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the event sinks"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONCILE) => {}
        }
    }
}

/// One sink's delivery loop.
struct Delivery {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    owner: String,
    name: String,
}

impl Delivery {
    async fn run(self, mut sink: Box<dyn Sink>, stop: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        // The cursor while this instance holds the lease, and when to renew it.
        let mut held: Option<(i64, tokio::time::Instant)> = None;
        loop {
            let pause = match self.round(sink.as_mut(), &mut held).await {
                Ok(Round::Delivered) => {
                    backoff = FIRST_BACKOFF;
                    Duration::ZERO
                }
                Ok(Round::Idle) => POLL,
                Ok(Round::Leased) => LEASE / 3,
                Err(e) => {
                    tracing::warn!(sink = %self.name, error = %e, retry_in = ?backoff,
                        "lifecycle events not delivered");
                    self.metrics.event_delivery_failed(&self.name);
                    if let Err(e) = self
                        .store
                        .event_sink_failed(&self.name, &e, Utc::now())
                        .await
                    {
                        tracing::warn!(sink = %self.name, error = %e, "sink failure not recorded");
                    }
                    let pause = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    pause
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Renews the lease when due, then delivers the next batch.
    async fn round(
        &self,
        sink: &mut dyn Sink,
        held: &mut Option<(i64, tokio::time::Instant)>,
    ) -> Result<Round, DeliveryError> {
        let now = tokio::time::Instant::now();
        if held.is_none_or(|(_, renew_at)| renew_at <= now) {
            let until = Utc::now() + LEASE;
            match self
                .store
                .lease_event_sink(&self.name, &self.owner, Utc::now(), until)
                .await
                .map_err(store_error)?
            {
                Some(cursor) => *held = Some((cursor, now + LEASE / 3)),
                None => {
                    *held = None;
                    return Ok(Round::Leased);
                }
            }
        }
        let Some((cursor, renew_at)) = *held else {
            return Ok(Round::Leased);
        };
        let events = self
            .store
            .events_after(cursor, BATCH)
            .await
            .map_err(store_error)?;
        let Some(last) = events.last().map(|e| e.seq) else {
            return Ok(Round::Idle);
        };
        tokio::time::timeout(DELIVERY_TIMEOUT, sink.deliver(&events))
            .await
            .map_err(|_| format!("no answer within {DELIVERY_TIMEOUT:?}"))??;
        self.metrics.events_delivered(&self.name, events.len());
        self.store
            .event_sink_delivered(&self.name, last, Utc::now())
            .await
            .map_err(store_error)?;
        *held = Some((last, renew_at));
        Ok(Round::Delivered)
    }
}

enum Round {
    Delivered,
    Idle,
    /// Another instance delivers this sink now.
    Leased,
}

fn store_error(e: StoreError) -> DeliveryError {
    format!("store: {e}")
}

/// The subject or topic an event goes to: the sink's base and the event type, joined by the
/// protocol's separator (`onramp.events.enrollment.created`, `onramp/events/enrollment.created`).
fn channel_of(base: &str, separator: char, event: &StoredEvent) -> String {
    format!("{base}{separator}{}", event.event.event_type.as_str())
}

/// The JSON body of an event, as every sink sends it.
fn body_of(event: &StoredEvent) -> Vec<u8> {
    event.to_json().to_string().into_bytes()
}
