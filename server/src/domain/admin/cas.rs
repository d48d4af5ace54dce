//! CA certificates that X.509 enrollment groups and device chains lead to.

use serde_json::json;

use super::{Admin, Change, Result};
use crate::domain::ca;
use crate::model::{Actor, CaCertificate};

fn summary(ca: &CaCertificate) -> serde_json::Value {
    json!({"sha256Thumbprint": ca.sha256_thumbprint, "verified": ca.verified})
}

fn target(name: &str) -> String {
    format!("ca/{name}")
}

impl Admin {
    /// Uploads or replaces a CA certificate; a new one starts unverified unless `verified`.
    pub async fn put_ca(
        &self,
        actor: &Actor,
        name: &str,
        pem: &str,
        verified: bool,
    ) -> Result<CaCertificate> {
        let before = self.store.get_ca_certificate(name).await?;
        let stored = ca::put_ca(self.store(), name, pem, verified).await?;
        self.invalidate();
        let action = match before {
            Some(_) => "ca.update",
            None => "ca.create",
        };
        let change = Change::new(action, target(&stored.name))
            .before(before.as_ref().map(summary))
            .after(Some(summary(&stored)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    pub async fn generate_ca_code(&self, actor: &Actor, name: &str) -> Result<CaCertificate> {
        let stored = ca::generate_verification_code(self.store(), name).await?;
        self.audit(actor, Change::new("ca.code", target(&stored.name)))
            .await;
        Ok(stored)
    }

    /// Proof of possession: the CA becomes trusted for group chains.
    pub async fn verify_ca(&self, actor: &Actor, name: &str, proof: &str) -> Result<CaCertificate> {
        let stored = ca::verify(self.store(), name, proof).await?;
        self.invalidate();
        let change = Change::new("ca.verify", target(&stored.name)).after(Some(summary(&stored)));
        self.audit(actor, change).await;
        Ok(stored)
    }

    pub async fn delete_ca(&self, actor: &Actor, name: &str) -> Result<()> {
        ca::delete(self.store(), name).await?;
        self.invalidate();
        self.audit(actor, Change::new("ca.delete", target(name)))
            .await;
        Ok(())
    }
}
