//! The rules of the instance's settings (access policies, linked hubs, allocation defaults): each
//! function validates and writes one change. `Admin` (mod.rs) calls them and adds the audit entry
//! and the cache invalidation.

use chrono::Utc;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{AdminError, invalid};
use crate::domain::{lifecycle, provisioner};
use crate::model::*;
use crate::store::{Store, StoreError};

/// Policy names: 1-64 letters, digits, `-`, `_` or `.`.
pub(in crate::domain) fn check_name(kind: &str, name: &str) -> Result<(), AdminError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return invalid(format!(
            "invalid {kind} name {name:?}: 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(())
}

pub fn parse_rights(rights: &[String]) -> Result<Vec<Right>, AdminError> {
    if rights.is_empty() {
        return invalid("a policy needs at least one right");
    }
    let mut parsed = Vec::new();
    for right in rights {
        let Some(r) = Right::parse(right) else {
            let known: Vec<_> = Right::ALL.iter().map(|r| r.as_str()).collect();
            return invalid(format!(
                "unknown right {right:?}; known: {}",
                known.join(", ")
            ));
        };
        if !parsed.contains(&r) {
            parsed.push(r);
        }
    }
    Ok(parsed)
}

/// Creates a policy with fresh keys, or changes the rights of an existing one (keys kept).
pub(super) async fn put_policy(
    store: &dyn Store,
    name: &str,
    rights: Vec<Right>,
) -> Result<AccessPolicy, AdminError> {
    check_name("policy", name)?;
    let now = Utc::now();
    let policy = match store.get_policy(name).await? {
        Some(existing) => AccessPolicy { rights, ..existing },
        None => AccessPolicy {
            name: name.into(),
            rights,
            primary_key: random_key(32),
            secondary_key: random_key(32),
            etag: Etag::new(),
            created: now,
            updated: now,
        },
    };
    Ok(store.put_policy(policy, IfMatch::Any).await?)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeySlot {
    Primary,
    Secondary,
}

pub(super) async fn rekey_policy(
    store: &dyn Store,
    name: &str,
    slot: KeySlot,
) -> Result<AccessPolicy, AdminError> {
    let mut policy = store
        .get_policy(name)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("policy {name:?}")))?;
    let cond = IfMatch::Etag(policy.etag.clone());
    match slot {
        KeySlot::Primary => policy.primary_key = random_key(32),
        KeySlot::Secondary => policy.secondary_key = random_key(32),
    }
    Ok(store.put_policy(policy, cond).await?)
}

/// Deletes a policy, unless it is the last one that can administer the instance.
pub(super) async fn delete_policy(store: &dyn Store, name: &str) -> Result<(), AdminError> {
    let policies = store.list_policies().await?;
    let target = policies
        .iter()
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| AdminError::NotFound(format!("policy {name:?}")))?;
    let admins = policies
        .iter()
        .filter(|p| p.rights.contains(&Right::ServiceConfig))
        .count();
    if target.rights.contains(&Right::ServiceConfig) && admins == 1 {
        return invalid("the last policy with the ServiceConfig right cannot be deleted");
    }
    Ok(store.delete_policy(name, IfMatch::Any).await?)
}

/// What an operator sets on a linked hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HubSettings {
    #[serde(default = "builtin")]
    pub connector: String,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default = "one")]
    pub allocation_weight: u32,
    #[serde(default = "yes")]
    pub apply_allocation_policy: bool,
}

fn builtin() -> String {
    ConnectorKind::BuiltIn.as_str().into()
}
fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            connector: builtin(),
            region: None,
            allocation_weight: 1,
            apply_allocation_policy: true,
        }
    }
}

fn check_host(host: &str) -> Result<(), AdminError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return invalid(format!("{host:?} is not a valid host name"));
    }
    Ok(())
}

/// Links a hub or changes its settings (its host name is its identity).
pub(super) async fn put_hub(
    store: &dyn Store,
    host: &str,
    settings: HubSettings,
) -> Result<LinkedHub, AdminError> {
    check_host(host)?;
    let Some(connector) = ConnectorKind::parse(&settings.connector) else {
        return invalid(format!(
            "unknown connector {:?}; known: builtIn",
            settings.connector
        ));
    };
    if !(1..=1000).contains(&settings.allocation_weight) {
        return invalid("allocationWeight must be between 1 and 1000");
    }
    let now = Utc::now();
    let existing = store.get_hub(host).await?;
    let hub = LinkedHub {
        host_name: existing
            .as_ref()
            .map_or_else(|| host.to_string(), |h| h.host_name.clone()),
        connector,
        region: settings.region.filter(|r| !r.is_empty()),
        allocation_weight: settings.allocation_weight,
        apply_allocation_policy: settings.apply_allocation_policy,
        settings: existing
            .as_ref()
            .map_or_else(|| serde_json::json!({}), |h| h.settings.clone()),
        etag: Etag::new(),
        created: existing.as_ref().map_or(now, |h| h.created),
        updated: now,
    };
    let events: Vec<_> = existing
        .is_none()
        .then(|| lifecycle::hub_linked(&hub))
        .into_iter()
        .collect();
    Ok(store.put_hub(hub, IfMatch::Any, &events).await?)
}

pub(super) async fn delete_hub(store: &dyn Store, host: &str) -> Result<(), AdminError> {
    let events = [lifecycle::hub_unlinked(host)];
    match store.delete_hub(host, IfMatch::Any, &events).await {
        Err(StoreError::NotFound) => Err(AdminError::NotFound(format!("linked hub {host:?}"))),
        other => Ok(other?),
    }
}

/// The instance's allocation defaults as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocationSettingsView {
    pub default_policy: AllocationPolicy,
    #[serde(default)]
    pub region_map: Vec<RegionRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionRule {
    pub cidr: String,
    pub region: String,
}

pub async fn allocation_settings(store: &dyn Store) -> Result<AllocationSettingsView, AdminError> {
    let settings = provisioner::allocation_settings(store).await?;
    Ok(AllocationSettingsView {
        default_policy: settings.default_policy,
        region_map: settings
            .region_map
            .into_iter()
            .map(|(cidr, region)| RegionRule { cidr, region })
            .collect(),
    })
}

pub(super) async fn set_allocation_settings(
    store: &dyn Store,
    view: AllocationSettingsView,
) -> Result<(), AdminError> {
    if view.default_policy == AllocationPolicy::Custom {
        return invalid(
            "the default allocation policy cannot be custom (a webhook belongs to an enrollment)",
        );
    }
    let mut map = Vec::new();
    for rule in view.region_map {
        if rule.cidr.parse::<IpNet>().is_err() {
            return invalid(format!("{:?} is not a CIDR network", rule.cidr));
        }
        if rule.region.is_empty() {
            return invalid("a region name cannot be empty");
        }
        map.push((rule.cidr, rule.region));
    }
    let policy = serde_json::to_value(view.default_policy).expect("serializes");
    store
        .put_setting(
            setting::DEFAULT_ALLOCATION_POLICY,
            policy.as_str().unwrap_or("hashed"),
        )
        .await?;
    store
        .put_setting(
            setting::REGION_MAP,
            &serde_json::to_string(&map).expect("serializes"),
        )
        .await?;
    Ok(())
}
