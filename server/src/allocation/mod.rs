//! Choosing a hub for a device. `hashed`, `geo` and `static` are pure functions of the candidates;
//! `custom` asks the enrollment's webhook. Which hubs are candidates is decided here too, once.

pub mod custom;
pub mod geo;
pub mod hashed;

use std::net::IpAddr;

use crate::model::{AllocationPolicy, AllocationSettings, LinkedHub};

/// The hubs an enrollment may use: the ones it names (whatever their `applyAllocationPolicy`), or
/// else every linked hub that takes part in allocation.
pub fn candidates<'a>(linked: &'a [LinkedHub], named: &[String]) -> Vec<&'a LinkedHub> {
    if named.is_empty() {
        linked
            .iter()
            .filter(|h| h.apply_allocation_policy)
            .collect()
    } else {
        linked
            .iter()
            .filter(|h| named.iter().any(|n| n.eq_ignore_ascii_case(&h.host_name)))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("no linked hub is available for this enrollment")]
    NoHub,
    #[error("a static allocation needs exactly one hub, the enrollment allows {0}")]
    StaticNeedsOneHub(usize),
}

/// Picks a hub with a built-in policy (custom is handled by the caller, with the webhook).
pub fn choose<'a>(
    policy: AllocationPolicy,
    candidates: &[&'a LinkedHub],
    registration_id: &str,
    client: Option<IpAddr>,
    settings: &AllocationSettings,
) -> Result<&'a LinkedHub, AllocationError> {
    if candidates.is_empty() {
        return Err(AllocationError::NoHub);
    }
    match policy {
        AllocationPolicy::Static => match candidates {
            [only] => Ok(only),
            many => Err(AllocationError::StaticNeedsOneHub(many.len())),
        },
        AllocationPolicy::GeoLatency => {
            let near = geo::nearest(candidates, client, &settings.region_map);
            hashed::pick(&near, registration_id).ok_or(AllocationError::NoHub)
        }
        AllocationPolicy::Hashed | AllocationPolicy::Custom => {
            hashed::pick(candidates, registration_id).ok_or(AllocationError::NoHub)
        }
    }
}
