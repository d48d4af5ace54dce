//! Certificates issued at provisioning: credential policies, the issuers (CAs with their keys) that
//! sign for them, and revocation of what was issued.

use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::settings::check_name;
use super::{Admin, AdminError, Change, Result, invalid};
use crate::domain::ca;
use crate::model::*;
use crate::pki::SigningCa;

/// The longest validity a policy may give (ten years, the own CA's lifetime).
const MAX_VALIDITY_DAYS: u32 = 3650;

/// What an operator sets on a credential policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyInput {
    pub issuer: String,
    pub validity_days: u32,
    pub key_types: Vec<KeyType>,
    pub renewal_window_days: u32,
}

/// A policy in the shape the service API and the CLI show.
pub fn policy_view(policy: &CredentialPolicy) -> Value {
    let key_types: Vec<&str> = policy.key_types.iter().map(|k| k.as_str()).collect();
    json!({
        "name": policy.name,
        "issuer": policy.issuer,
        "validityDays": policy.validity_days,
        "keyTypes": key_types,
        "renewalWindowDays": policy.renewal_window_days,
        "etag": policy.etag.quoted(),
    })
}

/// An issuer without its key.
pub fn issuer_view(issuer: &CertificateIssuer) -> Value {
    json!({ "name": issuer.name, "certificates": issuer.chain_pem, "etag": issuer.etag.quoted() })
}

/// A certificate record as the API and console show it.
pub fn issued_view(issued: &IssuedCertificate) -> Value {
    json!({
        "serialNumber": issued.serial,
        "registrationId": issued.registration_id,
        "issuer": issued.issuer,
        "credentialPolicyName": issued.policy,
        "keyType": issued.key_type.as_str(),
        "notBefore": crate::proto::timestamp(issued.not_before),
        "notAfter": crate::proto::timestamp(issued.not_after),
        "revoked": issued.revoked.map(crate::proto::timestamp),
    })
}

fn check_policy(input: &PolicyInput) -> Result<()> {
    if input.key_types.is_empty() {
        return invalid("`keyTypes` must allow at least one key type");
    }
    if !(1..=MAX_VALIDITY_DAYS).contains(&input.validity_days) {
        return invalid(format!("`validityDays` must be 1 to {MAX_VALIDITY_DAYS}"));
    }
    if input.renewal_window_days >= input.validity_days {
        return invalid("`renewalWindowDays` must be shorter than `validityDays`");
    }
    Ok(())
}

