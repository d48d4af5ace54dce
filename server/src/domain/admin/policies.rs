//! Shared access policies: who may call the service API with which rights.

use serde_json::json;

use super::{Admin, Change, KeySlot, Result, settings};
use crate::model::{AccessPolicy, Actor, Right};

fn rights_of(policy: &AccessPolicy) -> serde_json::Value {
    json!({"rights": policy.rights})
}

fn target(name: &str) -> String {
    format!("policy/{name}")
}

impl Admin {
    /// Creates a policy with fresh keys, or changes the rights of an existing one (keys kept).
    pub async fn put_policy(
        &self,
        actor: &Actor,
        name: &str,
        rights: Vec<Right>,
    ) -> Result<AccessPolicy> {
        let before = self.store.get_policy(name).await?;
        let stored = settings::put_policy(self.store(), name, rights).await?;
        let action = match before {
            Some(_) => "policy.update",
            None => "policy.create",
        };
        let change = Change::new(action, target(&stored.name))
            .before(before.as_ref().map(rights_of))
            .after(Some(rights_of(&stored)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    /// Replaces one key. The trail records that it changed, never what it is.
    pub async fn rekey_policy(
        &self,
        actor: &Actor,
        name: &str,
        slot: KeySlot,
    ) -> Result<AccessPolicy> {
        let stored = settings::rekey_policy(self.store(), name, slot).await?;
        let action = match slot {
            KeySlot::Primary => "policy.rekey-primary",
            KeySlot::Secondary => "policy.rekey-secondary",
        };
        self.audit(actor, Change::new(action, target(&stored.name)))
            .await;
        Ok(stored)
    }

    /// Deletes a policy, unless it is the last one that can administer the instance.
    pub async fn delete_policy(&self, actor: &Actor, name: &str) -> Result<()> {
        settings::delete_policy(self.store(), name).await?;
        self.audit(actor, Change::new("policy.delete", target(name)))
            .await;
        Ok(())
    }
}
