//! The console's forms as the domain's inputs: an enrollment form laid over the stored wire
//! document (so the service API's build step checks it), list filters, the allocation form and
//! the test-mode fault form.

use app::backend::BackendError;
use app::model::{AllocationForm, EnrollmentFilter, EnrollmentForm, TestFaultForm};
use serde_json::{Value, json};

use crate::domain::admin::{AllocationSettingsView, RegionRule};
use crate::model::{AttestationKind, FaultInjection, ListQuery, ProvisioningStatus};

/// Rows on one page of a console list.
pub(super) const PAGE_SIZE: u32 = 50;

fn invalid(message: String) -> BackendError {
    BackendError::Invalid(message)
}

/// The fault as typed; whether it makes sense is the domain's to say (`admin::faults`).
pub(super) fn fault_of(form: &TestFaultForm) -> Result<FaultInjection, BackendError> {
    fn number<T: std::str::FromStr>(label: &str, text: &str) -> Result<Option<T>, BackendError> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let whole = format!("{label} must be a whole number, not {text:?}");
        text.parse().map(Some).map_err(|_| invalid(whole))
    }
    Ok(FaultInjection {
        remaining: number("the number of registrations", &form.remaining)?.unwrap_or(0),
        error_code: number("the error code", &form.error_code)?,
        retry_after_seconds: number("Retry-After", &form.retry_after_seconds)?,
        latency_ms: number("the latency", &form.latency_ms)?.unwrap_or(0),
        drop_connection: form.drop_connection.is_some(),
    })
}

pub(super) fn list_query(filter: &EnrollmentFilter) -> Result<ListQuery, BackendError> {
    let nonempty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    Ok(ListQuery {
        id_prefix: nonempty(&filter.q),
        status: match nonempty(&filter.status) {
            None => None,
            Some(s) => Some(
                ProvisioningStatus::parse(&s)
                    .ok_or_else(|| invalid(format!("unknown status {s:?}")))?,
            ),
        },
        attestation: match nonempty(&filter.attestation) {
            None => None,
            Some(s) => Some(
                AttestationKind::parse(&s)
                    .ok_or_else(|| invalid(format!("unknown attestation {s:?}")))?,
            ),
        },
        group_id: None,
        after: nonempty(&filter.after),
        limit: PAGE_SIZE,
    })
}

/// The attestation the form asks for, or `None` to keep the stored one: symmetric keys stay
/// unless the type changes, and certificates or an endorsement key stay when left empty.
fn attestation_of(
    form: &EnrollmentForm,
    group: bool,
    stored: &Value,
) -> Result<Option<Value>, String> {
    let stored_kind = stored["type"].as_str().unwrap_or_default();
    let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    match form.attestation.trim() {
        "" => Ok(None),
        "symmetricKey" if stored_kind == "symmetricKey" => Ok(None),
        "symmetricKey" => Ok(Some(json!({"type": "symmetricKey", "symmetricKey": {}}))),
        "x509" => {
            let mut certificates = serde_json::Map::new();
            let slots = [
                ("primary", &form.primary_certificate),
                ("secondary", &form.secondary_certificate),
            ];
            for (slot, pem) in slots {
                if let Some(pem) = text(pem) {
                    certificates.insert(slot.into(), json!({"certificate": pem}));
                }
            }
            let reference = text(&form.ca_reference).filter(|_| group);
            if certificates.is_empty() && reference.is_none() {
                return match stored_kind {
                    "x509" => Ok(None),
                    _ if group => {
                        Err("an X.509 group needs a signing certificate or a CA reference".into())
                    }
                    _ => Err("an X.509 enrollment needs the device's certificate".into()),
                };
            }
            let mut x509 = json!({});
            if !certificates.is_empty() {
                let kind = if group {
                    "signingCertificates"
                } else {
                    "clientCertificates"
                };
                x509[kind] = Value::Object(certificates);
            }
            if let Some(name) = reference {
                x509["caReferences"] = json!({ "primary": name });
            }
            Ok(Some(json!({"type": "x509", "x509": x509})))
        }
        "tpm" if group => Err("enrollment groups cannot use TPM attestation".into()),
        "tpm" => match text(&form.endorsement_key) {
            Some(key) => Ok(Some(json!({"type": "tpm", "tpm": {"endorsementKey": key}}))),
            None if stored_kind == "tpm" => Ok(None),
            None => Err("a TPM enrollment needs the device's endorsement key".into()),
        },
        other => Err(format!("unknown attestation {other:?}")),
    }
}

