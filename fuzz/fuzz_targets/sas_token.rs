//! SAS tokens arrive from anyone: parsing and verifying them must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = onramp::attestation::sas::parse(text) {
            let _ = token.verify("0ne00000000/registrations/dev", &[b"key".as_slice()], 0);
        }
    }
});
