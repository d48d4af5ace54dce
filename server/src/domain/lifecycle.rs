//! Which lifecycle event each change makes and what it says. The events are built here, in the
//! domain, and handed to the store write that makes the change, which puts them in the outbox in
//! the same transaction (docs/ARCHITECTURE.md, "Lifecycle events"). No event carries a key, a
//! secret or a token.

use serde_json::{Value, json};

use crate::domain::admin::Resource;
use crate::domain::provisioner::registration_result;
use crate::model::*;

/// The service API document of an enrollment or group without keys, etag and times (the store
/// sets those during the write; the event's own `time` says when).
fn document<R: Resource>(item: &R) -> Value {
    let mut doc = item.to_json(false);
    if let Some(fields) = doc.as_object_mut() {
        for bookkeeping in ["etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"] {
            fields.remove(bookkeeping);
        }
    }
    doc
}

/// A put of `after` over `before`: created, enabled or disabled when its status flipped, else
/// updated (a key roll is an update; the new key is not in the event).
pub fn enrollment_put<R: Resource>(before: Option<&R>, after: &R) -> LifecycleEvent {
    let [created, updated, enabled, disabled, _] = R::EVENTS;
    let status = |item: &R| item.spec().provisioning_status;
    let event_type = match before {
        None => created,
        Some(before) if status(before) == status(after) => updated,
        Some(_) if status(after) == ProvisioningStatus::Enabled => enabled,
        Some(_) => disabled,
    };
    LifecycleEvent::new(event_type, R::TARGET, after.id(), document(after))
}

pub fn enrollment_deleted<R: Resource>(id: &str) -> LifecycleEvent {
    LifecycleEvent::new(R::EVENTS[4], R::TARGET, id, Value::Null)
}

/// A finished registration: assigned the first time, reprovisioned when the device had been
/// assigned before, failed when allocation failed. A device of a disabled enrollment changes
/// nothing and makes none.
pub fn registration_finished(
    previous: Option<&RegistrationRecord>,
    record: &RegistrationRecord,
) -> Option<LifecycleEvent> {
    let previous_hub = previous
        .filter(|p| p.status == RegistrationStatus::Assigned)
        .and_then(|p| p.assigned_hub.clone());
    let event_type = match (record.status, &previous_hub) {
        (RegistrationStatus::Assigned, None) => EventType::RegistrationAssigned,
        (RegistrationStatus::Assigned, Some(_)) => EventType::RegistrationReprovisioned,
        (RegistrationStatus::Failed, _) => EventType::RegistrationFailed,
        _ => return None,
    };
    Some(LifecycleEvent::new(
        event_type,
        "registration",
        &record.registration_id,
        registration_data(record, previous_hub),
    ))
}

pub fn registration_deleted(before: &RegistrationRecord) -> LifecycleEvent {
    LifecycleEvent::new(
        EventType::RegistrationDeleted,
        "registration",
        &before.registration_id,
        registration_data(before, None),
    )
}

fn registration_data(record: &RegistrationRecord, previous_hub: Option<String>) -> Value {
    let mut data = serde_json::to_value(registration_result(record)).unwrap_or(Value::Null);
    if let Some(fields) = data.as_object_mut() {
        fields.remove("etag");
        fields.insert(
            "enrollment".into(),
            serde_json::to_value(&record.enrollment).unwrap_or(Value::Null),
        );
        if let Some(hub) = previous_hub {
            fields.insert("previousHub".into(), json!(hub));
        }
    }
    data
}

pub fn hub_linked(hub: &LinkedHub) -> LifecycleEvent {
    let data = json!({
        "connector": hub.connector.as_str(),
        "region": hub.region,
        "allocationWeight": hub.allocation_weight,
        "applyAllocationPolicy": hub.apply_allocation_policy,
    });
    LifecycleEvent::new(EventType::HubLinked, "hub", &hub.host_name, data)
}

pub fn hub_unlinked(host: &str) -> LifecycleEvent {
    LifecycleEvent::new(EventType::HubUnlinked, "hub", host, Value::Null)
}

pub fn ca_verified(ca: &CaCertificate) -> LifecycleEvent {
    let data = json!({"sha256Thumbprint": ca.sha256_thumbprint});
    LifecycleEvent::new(EventType::CaVerified, "ca", &ca.name, data)
}
