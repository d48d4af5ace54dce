//! See `onramp::fuzzing::sas_token` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::sas_token(data));
