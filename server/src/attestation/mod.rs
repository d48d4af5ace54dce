//! How devices prove who they are. One module per mechanism, shared by every transport: `sas`
//! (symmetric keys) and `x509` (TLS client certificate chains); TPM joins them.

pub mod sas;
pub mod x509;
