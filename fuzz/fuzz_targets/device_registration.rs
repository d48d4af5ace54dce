//! Register bodies arrive from anyone (HTTPS, MQTT, AMQP): decoding must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onramp::domain::provisioner::parse_registration(data);
});
