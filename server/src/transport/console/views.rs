//! What the console shows of the domain's records: list rows, detail summaries, the dashboard's
//! chart and failures. Keys never leave here unless a page asks for them.

use app::model::{Role as ViewRole, *};
use serde_json::Value;

use crate::attestation::x509;
use crate::diagnostics::{MinuteCount, RecordedFailure, hint};
use crate::domain::admin::Resource;
use crate::model::{
    AllocationPolicy, CaCertificate, CertificateIssuer, CredentialPolicy, IssuedCertificate,
    OWN_ISSUER, RegistrationRecord, RegistrationStatus, Role,
};
use crate::proto::timestamp;

pub(super) fn row<R: Resource>(e: &R) -> EnrollmentRow {
    EnrollmentRow {
        attestation: e.spec().attestation.kind().as_str().into(),
        status: e.spec().provisioning_status.as_str().into(),
        updated: timestamp(e.updated()),
        registration_id: e.id().to_string(),
        device_id: e.device_id().map(String::from),
    }
}

/// The form's view of a stored enrollment or group.
pub(super) fn form_of<R: Resource>(e: &R) -> EnrollmentForm {
    let document = e.to_json(false);
    let spec = e.spec();
    let reprovision = match (
        spec.reprovision_policy.update_hub_assignment,
        spec.reprovision_policy.migrate_device_data,
    ) {
        (false, _) => "never",
        (true, true) => "migrate",
        (true, false) => "reset",
    };
    EnrollmentForm {
        registration_id: e.id().to_string(),
        device_id: e.device_id().unwrap_or_default().to_string(),
        provisioning_status: spec.provisioning_status.as_str().into(),
        initial_twin: match &document["initialTwin"] {
            Value::Null => String::new(),
            twin => serde_json::to_string_pretty(twin).unwrap_or_default(),
        },
        reprovision: reprovision.into(),
        allocation_policy: document["allocationPolicy"]
            .as_str()
            .unwrap_or_default()
            .into(),
        iot_hubs: spec.iot_hubs.join(", "),
        webhook_url: spec
            .custom_allocation
            .as_ref()
            .map(|c| c.webhook_url.clone())
            .unwrap_or_default(),
        attestation: spec.attestation.kind().as_str().into(),
        primary_certificate: certificate(&document, "primary"),
        secondary_certificate: certificate(&document, "secondary"),
        ca_reference: string_at(&document, "/attestation/x509/caReferences/primary"),
        endorsement_key: string_at(&document, "/attestation/tpm/endorsementKey"),
        credential_policy: spec.credential_policy_name.clone().unwrap_or_default(),
    }
}