/// Lays the form over `base` (the stored document with its keys, or a new symmetric-key one).
pub(super) fn document_of(
    form: &EnrollmentForm,
    id_field: &str,
    mut base: Value,
) -> Result<Value, String> {
    let twin = match form.initial_twin.trim() {
        "" => Value::Null,
        text => serde_json::from_str::<Value>(text)
            .map_err(|e| format!("the initial twin is not valid JSON: {e}"))?,
    };
    let (update_hub_assignment, migrate_device_data) = match form.reprovision.as_str() {
        "migrate" => (true, true),
        "reset" => (true, false),
        "never" => (false, false),
        other => return Err(format!("unknown reprovisioning policy {other:?}")),
    };
    let hubs: Vec<&str> = form
        .iot_hubs
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    let text = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let mut fields = json!({
        id_field: form.registration_id.trim(),
        "provisioningStatus": form.provisioning_status,
        "initialTwin": twin,
        "reprovisionPolicy": {
            "updateHubAssignment": update_hub_assignment,
            "migrateDeviceData": migrate_device_data,
        },
        "allocationPolicy": text(&form.allocation_policy),
        "iotHubs": hubs,
        "credentialPolicyName": text(&form.credential_policy),
    });
    if id_field == "registrationId" {
        fields["deviceId"] = json!(text(&form.device_id));
    }
    // Kept when the form leaves the webhook empty (the policy decides whether it is used).
    if let Some(url) = text(&form.webhook_url) {
        fields["customAllocationDefinition"] =
            json!({"webhookUrl": url, "apiVersion": "2021-10-01"});
    }
    let group = id_field == "enrollmentGroupId";
    if let Some(attestation) = attestation_of(form, group, &base["attestation"])? {
        base["attestation"] = attestation;
    }
    for (key, value) in fields.as_object().into_iter().flatten() {
        base[key] = value.clone();
    }
    Ok(base)
}

