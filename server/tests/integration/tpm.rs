//! TPM attestation over HTTPS against the real server, with the device's TPM played in software
//! (`attestation::tpm::device`: ActivateCredential and Import with the EK's and SRK's private
//! keys): the challenge, the signed retry, the hub key in the final result; and every refusal.
//! SQLite and PostgreSQL.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use onramp::attestation::sas;
use onramp::attestation::tpm::device::SoftTpm;
use onramp::model::*;
use serde_json::{Value, json};

use fe2o3_amqp::Connection;
use fe2o3_amqp::frames::sasl;
use fe2o3_amqp::types::primitives::Binary;
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslResponse};
use onramp::transport::amqp::encoding::{SASL_FRAME, write_frame};
use onramp::transport::amqp::rewind::Rewind;

use crate::amqp::{linked, request};
use crate::issuance::{chain_of, device_key, verify_with_openssl};
use crate::mqtt::tls_to;
use crate::support::HUB;
use crate::support::instance::{Backend, Instance, enroll, random_key, symmetric_spec};

crate::backend_suite!(
    a_tpm_device_is_challenged_then_assigned_with_its_hub_key,
    a_tpm_with_an_ecc_endorsement_key_is_challenged_then_assigned,
    tpm_requests_the_enrollment_does_not_back_are_refused,
    a_tpm_device_logs_in_over_amqp_sasl_and_registers,
    registering_again_brings_a_hub_key_that_works_under_each_policy,
);

/// What the tests do with a software TPM: the register body it sends, and the key a blob (base64,
/// as in a reply) carries.
trait TestTpm {
    fn body(&self, registration_id: &str) -> Value;
    fn open(&self, blob: &Value) -> Vec<u8>;
}

impl TestTpm for SoftTpm {
    fn body(&self, registration_id: &str) -> Value {
        json!({
            "registrationId": registration_id,
            "tpm": {
                "endorsementKey": BASE64.encode(self.endorsement_key()),
                "storageRootKey": BASE64.encode(self.storage_root_key()),
            }
        })
    }

    fn open(&self, blob: &Value) -> Vec<u8> {
        let blob = BASE64.decode(blob.as_str().expect("a blob")).unwrap();
        self.activate(&blob).unwrap()
    }
}

fn tpm_spec(tpm: &SoftTpm, status: ProvisioningStatus) -> EnrollmentSpec {
    EnrollmentSpec {
        attestation: Attestation::Tpm {
            endorsement_key: BASE64.encode(tpm.endorsement_key()),
            storage_root_key: None,
        },
        provisioning_status: status,
        ..symmetric_spec("", "")
    }
}

/// The key the device's identity on the built-in hub authenticates with.
async fn hub_identity_key(i: &Instance, device_id: &str) -> Vec<u8> {
    let identity = i
        .store()
        .get_hub_device(HUB, device_id)
        .await
        .unwrap()
        .unwrap();
    let DeviceAuth::Sas { primary_key, .. } = identity.auth else {
        panic!("{:?}", identity.auth);
    };
    BASE64.decode(primary_key).unwrap()
}

/// What the SDK signs with the imported key: the URL-encoded resource, as sent, and the expiry.
fn token(i: &Instance, registration_id: &str, key: &[u8]) -> String {
    let resource = format!("{}/registrations/{registration_id}", i.scope());
    let expiry = Utc::now().timestamp() as u64 + 3600;
    sas::sign(&BASE64.encode(key), &resource, expiry, Some("registration")).unwrap()
}

async fn put(i: &Instance, id: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let path = format!("registrations/{id}/register");
    let (status, _, body) = i.request("PUT", &path, token, Some(body)).await;
    (status, body)
}

async fn a_tpm_device_is_challenged_then_assigned_with_its_hub_key(i: &Instance) {
    let tpm = SoftTpm::rsa().unwrap();
    challenged_then_assigned(i, &tpm).await;
}

