//! First start: the instance's ID scope, its owner access policy, the built-in hub and the issuing
//! CA (with the default credential policy) are created once and reused by every later start (and
//! by every instance on the same database: first writer wins).

use chrono::Utc;
use serde::Serialize;

use crate::config::Config;
use crate::model::*;
use crate::store::{Store, StoreError};

/// Marks that the built-in hub was linked once, so an operator who unlinks it keeps it unlinked.
const BUILTIN_HUB_SETTING: &str = "builtin_hub_linked";

/// What a fresh instance has after bootstrap.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id_scope: String,
    pub owner_policy: AccessPolicy,
}

pub async fn bootstrap(store: &dyn Store, config: &Config) -> anyhow::Result<Instance> {
    let id_scope = store
        .init_setting(setting::ID_SCOPE, &new_id_scope())
        .await?;
    store
        .init_setting(setting::DEFAULT_ALLOCATION_POLICY, "hashed")
        .await?;
    let owner_policy = ensure_owner_policy(store).await?;
    // Only a fresh instance links one: an existing instance keeps the hub (and name) it has.
    if store.setting(BUILTIN_HUB_SETTING).await?.is_none() {
        let hub = builtin_hub_name(&config.hostname);
        link_builtin_hub(store, &hub).await?;
        store.put_setting(BUILTIN_HUB_SETTING, &hub).await?;
    }
    crate::domain::issuance::ensure_own_issuer(store, &id_scope).await?;
    Ok(Instance {
        id_scope,
        owner_policy,
    })
}

async fn ensure_owner_policy(store: &dyn Store) -> Result<AccessPolicy, StoreError> {
    if let Some(policy) = store.get_policy(OWNER_POLICY).await? {
        return Ok(policy);
    }
    let now = Utc::now();
    let policy = AccessPolicy {
        name: OWNER_POLICY.into(),
        rights: Right::ALL.to_vec(),
        primary_key: random_key(32),
        secondary_key: random_key(32),
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    match store.put_policy(policy, IfMatch::Absent).await {
        Ok(policy) => Ok(policy),
        // Another instance created it first: use theirs.
        Err(StoreError::Conflict) => store
            .get_policy(OWNER_POLICY)
            .await?
            .ok_or(StoreError::NotFound),
        Err(e) => Err(e),
    }
}

/// The built-in hub's host name: the server's own when it has a dot (a DNS name devices resolve);
/// otherwise a name under `localhost` (RFC 6761: resolves to loopback), because the Azure IoT C
/// SDK refuses a hub host name without a dot. Either way it is in the server certificate.
pub fn builtin_hub_name(host_name: &str) -> String {
    let is_ip = host_name.parse::<std::net::IpAddr>().is_ok();
    if host_name.contains('.') && !is_ip {
        host_name.to_string()
    } else if is_ip || host_name.eq_ignore_ascii_case("localhost") {
        "hub.localhost".to_string()
    } else {
        format!("{host_name}-hub.localhost")
    }
}

/// Further logical hubs get names of their own.
async fn link_builtin_hub(store: &dyn Store, host_name: &str) -> Result<(), StoreError> {
    let now = Utc::now();
    let hub = LinkedHub {
        host_name: host_name.into(),
        connector: ConnectorKind::BuiltIn,
        region: None,
        allocation_weight: 1,
        apply_allocation_policy: true,
        settings: serde_json::json!({}),
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    // No sink can exist before the first start, so the built-in hub makes no event.
    match store.put_hub(hub, IfMatch::Absent, &[]).await {
        Ok(_) | Err(StoreError::Conflict) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `onramp admin info --json`: what scripts and tests need to talk to this instance.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminInfo {
    pub id_scope: String,
    pub service_connection_string: String,
    pub ca_cert_path: Option<String>,
    pub https_url: String,
    pub mqtt_url: String,
    pub amqp_url: String,
    pub hubs: Vec<HubInfo>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HubInfo {
    pub host_name: String,
    pub connector: ConnectorKind,
    pub region: Option<String>,
    pub allocation_weight: u32,
    pub apply_allocation_policy: bool,
    /// For a built-in hub: the owner policy's connection string for the hub's REST subset (what
    /// IoT Hub service SDKs such as `azure-iothub`'s Registry take).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_string: Option<String>,
}

pub async fn admin_info(
    store: &dyn Store,
    config: &Config,
    instance: &Instance,
    ca_path: Option<&std::path::Path>,
) -> Result<AdminInfo, StoreError> {
    let hubs = store
        .list_hubs()
        .await?
        .into_iter()
        .map(|hub| HubInfo {
            connection_string: (hub.connector == ConnectorKind::BuiltIn)
                .then(|| instance.owner_policy.connection_string(&hub.host_name)),
            host_name: hub.host_name,
            connector: hub.connector,
            region: hub.region,
            allocation_weight: hub.allocation_weight,
            apply_allocation_policy: hub.apply_allocation_policy,
        })
        .collect();
    Ok(AdminInfo {
        id_scope: instance.id_scope.clone(),
        service_connection_string: instance.owner_policy.connection_string(&config.hostname),
        ca_cert_path: ca_path.map(|p| p.display().to_string()),
        https_url: config.https_url(),
        mqtt_url: config.mqtt_url(),
        amqp_url: config.amqp_url(),
        hubs,
    })
}

#[cfg(test)]
mod tests {
    use super::builtin_hub_name;

    #[test]
    fn the_builtin_hub_name_always_has_a_dot() {
        assert_eq!(builtin_hub_name("localhost"), "hub.localhost");
        assert_eq!(builtin_hub_name("factory-gw"), "factory-gw-hub.localhost");
        assert_eq!(builtin_hub_name("dps.example.com"), "dps.example.com");
        assert_eq!(builtin_hub_name("127.0.0.1"), "hub.localhost");
        assert_eq!(builtin_hub_name("::1"), "hub.localhost");
    }
}
