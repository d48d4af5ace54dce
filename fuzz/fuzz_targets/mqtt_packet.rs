//! See `onramp::fuzzing::mqtt_packet` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::mqtt_packet(data));
