//! Onramp's integration tests, linked into one test binary so the suite builds and links once
//! (each extra binary re-links every dependency, which costs minutes and gigabytes on CI).

mod support;

mod amqp;
mod audit;
mod bulk;
mod ca_crl;
mod cli;
mod console;
mod deploy;
mod events;
mod fleet;
mod fuzz_smoke;
mod hostile;
mod issuance;
mod metrics;
mod mqtt;
mod outage;
mod provisioning;
mod sdk;
mod sdk_tpm;
mod sdk_x509;
mod service_api;
mod storage;
mod test_mode;
mod throttling;
mod tpm;
