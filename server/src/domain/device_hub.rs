//! The built-in hub as its devices see it: a device proves it holds an
//! identity's key, reads its twin, and reports properties; operators' desired changes are pushed to
//! the device's connection. One connection per device: a new one replaces the old. Transport-free:
//! the MQTT hub session only translates packets into these calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{ca, issuance};
use crate::attestation::sas;
use crate::attestation::x509::{self, PresentedChain, X509Error};
use crate::coordination::Peers;
use crate::diagnostics::{DiagnosticsBus, HubActivity, HubEvent};
use crate::model::{DeviceAuth, HubDevice, IfMatch, decode_key, key_of};
use crate::store::{Store, StoreError};

/// Why a device may not connect; all of them are "not authorized" on the wire, the reason is
/// for the logs.
#[derive(Debug, thiserror::Error)]
pub enum HubRefusal {
    #[error("no device {device_id:?} on hub {hub:?}")]
    UnknownDevice { hub: String, device_id: String },
    #[error("the device identity is disabled")]
    Disabled,
    #[error("no SAS token")]
    NoToken,
    #[error("the identity authenticates with an X.509 certificate, and none was presented")]
    NoCertificate,
    #[error("the client certificate's thumbprint is not the identity's")]
    ThumbprintMismatch,
    #[error("the certificate {0} was revoked")]
    Revoked(String),
    #[error(transparent)]
    Certificate(#[from] X509Error),
    #[error(transparent)]
    Sas(#[from] sas::SasError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<issuance::Revoked> for HubRefusal {
    fn from(e: issuance::Revoked) -> Self {
        match e {
            issuance::Revoked::Revoked(serial) => HubRefusal::Revoked(serial),
            issuance::Revoked::Store(e) => HubRefusal::Store(e),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("the reported patch is not a JSON object: {0}")]
    BadPatch(String),
    #[error("the device identity no longer exists")]
    Gone,
    #[error("the twin is changing too fast; retry")]
    Contended,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TwinError {
    /// The status IoT Hub answers with.
    pub fn status(&self) -> u16 {
        match self {
            TwinError::BadPatch(_) => 400,
            TwinError::Gone => 404,
            TwinError::Contended => 429,
            TwinError::Store(_) => 500,
        }
    }
}

/// What the hub sends a connected device on its own initiative.
#[derive(Debug, Clone, PartialEq)]
pub enum Push {
    /// A desired-properties patch, with the new desired version.
    Desired {
        version: i64,
        patch: Map<String, Value>,
    },
    /// Another connection of the same device took over: close this one.
    Replaced,
}

/// A device's connection as the hub knows it; dropping it detaches the device.
pub struct Attachment {
    pub pushes: mpsc::Receiver<Push>,
    key: (String, String),
    hub_name: String,
    session: u64,
    hub: Arc<DeviceHub>,
}

impl Drop for Attachment {
    fn drop(&mut self) {
        let mut connected = self.hub.connected.lock().unwrap();
        if connected
            .get(&self.key)
            .is_some_and(|c| c.session == self.session)
        {
            connected.remove(&self.key);
        }
        drop(connected);
        self.hub
            .emit(&self.hub_name, &self.key.1, HubActivity::Disconnected);
    }
}

struct Connected {
    session: u64,
    /// When it attached: a connection of the same device through another instance after this
    /// replaces it (`replace_if_older`).
    since: DateTime<Utc>,
    pushes: mpsc::Sender<Push>,
}

/// Telemetry kept per device for operators to look at (the newest, each cut to a size).
pub const RECENT_MESSAGES: usize = 10;
pub const RECENT_MESSAGE_BYTES: usize = 4096;

/// A device-to-cloud message as the hub keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecentMessage {
    pub received: chrono::DateTime<Utc>,
    /// The topic's property bag (`$.ct=...&key=value`), as sent.
    pub properties: String,
    /// The body as text (lossy UTF-8), at most `RECENT_MESSAGE_BYTES` of it.
    pub body: String,
    pub truncated: bool,
}

/// Pushes queued for a slow device beyond this are dropped; it reads the whole twin when it
/// reconnects, as IoT Hub devices do.
const PUSH_QUEUE: usize = 16;

/// The device-facing side of the built-in hubs.
/// What the registry API sets on a device identity.
pub struct IdentitySettings {
    pub enabled: bool,
    pub auth: DeviceAuth,
    pub iot_edge: bool,
}

pub struct DeviceHub {
    store: Arc<dyn Store>,
    bus: DiagnosticsBus,
    /// The other instances, offered the desired patches no session here could take.
    peers: Arc<Peers>,
    connected: Mutex<HashMap<(String, String), Connected>>,
    sessions: AtomicU64,
    /// Recent telemetry per device, in memory only: a window for operators, not a message store.
    recent: Mutex<HashMap<(String, String), std::collections::VecDeque<RecentMessage>>>,
}

impl DeviceHub {
    pub fn new(store: Arc<dyn Store>, bus: DiagnosticsBus, peers: Arc<Peers>) -> Arc<Self> {
        Arc::new(DeviceHub {
            store,
            bus,
            peers,
            connected: Mutex::new(HashMap::new()),
            sessions: AtomicU64::new(0),
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// Records an authenticated device's connection; an older one of the same device is told to
    /// close.
    pub fn attach(self: &Arc<Self>, hub: &str, device_id: &str) -> Attachment {
        let key = (key_of(hub), device_id.to_string());
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        let (sender, pushes) = mpsc::channel(PUSH_QUEUE);
        let previous = self.connected.lock().unwrap().insert(
            key.clone(),
            Connected {
                session,
                since: Utc::now(),
                pushes: sender,
            },
        );
        if let Some(previous) = previous {
            let _ = previous.pushes.try_send(Push::Replaced);
            self.emit(hub, device_id, HubActivity::Replaced);
        }
        self.emit(hub, device_id, HubActivity::Connected);
        Attachment {
            pushes,
            key,
            hub_name: hub.to_string(),
            session,
            hub: self.clone(),
        }
    }

    /// The device connected through another instance at `at`: a session of it here that is
    /// older is told to close, as a second connection here would.
    pub fn replace_if_older(&self, hub: &str, device_id: &str, at: DateTime<Utc>) {
        let key = (key_of(hub), device_id.to_string());
        let mut connected = self.connected.lock().unwrap();
        if connected.get(&key).is_none_or(|c| c.since >= at) {
            return;
        }
        let previous = connected.remove(&key).expect("just seen");
        drop(connected);
        let _ = previous.pushes.try_send(Push::Replaced);
        self.emit(hub, device_id, HubActivity::Replaced);
    }

    /// A desired patch made through another instance: delivered if the device is connected here.
    pub fn deliver_desired(
        &self,
        hub: &str,
        device_id: &str,
        version: i64,
        patch: &Map<String, Value>,
    ) {
        let push = Push::Desired {
            version,
            patch: patch.clone(),
        };
        if self.try_push(hub, device_id, push) {
            self.emit(
                hub,
                device_id,
                HubActivity::DesiredPatched {
                    version,
                    delivered: true,
                },
            );
        }
    }

    /// Queues `push` for the device's session here; false when it has none or its queue is full.
    fn try_push(&self, hub: &str, device_id: &str, push: Push) -> bool {
        let key = (key_of(hub), device_id.to_string());
        self.connected
            .lock()
            .unwrap()
            .get(&key)
            .is_some_and(|connected| connected.pushes.try_send(push).is_ok())
    }

    fn emit(&self, hub: &str, device_id: &str, activity: HubActivity) {
        self.bus.emit_hub(HubEvent::new(hub, device_id, activity));
    }

    /// Keeps a device's telemetry message among its most recent ones.
    pub fn record_telemetry(&self, hub: &str, device_id: &str, properties: &str, body: &[u8]) {
        let kept = &body[..body.len().min(RECENT_MESSAGE_BYTES)];
        let message = RecentMessage {
            received: Utc::now(),
            properties: properties.to_string(),
            body: String::from_utf8_lossy(kept).into_owned(),
            truncated: kept.len() < body.len(),
        };
        let key = (key_of(hub), device_id.to_string());
        let mut recent = self.recent.lock().unwrap();
        let messages = recent.entry(key).or_default();
        if messages.len() == RECENT_MESSAGES {
            messages.pop_front();
        }
        messages.push_back(message);
    }

    /// A device's recent telemetry, oldest first.
    pub fn recent_telemetry(&self, hub: &str, device_id: &str) -> Vec<RecentMessage> {
        let key = (key_of(hub), device_id.to_string());
        let recent = self.recent.lock().unwrap();
        recent
            .get(&key)
            .map(|messages| messages.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether the device has a connection now.
    pub fn is_connected(&self, hub: &str, device_id: &str) -> bool {
        let key = (key_of(hub), device_id.to_string());
        self.connected.lock().unwrap().contains_key(&key)
    }

    /// An operator's twin change: tags and desired properties merged (JSON merge patch), the
    /// desired version raised when desired properties change, and the patch pushed to the device
    /// if it is connected.
    pub async fn patch_twin(
        &self,
        hub: &str,
        device_id: &str,
        tags: Option<&Map<String, Value>>,
        desired: Option<&Map<String, Value>>,
        cond: IfMatch,
    ) -> Result<HubDevice, TwinError> {
        let saved = self
            .update(hub, device_id, cond, |device| {
                if let Some(tags) = tags {
                    merge_patch(&mut device.tags, tags);
                }
                if let Some(desired) = desired {
                    merge_patch(&mut device.desired.properties, desired);
                    device.desired.version = device.desired.version.max(1) + 1;
                }
            })
            .await?;
        if let Some(desired) = desired {
            self.push(hub, device_id, saved.desired.version, desired);
        }
        Ok(saved)
    }

    /// Read, change, write back under the read's etag; a concurrent writer makes it read again
    /// (a few times at most). An `Etag` condition must match the stored twin and is not retried.
    async fn update(
        &self,
        hub: &str,
        device_id: &str,
        cond: IfMatch,
        mut change: impl FnMut(&mut HubDevice),
    ) -> Result<HubDevice, TwinError> {
        for _ in 0..5 {
            let mut device = self
                .store
                .get_hub_device(hub, device_id)
                .await?
                .ok_or(TwinError::Gone)?;
            if matches!(&cond, IfMatch::Etag(tag) if *tag != device.etag) {
                return Err(StoreError::PreconditionFailed.into());
            }
            let write_cond = IfMatch::Etag(device.etag.clone());
            change(&mut device);
            match self.store.put_hub_device(device, write_cond).await {
                Ok(saved) => return Ok(saved),
                Err(StoreError::PreconditionFailed) if !matches!(cond, IfMatch::Etag(_)) => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(TwinError::Contended)
    }

    fn push(&self, hub: &str, device_id: &str, version: i64, desired: &Map<String, Value>) {
        let push = Push::Desired {
            version,
            patch: desired.clone(),
        };
        // Not delivered here (not connected, or its queue is full): the device may be connected
        // through another instance; otherwise it reads the twin on reconnect.
        let delivered = self.try_push(hub, device_id, push);
        if !delivered {
            self.peers.desired_patched(hub, device_id, version, desired);
        }
        self.emit(
            hub,
            device_id,
            HubActivity::DesiredPatched { version, delivered },
        );
    }

    /// Checks that the identity is enabled and the device proves it is that identity: a SAS token
    /// (`sr={hub}/devices/{deviceId}`, signed with the identity's primary or secondary key, not
    /// expired), or the TLS client certificate: the enrolled one (by SHA-256 or SHA-1 thumbprint)
    /// or, for a CA-authenticated identity, one whose CN is the device ID with a chain to a
    /// verified CA.
    pub async fn authenticate(
        &self,
        hub: &str,
        device_id: &str,
        token: Option<&str>,
        chain: Option<&PresentedChain>,
    ) -> Result<(), HubRefusal> {
        let result = self.check_credentials(hub, device_id, token, chain).await;
        if let Err(refusal) = &result {
            let reason = refusal.to_string();
            self.emit(hub, device_id, HubActivity::Refused { reason });
        }
        result
    }

    async fn check_credentials(
        &self,
        hub: &str,
        device_id: &str,
        token: Option<&str>,
        chain: Option<&PresentedChain>,
    ) -> Result<(), HubRefusal> {
        let device = self.device(hub, device_id).await?;
        if !device.enabled {
            return Err(HubRefusal::Disabled);
        }
        let now = rustls::pki_types::UnixTime::now();
        let leaf = || {
            chain
                .and_then(PresentedChain::leaf)
                .ok_or(HubRefusal::NoCertificate)
        };
        let (primary_key, secondary_key) = match &device.auth {
            DeviceAuth::Sas {
                primary_key,
                secondary_key,
            } => (primary_key, secondary_key),
            DeviceAuth::SelfSigned {
                primary_thumbprint,
                secondary_thumbprint,
            } => {
                let info = x509::check_leaf(leaf()?, device_id, now)?;
                let enrolled = [Some(primary_thumbprint), secondary_thumbprint.as_ref()];
                let presented = [info.sha256_thumbprint, info.sha1_thumbprint];
                let matches = enrolled
                    .iter()
                    .flatten()
                    .any(|t| presented.iter().any(|p| p.eq_ignore_ascii_case(t)));
                return matches.then_some(()).ok_or(HubRefusal::ThumbprintMismatch);
            }
            DeviceAuth::CertificateAuthority => {
                x509::check_leaf(leaf()?, device_id, now)?;
                issuance::check_not_revoked(self.store.as_ref(), leaf()?).await?;
                let chain = chain.ok_or(HubRefusal::NoCertificate)?;
                let cas = ca::decoded(self.store.as_ref()).await?;
                let (verified, unverified) =
                    (ca::certificates(&cas, true), ca::certificates(&cas, false));
                x509::path_to_verified_ca(&chain.0, &verified, &[], &unverified, now)?;
                return Ok(());
            }
        };
        let token = sas::parse(token.filter(|t| !t.is_empty()).ok_or(HubRefusal::NoToken)?)?;
        let keys = [decode_key(primary_key), decode_key(secondary_key)];
        let keys: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        let now = Utc::now().timestamp().max(0) as u64;
        token.verify(&format!("{hub}/devices/{device_id}"), &keys, now)?;
        Ok(())
    }

    /// Creates a device identity on a built-in hub, or changes its status, credentials and
    /// capabilities (its twin and generation are kept).
    pub async fn put_identity(
        &self,
        hub: &str,
        device_id: &str,
        settings: IdentitySettings,
        cond: IfMatch,
    ) -> Result<HubDevice, StoreError> {
        let IdentitySettings {
            enabled,
            auth,
            iot_edge,
        } = settings;
        let now = chrono::Utc::now();
        let device = match self.store.get_hub_device(hub, device_id).await? {
            Some(existing) => HubDevice {
                enabled,
                auth,
                iot_edge,
                ..existing
            },
            None => HubDevice {
                enabled,
                iot_edge,
                ..HubDevice::new(hub, device_id, auth, now)
            },
        };
        self.store.put_hub_device(device, cond).await
    }

    /// Removes a device identity; `Ok(false)` when there was none.
    pub async fn delete_identity(
        &self,
        hub: &str,
        device_id: &str,
        cond: IfMatch,
    ) -> Result<bool, StoreError> {
        match self.store.delete_hub_device(hub, device_id, cond).await {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The device whose twin a device GETs (`proto::twin::document` is its wire shape).
    pub async fn twin(&self, hub: &str, device_id: &str) -> Result<HubDevice, TwinError> {
        self.device(hub, device_id)
            .await
            .map_err(|_| TwinError::Gone)
    }

    /// Applies a reported-properties JSON merge patch; returns the new reported version.
    pub async fn patch_reported(
        &self,
        hub: &str,
        device_id: &str,
        patch: &[u8],
    ) -> Result<i64, TwinError> {
        let patch = parse_reported_patch(patch)?;
        let saved = self
            .update(hub, device_id, IfMatch::Any, |device| {
                merge_patch(&mut device.reported.properties, &patch);
                device.reported.version = device.reported.version.max(1) + 1;
            })
            .await?;
        let version = saved.reported.version;
        self.emit(hub, device_id, HubActivity::ReportedPatched { version });
        Ok(version)
    }

    async fn device(&self, hub: &str, device_id: &str) -> Result<HubDevice, HubRefusal> {
        self.store
            .get_hub_device(hub, device_id)
            .await?
            .ok_or_else(|| HubRefusal::UnknownDevice {
                hub: hub.into(),
                device_id: device_id.into(),
            })
    }
}

/// A device's reported-properties patch (an MQTT publish payload): a JSON object.
pub fn parse_reported_patch(patch: &[u8]) -> Result<Map<String, Value>, TwinError> {
    match serde_json::from_slice::<Value>(patch) {
        Ok(Value::Object(patch)) => Ok(patch),
        Ok(other) => Err(TwinError::BadPatch(format!("got {other}"))),
        Err(e) => Err(TwinError::BadPatch(e.to_string())),
    }
}

/// RFC 7396 JSON merge patch: objects merge recursively, `null` removes, anything else replaces.
/// Keys starting with `$` are metadata and are not stored.
pub fn merge_patch(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        if key.starts_with('$') {
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn recent_telemetry_is_bounded_per_device_and_cut_to_size() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("onramp.db").display());
        let store = crate::store::open(&url, 1).await.unwrap();
        let peers = Peers::new(store.clone(), "0ne00000000");
        let hub = DeviceHub::new(store, DiagnosticsBus::default(), peers);
        for i in 0..(RECENT_MESSAGES + 3) {
            hub.record_telemetry("Hub", "d", "", format!("m{i}").as_bytes());
        }
        hub.record_telemetry(
            "hub",
            "e",
            "$.ct=text",
            &vec![b'x'; RECENT_MESSAGE_BYTES + 1],
        );
        let kept = hub.recent_telemetry("hub", "d");
        assert_eq!(kept.len(), RECENT_MESSAGES);
        assert_eq!(
            (kept[0].body.as_str(), kept.last().unwrap().body.as_str()),
            ("m3", "m12")
        );
        let big = &hub.recent_telemetry("HUB", "e")[0];
        assert!(big.truncated && big.body.len() == RECENT_MESSAGE_BYTES);
        assert!(hub.recent_telemetry("hub", "nobody").is_empty());
    }

    fn identity(device_id: &str, auth: DeviceAuth) -> HubDevice {
        let now = Utc::now();
        HubDevice {
            hub: "hub".into(),
            device_id: device_id.into(),
            enabled: true,
            auth,
            iot_edge: false,
            generation_id: "1".into(),
            tags: Map::new(),
            desired: Default::default(),
            reported: Default::default(),
            etag: crate::model::Etag::new(),
            created: now,
            updated: now,
        }
    }

    #[tokio::test]
    async fn certificate_identities_need_their_certificate() {
        use crate::test_certs::{self_signed, signed};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("onramp.db").display());
        let store = crate::store::open(&url, 1).await.unwrap();
        let peers = Peers::new(store.clone(), "0ne00000000");
        let hub = DeviceHub::new(store.clone(), DiagnosticsBus::default(), peers);
        let chain = |der: &rustls::pki_types::CertificateDer<'static>| {
            PresentedChain(vec![der.clone()].into())
        };

        let ca = self_signed("hub root", true);
        let own = signed(&ca, "solo", false, (-1, 30));
        let other = signed(&ca, "solo", false, (-1, 30));
        let auth = DeviceAuth::SelfSigned {
            primary_thumbprint: x509::describe(&own.der).unwrap().sha1_thumbprint,
            secondary_thumbprint: None,
        };
        store
            .put_hub_device(identity("solo", auth), IfMatch::Any)
            .await
            .unwrap();
        hub.authenticate("hub", "solo", None, Some(&chain(&own.der)))
            .await
            .unwrap();
        assert!(matches!(
            hub.authenticate("hub", "solo", None, Some(&chain(&other.der)))
                .await,
            Err(HubRefusal::ThumbprintMismatch)
        ));
        assert!(matches!(
            hub.authenticate("hub", "solo", Some("SharedAccessSignature sr=x"), None)
                .await,
            Err(HubRefusal::NoCertificate)
        ));

        let member = signed(&ca, "member", false, (-1, 30));
        store
            .put_hub_device(
                identity("member", DeviceAuth::CertificateAuthority),
                IfMatch::Any,
            )
            .await
            .unwrap();
        let refused = hub
            .authenticate("hub", "member", None, Some(&chain(&member.der)))
            .await;
        assert!(
            matches!(refused, Err(HubRefusal::Certificate(X509Error::UnknownCa))),
            "{refused:?}"
        );
        let pem = x509::to_pem(&ca.der);
        super::super::ca::put_ca(store.as_ref(), "hub-root", &pem, true)
            .await
            .unwrap();
        hub.authenticate("hub", "member", None, Some(&chain(&member.der)))
            .await
            .unwrap();
        let stranger = signed(&ca, "someone-else", false, (-1, 30));
        assert!(matches!(
            hub.authenticate("hub", "member", None, Some(&chain(&stranger.der)))
                .await,
            Err(HubRefusal::Certificate(X509Error::CommonNameMismatch(_)))
        ));
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = object(json!({"a": 1, "b": {"c": 2, "d": 3}, "e": [1], "f": "x"}));
        let patch =
            object(json!({"a": null, "b": {"c": null, "g": 4}, "e": {"h": 5}, "$version": 9}));
        merge_patch(&mut target, &patch);
        assert_eq!(
            Value::Object(target),
            json!({"b": {"d": 3, "g": 4}, "e": {"h": 5}, "f": "x"})
        );
    }
}
