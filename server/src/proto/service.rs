//! Enrollments in the service API's JSON shape (IndividualEnrollment, EnrollmentGroup). The custom
//! allocation webhook receives the same shape, without keys.

use serde_json::{Value, json};

use super::timestamp;
use crate::attestation::x509;
use crate::model::{
    AllocationPolicy, Attestation, CustomAllocationDefinition, Enrollment, EnrollmentGroup,
    EnrollmentSpec, EventSink, InitialTwin, ProvisioningStatus, ReprovisionPolicy, SinkTarget,
};

/// Certificates of an individual enrollment are the device's own (`clientCertificates`); a group's
/// sign its devices' certificates (`signingCertificates`). Each comes with Azure's read-only `info`
/// (subject, thumbprints, validity), which `az iot dps enrollment show` displays.
fn attestation(a: &Attestation, with_keys: bool, group: bool) -> Value {
    match a {
        Attestation::SymmetricKey {
            primary_key,
            secondary_key,
        } => json!({
            "type": "symmetricKey",
            "symmetricKey": if with_keys {
                json!({"primaryKey": primary_key, "secondaryKey": secondary_key})
            } else {
                json!({})
            },
        }),
        Attestation::X509 {
            certificates,
            ca_references,
        } => {
            let slots = |items: &[String], wrap: fn(&String) -> Value| {
                let mut slots = serde_json::Map::new();
                for (slot, item) in ["primary", "secondary"].iter().zip(items) {
                    slots.insert(slot.to_string(), wrap(item));
                }
                Value::Object(slots)
            };
            let mut x509 = serde_json::Map::new();
            if !certificates.is_empty() {
                let kind = if group {
                    "signingCertificates"
                } else {
                    "clientCertificates"
                };
                x509.insert(
                    kind.into(),
                    slots(
                        certificates,
                        |c| json!({"certificate": c, "info": x509::describe_text(c).ok()}),
                    ),
                );
            }
            if !ca_references.is_empty() {
                x509.insert("caReferences".into(), slots(ca_references, |r| json!(r)));
            }
            json!({"type": "x509", "x509": x509})
        }
        Attestation::Tpm {
            endorsement_key,
            storage_root_key,
        } => json!({
            "type": "tpm",
            "tpm": {"endorsementKey": endorsement_key, "storageRootKey": storage_root_key},
        }),
    }
}

fn policy_name(p: AllocationPolicy) -> &'static str {
    match p {
        AllocationPolicy::Hashed => "hashed",
        AllocationPolicy::GeoLatency => "geoLatency",
        AllocationPolicy::Static => "static",
        AllocationPolicy::Custom => "custom",
    }
}

/// The fields individual enrollments and groups share.
fn spec_fields(
    spec: &EnrollmentSpec,
    with_keys: bool,
    group: bool,
) -> serde_json::Map<String, Value> {
    let twin = spec
        .initial_twin
        .as_ref()
        .map(|t| json!({"tags": t.tags, "properties": {"desired": t.desired}}));
    let fields = json!({
        "attestation": attestation(&spec.attestation, with_keys, group),
        "capabilities": {"iotEdge": spec.iot_edge},
        "initialTwin": twin,
        "provisioningStatus": spec.provisioning_status.as_str(),
        "reprovisionPolicy": {
            "updateHubAssignment": spec.reprovision_policy.update_hub_assignment,
            "migrateDeviceData": spec.reprovision_policy.migrate_device_data,
        },
        "allocationPolicy": spec.allocation_policy.map(policy_name),
        "iotHubs": spec.iot_hubs,
        "customAllocationDefinition": spec.custom_allocation.as_ref().map(|c| json!({
            "webhookUrl": c.webhook_url,
            "apiVersion": c.api_version,
        })),
        "credentialPolicyName": spec.credential_policy_name,
    });
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("json! object"),
    }
}

pub fn individual_enrollment(e: &Enrollment, with_keys: bool) -> Value {
    let mut fields = spec_fields(&e.spec, with_keys, false);
    fields.insert("registrationId".into(), json!(e.registration_id));
    fields.insert("deviceId".into(), json!(e.device_id));
    fields.insert(
        "optionalDeviceInformation".into(),
        json!(e.optional_device_information),
    );
    fields.insert("etag".into(), json!(e.etag.quoted()));
    fields.insert("createdDateTimeUtc".into(), json!(timestamp(e.created)));
    fields.insert("lastUpdatedDateTimeUtc".into(), json!(timestamp(e.updated)));
    Value::Object(fields)
}

pub fn enrollment_group(g: &EnrollmentGroup, with_keys: bool) -> Value {
    let mut fields = spec_fields(&g.spec, with_keys, true);
    fields.insert("enrollmentGroupId".into(), json!(g.group_id));
    fields.insert("etag".into(), json!(g.etag.quoted()));
    fields.insert("createdDateTimeUtc".into(), json!(timestamp(g.created)));
    fields.insert("lastUpdatedDateTimeUtc".into(), json!(timestamp(g.updated)));
    Value::Object(fields)
}