async fn a_tpm_with_an_ecc_endorsement_key_is_challenged_then_assigned(i: &Instance) {
    challenged_then_assigned(i, &SoftTpm::ecc().unwrap()).await;
}

async fn challenged_then_assigned(i: &Instance, tpm: &SoftTpm) {
    enroll(
        i.store(),
        "tpm-dev-1",
        None,
        tpm_spec(tpm, ProvisioningStatus::Enabled),
    )
    .await;
    let (status, challenge) = put(i, "tpm-dev-1", None, tpm.body("tpm-dev-1")).await;
    assert_eq!(status, 401, "{challenge}");
    assert_eq!(challenge["keyName"], "registration");
    assert_eq!(challenge["errorCode"], 401002, "{challenge}");
    let key = tpm.open(&challenge["authenticationKey"]);

    let signed = token(i, "tpm-dev-1", &key);
    let (status, operation) = put(i, "tpm-dev-1", Some(&signed), tpm.body("tpm-dev-1")).await;
    assert_eq!(status, 202, "{operation}");
    let state = &operation["registrationState"];
    assert_eq!(
        (&state["status"], &state["assignedHub"]),
        (&json!("assigned"), &json!(HUB))
    );
    // The hub identity authenticates with the key only this TPM can import from the result.
    let hub_key = tpm.open(&state["tpm"]["authenticationKey"]);
    assert_ne!(hub_key, key);
    assert_eq!(hub_identity_key(i, "tpm-dev-1").await, hub_key);
    // The poll is signed with the same key.
    let path = format!(
        "registrations/tpm-dev-1/operations/{}",
        operation["operationId"].as_str().unwrap()
    );
    let (status, _, polled) = i.request("GET", &path, Some(&signed), None).await;
    assert_eq!(
        (status, &polled["status"]),
        (200, &json!("assigned")),
        "{polled}"
    );
}

/// A TPM device that sends a CSR gets its certificate like any other (issue 21); its hub identity
/// then trusts the issuing CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tpm_device_gets_a_certificate_for_its_csr() {
    let i = Instance::start(Backend::Sqlite).await.unwrap();
    let tpm = SoftTpm::ecc().unwrap();
    let id = "tpm-csr-1";
    let spec = EnrollmentSpec {
        credential_policy_name: Some("default".into()),
        ..tpm_spec(&tpm, ProvisioningStatus::Enabled)
    };
    enroll(i.store(), id, None, spec).await;
    let dir = tempfile::tempdir().unwrap();
    let device = device_key(dir.path(), KeyType::EcP256, id);
    let mut body = tpm.body(id);
    body["csr"] = json!(device.csr);
    let (status, challenge) = put(&i, id, None, body.clone()).await;
    assert_eq!(status, 401, "the challenge comes first: {challenge}");
    let signed = token(&i, id, &tpm.open(&challenge["authenticationKey"]));
    let (status, operation) = put(&i, id, Some(&signed), body).await;
    assert_eq!(status, 202, "{operation}");
    verify_with_openssl(dir.path(), id, &chain_of(&operation), &device);
    let identity = i.store().get_hub_device(HUB, id).await.unwrap().unwrap();
    assert_eq!(identity.auth, DeviceAuth::CertificateAuthority);
    i.finish().await;
}

/// The challenge, then the signed register: the final state and the hub key its blob carries.
async fn challenged_register(i: &Instance, tpm: &SoftTpm, id: &str) -> (Value, Vec<u8>) {
    let (_, challenge) = put(i, id, None, tpm.body(id)).await;
    let signed = token(i, id, &tpm.open(&challenge["authenticationKey"]));
    let (status, operation) = put(i, id, Some(&signed), tpm.body(id)).await;
    assert_eq!(status, 202, "{operation}");
    let state = operation["registrationState"].clone();
    let hub_key = tpm.open(&state["tpm"]["authenticationKey"]);
    (state, hub_key)
}

