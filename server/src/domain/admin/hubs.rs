//! Linked hubs and the instance's allocation defaults.

use serde_json::json;

use super::{Admin, AllocationSettingsView, Change, HubSettings, Result, settings};
use crate::model::{Actor, LinkedHub};

/// What the trail keeps of a hub: its settings, not its connector's credentials.
fn summary(hub: &LinkedHub) -> serde_json::Value {
    json!({
        "connector": hub.connector.as_str(),
        "region": hub.region,
        "allocationWeight": hub.allocation_weight,
        "applyAllocationPolicy": hub.apply_allocation_policy,
    })
}

impl Admin {
    /// Links a hub or changes its settings (its host name is its identity).
    pub async fn put_hub(
        &self,
        actor: &Actor,
        host: &str,
        hub_settings: HubSettings,
    ) -> Result<LinkedHub> {
        let before = self.store.get_hub(host).await?;
        let stored = settings::put_hub(self.store(), host, hub_settings).await?;
        self.invalidate();
        let action = match before {
            Some(_) => "hub.update",
            None => "hub.link",
        };
        let change = Change::new(action, format!("hub/{}", stored.host_name))
            .before(before.as_ref().map(summary))
            .after(Some(summary(&stored)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    pub async fn delete_hub(&self, actor: &Actor, host: &str) -> Result<()> {
        let before = self.store.get_hub(host).await?;
        settings::delete_hub(self.store(), host).await?;
        self.invalidate();
        let change =
            Change::new("hub.remove", format!("hub/{host}")).before(before.as_ref().map(summary));
        self.audit(actor, change).await;
        Ok(())
    }

    pub async fn allocation_settings(&self) -> Result<AllocationSettingsView> {
        settings::allocation_settings(self.store()).await
    }

    pub async fn set_allocation_settings(
        &self,
        actor: &Actor,
        view: AllocationSettingsView,
    ) -> Result<()> {
        let before = self.allocation_settings().await?;
        settings::set_allocation_settings(self.store(), view.clone()).await?;
        self.invalidate();
        let change = Change::new("allocation.update", "allocation")
            .before(serde_json::to_value(before).ok())
            .after(serde_json::to_value(view).ok());
        self.audit(actor, change).await;
        Ok(())
    }
}
