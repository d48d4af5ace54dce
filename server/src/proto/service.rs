//! Enrollments in the service API's JSON shape (IndividualEnrollment, EnrollmentGroup). The custom
//! allocation webhook receives the same shape, without keys.

use serde_json::{Value, json};

use super::timestamp;
use crate::domain::{AllocationPolicy, Attestation, Enrollment, EnrollmentGroup, EnrollmentSpec};

fn attestation(a: &Attestation, with_keys: bool) -> Value {
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
        } => json!({
            "type": "x509",
            "x509": {"certificates": certificates, "caReferences": ca_references},
        }),
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
fn spec_fields(spec: &EnrollmentSpec, with_keys: bool) -> serde_json::Map<String, Value> {
    let twin = spec
        .initial_twin
        .as_ref()
        .map(|t| json!({"tags": t.tags, "properties": {"desired": t.desired}}));
    let fields = json!({
        "attestation": attestation(&spec.attestation, with_keys),
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
    });
    match fields {
        Value::Object(map) => map,
        _ => unreachable!("json! object"),
    }
}

pub fn individual_enrollment(e: &Enrollment, with_keys: bool) -> Value {
    let mut fields = spec_fields(&e.spec, with_keys);
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
    let mut fields = spec_fields(&g.spec, with_keys);
    fields.insert("enrollmentGroupId".into(), json!(g.group_id));
    fields.insert("etag".into(), json!(g.etag.quoted()));
    fields.insert("createdDateTimeUtc".into(), json!(timestamp(g.created)));
    fields.insert("lastUpdatedDateTimeUtc".into(), json!(timestamp(g.updated)));
    Value::Object(fields)
}
