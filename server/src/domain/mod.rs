//! The provisioning domain's services: the one registration path (`provisioner`), the built-in
//! hubs' device side (`device_hub`), and every change an operator makes (`admin`), whichever front
//! end it comes through, with the lifecycle events those changes make (`lifecycle`), and the
//! certificates issued at provisioning (`issuance`). Plain data
//! lives in `crate::model`.

pub mod access;
pub mod admin;
pub mod ca;
pub mod console_users;
pub mod device_hub;
pub mod issuance;
pub mod lifecycle;
pub mod provisioner;
pub mod revocation;
pub mod sign_in_throttle;
pub mod throttle;
