//! Helpers shared by the integration tests: databases to test against, and a real `onramp` process.
#![allow(dead_code)]

pub mod db;
pub mod instance;
pub mod pg_cluster;
pub mod process;
pub mod swtpm;
pub mod webhook;

/// The built-in hub a fresh instance on the default host name `localhost` links.
pub const HUB: &str = "hub.localhost";
