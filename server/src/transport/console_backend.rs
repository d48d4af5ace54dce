//! The console's backend on the domain: what each console page reads and changes. Changes go
//! through the same writes as the service API (the enrollment's wire document), and each one is
//! written to the audit trail without its keys.

use app::backend::{BackendError, BackendFuture, ConsoleBackend};
use app::model::{Role as ViewRole, *};
use serde_json::{Value, json};

use super::console_auth::record;
use super::enrollment_writes::{self, Resource, WriteError};
use crate::attestation::sas;
use std::net::IpAddr;

use crate::diagnostics::{MinuteCount, RecordedFailure, hint};
use crate::domain::admin::{
    self, AdminError, AllocationSettingsView, HubSettings, KeySlot, RegionRule,
};
use crate::domain::ca;
use crate::domain::console_users::{self, UserError};
use crate::domain::provisioner::validate_registration_id;
use crate::model::{
    AccessPolicy, AllocationPolicy, Attestation, AttestationKind, CaCertificate, DeviceAuth,
    Enrollment, EnrollmentGroup, IfMatch, LinkedHub, ListQuery, ProvisioningStatus,
    RegistrationRecord, RegistrationStatus, Role, random_key,
};
use crate::proto::timestamp;
use crate::service::AppState;
use crate::store::StoreError;

/// Rows on one page of a console list.
const PAGE_SIZE: u32 = 50;

fn failed(e: StoreError) -> BackendError {
    tracing::warn!(error = %e, "console backend store failure");
    BackendError::Unavailable
}

fn write_failed(e: WriteError) -> BackendError {
    match e {
        WriteError::Invalid(m) => BackendError::Invalid(m),
        WriteError::Store(StoreError::Conflict) => {
            BackendError::Invalid("an enrollment with this registration ID exists already".into())
        }
        WriteError::Store(StoreError::PreconditionFailed) => BackendError::Invalid(
            "the enrollment changed since this page loaded; reload and try again".into(),
        ),
        WriteError::Store(e) => failed(e),
    }
}

fn invalid(message: String) -> BackendError {
    BackendError::Invalid(message)
}

fn row<R: Resource>(e: &R) -> EnrollmentRow {
    EnrollmentRow {
        attestation: e.spec().attestation.kind().as_str().into(),
        status: e.spec().provisioning_status.as_str().into(),
        updated: timestamp(e.updated()),
        registration_id: e.id().to_string(),
        device_id: e.device_id().map(String::from),
    }
}