/// Registering again imports a new blob over the TPM's hub key, whatever the policy: the hub
/// identity must take the new key, or the device is locked out of its hub.
async fn registering_again_brings_a_hub_key_that_works_under_each_policy(i: &Instance) {
    let policies = [
        ("migrate", true, true),
        ("reset", true, false),
        ("never", false, false),
    ];
    for (name, update_hub_assignment, migrate_device_data) in policies {
        let tpm = SoftTpm::rsa().unwrap();
        let id = format!("tpm-again-{name}");
        let spec = EnrollmentSpec {
            reprovision_policy: ReprovisionPolicy {
                update_hub_assignment,
                migrate_device_data,
            },
            ..tpm_spec(&tpm, ProvisioningStatus::Enabled)
        };
        enroll(i.store(), &id, None, spec).await;
        for attempt in ["first", "again"] {
            let (state, hub_key) = challenged_register(i, &tpm, &id).await;
            assert_eq!(state["status"], "assigned", "{name} {attempt}: {state}");
            assert_eq!(state["assignedHub"], HUB, "{name} {attempt}: {state}");
            assert_eq!(
                hub_identity_key(i, &id).await,
                hub_key,
                "{name} {attempt}: the hub kept an old key"
            );
        }
        let record = i.store().get_registration(&id).await.unwrap().unwrap();
        assert_eq!(record.attestation, AttestationKind::Tpm, "{name}");
    }
}

/// A device's requests and the diagnostics events they cause.
struct Watched<'a> {
    i: &'a Instance,
    events: tokio::sync::broadcast::Receiver<std::sync::Arc<RegistrationEvent>>,
}

impl Watched<'_> {
    async fn event(&mut self) -> std::sync::Arc<RegistrationEvent> {
        tokio::time::timeout(std::time::Duration::from_secs(5), self.events.recv())
            .await
            .unwrap()
            .unwrap()
    }

    /// The request is refused with `status` and its Azure code, no key, a diagnostics event
    /// naming `reason`, and nothing assigned.
    async fn refused(
        &mut self,
        id: &str,
        token: Option<&str>,
        body: Value,
        status: u16,
        reason: &str,
    ) {
        let (got, answer) = put(self.i, id, token, body).await;
        let code = i64::from(status) * 1000 + if status == 401 { 2 } else { 4 };
        assert_eq!(
            (got, &answer["errorCode"]),
            (status, &json!(code)),
            "{id}: {answer}"
        );
        assert!(answer.get("authenticationKey").is_none(), "{id}: {answer}");
        let message = self.event().await.error_message.clone().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{id}: {message:?} lacks {reason:?}"
        );
        let record = self.i.store().get_registration(id).await.unwrap();
        assert!(record.is_none(), "{id} was assigned");
    }

    /// A fresh challenge for `tpm-dev-2`; the key its TPM imports.
    async fn challenged(&mut self, tpm: &SoftTpm) -> Vec<u8> {
        let (status, answer) = put(self.i, "tpm-dev-2", None, tpm.body("tpm-dev-2")).await;
        assert_eq!(status, 401, "{answer}");
        let event = self.event().await;
        assert_eq!(
            event.error_message.as_deref(),
            Some("tpm: challenge issued")
        );
        tpm.open(&answer["authenticationKey"])
    }
}