/// The settings form as the domain's view: each non-empty line is `CIDR region`.
pub(super) fn allocation_view(form: &AllocationForm) -> Result<AllocationSettingsView, String> {
    let default_policy = serde_json::from_value(json!(form.default_policy.trim()))
        .map_err(|_| format!("unknown allocation policy {:?}", form.default_policy))?;
    let region_map = form
        .region_map
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(
            |line| match line.split_whitespace().collect::<Vec<_>>()[..] {
                [cidr, region] => Ok(RegionRule {
                    cidr: cidr.into(),
                    region: region.into(),
                }),
                _ => Err(format!("{line:?} is not \"CIDR region\"")),
            },
        )
        .collect::<Result<_, _>>()?;
    Ok(AllocationSettingsView {
        default_policy,
        region_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AllocationPolicy;

    fn form(twin: &str) -> EnrollmentForm {
        EnrollmentForm {
            registration_id: " dev-1 ".into(),
            device_id: String::new(),
            provisioning_status: "enabled".into(),
            initial_twin: twin.into(),
            reprovision: "reset".into(),
            allocation_policy: String::new(),
            iot_hubs: "a.example, ,b.example".into(),
            ..EnrollmentForm::default()
        }
    }

    #[test]
    fn region_lines_become_rules() {
        let form = AllocationForm {
            default_policy: "geoLatency".into(),
            region_map: "10.0.0.0/8 eu\n\n  192.168.0.0/16   us \n".into(),
        };
        let view = allocation_view(&form).unwrap();
        assert_eq!(view.default_policy, AllocationPolicy::GeoLatency);
        assert_eq!(view.region_map.len(), 2);
        assert_eq!(
            (
                view.region_map[1].cidr.as_str(),
                view.region_map[1].region.as_str()
            ),
            ("192.168.0.0/16", "us")
        );
        let bad = AllocationForm {
            region_map: "10.0.0.0/8".into(),
            ..form.clone()
        };
        assert!(allocation_view(&bad).unwrap_err().contains("CIDR region"));
        let unknown = AllocationForm {
            default_policy: "fastest".into(),
            ..form
        };
        assert!(allocation_view(&unknown).is_err());
    }

    #[test]
    fn the_form_becomes_the_wire_document() {
        let doc = document_of(
            &form(r#"{"tags": {"t": 1}}"#),
            "registrationId",
            json!({"attestation": 1}),
        )
        .unwrap();
        assert_eq!(doc["registrationId"], "dev-1");
        assert_eq!(doc["deviceId"], Value::Null);
        assert_eq!(doc["attestation"], 1, "the base's attestation is kept");
        assert_eq!(doc["initialTwin"]["tags"]["t"], 1);
        assert_eq!(
            doc["reprovisionPolicy"],
            json!({"updateHubAssignment": true, "migrateDeviceData": false})
        );
        assert_eq!(doc["iotHubs"], json!(["a.example", "b.example"]));
        assert_eq!(doc["allocationPolicy"], Value::Null);
    }

    #[test]
    fn invalid_twin_json_is_refused_with_a_reason() {
        let err = document_of(&form("{\"tags\": "), "registrationId", json!({})).unwrap_err();
        assert!(
            err.starts_with("the initial twin is not valid JSON"),
            "{err}"
        );
        let mut bad = form("");
        bad.reprovision = "sometimes".into();
        assert!(document_of(&bad, "enrollmentGroupId", json!({})).is_err());
    }

    #[test]
    fn the_form_changes_the_attestation_only_when_asked() {
        let stored =
            json!({"attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": "k"}}});
        let mut f = form("");
        f.attestation = "symmetricKey".into();
        let doc = document_of(&f, "registrationId", stored.clone()).unwrap();
        assert_eq!(doc["attestation"], stored["attestation"], "keys kept");

        f.attestation = "x509".into();
        let err = document_of(&f, "registrationId", stored.clone()).unwrap_err();
        assert!(err.contains("needs the device's certificate"), "{err}");
        f.primary_certificate = "PEM".into();
        let doc = document_of(&f, "registrationId", stored.clone()).unwrap();
        assert_eq!(
            doc["attestation"]["x509"]["clientCertificates"]["primary"]["certificate"],
            "PEM"
        );
        f.primary_certificate.clear();
        f.ca_reference = "root".into();
        let doc = document_of(&f, "enrollmentGroupId", stored.clone()).unwrap();
        assert_eq!(
            doc["attestation"]["x509"],
            json!({"caReferences": {"primary": "root"}})
        );
        // Left empty on an X.509 enrollment: the stored certificates stay.
        let x509 =
            json!({"attestation": {"type": "x509", "x509": {"caReferences": {"primary": "r"}}}});
        f.ca_reference.clear();
        let doc = document_of(&f, "enrollmentGroupId", x509.clone()).unwrap();
        assert_eq!(doc["attestation"], x509["attestation"]);

        f.attestation = "tpm".into();
        assert!(
            document_of(&f, "enrollmentGroupId", stored.clone()).is_err(),
            "no TPM groups"
        );
        f.endorsement_key = "EK".into();
        let doc = document_of(&f, "registrationId", stored).unwrap();
        assert_eq!(doc["attestation"]["tpm"]["endorsementKey"], "EK");
    }
}