fn list_query(filter: &EnrollmentFilter) -> Result<ListQuery, BackendError> {
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

/// The form's view of a stored enrollment or group.
fn form_of<R: Resource>(e: &R) -> EnrollmentForm {
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
fn document_of(form: &EnrollmentForm, id_field: &str, mut base: Value) -> Result<Value, String> {
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

fn registration_row(r: RegistrationRecord) -> RegistrationRow {
    RegistrationRow {
        enrollment: r.enrollment.label(),
        status: r.status.as_str().into(),
        updated: timestamp(r.updated),
        registration_id: r.registration_id,
        assigned_hub: r.assigned_hub,
        device_id: r.device_id,
    }
}

fn summary_of(r: RegistrationRecord) -> RegistrationSummary {
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
fn minute_bars(counts: &[MinuteCount], now: chrono::DateTime<chrono::Utc>) -> Vec<MinuteBar> {
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

fn failure_row(f: RecordedFailure) -> FailureRow {
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

/// Calls a generic method for groups or for individual enrollments.
macro_rules! by_kind {
    ($group:expr, $self:ident . $method:ident ( $($arg:expr),* )) => {
        if $group {
            $self.$method::<EnrollmentGroup>($($arg),*).await
        } else {
            $self.$method::<Enrollment>($($arg),*).await
        }
    };
}

impl AppState {
    /// The device's identity on a built-in hub, with its twin and recent telemetry.
    async fn hub_device_view(
        &self,
        hub: &str,
        device_id: &str,
    ) -> Result<Option<HubDeviceView>, BackendError> {
        let Some(device) = self
            .store
            .get_hub_device(hub, device_id)
            .await
            .map_err(failed)?
        else {
            return Ok(None);
        };
        let authentication = match device.auth {
            DeviceAuth::Sas { .. } => "symmetric key",
            DeviceAuth::SelfSigned { .. } => "X.509 (thumbprint)",
            DeviceAuth::CertificateAuthority => "X.509 (CA-signed)",
        };
        let twin = json!({
            "tags": device.tags,
            "properties": {
                "desired": {"$version": device.desired.version, "properties": device.desired.properties},
                "reported": {"$version": device.reported.version, "properties": device.reported.properties},
            },
        });
        let mut telemetry: Vec<TelemetryRow> = self
            .device_hub
            .recent_telemetry(hub, device_id)
            .into_iter()
            .map(|m| TelemetryRow {
                received: timestamp(m.received),
                properties: m.properties,
                body: m.body,
                truncated: m.truncated,
            })
            .collect();
        telemetry.reverse();
        Ok(Some(HubDeviceView {
            connected: self.device_hub.is_connected(hub, device_id),
            enabled: device.enabled,
            authentication: authentication.into(),
            twin: serde_json::to_string_pretty(&twin).unwrap_or_default(),
            telemetry,
        }))
    }

    async fn stored<R: Resource>(&self, id: &str) -> Result<R, BackendError> {
        R::fetch(self.store.as_ref(), id)
            .await
            .map_err(failed)?
            .ok_or_else(|| BackendError::NotFound(format!("no {} {id:?}", R::NOT_FOUND)))
    }

    /// Writes `document` and records the change (without keys).
    async fn write<R: Resource>(
        &self,
        actor: &str,
        action: &str,
        document: Value,
        before: Option<&R>,
        cond: IfMatch,
    ) -> Result<(), BackendError> {
        let stored = enrollment_writes::upsert::<R>(self, &document, None, cond)
            .await
            .map_err(write_failed)?;
        record(
            self.store.as_ref(),
            actor,
            &format!("{}.{action}", R::TARGET),
            &format!("{}/{}", R::TARGET, stored.id()),
            before.map(|b| b.to_json(false)),
            Some(stored.to_json(false)),
        )
        .await;
        Ok(())
    }

    async fn list<R: Resource>(
        &self,
        filter: &EnrollmentFilter,
    ) -> Result<EnrollmentPage, BackendError> {
        let page = R::page(self.store.as_ref(), &list_query(filter)?)
            .await
            .map_err(failed)?;
        Ok(EnrollmentPage {
            rows: page.items.iter().map(row).collect(),
            next: page.next,
        })
    }

    async fn detail<R: Resource>(
        &self,
        id: &str,
        with_keys: bool,
    ) -> Result<Option<EnrollmentDetail>, BackendError> {
        let Some(e) = R::fetch(self.store.as_ref(), id).await.map_err(failed)? else {
            return Ok(None);
        };
        // Only an individual enrollment has a registration record of its own ID.
        let registration = match e.device_id().is_some() || R::TARGET == "enrollment" {
            true => self.store.get_registration(id).await.map_err(failed)?,
            false => None,
        };
        let keys = match &e.spec().attestation {
            Attestation::SymmetricKey {
                primary_key,
                secondary_key,
            } if with_keys => Some((primary_key.clone(), secondary_key.clone())),
            _ => None,
        };
        Ok(Some(EnrollmentDetail {
            form: form_of(&e),
            attestation: e.spec().attestation.kind().as_str().into(),
            keys,
            created: timestamp(e.created()),
            updated: timestamp(e.updated()),
            registration: registration.map(summary_of),
        }))
    }

    async fn save<R: Resource>(
        &self,
        actor: &str,
        form: EnrollmentForm,
        create: bool,
    ) -> Result<(), BackendError> {
        if create {
            let base = json!({"attestation": {"type": "symmetricKey", "symmetricKey": {}}});
            let document = document_of(&form, R::ID_FIELD, base).map_err(invalid)?;
            return self
                .write::<R>(actor, "create", document, None, IfMatch::Absent)
                .await;
        }
        let before = self.stored::<R>(&form.registration_id).await?;
        let document = document_of(&form, R::ID_FIELD, before.to_json(true)).map_err(invalid)?;
        let cond = IfMatch::Etag(before.etag().clone());
        self.write(actor, "update", document, Some(&before), cond)
            .await
    }

    async fn set_status<R: Resource>(
        &self,
        actor: &str,
        id: &str,
        enabled: bool,
    ) -> Result<(), BackendError> {
        let before = self.stored::<R>(id).await?;
        let mut document = before.to_json(true);
        let status = if enabled {
            ProvisioningStatus::Enabled
        } else {
            ProvisioningStatus::Disabled
        };
        document["provisioningStatus"] = json!(status.as_str());
        let cond = IfMatch::Etag(before.etag().clone());
        self.write(actor, status.as_str(), document, Some(&before), cond)
            .await
    }

    /// Replaces one symmetric key with 64 fresh random bytes; devices signing with it must be
    /// given the new key (roll the secondary, move devices to it, then roll the primary).
    async fn roll_key<R: Resource>(
        &self,
        actor: &str,
        id: &str,
        secondary: bool,
    ) -> Result<(), BackendError> {
        let before = self.stored::<R>(id).await?;
        if !matches!(before.spec().attestation, Attestation::SymmetricKey { .. }) {
            return Err(invalid("only symmetric keys can be regenerated".into()));
        }
        let mut document = before.to_json(true);
        let slot = if secondary {
            "secondaryKey"
        } else {
            "primaryKey"
        };
        document["attestation"]["symmetricKey"][slot] = json!(random_key(64));
        let action = if secondary {
            "rekey-secondary"
        } else {
            "rekey-primary"
        };
        let cond = IfMatch::Etag(before.etag().clone());
        self.write(actor, action, document, Some(&before), cond)
            .await
    }

    async fn remove<R: Resource>(&self, actor: &str, id: &str) -> Result<(), BackendError> {
        let before = self.stored::<R>(id).await?;
        let cond = IfMatch::Etag(before.etag().clone());
        if !enrollment_writes::remove::<R>(self, id, cond)
            .await
            .map_err(failed)?
        {
            return Err(BackendError::NotFound(format!(
                "no {} {id:?}",
                R::NOT_FOUND
            )));
        }
        record(
            self.store.as_ref(),
            actor,
            &format!("{}.delete", R::TARGET),
            &format!("{}/{}", R::TARGET, before.id()),
            Some(before.to_json(false)),
            None,
        )
        .await;
        Ok(())
    }
}

impl ConsoleBackend for AppState {
    fn summary(&self) -> BackendFuture<'_, InstanceSummary> {
        Box::pin(async move {
            let store = &self.store;
            let hubs = self.hubs().await?;
            let now = chrono::Utc::now();
            let counts = store
                .registration_minutes(now - chrono::Duration::minutes(59))
                .await
                .map_err(failed)?;
            let failures = store.recent_failures(10).await.map_err(failed)?;
            Ok(InstanceSummary {
                minutes: minute_bars(&counts, now),
                failures: failures.into_iter().map(failure_row).collect(),
                id_scope: self.instance.id_scope.clone(),
                enrollments: store.count_enrollments().await.map_err(failed)?,
                groups: store.count_groups().await.map_err(failed)?,
                registrations: store.count_registrations().await.map_err(failed)?,
                hubs,
            })
        })
    }

    fn hubs(&self) -> BackendFuture<'_, Vec<HubSummary>> {
        Box::pin(async move {
            let mut hubs = Vec::new();
            for hub in self.store.list_hubs().await.map_err(failed)? {
                hubs.push(HubSummary {
                    devices: self
                        .store
                        .count_hub_devices(&hub.host_name)
                        .await
                        .map_err(failed)?,
                    host_name: hub.host_name,
                    connector: hub.connector.as_str().into(),
                    region: hub.region,
                    allocation_weight: hub.allocation_weight,
                    apply_allocation_policy: hub.apply_allocation_policy,
                });
            }
            Ok(hubs)
        })
    }

    fn list_enrollments(&self, filter: EnrollmentFilter) -> BackendFuture<'_, EnrollmentPage> {
        Box::pin(async move { by_kind!(filter.kind == "group", self.list(&filter)) })
    }

    fn enrollment<'a>(
        &'a self,
        id: &'a str,
        group: bool,
        with_keys: bool,
    ) -> BackendFuture<'a, Option<EnrollmentDetail>> {
        Box::pin(async move { by_kind!(group, self.detail(id, with_keys)) })
    }

    fn save_enrollment<'a>(
        &'a self,
        actor: &'a str,
        form: EnrollmentForm,
        group: bool,
        create: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move { by_kind!(group, self.save(actor, form, create)) })
    }

    fn set_enrollment_status<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        enabled: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move { by_kind!(group, self.set_status(actor, id, enabled)) })
    }

    fn delete_enrollment<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move { by_kind!(group, self.remove(actor, id)) })
    }

    fn roll_key<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        secondary: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move { by_kind!(group, self.roll_key(actor, id, secondary)) })
    }

    fn derive_device_key<'a>(
        &'a self,
        group_id: &'a str,
        registration_id: &'a str,
    ) -> BackendFuture<'a, String> {
        Box::pin(async move {
            let registration_id = registration_id.trim();
            validate_registration_id(registration_id).map_err(|e| invalid(e.to_string()))?;
            let group = self.stored::<EnrollmentGroup>(group_id).await?;
            let Attestation::SymmetricKey { primary_key, .. } = &group.spec.attestation else {
                return Err(invalid("the group does not use symmetric keys".into()));
            };
            sas::derive_device_key(primary_key, registration_id)
                .map_err(|_| invalid("the group's key is not base64".into()))
        })
    }

    fn audit(&self, limit: u32) -> BackendFuture<'_, Vec<AuditRow>> {
        Box::pin(async move {
            Ok(self
                .store
                .recent_audit(limit)
                .await
                .map_err(failed)?
                .into_iter()
                .map(|a| AuditRow {
                    at: timestamp(a.at),
                    actor: a.actor,
                    action: a.action,
                    target: a.target,
                })
                .collect())
        })
    }

    fn save_hub<'a>(&'a self, actor: &'a str, hub: HubSummary) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let before = self.store.get_hub(&hub.host_name).await.map_err(failed)?;
            let settings = HubSettings {
                region: hub.region,
                allocation_weight: hub.allocation_weight,
                apply_allocation_policy: hub.apply_allocation_policy,
                ..HubSettings::default()
            };
            let stored = admin::put_hub(self.store.as_ref(), &hub.host_name, settings)
                .await
                .map_err(admin_failed)?;
            self.provisioner.invalidate();
            let action = if before.is_some() {
                "hub.update"
            } else {
                "hub.link"
            };
            let json = |h: &LinkedHub| serde_json::to_value(h).ok();
            record(
                self.store.as_ref(),
                actor,
                action,
                &format!("hub/{}", stored.host_name),
                before.as_ref().and_then(json),
                json(&stored),
            )
            .await;
            Ok(())
        })
    }

    fn remove_hub<'a>(&'a self, actor: &'a str, host_name: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let before = self.store.get_hub(host_name).await.map_err(failed)?;
            admin::delete_hub(self.store.as_ref(), host_name)
                .await
                .map_err(admin_failed)?;
            self.provisioner.invalidate();
            let before = before.and_then(|h| serde_json::to_value(h).ok());
            record(
                self.store.as_ref(),
                actor,
                "hub.remove",
                &format!("hub/{host_name}"),
                before,
                None,
            )
            .await;
            Ok(())
        })
    }

    fn allocation(&self) -> BackendFuture<'_, AllocationForm> {
        Box::pin(async move {
            let view = admin::allocation_settings(self.store.as_ref())
                .await
                .map_err(admin_failed)?;
            Ok(AllocationForm {
                default_policy: policy_name(view.default_policy),
                region_map: view
                    .region_map
                    .iter()
                    .map(|r| format!("{} {}", r.cidr, r.region))
                    .collect::<Vec<_>>()
                    .join("\n"),
            })
        })
    }

    fn save_allocation<'a>(
        &'a self,
        actor: &'a str,
        form: AllocationForm,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let view = allocation_view(&form).map_err(invalid)?;
            let before = admin::allocation_settings(self.store.as_ref())
                .await
                .map_err(admin_failed)?;
            admin::set_allocation_settings(self.store.as_ref(), view.clone())
                .await
                .map_err(admin_failed)?;
            self.provisioner.invalidate();
            record(
                self.store.as_ref(),
                actor,
                "allocation.update",
                "allocation",
                serde_json::to_value(before).ok(),
                serde_json::to_value(view).ok(),
            )
            .await;
            Ok(())
        })
    }

    fn what_if<'a>(
        &'a self,
        registration_id: &'a str,
        client_address: &'a str,
        group_id: &'a str,
    ) -> BackendFuture<'a, WhatIfAnswer> {
        Box::pin(async move {
            let registration_id = registration_id.trim();
            validate_registration_id(registration_id).map_err(|e| invalid(e.to_string()))?;
            let client = match client_address.trim() {
                "" => None,
                text => Some(
                    text.parse::<IpAddr>()
                        .map_err(|_| invalid(format!("{text:?} is not an IP address")))?,
                ),
            };
            let group = Some(group_id.trim()).filter(|g| !g.is_empty());
            let answer = self
                .provisioner
                .what_if(registration_id, client, group)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "what-if failed");
                    BackendError::Unavailable
                })?;
            let (hub, reason) = match answer.outcome {
                Ok(hub) => (Some(hub), None),
                Err(reason) => (None, Some(reason)),
            };
            Ok(WhatIfAnswer {
                enrollment: answer.enrollment.map(|r| r.label()),
                policy: answer.policy.map(policy_name),
                hub,
                reason,
                current_hub: answer.current_hub,
            })
        })
    }

    fn list_registrations(
        &self,
        filter: RegistrationFilter,
    ) -> BackendFuture<'_, RegistrationPage> {
        Box::pin(async move {
            let nonempty = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
            let query = ListQuery {
                id_prefix: nonempty(&filter.q),
                after: nonempty(&filter.after),
                limit: PAGE_SIZE,
                ..ListQuery::default()
            };
            let page = self
                .store
                .list_registrations(&query)
                .await
                .map_err(failed)?;
            Ok(RegistrationPage {
                rows: page.items.into_iter().map(registration_row).collect(),
                next: page.next,
            })
        })
    }

    fn registration<'a>(
        &'a self,
        registration_id: &'a str,
    ) -> BackendFuture<'a, Option<RegistrationDetail>> {
        Box::pin(async move {
            let record = self
                .store
                .get_registration(registration_id)
                .await
                .map_err(failed)?;
            let Some(r) = record else {
                return Ok(None);
            };
            let on_hub = match (&r.assigned_hub, &r.device_id) {
                (Some(hub), Some(device)) => self.hub_device_view(hub, device).await?,
                _ => None,
            };
            Ok(Some(RegistrationDetail {
                on_hub,
                attestation: r.attestation.as_str().into(),
                substatus: r
                    .substatus
                    .and_then(|s| serde_json::to_value(s).ok()?.as_str().map(String::from)),
                error_code: r.error_code,
                error_message: r.error_message.clone(),
                payload: r
                    .payload
                    .as_ref()
                    .and_then(|p| serde_json::to_string_pretty(p).ok()),
                created: timestamp(r.created),
                row: registration_row(r),
            }))
        })
    }

    fn delete_registration<'a>(
        &'a self,
        actor: &'a str,
        registration_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let before = self
                .store
                .get_registration(registration_id)
                .await
                .map_err(failed)?
                .ok_or_else(|| {
                    BackendError::NotFound(format!("no registration record {registration_id:?}"))
                })?;
            match self
                .store
                .delete_registration(registration_id, IfMatch::Etag(before.etag.clone()))
                .await
            {
                Ok(()) => {}
                Err(StoreError::PreconditionFailed | StoreError::NotFound) => {
                    return Err(invalid(
                        "the record changed since this page loaded; reload and try again".into(),
                    ));
                }
                Err(e) => return Err(failed(e)),
            }
            record(
                self.store.as_ref(),
                actor,
                "registration.delete",
                &format!("registration/{}", before.registration_id),
                serde_json::to_value(&before).ok(),
                None,
            )
            .await;
            Ok(())
        })
    }

    fn policies(&self) -> BackendFuture<'_, Vec<PolicyRow>> {
        Box::pin(async move {
            let host = &self.config.hostname;
            Ok(self
                .store
                .list_policies()
                .await
                .map_err(failed)?
                .into_iter()
                .map(|p| PolicyRow {
                    connection_string: p.connection_string(host),
                    rights: p.rights.iter().map(|r| r.as_str().to_string()).collect(),
                    updated: timestamp(p.updated),
                    name: p.name,
                })
                .collect())
        })
    }

    fn save_policy<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        rights: Vec<String>,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let rights = admin::parse_rights(&rights).map_err(admin_failed)?;
            let before = self.store.get_policy(name).await.map_err(failed)?;
            let stored = admin::put_policy(self.store.as_ref(), name.trim(), rights)
                .await
                .map_err(admin_failed)?;
            let action = if before.is_some() {
                "policy.update"
            } else {
                "policy.create"
            };
            let rights_of = |p: &AccessPolicy| json!({"rights": p.rights});
            let target = format!("policy/{}", stored.name);
            let (before, after) = (before.as_ref().map(rights_of), Some(rights_of(&stored)));
            record(self.store.as_ref(), actor, action, &target, before, after).await;
            Ok(())
        })
    }

    fn rekey_policy<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        secondary: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let slot = if secondary {
                KeySlot::Secondary
            } else {
                KeySlot::Primary
            };
            admin::rekey_policy(self.store.as_ref(), name, slot)
                .await
                .map_err(admin_failed)?;
            let action = if secondary {
                "policy.rekey-secondary"
            } else {
                "policy.rekey-primary"
            };
            // Keys are secrets: the audit trail records that they changed, not what they are.
            record(
                self.store.as_ref(),
                actor,
                action,
                &format!("policy/{name}"),
                None,
                None,
            )
            .await;
            Ok(())
        })
    }

    fn delete_policy<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            admin::delete_policy(self.store.as_ref(), name)
                .await
                .map_err(admin_failed)?;
            record(
                self.store.as_ref(),
                actor,
                "policy.delete",
                &format!("policy/{name}"),
                None,
                None,
            )
            .await;
            Ok(())
        })
    }

    fn cas(&self) -> BackendFuture<'_, Vec<CaRow>> {
        Box::pin(async move {
            let cas = self.store.list_ca_certificates().await.map_err(failed)?;
            Ok(cas.iter().map(ca_row).collect())
        })
    }

    fn upload_ca<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        pem: &'a str,
        verified: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let before = self.store.get_ca_certificate(name).await.map_err(failed)?;
            let stored = ca::put_ca(self.store.as_ref(), name.trim(), pem, verified)
                .await
                .map_err(admin_failed)?;
            self.provisioner.invalidate();
            let summary = |c: &CaCertificate| json!({"sha256Thumbprint": c.sha256_thumbprint, "verified": c.verified});
            let action = if before.is_some() {
                "ca.update"
            } else {
                "ca.create"
            };
            let (before, after) = (before.as_ref().map(summary), Some(summary(&stored)));
            let target = format!("ca/{}", stored.name);
            record(self.store.as_ref(), actor, action, &target, before, after).await;
            Ok(())
        })
    }

    fn generate_ca_code<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            ca::generate_verification_code(self.store.as_ref(), name)
                .await
                .map_err(admin_failed)?;
            let target = format!("ca/{name}");
            record(self.store.as_ref(), actor, "ca.code", &target, None, None).await;
            Ok(())
        })
    }

    fn verify_ca<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        proof_pem: &'a str,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            ca::verify(self.store.as_ref(), name, proof_pem)
                .await
                .map_err(admin_failed)?;
            self.provisioner.invalidate();
            let target = format!("ca/{name}");
            let after = Some(json!({"verified": true}));
            record(
                self.store.as_ref(),
                actor,
                "ca.verify",
                &target,
                None,
                after,
            )
            .await;
            Ok(())
        })
    }

    fn delete_ca<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            ca::delete(self.store.as_ref(), name)
                .await
                .map_err(admin_failed)?;
            self.provisioner.invalidate();
            let target = format!("ca/{name}");
            record(self.store.as_ref(), actor, "ca.delete", &target, None, None).await;
            Ok(())
        })
    }

    fn users(&self) -> BackendFuture<'_, Vec<UserRow>> {
        Box::pin(async move {
            Ok(self
                .store
                .list_users()
                .await
                .map_err(failed)?
                .into_iter()
                .map(|u| UserRow {
                    role: view_role(u.role),
                    disabled: u.disabled,
                    created: timestamp(u.created),
                    username: u.username,
                })
                .collect())
        })
    }

    fn save_user<'a>(
        &'a self,
        actor: &'a str,
        username: &'a str,
        password: &'a str,
        role: ViewRole,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            let before = self.store.get_user(username).await.map_err(failed)?;
            let user = console_users::put_user(
                self.store.as_ref(),
                username.trim(),
                password,
                domain_role(role),
            )
            .await
            .map_err(user_failed)?;
            let action = if before.is_some() {
                "user.update"
            } else {
                "user.create"
            };
            // The password hash never goes into the trail.
            let role_of = |r: Role| json!({"role": r.as_str()});
            let target = format!("user/{}", user.username);
            let before = before.map(|b| role_of(b.role));
            record(
                self.store.as_ref(),
                actor,
                action,
                &target,
                before,
                Some(role_of(user.role)),
            )
            .await;
            Ok(())
        })
    }

    fn set_user_disabled<'a>(
        &'a self,
        actor: &'a str,
        username: &'a str,
        disabled: bool,
    ) -> BackendFuture<'a, ()> {
        Box::pin(async move {
            if disabled && username.eq_ignore_ascii_case(actor) {
                return Err(invalid("you cannot disable your own account".into()));
            }
            let user = console_users::set_disabled(self.store.as_ref(), username, disabled)
                .await
                .map_err(user_failed)?;
            let action = if disabled {
                "user.disable"
            } else {
                "user.enable"
            };
            record(
                self.store.as_ref(),
                actor,
                action,
                &format!("user/{}", user.username),
                None,
                None,
            )
            .await;
            Ok(())
        })
    }
}

