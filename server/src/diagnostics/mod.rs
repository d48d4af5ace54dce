//! Registration events: every attempt, over any protocol, becomes one `RegistrationEvent` on one bus.
//! The console's live log and the recorder (the dashboard's store) subscribe to it
//! (docs/ARCHITECTURE.md, I6).
//! The built-in hubs' device activity (connections, refusals, twin changes) travels beside them as
//! `HubEvent`s, with protocol `hub-mqtt`. The recorder keeps registration events in the store for
//! the dashboard.

pub mod recorder;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::model::RegistrationStatus;
pub use crate::model::event::*;

impl RegistrationEvent {
    /// The likely cause of a failed or refused attempt, for the operator reading the live log.
    pub fn hint(&self) -> Option<&'static str> {
        hint(
            self.status,
            self.error_code,
            self.error_message.as_deref().unwrap_or_default(),
        )
    }
}

/// The likely cause of an attempt that ended with `status` and this error.
pub fn hint(
    status: RegistrationStatus,
    error_code: Option<i64>,
    message: &str,
) -> Option<&'static str> {
    use crate::proto::error::code;
    if status == RegistrationStatus::Disabled {
        return Some("The enrollment is disabled: enable it to let this device register.");
    }
    Some(match error_code? {
        code::UNAUTHORIZED if message.contains("not verified") => {
            "The device's chain leads to a CA that is not verified: complete its proof of \
             possession (verification code) or mark it verified."
        }
        code::UNAUTHORIZED if message.contains("no known CA") => {
            "Unknown CA: the device certificate is signed by no CA registered here or uploaded \
             into an enrollment group. Upload its root or intermediate."
        }
        code::UNAUTHORIZED if message.contains("common name") => {
            "The device certificate's subject CN must equal the registration ID."
        }
        code::UNAUTHORIZED if message.contains("certificate") => {
            "The device certificate was refused: check its validity period, signatures and that \
             it is the one enrolled."
        }
        code::UNAUTHORIZED if message.contains("expired") => {
            "The SAS token has expired: check the device's clock and the token's lifetime."
        }
        code::UNAUTHORIZED if message.contains("matches no key") => {
            "Wrong key: the signature matches neither the primary nor the secondary key. For a \
             group, the device key is HMAC-SHA256(group key, registration ID)."
        }
        code::UNAUTHORIZED if message.contains("no SAS token") => {
            "The device sent no credentials: configure a SAS token or a client certificate."
        }
        code::UNAUTHORIZED => {
            "The device did not prove its identity: compare its attestation with the enrollment's."
        }
        code::ENROLLMENT_NOT_FOUND | code::NOT_FOUND => {
            "No enrollment matches this registration ID: create one, or check the ID's spelling."
        }
        code::UNKNOWN_ID_SCOPE => {
            "Unknown ID scope: the device is configured for another provisioning instance."
        }
        code::CUSTOM_ALLOCATION_FAILED => {
            "The custom allocation webhook failed: check its URL, its logs and its response."
        }
        code::NO_HUB => {
            "No linked hub can take the device: link a hub or widen the enrollment's hub list."
        }
        code::BAD_REQUEST => "The device sent a malformed request: check its SDK and payload.",
        _ => return None,
    })
}

/// A broadcast of events. Slow subscribers lose the oldest events (and are told how many) rather
/// than slowing registrations down. This instance's own events and those other instances on the
/// same database sent (`coordination`) travel apart: only the live log wants both, and only the
/// own ones are recorded and forwarded.
#[derive(Clone)]
pub struct DiagnosticsBus {
    sender: broadcast::Sender<Arc<RegistrationEvent>>,
    hub: broadcast::Sender<Arc<HubEvent>>,
    peers: broadcast::Sender<Arc<RegistrationEvent>>,
    peers_hub: broadcast::Sender<Arc<HubEvent>>,
}

impl DiagnosticsBus {
    pub fn new(capacity: usize) -> DiagnosticsBus {
        DiagnosticsBus {
            sender: broadcast::channel(capacity).0,
            hub: broadcast::channel(capacity).0,
            peers: broadcast::channel(capacity).0,
            peers_hub: broadcast::channel(capacity).0,
        }
    }

    /// Publishes an event another instance had.
    pub fn emit_from_peer(&self, event: RegistrationEvent) -> usize {
        self.peers.send(Arc::new(event)).unwrap_or(0)
    }

    /// Publishes a hub event another instance had.
    pub fn emit_hub_from_peer(&self, event: HubEvent) -> usize {
        self.peers_hub.send(Arc::new(event)).unwrap_or(0)
    }

    /// The events other instances had: registrations, and hub events.
    pub fn subscribe_peers(
        &self,
    ) -> (
        broadcast::Receiver<Arc<RegistrationEvent>>,
        broadcast::Receiver<Arc<HubEvent>>,
    ) {
        (self.peers.subscribe(), self.peers_hub.subscribe())
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
    use crate::model::{AttestationKind, EnrollmentRef};
    use chrono::Utc;

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
            fault: None,
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
        for p in [
            Protocol::Https,
            Protocol::Mqtt,
            Protocol::MqttWs,
            Protocol::Amqp,
            Protocol::AmqpWs,
            Protocol::HubMqtt,
        ] {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        assert_eq!(json["status"], "assigned");
        assert_eq!(json["attestation"], "symmetricKey");
    }

    #[test]
    fn failures_come_with_a_hint_and_successes_without() {
        assert_eq!(event("ok").hint(), None);
        let failed = |code: i64, message: &str| RegistrationEvent {
            status: RegistrationStatus::Failed,
            error_code: Some(code),
            error_message: Some(message.into()),
            ..event("d")
        };
        let hint = |e: RegistrationEvent| e.hint().unwrap_or_default();
        assert!(
            hint(failed(401_002, "unauthorized: the SAS token has expired")).contains("expired")
        );
        assert!(
            hint(failed(
                401_002,
                "unauthorized: the SAS signature matches no key of the enrollment"
            ))
            .starts_with("Wrong key")
        );
        assert!(hint(failed(404_202, "no enrollment")).starts_with("No enrollment"));
        assert!(hint(failed(400_207, "webhook answered 500")).contains("webhook"));
        let disabled = RegistrationEvent {
            status: RegistrationStatus::Disabled,
            ..event("d")
        };
        assert!(hint(disabled).contains("disabled"));
    }
}
