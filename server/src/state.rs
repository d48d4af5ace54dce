//! The services the front ends draw on, built once by `service::prepare`. Each front end takes a
//! narrow state with only what it uses (its own struct with `FromRef<AppState>`, e.g.
//! `transport::service_api::ServiceApiState`), so what a transport can reach is written in its
//! signature; the console uses all of them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::bootstrap::Instance;
use crate::config::Config;
use crate::coordination::Peers;
use crate::diagnostics::DiagnosticsBus;
use crate::domain::admin::Admin;
use crate::domain::device_hub::DeviceHub;
use crate::domain::provisioner::Provisioner;
use crate::domain::throttle::RateLimit;
use crate::metrics::Metrics;
use crate::store::Store;

/// Everything, for the composition root; front ends extract their part of it.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Reads only, outside the domain: every write goes through `admin`, `provisioner` or
    /// `device_hub` (tests/architecture.rs holds transports to that).
    pub store: Arc<dyn Store>,
    pub instance: Arc<Instance>,
    pub bus: DiagnosticsBus,
    pub provisioner: Arc<Provisioner>,
    /// The built-in hubs' device side: sessions, twins, pushes, identities.
    pub device_hub: Arc<DeviceHub>,
    /// Every operator change, audited.
    pub admin: Arc<Admin>,
    /// Service API calls per access policy (`limits.service_api_calls_per_minute`).
    pub service_api_calls: Arc<RateLimit>,
    /// What `/metrics` serves; the transports record their part into it.
    pub metrics: Arc<Metrics>,
    /// The other instances on the same database (`coordination`).
    pub peers: Arc<Peers>,
    /// Cancelled when a shutdown begins: from then on `/readyz` fails (`limits.drain_secs`).
    pub draining: CancellationToken,
}
