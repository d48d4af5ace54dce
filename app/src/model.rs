//! What the console shows, as it travels between server and browser.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceSummary {
    pub id_scope: String,
    pub enrollments: u64,
    pub groups: u64,
    pub registrations: u64,
    pub hubs: Vec<HubSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HubSummary {
    pub host_name: String,
    pub connector: String,
    pub region: Option<String>,
    pub allocation_weight: u32,
    pub devices: u64,
}
