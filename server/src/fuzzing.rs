//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs` call them): every parser of input
//! from devices, operators and hubs, fed arbitrary bytes. They live here so the test suite can run
//! the same code on the kept corpora (`fuzz/corpus/<target>/`) without the fuzzing toolchain
//! (`server/tests/integration/fuzz_smoke.rs`). Each returns normally or panics on a broken property.

use bytes::{Buf, BytesMut};
use fe2o3_amqp::frames::amqp::{Frame, FrameBody, FrameDecoder};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::messaging::message::DecodeIntoMessage;
use fe2o3_amqp::types::primitives::Value as AmqpValue;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::Value;
use tokio_util::codec::Decoder;

use crate::attestation::tpm::{Randomness, TpmPublic, activation_blob};
use crate::attestation::{sas, x509};
use crate::domain::admin::{self, AllocationSettingsView};
use crate::domain::device_hub::{merge_patch, parse_reported_patch};
use crate::model::{Enrollment, EnrollmentGroup, KeyType};
use crate::pki;
use crate::transport::amqp::guard::{Deliveries, FrameLimits, check_frame};
use crate::transport::amqp::sasl;
use crate::transport::hub_api::{identity_settings, twin_patch};
use crate::transport::mqtt::{decode, hub_topics, topics};

/// A target: arbitrary bytes in, a panic on a broken property.
pub type Target = fn(&[u8]);

/// Every target by the name its `fuzz/fuzz_targets/NAME.rs` and corpus directory have.
pub const TARGETS: &[(&str, Target)] = &[
    ("amqp_frame", amqp_frame),
    ("amqp_sasl", amqp_sasl),
    ("crl", crl),
    ("csr", csr),
    ("device_registration", device_registration),
    ("hub_rest_body", hub_rest_body),
    ("hub_session_input", hub_session_input),
    ("mqtt_packet", mqtt_packet),
    ("sas_token", sas_token),
    ("service_api_body", service_api_body),
    ("tpm_public", tpm_public),
    ("x509_chain", x509_chain),
];

const AMQP_LIMITS: FrameLimits = FrameLimits {
    max_frame: 64 * 1024,
    max_message: 100 * 1024,
};

/// The AMQP frame guard stands between a logged-in client and fe2o3-amqp's decoder: whatever it
/// lets through (the input is a frame after its size field), fe2o3 must decode without a panic.
pub fn amqp_frame(data: &[u8]) {
    let mut frame = ((data.len() + 4) as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(data);
    let mut deliveries = Deliveries::default();
    if check_frame(&frame, AMQP_LIMITS, &mut deliveries).is_err() || data.len() < 4 {
        return;
    }
    let decoded = FrameDecoder {}.decode(&mut BytesMut::from(data));
    if let Ok(Some(Frame {
        body: FrameBody::Transfer {
            performative,
            payload,
        },
        ..
    })) = decoded
        && !performative.more
    {
        let reader = serde_amqp::read::IoReader::new(payload.reader());
        let _ = <Body<AmqpValue> as DecodeIntoMessage>::decode_message_from_reader(reader);
    }
}

/// What anyone sends before an AMQP login: the protocol header, SASL frames, PLAIN and TPM
/// initial responses; the TPM blob's segments always join back to the blob.
pub fn amqp_sasl(data: &[u8]) {
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
    let joined: Vec<u8> = sasl::tpm_segments(data)
        .iter()
        .flat_map(|s| s[1..].to_vec())
        .collect();
    assert_eq!(joined, data, "TPM segments must join back to the blob");
}

/// Register bodies (HTTPS, MQTT, AMQP).
pub fn device_registration(data: &[u8]) {
    let _ = crate::domain::provisioner::parse_registration(data);
}

/// The built-in hub's IoT Hub REST bodies: a device identity (`PUT /devices/{id}`) and a twin
/// patch (`PATCH /twins/{id}`), merged into a twin as the hub would.
pub fn hub_rest_body(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = identity_settings(&body, "device-1");
    if let Ok(patch) = twin_patch(&body) {
        let mut twin = serde_json::Map::new();
        for part in [patch.tags, patch.desired].iter().flatten() {
            merge_patch(&mut twin, part);
        }
    }
}

/// What a device sends its built-in hub session after CONNECT: the first byte splits the input
/// into a PUBLISH topic and its payload (a reported-properties patch).
pub fn hub_session_input(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (topic, payload) = rest.split_at((split as usize).min(rest.len()));
    if let Ok(topic) = std::str::from_utf8(topic) {
        let _ = hub_topics::parse_request(topic, "device-1");
        let _ = hub_topics::parse_username(topic);
    }
    if let Ok(patch) = parse_reported_patch(payload) {
        let mut reported = serde_json::Map::new();
        merge_patch(&mut reported, &patch);
        merge_patch(&mut reported, &patch);
    }
}

/// MQTT packets and the DPS and IoT Hub names inside.
pub fn mqtt_packet(data: &[u8]) {
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(packet)) = decode(&mut buffer, 100 * 1024) {
        if let rumqttc::mqttbytes::v4::Packet::Publish(publish) = &packet {
            let _ = topics::parse_request(&publish.topic);
            let _ = hub_topics::parse_request(&publish.topic, "device");
        }
        if let rumqttc::mqttbytes::v4::Packet::Connect(connect) = &packet
            && let Some(login) = &connect.login
        {
            let _ = topics::parse_username(&login.username);
            let _ = hub_topics::parse_username(&login.username);
        }
    }
}

