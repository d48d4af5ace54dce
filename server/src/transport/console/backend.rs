//! The console's backend on the domain: what each console page reads, and the changes it asks
//! `Admin` for (as the signed-in user). Forms are read in `forms`, records shown in `views`.

use std::net::IpAddr;

use app::backend::{BackendError, BackendFuture, ConsoleBackend};
use app::model::{Role as ViewRole, *};
use serde_json::json;

use super::forms::{PAGE_SIZE, allocation_view, document_of, fault_of, list_query};
use super::views::{
    ca_row, credential_policy_row, domain_role, failure_row, form_of, issued_row, issuer_row,
    minute_bars, policy_name, registration_row, row, summary_of, view_role,
};
use crate::attestation::sas;
use crate::domain::admin::{
    AdminError, HubSettings, KeySlot, PolicyInput, Resource, SinkInput, parse_rights,
};
use crate::domain::provisioner::validate_registration_id;
use crate::model::{
    Actor, Attestation, DeviceAuth, Enrollment, EnrollmentGroup, IfMatch, KeyType, ListQuery,
};
use crate::proto::{timestamp, twin};
use crate::state::AppState;
use crate::store::StoreError;

fn failed(e: StoreError) -> BackendError {
    tracing::warn!(error = %e, "console backend store failure");
    BackendError::Unavailable
}

fn admin_failed(e: AdminError) -> BackendError {
    match e {
        AdminError::Invalid(m) => BackendError::Invalid(m),
        AdminError::NotFound(what) => BackendError::NotFound(format!("no {what}")),
        AdminError::Store(StoreError::Conflict) => {
            BackendError::Invalid("an enrollment with this registration ID exists already".into())
        }
        AdminError::Store(StoreError::PreconditionFailed) => BackendError::Invalid(
            "the record changed since this page loaded; reload and try again".into(),
        ),
        AdminError::Store(e) => failed(e),
    }
}

fn invalid(message: String) -> BackendError {
    BackendError::Invalid(message)
}

