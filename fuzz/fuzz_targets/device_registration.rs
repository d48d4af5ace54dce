//! See `onramp::fuzzing::device_registration` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::device_registration(data));
