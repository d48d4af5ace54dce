//! Instance-wide settings created on first start and shared by every Onramp process on the same
//! database.

use serde::{Deserialize, Serialize};

use super::AllocationPolicy;

/// Setting keys in the store's `instance_settings` table.
pub mod setting {
    pub const ID_SCOPE: &str = "id_scope";
    pub const DEFAULT_ALLOCATION_POLICY: &str = "default_allocation_policy";
    pub const REGION_MAP: &str = "region_map";
}

/// The name of the all-rights service policy created on first start.
pub const OWNER_POLICY: &str = "provisioningserviceowner";

/// An Azure-style ID scope: `0ne` followed by 8 upper-case hex digits.
pub fn new_id_scope() -> String {
    format!("0ne{:08X}", rand::random::<u32>())
}

pub fn is_id_scope(s: &str) -> bool {
    s.len() == 11
        && s[..3].eq_ignore_ascii_case("0ne")
        && s[3..].chars().all(|c| c.is_ascii_hexdigit())
}

/// Allocation defaults for enrollments that set none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationSettings {
    pub default_policy: AllocationPolicy,
    /// Client network (CIDR) → region, for geo/latency allocation.
    pub region_map: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_scopes_look_like_azure() {
        for _ in 0..100 {
            let scope = new_id_scope();
            assert!(is_id_scope(&scope), "{scope}");
            assert!(scope.starts_with("0ne"));
        }
        assert!(!is_id_scope("0ne0000000"));
        assert!(!is_id_scope("1ne00000000"));
        assert!(!is_id_scope("0ne0000000g"));
    }
}
