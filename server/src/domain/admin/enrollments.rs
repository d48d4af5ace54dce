//! Individual enrollments and groups: the one build step from the wire document (the service
//! API, the console's forms and the bulk import all pass through it), and their changes. Keys left
//! out are kept from the stored version or generated.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{Admin, AdminError, Change, KeySlot, Result, invalid};
use crate::attestation::tpm::{self, TpmPublic};
use crate::domain::lifecycle;
use crate::domain::provisioner::{registration_result, validate_registration_id};
use crate::model::*;
use crate::proto::service::{self as wire, EnrollmentInput};
use crate::store::{Store, StoreError};

/// Individual enrollments and groups, as the generic handlers need them.
#[async_trait]
pub trait Resource: Sized + Send + Sync + 'static {
    const ID_FIELD: &'static str;
    const ITEM_TYPE: &'static str;
    const BULK_FIELD: &'static str;
    const NOT_FOUND: &'static str;
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError>;
    async fn store(
        store: &dyn Store,
        item: Self,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<Self, StoreError>;
    async fn remove(
        store: &dyn Store,
        id: &str,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<(), StoreError>;
    async fn page(store: &dyn Store, query: &ListQuery) -> Result<Page<Self>, StoreError>;
    fn build(input: EnrollmentInput, now: chrono::DateTime<Utc>) -> Self;
    fn spec(&self) -> &EnrollmentSpec;
    fn spec_mut(&mut self) -> &mut EnrollmentSpec;
    fn to_json(&self, with_keys: bool) -> Value;
    /// "enrollment" or "group": how audit entries and lifecycle events name the target.
    const TARGET: &'static str;
    /// Its lifecycle events: created, updated, enabled, disabled, deleted.
    const EVENTS: [EventType; 5];
    fn id(&self) -> &str;
    fn etag(&self) -> &Etag;
    fn created(&self) -> DateTime<Utc>;
    fn updated(&self) -> DateTime<Utc>;
    fn device_id(&self) -> Option<&str>;
    /// How registration events and test-mode faults name the one with this ID.
    fn reference(id: &str) -> EnrollmentRef;
    /// Fields only this kind shows (an individual enrollment's registration state).
    async fn decorate(&self, _store: &dyn Store, _json: &mut Value) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Resource for Enrollment {
    const TARGET: &'static str = "enrollment";
    const EVENTS: [EventType; 5] = [
        EventType::EnrollmentCreated,
        EventType::EnrollmentUpdated,
        EventType::EnrollmentEnabled,
        EventType::EnrollmentDisabled,
        EventType::EnrollmentDeleted,
    ];
    fn reference(id: &str) -> EnrollmentRef {
        EnrollmentRef::Individual(id.to_string())
    }
    fn id(&self) -> &str {
        &self.registration_id
    }
    fn etag(&self) -> &Etag {
        &self.etag
    }
    fn created(&self) -> DateTime<Utc> {
        self.created
    }
    fn updated(&self) -> DateTime<Utc> {
        self.updated
    }
    fn device_id(&self) -> Option<&str> {
        self.device_id.as_deref()
    }
    const ID_FIELD: &'static str = "registrationId";
    const ITEM_TYPE: &'static str = "Enrollment";
    const BULK_FIELD: &'static str = "enrollments";
    const NOT_FOUND: &'static str = "individual enrollment";
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        store.get_enrollment(id).await
    }
    async fn store(
        store: &dyn Store,
        item: Self,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<Self, StoreError> {
        store.put_enrollment(item, cond, events).await
    }
    async fn remove(
        store: &dyn Store,
        id: &str,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<(), StoreError> {
        store.delete_enrollment(id, cond, events).await
    }
    async fn page(store: &dyn Store, query: &ListQuery) -> Result<Page<Self>, StoreError> {
        store.list_enrollments(query).await
    }
    fn build(input: EnrollmentInput, now: chrono::DateTime<Utc>) -> Self {
        Enrollment {
            registration_id: input.id,
            device_id: input.device_id,
            spec: input.spec,
            optional_device_information: input.optional_device_information,
            etag: Etag::new(),
            created: now,
            updated: now,
        }
    }
    fn spec(&self) -> &EnrollmentSpec {
        &self.spec
    }
    fn spec_mut(&mut self) -> &mut EnrollmentSpec {
        &mut self.spec
    }
    fn to_json(&self, with_keys: bool) -> Value {
        wire::individual_enrollment(self, with_keys)
    }
    async fn decorate(&self, store: &dyn Store, json: &mut Value) -> Result<(), StoreError> {
        if let Some(record) = store.get_registration(&self.registration_id).await? {
            json["registrationState"] =
                serde_json::to_value(registration_result(&record)).unwrap_or(Value::Null);
        }
        Ok(())
    }
}

#[async_trait]
impl Resource for EnrollmentGroup {
    const TARGET: &'static str = "group";
    const EVENTS: [EventType; 5] = [
        EventType::GroupCreated,
        EventType::GroupUpdated,
        EventType::GroupEnabled,
        EventType::GroupDisabled,
        EventType::GroupDeleted,
    ];
    fn reference(id: &str) -> EnrollmentRef {
        EnrollmentRef::Group(id.to_string())
    }
    fn id(&self) -> &str {
        &self.group_id
    }
    fn etag(&self) -> &Etag {
        &self.etag
    }
    fn created(&self) -> DateTime<Utc> {
        self.created
    }
    fn updated(&self) -> DateTime<Utc> {
        self.updated
    }
    fn device_id(&self) -> Option<&str> {
        None
    }
    const ID_FIELD: &'static str = "enrollmentGroupId";
    const ITEM_TYPE: &'static str = "EnrollmentGroup";
    const BULK_FIELD: &'static str = "enrollmentGroups";
    const NOT_FOUND: &'static str = "enrollment group";
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError> {
        store.get_group(id).await
    }
    async fn store(
        store: &dyn Store,
        item: Self,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<Self, StoreError> {
        store.put_group(item, cond, events).await
    }
    async fn remove(
        store: &dyn Store,
        id: &str,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<(), StoreError> {
        store.delete_group(id, cond, events).await
    }
    async fn page(store: &dyn Store, query: &ListQuery) -> Result<Page<Self>, StoreError> {
        store.list_groups(query).await
    }
    fn build(input: EnrollmentInput, now: chrono::DateTime<Utc>) -> Self {
        EnrollmentGroup {
            group_id: input.id,
            spec: input.spec,
            etag: Etag::new(),
            created: now,
            updated: now,
        }
    }
    fn spec(&self) -> &EnrollmentSpec {
        &self.spec
    }
    fn spec_mut(&mut self) -> &mut EnrollmentSpec {
        &mut self.spec
    }
    fn to_json(&self, with_keys: bool) -> Value {
        wire::enrollment_group(self, with_keys)
    }
}

/// The one build step: the wire document parsed and checked, its ID matched against the path's.
/// Keys are not filled in yet (that needs the stored version).
pub fn build<R: Resource>(value: &Value, path_id: Option<&str>) -> Result<R> {
    let mut input = wire::parse_enrollment(value, R::ID_FIELD).map_err(AdminError::Invalid)?;
    let endorsement_key = endorsement_key(&input.spec.attestation)?;
    if input.id.is_empty() {
        input.id = match (R::ID_FIELD, endorsement_key, path_id) {
            // The ID the SDKs derive from the EK when the device is given none.
            ("registrationId", Some(ek), None) => tpm::default_registration_id(&ek),
            (_, _, Some(path_id)) => path_id.to_string(),
            _ => return invalid(format!("`{}` is required", R::ID_FIELD)),
        };
    }
    if let Some(path_id) = path_id.filter(|p| !p.eq_ignore_ascii_case(&input.id)) {
        return invalid(format!(
            "`{}` {:?} differs from the path's {path_id:?}",
            R::ID_FIELD,
            input.id
        ));
    }
    validate_registration_id(&input.id).map_err(|e| AdminError::Invalid(e.to_string()))?;
    Ok(R::build(input, Utc::now()))
}

/// A TPM enrollment's EK, which must be one the device endpoint can challenge: refused here
/// rather than when the device first registers.
fn endorsement_key(attestation: &Attestation) -> Result<Option<Vec<u8>>> {
    let Attestation::Tpm {
        endorsement_key, ..
    } = attestation
    else {
        return Ok(None);
    };
    let field = "`attestation.tpm.endorsementKey`";
    let Ok(bytes) = BASE64.decode(endorsement_key.trim()) else {
        return invalid(format!("{field} is not base64"));
    };
    match TpmPublic::parse(&bytes) {
        Ok(_) => Ok(Some(bytes)),
        Err(e) => invalid(format!(
            "{field} is not a TPM endorsement key Onramp can challenge: {e}"
        )),
    }
}

pub(super) fn audit_target<R: Resource>(id: &str) -> String {
    format!("{}/{id}", R::TARGET)
}

impl Admin {
    /// Creates or replaces one enrollment or group from its wire document.
    pub async fn put_enrollment<R: Resource>(
        &self,
        actor: &Actor,
        value: &Value,
        path_id: Option<&str>,
        cond: IfMatch,
    ) -> Result<R> {
        self.write(actor, None, value, path_id, cond).await
    }

    /// `action` names the change in the audit trail; by default "create" or "update".
    async fn write<R: Resource>(
        &self,
        actor: &Actor,
        action: Option<&str>,
        value: &Value,
        path_id: Option<&str>,
        cond: IfMatch,
    ) -> Result<R> {
        let mut item = build::<R>(value, path_id)?;
        let existing = R::fetch(self.store(), item.id()).await?;
        item.spec_mut()
            .fill_missing_keys(existing.as_ref().map(|e| e.spec()));
        let event = lifecycle::enrollment_put(existing.as_ref(), &item);
        let stored = R::store(self.store(), item, cond, &[event]).await?;
        self.invalidate();
        let action = match (action, &existing) {
            (Some(action), _) => action,
            (None, Some(_)) => "update",
            (None, None) => "create",
        };
        let change = Change::new(
            format!("{}.{action}", R::TARGET),
            audit_target::<R>(stored.id()),
        )
        .before(existing.map(|e| e.to_json(false)))
        .after(Some(stored.to_json(false)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    /// Deletes one; `Ok(false)` when there was nothing to delete.
    pub async fn delete_enrollment<R: Resource>(
        &self,
        actor: &Actor,
        id: &str,
        cond: IfMatch,
    ) -> Result<bool> {
        let before = R::fetch(self.store(), id).await?;
        let event = lifecycle::enrollment_deleted::<R>(before.as_ref().map_or(id, R::id));
        match R::remove(self.store(), id, cond, &[event]).await {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        // A later enrollment of the same ID starts without the old one's test-mode fault.
        self.store()
            .delete_fault_injection(&R::reference(id))
            .await?;
        self.invalidate();
        let change = Change::new(format!("{}.delete", R::TARGET), audit_target::<R>(id))
            .before(before.map(|b| b.to_json(false)));
        self.audit(actor, change).await;
        Ok(true)
    }

    /// Enables or disables one.
    pub async fn set_enrollment_status<R: Resource>(
        &self,
        actor: &Actor,
        id: &str,
        enabled: bool,
    ) -> Result<R> {
        let before = self.stored::<R>(id).await?;
        let status = match enabled {
            true => ProvisioningStatus::Enabled,
            false => ProvisioningStatus::Disabled,
        };
        let mut document = before.to_json(true);
        document["provisioningStatus"] = json!(status.as_str());
        let cond = IfMatch::Etag(before.etag().clone());
        self.write(actor, Some(status.as_str()), &document, None, cond)
            .await
    }

    /// Replaces one symmetric key with 64 fresh random bytes; devices signing with it must be
    /// given the new key (roll the secondary, move devices to it, then roll the primary).
    pub async fn roll_enrollment_key<R: Resource>(
        &self,
        actor: &Actor,
        id: &str,
        slot: KeySlot,
    ) -> Result<R> {
        let before = self.stored::<R>(id).await?;
        if !matches!(before.spec().attestation, Attestation::SymmetricKey { .. }) {
            return invalid("only symmetric keys can be regenerated");
        }
        let (field, action) = match slot {
            KeySlot::Primary => ("primaryKey", "rekey-primary"),
            KeySlot::Secondary => ("secondaryKey", "rekey-secondary"),
        };
        let mut document = before.to_json(true);
        document["attestation"]["symmetricKey"][field] = json!(random_key(64));
        let cond = IfMatch::Etag(before.etag().clone());
        self.write(actor, Some(action), &document, None, cond).await
    }

    /// Writes a batch of built individual enrollments at once (bulk import and seeding): rows
    /// without keys keep the stored enrollment's keys, as a PUT does, so a re-import does not lock
    /// out devices already using them. The caller audits the whole import with `imported`.
    pub async fn import_enrollments(&self, mut batch: Vec<Enrollment>) -> Result<()> {
        let ids: Vec<String> = batch.iter().map(|e| key_of(&e.registration_id)).collect();
        // Every row's stored version: keyless rows keep its keys, and its event says whether
        // the row created or changed the enrollment.
        let stored: std::collections::HashMap<String, Enrollment> = self
            .store
            .get_enrollments(&ids)
            .await?
            .into_iter()
            .map(|e| (key_of(&e.registration_id), e))
            .collect();
        let mut events = Vec::with_capacity(batch.len());
        for (enrollment, id) in batch.iter_mut().zip(&ids) {
            let before = stored.get(id);
            if enrollment.spec.lacks_keys() {
                enrollment.spec.fill_missing_keys(before.map(|e| &e.spec));
            }
            events.push(lifecycle::enrollment_put(before, enrollment));
        }
        self.store.put_enrollments(batch, &events).await?;
        self.invalidate();
        Ok(())
    }

    /// One audit entry for a whole import (rather than one per row): where from and how many.
    pub async fn imported(&self, actor: &Actor, source: &str, imported: u64, failed: u64) {
        let change = Change::new("enrollment.import", format!("import/{source}"))
            .after(Some(json!({"imported": imported, "failed": failed})));
        self.audit(actor, change).await;
    }

    pub(super) async fn stored<R: Resource>(&self, id: &str) -> Result<R> {
        R::fetch(self.store(), id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("{} {id:?}", R::NOT_FOUND)))
    }
}