impl Admin {
    /// Creates or replaces a credential policy; its issuer must exist.
    pub async fn put_credential_policy(
        &self,
        actor: &Actor,
        name: &str,
        input: PolicyInput,
    ) -> Result<CredentialPolicy> {
        check_name("credential policy", name)?;
        check_policy(&input)?;
        if self.store.get_issuer(&input.issuer).await?.is_none() {
            return Err(AdminError::NotFound(format!("issuer {:?}", input.issuer)));
        }
        let before = self.store.get_credential_policy(name).await?;
        let now = Utc::now();
        let policy = CredentialPolicy {
            name: before.as_ref().map_or(name, |b| &b.name).to_string(),
            issuer: input.issuer,
            validity_days: input.validity_days,
            key_types: input.key_types,
            renewal_window_days: input.renewal_window_days,
            etag: Etag::new(),
            created: before.as_ref().map_or(now, |b| b.created),
            updated: now,
        };
        let stored = self
            .store
            .put_credential_policy(policy, IfMatch::Any)
            .await?;
        self.invalidate();
        let action = match before {
            Some(_) => "credential-policy.update",
            None => "credential-policy.create",
        };
        let change = Change::new(action, format!("credential-policy/{}", stored.name))
            .before(before.as_ref().map(policy_view))
            .after(Some(policy_view(&stored)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    /// Removes a policy. Enrollments naming it then have their devices' CSRs refused.
    pub async fn delete_credential_policy(&self, actor: &Actor, name: &str) -> Result<()> {
        let policy = self
            .store
            .get_credential_policy(name)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("credential policy {name:?}")))?;
        self.store
            .delete_credential_policy(name, IfMatch::Any)
            .await?;
        self.invalidate();
        let change = Change::new(
            "credential-policy.delete",
            format!("credential-policy/{}", policy.name),
        )
        .before(Some(policy_view(&policy)));
        self.audit(actor, change).await;
        Ok(())
    }

    /// Uploads an intermediate CA with its key (PEM: the CA first, then those above it) as an
    /// issuer, and trusts it as a verified CA of the same name: holding the key is the proof.
    pub async fn put_issuer(
        &self,
        actor: &Actor,
        name: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<CertificateIssuer> {
        check_name("issuer", name)?;
        if name.eq_ignore_ascii_case(OWN_ISSUER) {
            return invalid(format!("the issuer {OWN_ISSUER:?} is the instance's own"));
        }
        SigningCa::from_pem(chain_pem, key_pem)
            .map_err(|e| AdminError::Invalid(format!("the issuer cannot sign: {e}")))?;
        let before = self.store.get_issuer(name).await?;
        let now = Utc::now();
        let issuer = CertificateIssuer {
            name: name.to_string(),
            chain_pem: chain_pem.to_string(),
            key_pem: key_pem.to_string(),
            etag: Etag::new(),
            created: before.as_ref().map_or(now, |b| b.created),
            updated: now,
        };
        let stored = self.store.put_issuer(issuer, IfMatch::Any).await?;
        ca::put_ca(self.store(), name, chain_pem, true).await?;
        self.invalidate();
        let action = match before {
            Some(_) => "issuer.update",
            None => "issuer.create",
        };
        let change =
            Change::new(action, format!("issuer/{name}")).after(Some(issuer_view(&stored)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    /// Removes an uploaded issuer no policy uses (the instance's own stays).
    pub async fn delete_issuer(&self, actor: &Actor, name: &str) -> Result<()> {
        if name.eq_ignore_ascii_case(OWN_ISSUER) {
            return invalid(format!("the issuer {OWN_ISSUER:?} is the instance's own"));
        }
        let users: Vec<String> = self
            .store
            .list_credential_policies()
            .await?
            .into_iter()
            .filter(|p| p.issuer.eq_ignore_ascii_case(name))
            .map(|p| p.name)
            .collect();
        if !users.is_empty() {
            return invalid(format!(
                "the issuer signs for credential policies {}",
                users.join(", ")
            ));
        }
        if self.store.get_issuer(name).await?.is_none() {
            return Err(AdminError::NotFound(format!("issuer {name:?}")));
        }
        self.store.delete_issuer(name, IfMatch::Any).await?;
        self.invalidate();
        self.audit(
            actor,
            Change::new("issuer.delete", format!("issuer/{name}")),
        )
        .await;
        Ok(())
    }

    /// Revokes one of a device's issued certificates, or all of them; returns those revoked now.
    pub async fn revoke_certificates(
        &self,
        actor: &Actor,
        registration_id: &str,
        serial: Option<&str>,
    ) -> Result<Vec<IssuedCertificate>> {
        let revoked = self
            .store
            .revoke_certificates(registration_id, serial, Utc::now())
            .await?;
        if revoked.is_empty() {
            let what = match serial {
                Some(serial) => format!("unrevoked certificate {serial:?} of {registration_id:?}"),
                None => format!("unrevoked certificate of {registration_id:?}"),
            };
            return Err(AdminError::NotFound(what));
        }
        let serials: Vec<&str> = revoked.iter().map(|c| c.serial.as_str()).collect();
        let change = Change::new("certificate.revoke", format!("device/{registration_id}"))
            .after(Some(json!({ "serialNumbers": serials })));
        self.audit(actor, change).await;
        Ok(revoked)
    }
}
