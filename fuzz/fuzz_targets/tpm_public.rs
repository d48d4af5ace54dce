//! Endorsement and storage root keys arrive from anyone: parsing them must never panic, and
//! whatever parses must build an activation blob or refuse with an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::attestation::tpm::{Randomness, TpmPublic, activation_blob};

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = TpmPublic::parse(data) {
        let _ = key.name();
        let _ = activation_blob(&key, &key, &[7; 32], &Randomness::fresh());
    }
});
