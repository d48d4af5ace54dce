//! See `onramp::fuzzing::tpm_public` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::tpm_public(data));