async fn tpm_requests_the_enrollment_does_not_back_are_refused(i: &Instance) {
    let (tpm, stranger) = (SoftTpm::rsa().unwrap(), SoftTpm::rsa().unwrap());
    let enabled = ProvisioningStatus::Enabled;
    for (id, spec) in [
        ("tpm-dev-2", tpm_spec(&tpm, enabled)),
        ("tpm-twin", tpm_spec(&stranger, enabled)),
        ("tpm-off", tpm_spec(&tpm, ProvisioningStatus::Disabled)),
        ("tpm-sym", symmetric_spec(&random_key(), &random_key())),
    ] {
        enroll(i.store(), id, None, spec).await;
    }
    let mut watched = Watched {
        i,
        events: i.state.bus.subscribe(),
    };
    // Not this enrollment's EK (another TPM's, or one enrolled under another ID), disabled, none,
    // an enrollment of another kind.
    let unknown = "tpm: unknown endorsement key";
    let w = &mut watched;
    w.refused("tpm-dev-2", None, stranger.body("tpm-dev-2"), 401, unknown)
        .await;
    w.refused("tpm-twin", None, tpm.body("tpm-twin"), 401, unknown)
        .await;
    w.refused("tpm-off", None, tpm.body("tpm-off"), 401, "disabled")
        .await;
    w.refused("tpm-nobody", None, tpm.body("tpm-nobody"), 401, unknown)
        .await;
    w.refused(
        "tpm-sym",
        None,
        tpm.body("tpm-sym"),
        401,
        "does not use TPM",
    )
    .await;
    // An EK that is not the enrolled one is unknown; an SRK that is no TPM key is a clear 400.
    let mut garbage = tpm.body("tpm-dev-2");
    garbage["tpm"]["endorsementKey"] = json!(BASE64.encode(b"not a key"));
    w.refused("tpm-dev-2", None, garbage, 401, unknown).await;
    let mut garbage = tpm.body("tpm-dev-2");
    garbage["tpm"]["storageRootKey"] = json!(BASE64.encode(b"not a key"));
    w.refused("tpm-dev-2", None, garbage, 400, "truncated")
        .await;
    // A retry signed with anything but the key the TPM was sent; a key a newer challenge
    // replaced; a key past its expiry.
    let body = || tpm.body("tpm-dev-2");
    let key = w.challenged(&tpm).await;
    let wrong = token(i, "tpm-dev-2", &[7u8; 32]);
    w.refused("tpm-dev-2", Some(&wrong), body(), 401, "signature mismatch")
        .await;
    w.challenged(&tpm).await;
    let stale = token(i, "tpm-dev-2", &key);
    w.refused("tpm-dev-2", Some(&stale), body(), 401, "signature mismatch")
        .await;
    let key = w.challenged(&tpm).await;
    let mut stored = i
        .store()
        .get_tpm_challenge("tpm-dev-2", Utc::now())
        .await
        .unwrap()
        .unwrap();
    stored.expires = Utc::now() - chrono::Duration::seconds(1);
    i.store().put_tpm_challenge(&stored).await.unwrap();
    let expired = token(i, "tpm-dev-2", &key);
    w.refused(
        "tpm-dev-2",
        Some(&expired),
        body(),
        401,
        "no open challenge",
    )
    .await;
}

/// The AMQP device's SASL `TPM` exchange, as Node's `sasl_tpm.js` does it, on `tls`: init with
/// the EK, the SRK on the one-byte challenge, the blob's pieces, the token signed with the key
/// inside it (or with `sign_with`, when given). Returns the SASL outcome code, the key, and what
/// the server sent after the outcome (its AMQP header may come in the same record).
async fn sasl_tpm<S>(
    i: &Instance,
    tls: &mut S,
    tpm: &SoftTpm,
    id: &str,
    sign_with: Option<&[u8]>,
) -> (SaslCode, Vec<u8>, Vec<u8>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut initial = vec![0];
    for part in [
        i.scope().as_bytes(),
        &[0],
        id.as_bytes(),
        &[0],
        tpm.endorsement_key(),
    ] {
        initial.extend_from_slice(part);
    }
    let init = SaslInit {
        mechanism: "TPM".into(),
        initial_response: Some(Binary::from(initial)),
        hostname: Some("localhost".into()),
    };
    let mut out = b"AMQP\x03\x01\x00\x00".to_vec();
    write_frame(&mut out, SASL_FRAME, 0, &init, &[]).unwrap();
    tls.write_all(&out).await.unwrap();
    let mut reader = SaslReader::default();
    reader.header(tls).await;
    let respond = async |tls: &mut S, bytes: Vec<u8>| {
        let mut out = Vec::new();
        let response = SaslResponse {
            response: Binary::from(bytes),
        };
        write_frame(&mut out, SASL_FRAME, 0, &response, &[]).unwrap();
        tls.write_all(&out).await.unwrap();
    };
    let mut blob = Vec::new();
    loop {
        match reader.frame(tls).await {
            sasl::Frame::Mechanisms(_) => {}
            sasl::Frame::Challenge(c) if c.challenge.len() == 1 => {
                respond(tls, [&[0u8][..], tpm.storage_root_key()].concat()).await
            }
            sasl::Frame::Challenge(c) => {
                blob.extend_from_slice(&c.challenge[1..]);
                if c.challenge[0] & 0xC0 != 0xC0 {
                    respond(tls, vec![0]).await;
                    continue;
                }
                let blob = BASE64.encode(&blob);
                let key = tpm.open(&json!(blob));
                let signed = token(i, id, sign_with.unwrap_or(&key));
                respond(tls, [&[0u8][..], signed.as_bytes()].concat()).await;
                let sasl::Frame::Outcome(outcome) = reader.frame(tls).await else {
                    panic!("no outcome");
                };
                return (outcome.code, key, reader.0.to_vec());
            }
            sasl::Frame::Outcome(outcome) => return (outcome.code, Vec::new(), Vec::new()),
            other => panic!("{other:?}"),
        }
    }
}

