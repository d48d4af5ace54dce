//! Instances on one PostgreSQL follow each other through the database (LISTEN/NOTIFY on one
//! channel, no other infrastructure): a change made through one instance drops every instance's
//! caches at once; each instance's registration and hub events reach the live log of every
//! console; a built-in hub device connecting through one instance closes its older session on
//! another, and a desired-properties patch reaches the device wherever it is connected. SQLite
//! serves one instance, so there nothing is sent or followed.
//!
//! Notifications are best effort, as the live log is: one lost while a listener reconnects costs
//! a live-log line, or a cache that lives out its short TTL (`provisioner::SNAPSHOT_TTL`).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::diagnostics::{DiagnosticsBus, HubActivity, HubEvent, RegistrationEvent};
use crate::store::Store;

/// PostgreSQL limits a payload to 8,000 bytes; a batch of events stays below this.
const MAX_PAYLOAD: usize = 7_000;

/// What one instance tells the others. Instances of other deployments on the same database
/// server (another schema) share the channel, so every message names its ID scope.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    scope: String,
    from: String,
    #[serde(flatten)]
    signal: Signal,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "signal")]
enum Signal {
    /// Enrollments, groups, hubs, CAs or settings changed: drop what is cached.
    Changed,
    Events {
        #[serde(default)]
        registrations: Vec<RegistrationEvent>,
        #[serde(default)]
        hub: Vec<HubEvent>,
    },
    /// A desired-properties patch the sender had no session of the device to deliver to.
    #[serde(rename_all = "camelCase")]
    Desired {
        hub: String,
        device_id: String,
        version: i64,
        patch: Map<String, Value>,
    },
}

/// What an instance does with what the others send.
pub trait Follower: Send + Sync {
    /// Enrollments, groups, hubs, CAs or settings changed through another instance.
    fn changed(&self);
    /// A device connected to a built-in hub through another instance at `at`.
    fn connected_elsewhere(&self, hub: &str, device_id: &str, at: DateTime<Utc>);
    /// A desired-properties patch made through another instance, which could not deliver it.
    fn desired_patched(&self, hub: &str, device_id: &str, version: i64, patch: &Map<String, Value>);
}

/// This instance's end of the channel.
pub struct Peers {
    store: Arc<dyn Store>,
    scope: String,
    /// Random per process: an instance ignores what it sent itself.
    me: String,
    /// True once this instance listens (what others send from then on reaches it).
    following: tokio::sync::watch::Sender<bool>,
}

impl Peers {
    pub fn new(store: Arc<dyn Store>, scope: &str) -> Arc<Peers> {
        Arc::new(Peers {
            store,
            scope: scope.to_string(),
            me: uuid::Uuid::new_v4().simple().to_string(),
            following: tokio::sync::watch::Sender::new(false),
        })
    }

    /// Returns once this instance follows the others (never on SQLite, which has none).
    pub async fn following(&self) {
        let mut following = self.following.subscribe();
        let _ = following.wait_for(|listening| *listening).await;
    }

    /// Tells the other instances that what they cache changed (after this instance's change).
    pub fn changed(self: &Arc<Self>) {
        let peers = self.clone();
        tokio::spawn(async move { peers.send(Signal::Changed).await });
    }

    /// Offers a desired-properties patch this instance could not deliver to the other instances,
    /// in case the device is connected to one of them.
    pub fn desired_patched(
        self: &Arc<Self>,
        hub: &str,
        device_id: &str,
        version: i64,
        patch: &Map<String, Value>,
    ) {
        if !self.store.has_peers() {
            return;
        }
        let peers = self.clone();
        let signal = Signal::Desired {
            hub: hub.to_string(),
            device_id: device_id.to_string(),
            version,
            patch: patch.clone(),
        };
        tokio::spawn(async move { peers.send(signal).await });
    }

    async fn send(&self, signal: Signal) {
        let message = Message {
            scope: self.scope.clone(),
            from: self.me.clone(),
            signal,
        };
        let payload = serde_json::to_string(&message).expect("messages serialize");
        if let Err(e) = self.store.notify_peers(&payload).await {
            tracing::debug!(error = %e, "could not notify the other instances");
        }
    }