/// SAS tokens: parsed and verified.
pub fn sas_token(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(token) = sas::parse(text)
    {
        let _ = token.verify("0ne00000000/registrations/dev", &[b"key".as_slice()], 0);
    }
}

/// Service API bodies: individual enrollments and groups through the one build step (the EK and
/// certificates inside are parsed there), allocation settings and access rights.
pub fn service_api_body(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = admin::build::<Enrollment>(&body, None);
    let _ = admin::build::<Enrollment>(&body, Some("device-1"));
    let _ = admin::build::<EnrollmentGroup>(&body, Some("group-1"));
    let _ = serde_json::from_value::<AllocationSettingsView>(body.clone());
    if let Ok(sink) = serde_json::from_value::<admin::SinkInput>(body.clone()) {
        let _ = admin::sink_target(sink, None);
    }
    if let Ok(rights) = serde_json::from_value::<Vec<String>>(body) {
        let _ = admin::parse_rights(&rights);
    }
}

/// Endorsement and storage root keys: whatever parses builds an activation blob or is refused.
pub fn tpm_public(data: &[u8]) {
    if let Ok(key) = TpmPublic::parse(data) {
        let _ = key.name();
        let _ = activation_blob(&key, &key, &[7; 32], &Randomness::fresh());
    }
}

/// Device CSRs (the register body's `csr`): a request the check accepts is signed, and the
/// certificate names the device.
pub fn csr(data: &[u8]) {
    static CA: std::sync::OnceLock<pki::SigningCa> = std::sync::OnceLock::new();
    let Ok(checked) = pki::check_csr(data, "device-1", &KeyType::ALL) else {
        return;
    };
    let ca = CA.get_or_init(|| {
        let (cert, key) = pki::new_issuing_ca("fuzz").expect("a CA");
        pki::SigningCa::from_pem(&cert, &key).expect("its own key")
    });
    let terms = pki::LeafTerms {
        registration_id: "device-1",
        validity: chrono::Duration::days(1),
        crl_url: None,
        now: chrono::Utc::now(),
    };
    let signed = ca
        .sign(&checked, &terms)
        .expect("an accepted CSR is signed");
    assert_eq!(
        x509::common_name(&signed.der).ok().as_deref(),
        Some("device-1")
    );
}

/// CRLs fetched for uploaded CAs' devices, and the CRL addresses read from certificates: neither
/// panics, and no CRL the input makes is taken as signed by a CA whose key it lacks.
pub fn crl(data: &[u8]) {
    static CA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let _ = pki::crl_urls(data);
    let ca = CA.get_or_init(|| {
        let (cert, _) = pki::new_issuing_ca("fuzz").expect("a CA");
        x509::first_certificate(&cert)
            .expect("its certificate")
            .to_vec()
    });
    assert!(
        pki::crl_lists(data, ca, ca, chrono::Utc::now()).is_err(),
        "a CRL the CA did not sign is no answer"
    );
}

/// Client certificate chains (TLS handshake) and CA certificates (operators): the first byte
/// splits the input into a presented certificate and a trusted CA.
pub fn x509_chain(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (chain, ca) = rest.split_at((split as usize).min(rest.len()));
    let chain = [CertificateDer::from(chain.to_vec())];
    let ca = [CertificateDer::from(ca.to_vec())];
    let now = UnixTime::now();
    let _ = x509::check_leaf(&chain[0], "device-1", now);
    let _ = x509::describe(&chain[0]);
    let _ = x509::is_ca(&ca[0]);
    let _ = x509::path_to_verified_ca(&chain, &ca, &ca, &ca, now);
    let _ = x509::check_proof_of_possession(&ca[0], &chain[0], "code");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = x509::parse_certificates(text);
    }
}
