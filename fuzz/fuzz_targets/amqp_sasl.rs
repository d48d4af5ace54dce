//! The AMQP SASL front reads what anyone sends before they log in: the protocol header, SASL
//! frames (decoded with fe2o3-amqp's codec behind our length checks), PLAIN responses and the
//! device names inside must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::transport::amqp::sasl;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = <[u8; 8]>::try_from(data.get(..8).unwrap_or_default()) {
        let _ = sasl::classify_header(&header);
    }
    if let Ok(fe2o3_amqp::frames::sasl::Frame::Init(init)) = sasl::decode_frame(data) {
        let response = init.initial_response.map(|b| b.into_vec()).unwrap_or_default();
        if let Ok((user, _token)) = sasl::parse_plain(&response) {
            let _ = sasl::parse_device_name(user);
        }
    }
    let _ = sasl::parse_plain(data);
});