fn string_at(document: &Value, pointer: &str) -> String {
    document
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// An X.509 enrollment's certificate in `slot`, whichever kind (device or signing) it holds.
fn certificate(document: &Value, slot: &str) -> String {
    ["clientCertificates", "signingCertificates"]
        .iter()
        .map(|kind| {
            string_at(
                document,
                &format!("/attestation/x509/{kind}/{slot}/certificate"),
            )
        })
        .find(|pem| !pem.is_empty())
        .unwrap_or_default()
}

pub(super) fn registration_row(r: RegistrationRecord) -> RegistrationRow {
    RegistrationRow {
        enrollment: r.enrollment.label(),
        status: r.status.as_str().into(),
        updated: timestamp(r.updated),
        registration_id: r.registration_id,
        assigned_hub: r.assigned_hub,
        device_id: r.device_id,
    }
}

pub(super) fn summary_of(r: RegistrationRecord) -> RegistrationSummary {
    RegistrationSummary {
        status: r.status.as_str().into(),
        substatus: r
            .substatus
            .and_then(|s| serde_json::to_value(s).ok()?.as_str().map(String::from)),
        assigned_hub: r.assigned_hub,
        device_id: r.device_id,
        updated: timestamp(r.updated),
    }
}

/// Sixty bars, one per minute up to `now`, assigned against failed (failed and disabled).
pub(super) fn minute_bars(
    counts: &[MinuteCount],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<MinuteBar> {
    let last = now.timestamp().div_euclid(60);
    (last - 59..=last)
        .map(|minute| {
            let sum = |wanted: &[RegistrationStatus]| {
                counts
                    .iter()
                    .filter(|c| c.minute == minute && wanted.contains(&c.status))
                    .map(|c| c.count)
                    .sum()
            };
            let label = chrono::DateTime::from_timestamp(minute * 60, 0)
                .map(|t| t.format("%H:%M").to_string())
                .unwrap_or_default();
            MinuteBar {
                label,
                assigned: sum(&[RegistrationStatus::Assigned]),
                failed: sum(&[RegistrationStatus::Failed, RegistrationStatus::Disabled]),
            }
        })
        .collect()
}

pub(super) fn failure_row(f: RecordedFailure) -> FailureRow {
    FailureRow {
        hint: hint(
            f.status,
            f.error_code,
            f.error_message.as_deref().unwrap_or_default(),
        )
        .map(String::from),
        at: timestamp(f.at),
        registration_id: f.registration_id,
        protocol: f.protocol,
        status: f.status.as_str().into(),
        error_code: f.error_code,
        error_message: f.error_message,
    }
}

pub(super) fn view_role(role: Role) -> ViewRole {
    match role {
        Role::Viewer => ViewRole::Viewer,
        Role::Operator => ViewRole::Operator,
        Role::Admin => ViewRole::Admin,
    }
}

pub(super) fn domain_role(role: ViewRole) -> Role {
    match role {
        ViewRole::Viewer => Role::Viewer,
        ViewRole::Operator => Role::Operator,
        ViewRole::Admin => Role::Admin,
    }
}

/// The subject and expiry of a PEM text's first certificate (empty when it is unreadable).
fn subject_and_expiry(pem: &str) -> (String, String) {
    x509::describe_text(pem)
        .map(|i| (i.subject_name, i.not_after_utc))
        .unwrap_or_default()
}

pub(super) fn ca_row(c: &CaCertificate) -> CaRow {
    let (subject, expiry) = subject_and_expiry(&c.pem);
    CaRow {
        name: c.name.clone(),
        subject,
        expiry,
        sha256_thumbprint: c.sha256_thumbprint.clone(),
        verified: c.verified,
        verification_code: c.verification_code.clone(),
    }
}

pub(super) fn issued_row(c: &IssuedCertificate) -> IssuedRow {
    IssuedRow {
        serial: c.serial.clone(),
        policy: c.policy.clone(),
        issuer: c.issuer.clone(),
        key_type: c.key_type.as_str().into(),
        not_before: timestamp(c.not_before),
        not_after: timestamp(c.not_after),
        revoked: c.revoked.map(timestamp),
    }
}

pub(super) fn credential_policy_row(p: &CredentialPolicy) -> CredentialPolicyRow {
    CredentialPolicyRow {
        name: p.name.clone(),
        issuer: p.issuer.clone(),
        validity_days: p.validity_days,
        key_types: p.key_types.iter().map(|k| k.as_str().into()).collect(),
        renewal_window_days: p.renewal_window_days,
        updated: timestamp(p.updated),
    }
}

/// An issuer by its own certificate, the chain's first.
pub(super) fn issuer_row(issuer: &CertificateIssuer) -> IssuerRow {
    let (subject, expiry) = subject_and_expiry(&issuer.chain_pem);
    IssuerRow {
        name: issuer.name.clone(),
        subject,
        expiry,
        own: issuer.name == OWN_ISSUER,
    }
}

pub(super) fn policy_name(policy: AllocationPolicy) -> String {
    serde_json::to_value(policy)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_has_sixty_minutes_with_failures_apart() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:30:20Z")
            .unwrap()
            .to_utc();
        let minute = now.timestamp() / 60;
        let count = |minute, status, count| MinuteCount {
            minute,
            status,
            count,
        };
        let bars = minute_bars(
            &[
                count(minute, RegistrationStatus::Assigned, 5),
                count(minute, RegistrationStatus::Failed, 2),
                count(minute, RegistrationStatus::Disabled, 1),
                count(minute - 59, RegistrationStatus::Assigned, 3),
                count(minute - 60, RegistrationStatus::Assigned, 100),
            ],
            now,
        );
        assert_eq!(bars.len(), 60);
        assert_eq!((bars[59].assigned, bars[59].failed), (5, 3));
        assert_eq!(bars[59].label, "10:30");
        assert_eq!((bars[0].label.as_str(), bars[0].assigned), ("09:31", 3));
        assert_eq!(bars.iter().map(|b| b.assigned).sum::<u64>(), 8);
    }
}