/// What an operator sends for an individual enrollment or a group, checked and turned into the
/// domain's spec. Symmetric keys left out stay empty here; the service API fills them in.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrollmentInput {
    pub id: String,
    pub device_id: Option<String>,
    pub spec: EnrollmentSpec,
    pub optional_device_information: Option<Value>,
    pub etag: Option<String>,
}

/// Reads an IndividualEnrollment (`id_field` = "registrationId") or an EnrollmentGroup
/// (`id_field` = "enrollmentGroupId"). Errors name the field.
pub fn parse_enrollment(body: &Value, id_field: &str) -> Result<EnrollmentInput, String> {
    let object = body.as_object().ok_or("the body must be a JSON object")?;
    let text = |field: &str| -> Result<Option<String>, String> {
        match object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("`{field}` must be a string")),
        }
    };
    // Absent: empty, for the domain to default (a TPM enrollment's ID derives from its EK).
    let id = text(id_field)?.unwrap_or_default();
    let attestation = parse_attestation(
        object
            .get("attestation")
            .ok_or("`attestation` is required")?,
    )?;
    let provisioning_status = match text("provisioningStatus")? {
        None => ProvisioningStatus::Enabled,
        Some(s) => ProvisioningStatus::parse(&s).ok_or(format!(
            "`provisioningStatus` {s:?} is not enabled or disabled"
        ))?,
    };
    let allocation_policy = match text("allocationPolicy")? {
        None => None,
        Some(s) => Some(parse_policy(&s).ok_or(format!(
            "`allocationPolicy` {s:?} is not hashed, geoLatency, static or custom"
        ))?),
    };
    let reprovision_policy = match object.get("reprovisionPolicy") {
        None | Some(Value::Null) => ReprovisionPolicy::default(),
        Some(p) => ReprovisionPolicy {
            update_hub_assignment: p
                .get("updateHubAssignment")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            migrate_device_data: p
                .get("migrateDeviceData")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        },
    };
    let initial_twin = match object.get("initialTwin") {
        None | Some(Value::Null) => None,
        Some(twin) => Some(InitialTwin {
            tags: twin_collection(twin.get("tags"), "initialTwin.tags")?,
            desired: twin_collection(
                twin.pointer("/properties/desired"),
                "initialTwin.properties.desired",
            )?,
        }),
    };
    let iot_hubs = match object.get("iotHubs") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(hubs)) => hubs
            .iter()
            .map(|h| {
                h.as_str()
                    .map(String::from)
                    .ok_or("`iotHubs` must hold host names")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`iotHubs` must be an array".into()),
    };
    let iot_hubs = if iot_hubs.is_empty() {
        text("iotHubHostName")?.into_iter().collect()
    } else {
        iot_hubs
    };
    let custom_allocation = match object.get("customAllocationDefinition") {
        None | Some(Value::Null) => None,
        Some(c) => Some(CustomAllocationDefinition {
            webhook_url: c
                .get("webhookUrl")
                .and_then(Value::as_str)
                .ok_or("`customAllocationDefinition.webhookUrl` is required")?
                .into(),
            api_version: c
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("2019-03-31")
                .into(),
        }),
    };
    if allocation_policy == Some(AllocationPolicy::Custom) && custom_allocation.is_none() {
        return Err("`allocationPolicy` custom needs `customAllocationDefinition`".into());
    }
    let iot_edge = body
        .pointer("/capabilities/iotEdge")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(EnrollmentInput {
        id,
        device_id: text("deviceId")?,
        spec: EnrollmentSpec {
            attestation,
            provisioning_status,
            iot_edge,
            initial_twin,
            reprovision_policy,
            allocation_policy,
            iot_hubs,
            custom_allocation,
            credential_policy_name: text("credentialPolicyName")?,
        },
        optional_device_information: object
            .get("optionalDeviceInformation")
            .filter(|v| !v.is_null())
            .cloned(),
        etag: text("etag")?,
    })
}

fn parse_policy(s: &str) -> Option<AllocationPolicy> {
    match s.to_ascii_lowercase().as_str() {
        "hashed" => Some(AllocationPolicy::Hashed),
        "geolatency" => Some(AllocationPolicy::GeoLatency),
        "static" => Some(AllocationPolicy::Static),
        "custom" => Some(AllocationPolicy::Custom),
        _ => None,
    }
}