/// Reads the server's SASL header and frames.
#[derive(Default)]
struct SaslReader(bytes::BytesMut);

impl SaslReader {
    async fn fill(&mut self, tls: &mut (impl tokio::io::AsyncRead + Unpin), n: usize) {
        use tokio::io::AsyncReadExt;
        while self.0.len() < n {
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), tls.read_buf(&mut self.0));
            assert!(read.await.unwrap().unwrap() > 0, "the server hung up");
        }
    }

    async fn header(&mut self, tls: &mut (impl tokio::io::AsyncRead + Unpin)) {
        self.fill(tls, 8).await;
        assert_eq!(&self.0.split_to(8)[..], b"AMQP\x03\x01\x00\x00");
    }

    async fn frame(&mut self, tls: &mut (impl tokio::io::AsyncRead + Unpin)) -> sasl::Frame {
        use tokio_util::codec::Decoder;
        self.fill(tls, 4).await;
        let size = u32::from_be_bytes(self.0[..4].try_into().unwrap()) as usize;
        self.fill(tls, size).await;
        // The codec takes the frame after its size; it does not decode challenges (fe2o3's
        // client has no mechanism with rounds), which are read with serde_amqp.
        let mut frame = self.0.split_to(size).split_off(4);
        if frame.get(4..7) == Some(&[0x00, 0x53, 0x42]) {
            return sasl::Frame::Challenge(serde_amqp::from_slice(&frame[4..]).unwrap());
        }
        (sasl::FrameCodec {}).decode(&mut frame).unwrap().unwrap()
    }
}

