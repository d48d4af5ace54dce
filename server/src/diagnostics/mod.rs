//! Registration events: every attempt, over any protocol, becomes one `RegistrationEvent` on one bus.
//! The live log, the metrics and the audit trail all subscribe to it (ARCHITECTURE.md invariant 5).

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

/// A broadcast of events. Slow subscribers lose the oldest events (and are told how many) rather
/// than slowing registrations down.
#[derive(Clone)]
pub struct DiagnosticsBus {
    sender: broadcast::Sender<Arc<RegistrationEvent>>,
}

impl DiagnosticsBus {
    pub fn new(capacity: usize) -> DiagnosticsBus {
        let (sender, _) = broadcast::channel(capacity);
        DiagnosticsBus { sender }
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
    fn events_serialize_with_protocol_names() {
        let json = serde_json::to_value(event("d")).unwrap();
        assert_eq!(json["protocol"], "https");
        assert_eq!(json["status"], "assigned");
        assert_eq!(json["attestation"], "symmetricKey");
    }
}
