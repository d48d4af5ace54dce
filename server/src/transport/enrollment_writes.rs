//! Writing individual enrollments and groups, shared by every front end that changes them (the
//! service API and the console): the wire document is parsed and checked once, keys left out are
//! kept or generated, and the provisioner forgets what it cached.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::domain::provisioner::{registration_result, validate_registration_id};
use crate::model::*;
use crate::proto::service::{self as wire, EnrollmentInput};
use crate::service::AppState;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The document is malformed or breaks a rule; the message names the field.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Individual enrollments and groups, as the generic handlers need them.
#[async_trait]
pub trait Resource: Sized + Send + Sync + 'static {
    const ID_FIELD: &'static str;
    const ITEM_TYPE: &'static str;
    const BULK_FIELD: &'static str;
    const NOT_FOUND: &'static str;
    async fn fetch(store: &dyn Store, id: &str) -> Result<Option<Self>, StoreError>;
    async fn store(store: &dyn Store, item: Self, cond: IfMatch) -> Result<Self, StoreError>;
    async fn remove(store: &dyn Store, id: &str, cond: IfMatch) -> Result<(), StoreError>;
    async fn page(store: &dyn Store, query: &ListQuery) -> Result<Page<Self>, StoreError>;
    fn build(input: EnrollmentInput, now: chrono::DateTime<Utc>) -> Self;
    fn spec(&self) -> &EnrollmentSpec;
    fn spec_mut(&mut self) -> &mut EnrollmentSpec;
    fn to_json(&self, with_keys: bool) -> Value;
    /// "enrollment" or "group": how audit entries name the target.
    const TARGET: &'static str;
    fn id(&self) -> &str;
    fn etag(&self) -> &Etag;
    fn created(&self) -> DateTime<Utc>;
    fn updated(&self) -> DateTime<Utc>;
    fn device_id(&self) -> Option<&str>;
    /// Fields only this kind shows (an individual enrollment's registration state).
    async fn decorate(&self, _store: &dyn Store, _json: &mut Value) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Resource for Enrollment {
    const TARGET: &'static str = "enrollment";
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
    async fn store(store: &dyn Store, item: Self, cond: IfMatch) -> Result<Self, StoreError> {
        store.put_enrollment(item, cond).await
    }
    async fn remove(store: &dyn Store, id: &str, cond: IfMatch) -> Result<(), StoreError> {
        store.delete_enrollment(id, cond).await
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
    async fn store(store: &dyn Store, item: Self, cond: IfMatch) -> Result<Self, StoreError> {
        store.put_group(item, cond).await
    }
    async fn remove(store: &dyn Store, id: &str, cond: IfMatch) -> Result<(), StoreError> {
        store.delete_group(id, cond).await
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

/// Validates and writes one enrollment or group; keys left out are kept from the stored version or
/// generated (64 random bytes).
pub async fn upsert<R: Resource>(
    state: &AppState,
    value: &Value,
    path_id: Option<&str>,
    cond: IfMatch,
) -> Result<R, WriteError> {
    let input = wire::parse_enrollment(value, R::ID_FIELD).map_err(WriteError::Invalid)?;
    if let Some(path_id) = path_id.filter(|p| !p.eq_ignore_ascii_case(&input.id)) {
        return Err(WriteError::Invalid(format!(
            "`{}` {:?} differs from the path's {path_id:?}",
            R::ID_FIELD,
            input.id
        )));
    }
    validate_registration_id(&input.id).map_err(|e| WriteError::Invalid(e.to_string()))?;
    let existing = R::fetch(state.store.as_ref(), &input.id).await?;
    let mut item = R::build(input, Utc::now());
    item.spec_mut()
        .fill_missing_keys(existing.as_ref().map(|e| e.spec()));
    let stored = R::store(state.store.as_ref(), item, cond).await?;
    state.provisioner.invalidate();
    Ok(stored)
}

/// Deletes one; `Ok(false)` when there was nothing to delete.
pub async fn remove<R: Resource>(
    state: &AppState,
    id: &str,
    cond: IfMatch,
) -> Result<bool, StoreError> {
    match R::remove(state.store.as_ref(), id, cond).await {
        Ok(()) => {
            state.provisioner.invalidate();
            Ok(true)
        }
        Err(StoreError::NotFound) => Ok(false),
        Err(e) => Err(e),
    }
}
