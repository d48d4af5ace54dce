//! See `onramp::fuzzing::service_api_body` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::service_api_body(data));
