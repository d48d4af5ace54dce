//! Lifecycle events (what changed, for systems that keep their own records in step) and the sinks
//! they are delivered to. Events are written in the transaction of their change (the outbox) and
//! delivered at least once; consumers de-duplicate on `id`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What happened. The wire name (`enrollment.created`, ...) is the `type` consumers filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    EnrollmentCreated,
    EnrollmentUpdated,
    EnrollmentEnabled,
    EnrollmentDisabled,
    EnrollmentDeleted,
    GroupCreated,
    GroupUpdated,
    GroupEnabled,
    GroupDisabled,
    GroupDeleted,
    RegistrationAssigned,
    RegistrationReprovisioned,
    RegistrationFailed,
    RegistrationDeleted,
    HubLinked,
    HubUnlinked,
    CaVerified,
}

impl EventType {
    pub const ALL: [EventType; 17] = [
        EventType::EnrollmentCreated,
        EventType::EnrollmentUpdated,
        EventType::EnrollmentEnabled,
        EventType::EnrollmentDisabled,
        EventType::EnrollmentDeleted,
        EventType::GroupCreated,
        EventType::GroupUpdated,
        EventType::GroupEnabled,
        EventType::GroupDisabled,
        EventType::GroupDeleted,
        EventType::RegistrationAssigned,
        EventType::RegistrationReprovisioned,
        EventType::RegistrationFailed,
        EventType::RegistrationDeleted,
        EventType::HubLinked,
        EventType::HubUnlinked,
        EventType::CaVerified,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::EnrollmentCreated => "enrollment.created",
            EventType::EnrollmentUpdated => "enrollment.updated",
            EventType::EnrollmentEnabled => "enrollment.enabled",
            EventType::EnrollmentDisabled => "enrollment.disabled",
            EventType::EnrollmentDeleted => "enrollment.deleted",
            EventType::GroupCreated => "group.created",
            EventType::GroupUpdated => "group.updated",
            EventType::GroupEnabled => "group.enabled",
            EventType::GroupDisabled => "group.disabled",
            EventType::GroupDeleted => "group.deleted",
            EventType::RegistrationAssigned => "registration.assigned",
            EventType::RegistrationReprovisioned => "registration.reprovisioned",
            EventType::RegistrationFailed => "registration.failed",
            EventType::RegistrationDeleted => "registration.deleted",
            EventType::HubLinked => "hub.linked",
            EventType::HubUnlinked => "hub.unlinked",
            EventType::CaVerified => "ca.verified",
        }
    }

    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// One event as consumers receive it (`resource` never holds keys, secrets or tokens).
#[derive(Debug, Clone, PartialEq)]
pub struct LifecycleEvent {
    /// A UUID, the same on every delivery of this event.
    pub id: String,
    pub event_type: EventType,
    pub time: DateTime<Utc>,
    /// `{"kind": "enrollment" | "group" | "registration" | "hub" | "ca", "id": ..., "data": ...}`
    pub resource: Value,
}

impl LifecycleEvent {
    pub fn new(event_type: EventType, kind: &str, id: &str, data: Value) -> LifecycleEvent {
        LifecycleEvent {
            id: uuid::Uuid::new_v4().to_string(),
            event_type,
            time: Utc::now(),
            resource: serde_json::json!({"kind": kind, "id": id, "data": data}),
        }
    }
}

/// An event as the outbox holds it: `seq` orders delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub seq: i64,
    pub event: LifecycleEvent,
}

impl StoredEvent {
    /// The JSON body every sink sends.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.event.id,
            "type": self.event.event_type.as_str(),
            "time": self.event.time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "sequence": self.seq,
            "resource": self.event.resource,
        })
    }
}

/// Where a sink delivers. The webhook's secret signs each body (HMAC-SHA256) and is never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum SinkTarget {
    Webhook {
        url: String,
        secret: String,
    },
    /// Published to `{subject}.{type}`; through JetStream (acknowledged, de-duplicated by
    /// `Nats-Msg-Id`) when a stream holds the subject, else core NATS with a flush.
    Nats {
        url: String,
        subject: String,
    },
    /// Published with QoS 1 to `{topic}/{type}`, each PUBACK awaited.
    Mqtt {
        url: String,
        topic: String,
    },
}

impl SinkTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkTarget::Webhook { .. } => "webhook",
            SinkTarget::Nats { .. } => "nats",
            SinkTarget::Mqtt { .. } => "mqtt",
        }
    }

    pub fn url(&self) -> &str {
        match self {
            SinkTarget::Webhook { url, .. }
            | SinkTarget::Nats { url, .. }
            | SinkTarget::Mqtt { url, .. } => url,
        }
    }

    /// The subject or topic events go under (none for a webhook).
    pub fn channel(&self) -> Option<&str> {
        match self {
            SinkTarget::Webhook { .. } => None,
            SinkTarget::Nats { subject, .. } => Some(subject),
            SinkTarget::Mqtt { topic, .. } => Some(topic),
        }
    }
}

/// How far a sink got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkProgress {
    /// Every event up to this sequence number has been delivered.
    pub delivered_seq: i64,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// When the current run of failures began (none while delivering).
    pub failing_since: Option<DateTime<Utc>>,
    pub failures: u64,
}

impl SinkProgress {
    /// Events written up to `last_seq` and not yet delivered.
    pub fn lag(&self, last_seq: i64) -> i64 {
        (last_seq - self.delivered_seq).max(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSink {
    pub name: String,
    pub target: SinkTarget,
    pub enabled: bool,
    pub progress: SinkProgress,
    pub created: DateTime<Utc>,
    pub updated: DateTime<Utc>,
}
