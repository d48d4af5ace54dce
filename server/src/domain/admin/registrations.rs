//! Registration records: deleting one lets its device register afresh.

use super::{Admin, Change, Result};
use crate::domain::lifecycle;
use crate::model::{Actor, IfMatch};
use crate::store::StoreError;

impl Admin {
    /// Deletes the record; `Ok(false)` when there was none.
    pub async fn delete_registration(
        &self,
        actor: &Actor,
        registration_id: &str,
        cond: IfMatch,
    ) -> Result<bool> {
        let Some(before) = self.store.get_registration(registration_id).await? else {
            return Ok(false);
        };
        let events = [lifecycle::registration_deleted(&before)];
        match self
            .store
            .delete_registration(registration_id, cond, &events)
            .await
        {
            Ok(()) => {}
            Err(StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        let change = Change::new(
            "registration.delete",
            format!("registration/{registration_id}"),
        )
        .before(serde_json::to_value(before).ok());
        self.audit(actor, change).await;
        Ok(true)
    }
}
