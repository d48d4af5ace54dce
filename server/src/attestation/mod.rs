//! How devices prove who they are. One module per mechanism, shared by every transport: `sas`
//! (symmetric keys) now; X.509 and TPM join it.

pub mod sas;
