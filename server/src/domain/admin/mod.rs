//! Every change an operator makes, whichever front end it comes through (console, service API,
//! command line): enrollments and groups, linked hubs, allocation settings, access policies, CA
//! certificates, console users, registration records and test-mode faults. Each change follows one sequence:
//! validate, write, invalidate what depends on it, append an audit entry naming the actor
//! (docs/ARCHITECTURE.md, "Who writes the audit trail"). Front ends only decode and encode.

mod cas;
mod credentials;
mod enrollments;
mod faults;
mod hubs;
mod policies;
mod registrations;
pub(in crate::domain) mod settings;
mod sinks;
mod users;

use std::sync::Arc;

use serde_json::Value;

pub use credentials::{PolicyInput, issued_view, issuer_view, policy_view};
pub use enrollments::{Resource, build};
pub use settings::{AllocationSettingsView, HubSettings, KeySlot, RegionRule, parse_rights};
pub use sinks::{SinkInput, SinkOverview, target_of as sink_target};
pub use users::SignIn;

use crate::coordination::Peers;
use crate::domain::provisioner::Provisioner;
use crate::domain::sign_in_throttle::{SignInLimits, SignInThrottle};
use crate::model::{Actor, NewAuditEntry};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The change is malformed or breaks a rule; the message names the field or the rule.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(in crate::domain) fn invalid<T>(message: impl Into<String>) -> Result<T, AdminError> {
    Err(AdminError::Invalid(message.into()))
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// The one way to change the instance's configuration.
pub struct Admin {
    store: Arc<dyn Store>,
    /// Its caches (groups, hubs, CAs, allocation settings) are dropped after a change.
    provisioner: Arc<Provisioner>,
    /// The other instances on the same database, told to drop theirs.
    peers: Arc<Peers>,
    sign_ins: SignInThrottle,
}

/// What an audit entry says changed; keys, secrets and password hashes are never in it.
struct Change {
    action: String,
    target: String,
    before: Option<Value>,
    after: Option<Value>,
}

impl Change {
    fn new(action: impl Into<String>, target: impl Into<String>) -> Self {
        Change {
            action: action.into(),
            target: target.into(),
            before: None,
            after: None,
        }
    }

    fn before(mut self, value: Option<Value>) -> Self {
        self.before = value;
        self
    }

    fn after(mut self, value: Option<Value>) -> Self {
        self.after = value;
        self
    }
}

impl Admin {
    pub fn new(
        store: Arc<dyn Store>,
        provisioner: Arc<Provisioner>,
        peers: Arc<Peers>,
        sign_in_limits: SignInLimits,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            store,
            provisioner,
            peers,
            sign_ins: SignInThrottle::new(sign_in_limits),
        })
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    /// The change is already made when this runs, so a failed append is logged, not returned.
    async fn audit(&self, actor: &Actor, change: Change) {
        let action = change.action.clone();
        let entry = NewAuditEntry {
            actor: actor.clone(),
            action: change.action,
            target: change.target,
            before: change.before,
            after: change.after,
        };
        if let Err(e) = self.store.append_audit(entry).await {
            tracing::warn!(error = %e, action, "audit entry not written");
        }
    }

    /// Registrations see a change at once, on every instance: the provisioners forget what they
    /// cached.
    fn invalidate(&self) {
        self.provisioner.invalidate();
        self.peers.changed();
    }
}
