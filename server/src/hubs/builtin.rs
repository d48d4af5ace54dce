//! The built-in hub: identities and twins in Onramp's own store, so a fresh install provisions end
//! to end with nothing else running. It can host several logical hubs, one per host name.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;

use super::{HubConnector, HubError, Identity, Provisioned, TwinState, TwinWrite};
use crate::model::{HubDevice, IfMatch, LinkedHub, TwinProperties};
use crate::store::{Store, StoreError};

pub struct BuiltInHub {
    store: Arc<dyn Store>,
}

impl BuiltInHub {
    pub fn new(store: Arc<dyn Store>) -> BuiltInHub {
        BuiltInHub { store }
    }
}

impl BuiltInHub {
    async fn next_state(
        &self,
        hub: &LinkedHub,
        identity: &Identity,
        twin: &TwinWrite,
    ) -> Result<(HubDevice, IfMatch), HubError> {
        let now = Utc::now();
        let fresh = |tags, desired, reported| HubDevice {
            iot_edge: identity.iot_edge,
            tags,
            desired,
            reported,
            ..HubDevice::new(
                &hub.host_name,
                &identity.device_id,
                identity.auth.clone(),
                now,
            )
        };
        Ok(match twin {
            TwinWrite::Initial(initial) => {
                let desired = TwinProperties {
                    properties: initial.desired.clone(),
                    version: 1,
                };
                (
                    fresh(initial.tags.clone(), desired, TwinProperties::default()),
                    IfMatch::Any,
                )
            }
            TwinWrite::Migrated(state) => (
                fresh(
                    state.tags.clone(),
                    state.desired.clone(),
                    state.reported.clone(),
                ),
                IfMatch::Any,
            ),
            TwinWrite::Keep => match self
                .store
                .get_hub_device(&hub.host_name, &identity.device_id)
                .await?
            {
                Some(existing) => {
                    let cond = IfMatch::Etag(existing.etag.clone());
                    let device = HubDevice {
                        auth: identity.auth.clone(),
                        iot_edge: identity.iot_edge,
                        enabled: true,
                        ..existing
                    };
                    (device, cond)
                }
                None => (
                    fresh(Default::default(), Default::default(), Default::default()),
                    IfMatch::Absent,
                ),
            },
        })
    }
}

/// Like IoT Hub, a generation ID tells a re-created identity from the one before it.
#[async_trait]
impl HubConnector for BuiltInHub {
    async fn provision(
        &self,
        hub: &LinkedHub,
        identity: Identity,
        twin: TwinWrite,
    ) -> Result<Provisioned, HubError> {
        // Only a credentials update (Keep) reads before it writes; a concurrent writer makes it
        // read again, a few times at most. A new identity or twin replaces whatever is stored, so
        // it is committed with the registration record.
        for _ in 0..3 {
            let (device, cond) = self.next_state(hub, &identity, &twin).await?;
            if cond == IfMatch::Any {
                return Ok(Provisioned::WithRecord(Box::new(device)));
            }
            match self.store.put_hub_device(device, cond).await {
                Err(StoreError::PreconditionFailed | StoreError::Conflict) => continue,
                other => return other.map(|_| Provisioned::Done).map_err(HubError::from),
            }
        }
        Err(HubError::Contended)
    }

    async fn read_twin(
        &self,
        hub: &LinkedHub,
        device_id: &str,
    ) -> Result<Option<TwinState>, HubError> {
        Ok(self
            .store
            .get_hub_device(&hub.host_name, device_id)
            .await?
            .map(|d| TwinState {
                tags: d.tags,
                desired: d.desired,
                reported: d.reported,
            }))
    }

    async fn remove(&self, hub: &LinkedHub, device_id: &str) -> Result<(), HubError> {
        match self
            .store
            .delete_hub_device(&hub.host_name, device_id, IfMatch::Any)
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
