//! Registration events: every attempt, over any protocol, becomes one `RegistrationEvent` on one bus.
//! The live log, the metrics and the audit trail all subscribe to it (ARCHITECTURE.md invariant 5).
//! The built-in hubs' device activity (connections, refusals, twin changes) travels beside them as
//! `HubEvent`s, with protocol `hub-mqtt`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::domain::{AttestationKind, EnrollmentRef, RegistrationStatus};

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

/// A broadcast of events. Slow subscribers lose the oldest events (and are told how many) rather
/// than slowing registrations down.
#[derive(Clone)]
pub struct DiagnosticsBus {
    sender: broadcast::Sender<Arc<RegistrationEvent>>,
    hub: broadcast::Sender<Arc<HubEvent>>,
}

impl DiagnosticsBus {
    pub fn new(capacity: usize) -> DiagnosticsBus {
        let (sender, _) = broadcast::channel(capacity);
        let (hub, _) = broadcast::channel(capacity);
        DiagnosticsBus { sender, hub }
    }

    /// Publishes a hub event; returns how many subscribers will see it.
    pub fn emit_hub(&self, event: HubEvent) -> usize {
        self.hub.send(Arc::new(event)).unwrap_or(0)
    }

    pub fn subscribe_hub(&self) -> broadcast::Receiver<Arc<HubEvent>> {
        self.hub.subscribe()
    }

    /// Publishes an event; returns how many subscribers will see it.
    pub fn emit(&self, event: RegistrationEvent) -> usize {
        self.sender.send(Arc::new(event)).unwrap_or(0)
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RegistrationEvent>> {
        self.sender.subscribe()
    }
}

impl Default for DiagnosticsBus {
    fn default() -> Self {
        DiagnosticsBus::new(4096)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> RegistrationEvent {
        RegistrationEvent {
            at: Utc::now(),
            tracking_id: uuid::Uuid::new_v4().to_string(),
            registration_id: id.into(),
            protocol: Protocol::Https,
            attestation: Some(AttestationKind::SymmetricKey),
            enrollment: Some(EnrollmentRef::Individual(id.into())),
            hub: Some("hub.localhost".into()),
            status: RegistrationStatus::Assigned,
            error_code: None,
            error_message: None,
            latency_ms: 3,
        }
    }

    #[tokio::test]
    async fn every_subscriber_sees_every_event() {
        let bus = DiagnosticsBus::new(8);
        let mut a = bus.subscribe();
        let mut b = bus.subscribe();
        assert_eq!(bus.emit(event("dev-1")), 2);
        assert_eq!(a.recv().await.unwrap().registration_id, "dev-1");
        assert_eq!(b.recv().await.unwrap().registration_id, "dev-1");
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_old_events_not_the_bus() {
        let bus = DiagnosticsBus::new(2);
        let mut slow = bus.subscribe();
        for i in 0..5 {
            bus.emit(event(&format!("dev-{i}")));
        }
        assert!(matches!(
            slow.recv().await,
            Err(broadcast::error::RecvError::Lagged(3))
        ));
        assert_eq!(slow.recv().await.unwrap().registration_id, "dev-3");
    }

    #[test]
    fn emitting_without_subscribers_is_fine() {
        assert_eq!(DiagnosticsBus::new(2).emit(event("x")), 0);
    }

    #[test]
    fn hub_events_serialize_flat_with_their_kind() {
        let event = HubEvent::new("h", "d", HubActivity::ReportedPatched { version: 3 });
        let json = serde_json::to_value(event).unwrap();
        assert_eq!(
            (&json["protocol"], &json["kind"], &json["version"]),
            (&"hub-mqtt".into(), &"reportedPatched".into(), &3.into())
        );
    }

    #[test]
    fn events_serialize_with_protocol_names() {
        let json = serde_json::to_value(event("d")).unwrap();
        assert_eq!(json["protocol"], "https");
        assert_eq!(json["status"], "assigned");
        assert_eq!(json["attestation"], "symmetricKey");
    }
}