fn user_failed(e: UserError) -> BackendError {
    match e {
        UserError::Invalid(m) => BackendError::Invalid(m),
        UserError::Store(e) => failed(e),
    }
}

pub(super) fn view_role(role: Role) -> ViewRole {
    match role {
        Role::Viewer => ViewRole::Viewer,
        Role::Operator => ViewRole::Operator,
        Role::Admin => ViewRole::Admin,
    }
}

fn domain_role(role: ViewRole) -> Role {
    match role {
        ViewRole::Viewer => Role::Viewer,
        ViewRole::Operator => Role::Operator,
        ViewRole::Admin => Role::Admin,
    }
}

fn ca_row(c: &CaCertificate) -> CaRow {
    let info = ca::describe(c);
    CaRow {
        name: c.name.clone(),
        subject: info
            .as_ref()
            .map(|i| i.subject_name.clone())
            .unwrap_or_default(),
        expiry: info.map(|i| i.not_after_utc).unwrap_or_default(),
        sha256_thumbprint: c.sha256_thumbprint.clone(),
        verified: c.verified,
        verification_code: c.verification_code.clone(),
    }
}

fn admin_failed(e: AdminError) -> BackendError {
    match e {
        AdminError::Invalid(m) => BackendError::Invalid(m),
        AdminError::NotFound(what) => BackendError::NotFound(format!("no {what}")),
        AdminError::Store(e) => failed(e),
    }
}

fn policy_name(policy: AllocationPolicy) -> String {
    serde_json::to_value(policy)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

/// The settings form as the domain's view: each non-empty line is `CIDR region`.
fn allocation_view(form: &AllocationForm) -> Result<AllocationSettingsView, String> {
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