    /// Runs until `shutdown`: forwards this instance's events to the others (in batches, so a
    /// busy instance sends a notification per batch, not per registration) and applies what the
    /// others send: their events onto `bus`, the rest through `follower`. Returns at once where
    /// the store has no peers (SQLite).
    pub async fn run(
        self: Arc<Self>,
        bus: DiagnosticsBus,
        follower: Arc<dyn Follower>,
        shutdown: CancellationToken,
    ) {
        let incoming = match self.store.follow_peers().await {
            Ok(Some(incoming)) => {
                self.following.send_replace(true);
                incoming
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "not following the other instances");
                return;
            }
        };
        let forward = self.clone().forward(bus.clone(), shutdown.clone());
        let apply = self.apply(incoming, bus, follower, shutdown);
        tokio::join!(forward, apply);
    }

    async fn forward(self: Arc<Self>, bus: DiagnosticsBus, shutdown: CancellationToken) {
        let (mut registrations, mut hub) = (bus.subscribe(), bus.subscribe_hub());
        loop {
            let mut batch = Batch::default();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                event = registrations.recv() => batch.add_registration(event.ok()),
                event = hub.recv() => batch.add_hub(event.ok()),
            }
            // Whatever queued meanwhile goes in the same notification.
            while batch.has_room() {
                let (registration, hub_event) =
                    (registrations.try_recv().ok(), hub.try_recv().ok());
                if registration.is_none() && hub_event.is_none() {
                    break;
                }
                batch.add_registration(registration);
                batch.add_hub(hub_event);
            }
            if !batch.is_empty() {
                self.send(batch.into_signal()).await;
            }
        }
    }

    async fn apply(
        &self,
        mut incoming: tokio::sync::mpsc::Receiver<String>,
        bus: DiagnosticsBus,
        follower: Arc<dyn Follower>,
        shutdown: CancellationToken,
    ) {
        loop {
            let payload = tokio::select! {
                _ = shutdown.cancelled() => return,
                payload = incoming.recv() => match payload {
                    Some(payload) => payload,
                    None => return,
                },
            };
            let Ok(message) = serde_json::from_str::<Message>(&payload) else {
                tracing::debug!("ignored a malformed notification from another instance");
                continue;
            };
            if message.scope != self.scope || message.from == self.me {
                continue;
            }
            match message.signal {
                Signal::Changed => follower.changed(),
                Signal::Events { registrations, hub } => {
                    for event in registrations {
                        bus.emit_from_peer(event);
                    }
                    for event in hub {
                        if event.activity == HubActivity::Connected {
                            follower.connected_elsewhere(&event.hub, &event.device_id, event.at);
                        }
                        bus.emit_hub_from_peer(event);
                    }
                }
                Signal::Desired {
                    hub,
                    device_id,
                    version,
                    patch,
                } => follower.desired_patched(&hub, &device_id, version, &patch),
            }
        }
    }
}

/// Events on their way to the other instances, kept under `MAX_PAYLOAD`.
#[derive(Default)]
struct Batch {
    registrations: Vec<RegistrationEvent>,
    hub: Vec<HubEvent>,
    bytes: usize,
}

impl Batch {
    fn add_registration(&mut self, event: Option<Arc<RegistrationEvent>>) {
        if let Some(event) = event {
            self.bytes += estimate(&*event);
            self.registrations.push((*event).clone());
        }
    }

    fn add_hub(&mut self, event: Option<Arc<HubEvent>>) {
        if let Some(event) = event {
            self.bytes += estimate(&*event);
            self.hub.push((*event).clone());
        }
    }

    fn has_room(&self) -> bool {
        // Room for one more of the largest events (an error message is at most a few hundred bytes).
        self.bytes + 1_000 < MAX_PAYLOAD
    }

    fn is_empty(&self) -> bool {
        self.registrations.is_empty() && self.hub.is_empty()
    }

    fn into_signal(self) -> Signal {
        Signal::Events {
            registrations: self.registrations,
            hub: self.hub,
        }
    }
}

fn estimate<T: Serialize>(event: &T) -> usize {
    serde_json::to_vec(event).map_or(MAX_PAYLOAD, |json| json.len())
}