async fn a_tpm_device_logs_in_over_amqp_sasl_and_registers(i: &Instance) {
    let tpm = SoftTpm::rsa().unwrap();
    let spec = tpm_spec(&tpm, ProvisioningStatus::Enabled);
    enroll(i.store(), "tpm-amqp", None, spec).await;
    // A token signed with another key: the `auth` outcome.
    let mut tls = tls_to(i, i.amqp_addr).await;
    let (code, ..) = sasl_tpm(i, &mut tls, &tpm, "tpm-amqp", Some(&[7u8; 32])).await;
    assert_eq!(code, SaslCode::Auth);
    // Another TPM's EK: a blob for a key kept nowhere (the SDKs wait for one before they read
    // the outcome), then the `auth` outcome, reported once with the real reason.
    let mut events = i.state.bus.subscribe();
    let mut tls = tls_to(i, i.amqp_addr).await;
    let (code, key, _) = sasl_tpm(i, &mut tls, &SoftTpm::rsa().unwrap(), "tpm-amqp", None).await;
    assert_eq!((code, key.len()), (SaslCode::Auth, 32));
    let reported = events.try_recv().unwrap();
    let reason = reported.error_message.as_deref().unwrap_or_default();
    assert!(reason.contains("unknown endorsement key"), "{reason}");
    assert!(events.try_recv().is_err(), "reported twice");

    let mut tls = tls_to(i, i.amqp_addr).await;
    let (code, _, after) = sasl_tpm(i, &mut tls, &tpm, "tpm-amqp", None).await;
    assert_eq!(code, SaslCode::Ok);
    let connection = Connection::builder()
        .container_id("tpm-device")
        .hostname("localhost")
        .open_with_stream(Rewind::new(after, tls))
        .await
        .unwrap();
    let mut device = linked(i, "tpm-amqp", connection).await.unwrap();
    let body = tpm.body("tpm-amqp").to_string();
    let (_, _, operation) = device
        .call(request("iotdps-register", None, "t-1", body.as_bytes()))
        .await
        .unwrap();
    let state = &operation["registrationState"];
    assert_eq!(state["status"], "assigned", "{operation}");
    let hub_key = tpm.open(&state["tpm"]["authenticationKey"]);
    assert_eq!(hub_identity_key(i, "tpm-amqp").await, hub_key);
    device.close().await;
}

/// An ECC (NIST P-256) EK made by a TPM, swtpm through tpm2-tools: the TPM's own
/// ActivateCredential recovers the credential Onramp's blob carries for it (the ECDH secret and
/// KDFe as the TPM computes them), bound to the SRK's name.
#[test]
fn a_tpm_activates_the_credential_onramp_made_for_its_ecc_endorsement_key() {
    use onramp::attestation::tpm::{PublicKey, Randomness, TpmPublic, activation_blob};
    let tpm = crate::support::swtpm::SoftwareTpm::start();
    tpm.tpm2(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"],
    );
    let srk_args = ["-C", "o", "-G", "rsa2048:aes128cfb", "-c", "srk.ctx", "-Q"];
    tpm.tpm2("tpm2_createprimary", &srk_args);
    tpm.tpm2("tpm2_readpublic", &["-c", "srk.ctx", "-o", "srk.pub", "-Q"]);
    tpm.tpm2("tpm2_flushcontext", &["-t"]);
    let public = |name| TpmPublic::parse(&std::fs::read(tpm.file(name)).unwrap()).unwrap();
    let (ek, srk) = (public("ek.pub"), public("srk.pub"));
    assert!(matches!(ek.key, PublicKey::Ecc { .. }), "{ek:?}");

    let mut random = Randomness::fresh();
    random.inner_key = rand::random();
    let blob = activation_blob(&ek, &srk, &[7u8; 32], &random).unwrap();
    // tpm2-tools' credential file: its magic and version, the TPM2B_ID_OBJECT, the secret.
    let mut fields = blob.as_slice();
    let mut credential = vec![0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, 1];
    for _ in 0..2 {
        let size = 2 + usize::from(u16::from_be_bytes([fields[0], fields[1]]));
        credential.extend_from_slice(&fields[..size]);
        fields = &fields[size..];
    }
    std::fs::write(tpm.file("credential"), credential).unwrap();
    // The EK's policy: PolicySecret with the endorsement hierarchy.
    tpm.tpm2(
        "tpm2_startauthsession",
        &["--policy-session", "-S", "s.ctx"],
    );
    tpm.tpm2("tpm2_policysecret", &["-S", "s.ctx", "-c", "e", "-Q"]);
    let activate = [
        "-c",
        "srk.ctx",
        "-C",
        "ek.ctx",
        "-i",
        "credential",
        "-o",
        "out",
        "-P",
        "session:s.ctx",
    ];
    tpm.tpm2("tpm2_activatecredential", &activate);
    assert_eq!(std::fs::read(tpm.file("out")).unwrap(), random.inner_key);
}
