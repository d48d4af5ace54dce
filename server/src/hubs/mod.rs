//! Linked hubs as the provisioner sees them: a `HubConnector` creates, updates and removes device
//! identities and writes or reads their twins. The built-in hub keeps both in Onramp's store; other
//! connectors (Azure IoT Hub, Mosquitto, webhooks) implement the same trait.

pub mod builtin;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::model::{ConnectorKind, DeviceAuth, HubDevice, InitialTwin, LinkedHub, TwinProperties};
use crate::store::StoreError;

/// A device identity as a hub needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub device_id: String,
    pub auth: DeviceAuth,
    pub iot_edge: bool,
}

/// The twin of an identity, as read for migration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TwinState {
    pub tags: Map<String, Value>,
    pub desired: TwinProperties,
    pub reported: TwinProperties,
}

/// What to do with the twin when an identity is written.
#[derive(Debug, Clone, PartialEq)]
pub enum TwinWrite {
    /// Start over from this initial twin (first assignment, reset).
    Initial(InitialTwin),
    /// Carry a twin over from the old hub (migration).
    Migrated(TwinState),
    /// Leave the twin as it is (update credentials only).
    Keep,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("hub store: {0}")]
    Store(#[from] StoreError),
    #[error("the identity kept changing while it was being written")]
    Contended,
}

/// What is left of a provisioning once the connector returns.
#[derive(Debug)]
pub enum Provisioned {
    /// The identity is on the hub.
    Done,
    /// A built-in hub identity for the provisioner to store in the transaction of the
    /// registration record: neither exists without the other, and a registration waits for one
    /// commit instead of two.
    WithRecord(Box<HubDevice>),
}

#[async_trait]
pub trait HubConnector: Send + Sync + 'static {
    /// Creates or updates the identity on `hub` and writes its twin as `twin` says.
    async fn provision(
        &self,
        hub: &LinkedHub,
        identity: Identity,
        twin: TwinWrite,
    ) -> Result<Provisioned, HubError>;
    async fn read_twin(
        &self,
        hub: &LinkedHub,
        device_id: &str,
    ) -> Result<Option<TwinState>, HubError>;
    /// Removes the identity; removing one that is not there is fine.
    async fn remove(&self, hub: &LinkedHub, device_id: &str) -> Result<(), HubError>;
}

/// The connectors of every kind, picked by a hub's `connector`.
#[derive(Clone)]
pub struct Connectors {
    builtin: Arc<builtin::BuiltInHub>,
}

impl Connectors {
    pub fn new(builtin: builtin::BuiltInHub) -> Connectors {
        Connectors {
            builtin: Arc::new(builtin),
        }
    }

    pub fn for_hub(&self, hub: &LinkedHub) -> &dyn HubConnector {
        match hub.connector {
            ConnectorKind::BuiltIn => self.builtin.as_ref(),
        }
    }
}
