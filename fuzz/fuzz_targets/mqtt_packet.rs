//! MQTT bytes arrive from anyone: decoding them (and the DPS and IoT Hub names inside) must never
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::transport::mqtt::{decode, hub_topics, topics};

fuzz_target!(|data: &[u8]| {
    let mut buffer = bytes::BytesMut::from(data);
    while let Ok(Some(packet)) = decode(&mut buffer, 100 * 1024) {
        if let rumqttc::mqttbytes::v4::Packet::Publish(publish) = &packet {
            let _ = topics::parse_request(&publish.topic);
            let _ = hub_topics::parse_request(&publish.topic, "device");
        }
        if let rumqttc::mqttbytes::v4::Packet::Connect(connect) = &packet {
            if let Some(login) = &connect.login {
                let _ = topics::parse_username(&login.username);
                let _ = hub_topics::parse_username(&login.username);
            }
        }
    }
});
