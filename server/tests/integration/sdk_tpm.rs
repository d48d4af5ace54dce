//! TPM devices through the official Node SDK (`azure-iot-security-tpm` on tss.js, over HTTP, AMQP
//! and AMQP/WebSocket, the transports that SDK offers for TPM) with a software TPM per device
//! (`support::swtpm`): the SDK's default registration ID, the activation challenge, the hub key
//! imported into the TPM from the final result and used by the SDK's `TpmAuthenticationProvider`
//! to sign its hub SAS tokens, registering again, and the refusals with their diagnostics reasons.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use onramp::attestation::tpm;
use onramp::model::*;
use serde_json::Value;

use crate::sdk::{Ctx, sdk};
use crate::support::HUB;
use crate::support::instance::{enroll, symmetric_spec};
use crate::support::swtpm::SoftwareTpm;

/// A software TPM and what the SDK reads off it.
struct TpmDevice {
    tpm: SoftwareTpm,
    endorsement_key: String,
    registration_id: String,
}

impl Ctx {
    /// A fresh TPM; the SDK creates its EK and derives the registration ID as it would register.
    fn tpm_device(&self) -> TpmDevice {
        let tpm = SoftwareTpm::start();
        let out = sdk("register-tpm.js", &["ek", &tpm.port.to_string()], &self.ca);
        assert_eq!(out["ok"], true, "{out}");
        let endorsement_key = out["endorsementKey"].as_str().unwrap().to_string();
        let registration_id = out["registrationId"].as_str().unwrap().to_string();
        let ek = BASE64.decode(&endorsement_key).unwrap();
        assert_eq!(
            tpm::default_registration_id(&ek),
            registration_id,
            "Onramp derives the SDK's default registration ID"
        );
        TpmDevice {
            tpm,
            endorsement_key,
            registration_id,
        }
    }

    fn register_tpm(&self, device: &TpmDevice, extra: &[&str]) -> Value {
        let port = device.tpm.port.to_string();
        let mut args = vec![self.transport, &self.host, &self.scope, &port];
        args.extend_from_slice(extra);
        sdk("register-tpm.js", &args, &self.ca)
    }

    async fn enroll_tpm(&self, device: &TpmDevice, status: ProvisioningStatus) {
        let spec = EnrollmentSpec {
            attestation: Attestation::Tpm {
                endorsement_key: device.endorsement_key.clone(),
                storage_root_key: None,
            },
            provisioning_status: status,
            ..symmetric_spec("", "")
        };
        enroll(&self.store, &device.registration_id, None, spec).await;
    }

    /// The device was refused, nothing is assigned, and the diagnostics give `reason`.
    async fn assert_tpm_refused(&self, device: &TpmDevice, out: &Value, reason: &str) {
        assert_eq!(out["ok"], false, "{out}");
        let said = self.refusal_reason(&device.registration_id).await;
        assert!(said.contains(reason), "{said:?} lacks {reason:?}: {out}");
        let record = self.store.get_registration(&device.registration_id).await;
        assert!(record.unwrap().is_none(), "assigned: {out}");
        let identity = self
            .store
            .get_hub_device(HUB, &device.registration_id)
            .await;
        assert!(identity.unwrap().is_none(), "a hub identity: {out}");
    }
}

pub async fn tpm_devices(ctx: &Ctx) {
    let device = ctx.tpm_device();
    ctx.enroll_tpm(&device, ProvisioningStatus::Enabled).await;
    for attempt in ["first", "again"] {
        // Registering again re-imports the challenge key over the hub key: the final result must
        // bring the hub key back, and the hub must accept what the TPM then signs.
        let out = ctx.register_tpm(&device, &["--hub"]);
        assert_eq!(out["ok"], true, "{attempt}: {out}");
        assert_eq!(out["result"]["assignedHub"], HUB, "{out}");
        assert_eq!(out["result"]["deviceId"], device.registration_id.as_str());
        assert_eq!(out["hub"], "sent", "the hub took the TPM-signed SAS: {out}");
    }
    let record = ctx.store.get_registration(&device.registration_id).await;
    let record = record.unwrap().expect("a registration record");
    assert_eq!(record.attestation, AttestationKind::Tpm);
    assert_eq!(record.assigned_hub.as_deref(), Some(HUB));

    let stranger = ctx.tpm_device();
    let out = ctx.register_tpm(&stranger, &[]);
    ctx.assert_tpm_refused(&stranger, &out, "tpm: unknown endorsement key")
        .await;

    let disabled = ctx.tpm_device();
    ctx.enroll_tpm(&disabled, ProvisioningStatus::Disabled)
        .await;
    let out = ctx.register_tpm(&disabled, &[]);
    ctx.assert_tpm_refused(&disabled, &out, "tpm: the enrollment is disabled")
        .await;
}
