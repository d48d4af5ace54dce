//! The AMQP SASL front reads what anyone sends before they log in: the protocol header, SASL
//! frames (parsed by Onramp, every length checked), PLAIN and TPM initial responses and the
//! device names inside must never panic; the TPM blob's segments always join back to the blob.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::transport::amqp::sasl;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = <[u8; 8]>::try_from(data.get(..8).unwrap_or_default()) {
        let _ = sasl::classify_header(&header);
    }
    if let Ok(sasl::ClientFrame::Init {
        initial_response, ..
    }) = sasl::decode_frame(data)
    {
        if let Ok((user, _token)) = sasl::parse_plain(&initial_response) {
            let _ = sasl::parse_device_name(user);
        }
        let _ = sasl::parse_tpm_init(&initial_response);
    }
    let _ = sasl::parse_plain(data);
    let _ = sasl::parse_tpm_init(data);
    let segments = sasl::tpm_segments(data);
    let joined: Vec<u8> = segments.iter().flat_map(|s| s[1..].to_vec()).collect();
    assert_eq!(joined, data);
});
