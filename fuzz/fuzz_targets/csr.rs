//! See `onramp::fuzzing::csr` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::csr(data));
