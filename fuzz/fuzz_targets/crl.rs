//! See `onramp::fuzzing::crl` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::crl(data));