fn twin_collection(
    value: Option<&Value>,
    field: &str,
) -> Result<serde_json::Map<String, Value>, String> {
    match value {
        None | Some(Value::Null) => Ok(Default::default()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .filter(|(k, _)| !k.starts_with('$'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()),
        Some(_) => Err(format!("`{field}` must be an object")),
    }
}

fn parse_attestation(value: &Value) -> Result<Attestation, String> {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or("`attestation.type` is required")?;
    match kind.to_ascii_lowercase().as_str() {
        "symmetrickey" => {
            let key = |name: &str| -> Result<String, String> {
                match value
                    .pointer(&format!("/symmetricKey/{name}"))
                    .and_then(Value::as_str)
                {
                    // Left empty: the service API keeps the stored key or generates one.
                    None | Some("") => Ok(String::new()),
                    Some(k) => match crate::model::check_symmetric_key(k) {
                        Ok(()) => Ok(k.to_string()),
                        Err(why) => Err(format!("`attestation.symmetricKey.{name}` {why}")),
                    },
                }
            };
            Ok(Attestation::SymmetricKey {
                primary_key: key("primaryKey")?,
                secondary_key: key("secondaryKey")?,
            })
        }
        "x509" => {
            let x509 = value.get("x509").ok_or("`attestation.x509` is required")?;
            let mut certs = Vec::new();
            for kind in ["clientCertificates", "signingCertificates"] {
                for slot in ["primary", "secondary"] {
                    let field = format!("/{kind}/{slot}/certificate");
                    let Some(text) = x509.pointer(&field).and_then(Value::as_str) else {
                        continue;
                    };
                    if let Err(e) = x509::parse_certificates(text) {
                        return Err(format!("`attestation.x509.{kind}.{slot}.certificate`: {e}"));
                    }
                    certs.push(text.to_string());
                }
            }
            let ca_references = ["primary", "secondary"]
                .iter()
                .filter_map(|slot| {
                    x509.pointer(&format!("/caReferences/{slot}"))
                        .and_then(Value::as_str)
                })
                .map(String::from)
                .collect();
            Ok(Attestation::X509 {
                certificates: certs,
                ca_references,
            })
        }
        "tpm" => Ok(Attestation::Tpm {
            endorsement_key: value
                .pointer("/tpm/endorsementKey")
                .and_then(Value::as_str)
                .ok_or("`attestation.tpm.endorsementKey` is required")?
                .into(),
            storage_root_key: value
                .pointer("/tpm/storageRootKey")
                .and_then(Value::as_str)
                .map(String::from),
        }),
        other => Err(format!(
            "unknown attestation type {other:?}: expected symmetricKey, x509 or tpm"
        )),
    }
}

/// An event sink as the service API shows it: its target without the webhook secret, and how far
/// delivery got (`lag`: events written but not yet delivered to it).
pub fn event_sink(sink: &EventSink, last_seq: i64) -> Value {
    let progress = &sink.progress;
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| t.map(timestamp);
    let mut doc = json!({
        "name": sink.name,
        "kind": sink.target.kind(),
        "url": sink.target.url(),
        "enabled": sink.enabled,
        "status": {
            "deliveredSequence": progress.delivered_seq,
            "lastSequence": last_seq,
            "lag": progress.lag(last_seq),
            "lastDeliveredDateTimeUtc": time(&progress.delivered_at),
            "lastError": progress.last_error,
            "failingSinceDateTimeUtc": time(&progress.failing_since),
            "failures": progress.failures,
        },
        "createdDateTimeUtc": timestamp(sink.created),
        "lastUpdatedDateTimeUtc": timestamp(sink.updated),
    });
    match &sink.target {
        SinkTarget::Nats { subject, .. } => doc["subject"] = json!(subject),
        SinkTarget::Mqtt { topic, .. } => doc["topic"] = json!(topic),
        SinkTarget::Webhook { .. } => {}
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x509_attestation_round_trips_in_the_azure_shape() {
        use base64::Engine;
        let der = |cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            base64::engine::general_purpose::STANDARD.encode(cert.der())
        };
        let (a, b) = (der("cert-dev"), der("cert-dev"));
        let individual = json!({
            "registrationId": "cert-dev",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": a}, "secondary": {"certificate": b}}}},
        });
        let input = parse_enrollment(&individual, "registrationId").unwrap();
        let value = attestation(&input.spec.attestation, true, false);
        assert_eq!(
            value["x509"]["clientCertificates"]["secondary"]["certificate"],
            b
        );
        let garbage = json!({
            "registrationId": "cert-dev",
            "attestation": {"type": "x509", "x509": {"clientCertificates": {"primary": {"certificate": "PEM-A"}}}},
        });
        let err = parse_enrollment(&garbage, "registrationId").unwrap_err();
        assert!(
            err.contains("clientCertificates.primary.certificate"),
            "{err}"
        );
        let group = json!({
            "enrollmentGroupId": "g",
            "attestation": {"type": "X509", "x509": {"caReferences": {"primary": "root-ca"}}},
        });
        let input = parse_enrollment(&group, "enrollmentGroupId").unwrap();
        assert_eq!(
            attestation(&input.spec.attestation, true, true)["x509"],
            json!({"caReferences": {"primary": "root-ca"}})
        );
        assert!(
            parse_enrollment(
                &json!({"registrationId": "x", "attestation": {"type": "none"}}),
                "registrationId"
            )
            .is_err()
        );
    }
}
