//! How devices prove who they are. One module per mechanism, shared by every transport: `sas`
//! (symmetric keys), `x509` (TLS client certificate chains) and `tpm` (endorsement keys).

pub mod sas;
pub mod tpm;
pub mod x509;
