//! See `onramp::fuzzing::amqp_sasl` for what this target checks.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| onramp::fuzzing::amqp_sasl(data));
