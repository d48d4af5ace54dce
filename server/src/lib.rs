//! Onramp: a self-hosted device provisioning service that speaks the Azure IoT Hub DPS protocols.
//! The `onramp` binary (main.rs) is a thin command line over this library.

// The OpenAPI document (transport/openapi.rs) is one `json!` deeper than the default allows.
#![recursion_limit = "256"]

pub mod allocation;
pub mod attestation;
pub mod bootstrap;
pub mod bulk;
pub mod config;
pub mod coordination;
pub mod diagnostics;
pub mod domain;
#[doc(hidden)]
pub mod fuzzing;
pub mod hubs;
pub mod janitor;
pub mod metrics;
pub mod model;
pub mod pki;
pub mod proto;
pub mod service;
pub mod sinks;
pub mod state;
pub mod store;
#[doc(hidden)]
pub mod test_certs;
pub mod tls;
pub mod transport;
