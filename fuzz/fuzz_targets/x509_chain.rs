//! See `onramp::fuzzing::x509_chain` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::x509_chain(data));