fn key_slot(secondary: bool) -> KeySlot {
    match secondary {
        true => KeySlot::Secondary,
        false => KeySlot::Primary,
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
        // The twin as the hub's REST API and the device see it.
        let twin = json!({"tags": device.tags, "properties": twin::document(&device)});
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
        let target = R::reference(id);
        let fault = self.store.get_fault_injection(&target).await;
        let fault = fault.map_err(failed)?;
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
            test_fault: fault.map(|f| f.describe()),
        }))
    }

    async fn save<R: Resource>(
        &self,
        actor: &Actor,
        form: EnrollmentForm,
        create: bool,
    ) -> Result<(), BackendError> {
        let (document, cond) = if create {
            let base = json!({"attestation": {"type": "symmetricKey", "symmetricKey": {}}});
            let document = document_of(&form, R::ID_FIELD, base).map_err(invalid)?;
            (document, IfMatch::Absent)
        } else {
            let before = self.stored::<R>(&form.registration_id).await?;
            let base = before.to_json(true);
            let document = document_of(&form, R::ID_FIELD, base).map_err(invalid)?;
            (document, IfMatch::Etag(before.etag().clone()))
        };
        self.admin
            .put_enrollment::<R>(actor, &document, None, cond)
            .await
            .map_err(admin_failed)?;
        Ok(())
    }

    async fn set_status<R: Resource>(
        &self,
        actor: &Actor,
        id: &str,
        enabled: bool,
    ) -> Result<(), BackendError> {
        let changed = self
            .admin
            .set_enrollment_status::<R>(actor, id, enabled)
            .await;
        changed.map(drop).map_err(admin_failed)
    }

    async fn roll<R: Resource>(
        &self,
        actor: &Actor,
        id: &str,
        slot: KeySlot,
    ) -> Result<(), BackendError> {
        let rolled = self.admin.roll_enrollment_key::<R>(actor, id, slot).await;
        rolled.map(drop).map_err(admin_failed)
    }

    async fn set_fault<R: Resource>(
        &self,
        actor: &Actor,
        id: &str,
        form: &TestFaultForm,
    ) -> Result<(), BackendError> {
        let set = self.admin.set_fault::<R>(actor, id, fault_of(form)?).await;
        set.map(drop).map_err(admin_failed)
    }

    async fn clear_fault<R: Resource>(&self, actor: &Actor, id: &str) -> Result<(), BackendError> {
        let cleared = self.admin.clear_fault::<R>(actor, id).await;
        cleared.map(drop).map_err(admin_failed)
    }

    async fn remove<R: Resource>(&self, actor: &Actor, id: &str) -> Result<(), BackendError> {
        let before = self.stored::<R>(id).await?;
        let cond = IfMatch::Etag(before.etag().clone());
        match self.admin.delete_enrollment::<R>(actor, id, cond).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(BackendError::NotFound(format!(
                "no {} {id:?}",
                R::NOT_FOUND
            ))),
            Err(e) => Err(admin_failed(e)),
        }
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
        let actor = Actor::console(actor);
        Box::pin(async move { by_kind!(group, self.save(&actor, form, create)) })
    }

    fn set_enrollment_status<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        enabled: bool,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move { by_kind!(group, self.set_status(&actor, id, enabled)) })
    }

    fn delete_enrollment<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move { by_kind!(group, self.remove(&actor, id)) })
    }

    fn roll_key<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        secondary: bool,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        let slot = key_slot(secondary);
        Box::pin(async move { by_kind!(group, self.roll(&actor, id, slot)) })
    }

    fn set_test_fault<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
        form: TestFaultForm,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move { by_kind!(group, self.set_fault(&actor, id, &form)) })
    }

    fn clear_test_fault<'a>(
        &'a self,
        actor: &'a str,
        id: &'a str,
        group: bool,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move { by_kind!(group, self.clear_fault(&actor, id)) })
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
                    via: a.front_end.as_str().into(),
                    address: a.address,
                    action: a.action,
                    target: a.target,
                })
                .collect())
        })
    }

    fn save_hub<'a>(&'a self, actor: &'a str, hub: HubSummary) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let settings = HubSettings {
                region: hub.region,
                allocation_weight: hub.allocation_weight,
                apply_allocation_policy: hub.apply_allocation_policy,
                ..HubSettings::default()
            };
            self.admin
                .put_hub(&actor, &hub.host_name, settings)
                .await
                .map_err(admin_failed)?;
            Ok(())
        })
    }

    fn remove_hub<'a>(&'a self, actor: &'a str, host_name: &'a str) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            admin
                .delete_hub(&actor, host_name)
                .await
                .map_err(admin_failed)
        })
    }

    fn allocation(&self) -> BackendFuture<'_, AllocationForm> {
        Box::pin(async move {
            let view = self
                .admin
                .allocation_settings()
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
        let actor = Actor::console(actor);
        Box::pin(async move {
            let view = allocation_view(&form).map_err(invalid)?;
            let admin = &self.admin;
            admin
                .set_allocation_settings(&actor, view)
                .await
                .map_err(admin_failed)
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
            let issued = self
                .store
                .issued_certificates(registration_id)
                .await
                .map_err(failed)?;
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
                issued: issued.iter().map(issued_row).collect(),
                row: registration_row(r),
            }))
        })
    }

    fn delete_registration<'a>(
        &'a self,
        actor: &'a str,
        registration_id: &'a str,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let before = self
                .store
                .get_registration(registration_id)
                .await
                .map_err(failed)?
                .ok_or_else(|| {
                    BackendError::NotFound(format!("no registration record {registration_id:?}"))
                })?;
            let cond = IfMatch::Etag(before.etag.clone());
            match self
                .admin
                .delete_registration(&actor, registration_id, cond)
                .await
            {
                Ok(true) => Ok(()),
                // Deleted or re-registered since the page loaded.
                Ok(false) | Err(AdminError::Store(StoreError::PreconditionFailed)) => Err(invalid(
                    "the record changed since this page loaded; reload and try again".into(),
                )),
                Err(e) => Err(admin_failed(e)),
            }
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
        let actor = Actor::console(actor);
        Box::pin(async move {
            let rights = parse_rights(&rights).map_err(admin_failed)?;
            let admin = &self.admin;
            let saved = admin.put_policy(&actor, name.trim(), rights).await;
            saved.map(drop).map_err(admin_failed)
        })
    }

    fn rekey_policy<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        secondary: bool,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            let rekeyed = admin.rekey_policy(&actor, name, key_slot(secondary)).await;
            rekeyed.map(drop).map_err(admin_failed)
        })
    }

    fn delete_policy<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            admin
                .delete_policy(&actor, name)
                .await
                .map_err(admin_failed)
        })
    }

    fn sinks(&self) -> BackendFuture<'_, Vec<SinkRow>> {
        Box::pin(async move {
            let overview = self.admin.event_sinks().await.map_err(admin_failed)?;
            Ok(overview
                .sinks
                .iter()
                .map(|sink| sink_row(sink, overview.last_seq))
                .collect())
        })
    }

    fn save_sink<'a>(&'a self, actor: &'a str, form: SinkForm) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let channel = Some(form.channel.trim().to_string()).filter(|c| !c.is_empty());
            let input = SinkInput {
                subject: channel.clone().filter(|_| form.kind == "nats"),
                topic: channel.filter(|_| form.kind == "mqtt"),
                secret: Some(form.secret).filter(|s| !s.is_empty()),
                kind: form.kind,
                url: form.url,
                enabled: form.enabled,
            };
            let saved = self
                .admin
                .put_event_sink(&actor, form.name.trim(), input)
                .await;
            saved.map(drop).map_err(admin_failed)
        })
    }

    fn delete_sink<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            match self.admin.delete_event_sink(&actor, name).await {
                Ok(true) => Ok(()),
                Ok(false) => Err(BackendError::NotFound(format!("event sink {name:?}"))),
                Err(e) => Err(admin_failed(e)),
            }
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
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            let stored = admin.put_ca(&actor, name.trim(), pem, verified).await;
            stored.map(drop).map_err(admin_failed)
        })
    }

    fn generate_ca_code<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            let stored = admin.generate_ca_code(&actor, name).await;
            stored.map(drop).map_err(admin_failed)
        })
    }

    fn verify_ca<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        proof_pem: &'a str,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            let stored = admin.verify_ca(&actor, name, proof_pem).await;
            stored.map(drop).map_err(admin_failed)
        })
    }

    fn credentials(&self) -> BackendFuture<'_, CredentialsOverview> {
        Box::pin(async move {
            let store = &self.store;
            let policies = store.list_credential_policies().await.map_err(failed)?;
            let issuers = store.list_issuers().await.map_err(failed)?;
            Ok(CredentialsOverview {
                policies: policies.iter().map(credential_policy_row).collect(),
                issuers: issuers.iter().map(issuer_row).collect(),
            })
        })
    }

    fn save_credential_policy<'a>(
        &'a self,
        actor: &'a str,
        form: CredentialPolicyForm,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let key_types = form
                .key_types
                .iter()
                .map(|k| KeyType::parse(k).ok_or_else(|| invalid(format!("no key type {k:?}"))))
                .collect::<Result<_, _>>()?;
            let input = PolicyInput {
                issuer: form.issuer,
                validity_days: form.validity_days,
                key_types,
                renewal_window_days: form.renewal_window_days,
            };
            let admin = &self.admin;
            let stored = admin.put_credential_policy(&actor, form.name.trim(), input);
            stored.await.map(drop).map_err(admin_failed)
        })
    }

    fn delete_credential_policy<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let deleted = self.admin.delete_credential_policy(&actor, name);
            deleted.await.map_err(admin_failed)
        })
    }

    fn upload_issuer<'a>(
        &'a self,
        actor: &'a str,
        name: &'a str,
        chain_pem: &'a str,
        key_pem: &'a str,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let stored = self
                .admin
                .put_issuer(&actor, name.trim(), chain_pem, key_pem);
            stored.await.map(drop).map_err(admin_failed)
        })
    }

    fn delete_issuer<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let deleted = self.admin.delete_issuer(&actor, name);
            deleted.await.map_err(admin_failed)
        })
    }

    fn revoke_certificates<'a>(
        &'a self,
        actor: &'a str,
        registration_id: &'a str,
        serial: Option<&'a str>,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let revoked = self
                .admin
                .revoke_certificates(&actor, registration_id, serial);
            revoked.await.map(drop).map_err(admin_failed)
        })
    }

    fn delete_ca<'a>(&'a self, actor: &'a str, name: &'a str) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            admin.delete_ca(&actor, name).await.map_err(admin_failed)
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
        let actor = Actor::console(actor);
        Box::pin(async move {
            let role = domain_role(role);
            let admin = &self.admin;
            let saved = admin
                .put_user(&actor, username.trim(), password, role)
                .await;
            saved.map(drop).map_err(admin_failed)
        })
    }

    fn set_user_disabled<'a>(
        &'a self,
        actor: &'a str,
        username: &'a str,
        disabled: bool,
    ) -> BackendFuture<'a, ()> {
        let actor = Actor::console(actor);
        Box::pin(async move {
            let admin = &self.admin;
            let changed = admin.set_user_disabled(&actor, username, disabled).await;
            changed.map(drop).map_err(admin_failed)
        })
    }
}

fn sink_row(sink: &crate::model::EventSink, last_seq: i64) -> SinkRow {
    let progress = &sink.progress;
    SinkRow {
        name: sink.name.clone(),
        kind: sink.target.kind().to_string(),
        url: sink.target.url().to_string(),
        channel: sink.target.channel().map(str::to_string),
        enabled: sink.enabled,
        delivered_seq: progress.delivered_seq,
        lag: progress.lag(last_seq),
        last_delivered: progress.delivered_at.map(timestamp),
        last_error: progress.last_error.clone(),
        failures: progress.failures,
    }
}
