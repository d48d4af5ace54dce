//! See `onramp::fuzzing::hub_session_input` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::hub_session_input(data));
