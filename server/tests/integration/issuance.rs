//! Certificates issued at provisioning (issue 21), with a device client written here (the official
//! SDKs have CSRs only in preview branches): keys and CSRs made by openssl as a device's tooling
//! would, sent over HTTPS, MQTT and AMQP; the chains checked with `openssl verify`; the refusals; renewal
//! over X.509 with the issued certificate and its window; revocation, the CRL, and the refusals
//! at registration and at the built-in hub. `with_the_sdks` (run by sdk.rs) takes an issued
//! certificate to the official SDKs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use onramp::attestation::sas;
use onramp::attestation::x509::{PresentedChain, to_pem};
use onramp::domain::device_hub::HubRefusal;
use onramp::model::*;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rustls::pki_types::CertificateDer;
use serde_json::{Value, json};

use crate::mqtt::Client;
use crate::sdk::{Ctx, assert_unauthorized, sdk};
use crate::support::HUB;
use crate::support::instance::{
    Backend, Instance, enroll, enroll_group, random_key, symmetric_spec,
};

/// A device key and its CSR, made by openssl in `dir`.
pub(crate) struct DeviceKey {
    pub(crate) key_pem: PathBuf,
    pub(crate) csr: String,
}

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn device_key(dir: &Path, kind: KeyType, common_name: &str) -> DeviceKey {
    let name = format!("{common_name}-{}", kind.as_str());
    let key_pem = dir.join(format!("{name}-key.pem"));
    let key = key_pem.to_str().unwrap();
    let algorithm: &[&str] = match kind {
        KeyType::EcP256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        KeyType::EcP384 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        KeyType::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        KeyType::Rsa3072 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        KeyType::Ed25519 => &["-algorithm", "ED25519"],
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(algorithm);
    args.extend(["-out", key]);
    openssl(&args);
    let csr_path = dir.join(format!("{name}.csr"));
    let subject = format!("/CN={common_name}");
    openssl(&[
        "req",
        "-new",
        "-key",
        key,
        "-subj",
        &subject,
        "-outform",
        "DER",
        "-out",
        csr_path.to_str().unwrap(),
    ]);
    DeviceKey {
        key_pem,
        csr: BASE64.encode(std::fs::read(csr_path).unwrap()),
    }
}

/// The chain a reply carries, DER, leaf first.
pub(crate) fn chain_of(reply: &Value) -> Vec<Vec<u8>> {
    reply["registrationState"]["issuedCertificateChain"]
        .as_array()
        .unwrap_or_else(|| panic!("no issuedCertificateChain in {reply}"))
        .iter()
        .map(|c| BASE64.decode(c.as_str().unwrap()).unwrap())
        .collect()
}

/// Writes the chain as `{name}.pem` (leaf first, as the SDKs take it) and its root alone; checks
/// it with `openssl verify` for client authentication and that it certifies the device's key.
pub(crate) fn verify_with_openssl(
    dir: &Path,
    name: &str,
    chain: &[Vec<u8>],
    key: &DeviceKey,
) -> PathBuf {
    let pem: String = chain.iter().map(|der| to_pem(der)).collect();
    let chain_path = dir.join(format!("{name}.pem"));
    std::fs::write(&chain_path, &pem).unwrap();
    let leaf_path = dir.join(format!("{name}-leaf.pem"));
    std::fs::write(&leaf_path, to_pem(&chain[0])).unwrap();
    let root_path = dir.join(format!("{name}-root.pem"));
    std::fs::write(&root_path, to_pem(chain.last().unwrap())).unwrap();
    let leaf = leaf_path.to_str().unwrap();
    let verdict = openssl(&[
        "verify",
        "-CAfile",
        root_path.to_str().unwrap(),
        "-purpose",
        "sslclient",
        leaf,
    ]);
    assert_eq!(verdict.trim(), format!("{leaf}: OK"));
    let certified = openssl(&["x509", "-in", leaf, "-noout", "-pubkey"]);
    let own = openssl(&["pkey", "-in", key.key_pem.to_str().unwrap(), "-pubout"]);
    assert_eq!(
        certified, own,
        "the certificate is not for the device's key"
    );
    chain_path
}

fn serial_of(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    hex::encode(cert.raw_serial())
}

async fn policy(i: &Instance, name: &str, body: Value) {
    let (status, _, reply) = i
        .service_call("PUT", &format!("credentialPolicies/{name}"), Some(body))
        .await;
    assert_eq!(status, 200, "{reply}");
}

/// Registers over MQTT with `body`; returns the response topic's status and the body.
async fn register_over_mqtt(i: &Instance, id: &str, key: &str, body: Value) -> (u16, Value) {
    let mut client = Client::device(i, id, key).await;
    let topic = "$dps/registrations/PUT/iotdps-register/?$rid=1";
    let publish = Publish::new(topic, QoS::AtMostOnce, body.to_string().into_bytes());
    client.send(Packet::Publish(publish)).await;
    let (topic, reply) = client.response().await;
    let status = topic
        .strip_prefix("$dps/registrations/res/")
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    (status, reply)
}

/// Registers over AMQP with `body`; returns the reply's JSON.
async fn register_over_amqp(i: &Instance, id: &str, key: &str, body: Value) -> Value {
    let mut device = crate::amqp::open(i, id, &i.token(id, key)).await.unwrap();
    let message = crate::amqp::request(
        "iotdps-register",
        None,
        "csr-1",
        body.to_string().as_bytes(),
    );
    let (_, _, reply) = device.call(message).await.unwrap();
    device.close().await;
    reply
}

#[derive(Debug, Clone, Copy)]
enum Transport {
    Https,
    Mqtt,
    Amqp,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_type_gets_a_chain_openssl_verifies_over_every_transport() {
    let i = Instance::start(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = "issued-1";
    let key = enrolled(&i, id, Some("default")).await;
    let mut serials = Vec::new();
    for (n, kind) in KeyType::ALL.into_iter().enumerate() {
        for transport in [Transport::Https, Transport::Mqtt, Transport::Amqp] {
            let device = device_key(dir.path(), kind, id);
            let body = json!({"registrationId": id, "csr": device.csr});
            let (status, reply) = match transport {
                Transport::Https => {
                    let (status, _, reply) = i.register(id, &key, body).await;
                    (status, reply)
                }
                Transport::Mqtt => register_over_mqtt(&i, id, &key, body).await,
                // AMQP has no status code: an accepted request answers with the operation.
                Transport::Amqp => (202, register_over_amqp(&i, id, &key, body).await),
            };
            assert_eq!(
                (status, reply["status"].as_str()),
                (202, Some("assigned")),
                "{reply}"
            );
            let chain = chain_of(&reply);
            assert_eq!(chain.len(), 2, "leaf and the issuing CA");
            verify_with_openssl(dir.path(), &format!("{n}-{transport:?}"), &chain, &device);
            serials.push(serial_of(&chain[0]));
        }
    }
    // Each issuance is recorded with its key type; the hub identity trusts the issuing CA.
    let issued = i.store().issued_certificates(id).await.unwrap();
    assert_eq!(issued.len(), serials.len());
    for serial in &serials {
        let record = issued.iter().find(|c| &c.serial == serial).unwrap();
        assert_eq!(
            (record.policy.as_str(), record.issuer.as_str()),
            ("default", OWN_ISSUER)
        );
    }
    let kinds: std::collections::HashSet<KeyType> = issued.iter().map(|c| c.key_type).collect();
    assert_eq!(kinds.len(), KeyType::ALL.len());
    let device = i.store().get_hub_device(HUB, id).await.unwrap().unwrap();
    assert_eq!(device.auth, DeviceAuth::CertificateAuthority);
    // The issuing CA the chains end in is the one the service API shows.
    let (_, _, issuer) = i
        .service_call("GET", "certificateIssuers/onramp", None)
        .await;
    assert!(issuer.get("key").is_none() && !issuer.to_string().contains("PRIVATE"));
    i.finish().await;
}

/// The reason the diagnostics give for the last refusal of `id` (the recorder writes events a
/// moment after they happen).
pub(crate) async fn refusal_reason(i: &Instance, id: &str) -> String {
    for _ in 0..50 {
        let failures = i.store().recent_failures(50).await.unwrap();
        if let Some(failure) = failures.iter().find(|f| f.registration_id == id) {
            return failure.error_message.clone().unwrap_or_default();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no refusal of {id} in the diagnostics")
}

/// A symmetric-key enrollment naming `policy`; returns its key.
async fn enrolled(i: &Instance, id: &str, policy: Option<&str>) -> String {
    let key = random_key();
    let spec = EnrollmentSpec {
        credential_policy_name: policy.map(String::from),
        ..symmetric_spec(&key, &random_key())
    };
    enroll(i.store(), id, None, spec).await;
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_csrs_are_refused_and_nothing_is_issued() {
    let i = Instance::start(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    policy(&i, "p256-only", json!({"issuer": "onramp", "validityDays": 30, "keyTypes": ["ecP256"], "renewalWindowDays": 7})).await;
    let refused = |reply: &Value, needle: &str| {
        assert_eq!(reply["errorCode"], 400209, "{reply}");
        let message = reply["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{message:?} does not say {needle:?}"
        );
    };

    let key = enrolled(&i, "csr-bad", Some("p256-only")).await;
    let wrong_cn = device_key(dir.path(), KeyType::EcP256, "someone-else");
    let (status, _, reply) = i
        .register("csr-bad", &key, json!({"csr": wrong_cn.csr}))
        .await;
    assert_eq!(status, 400);
    refused(&reply, "CN must be the registration ID");

    let p384 = device_key(dir.path(), KeyType::EcP384, "csr-bad");
    let (_, reply) = register_over_mqtt(&i, "csr-bad", &key, json!({"csr": p384.csr})).await;
    refused(&reply, "does not allow ecP384 keys");

    let good = device_key(dir.path(), KeyType::EcP256, "csr-bad");
    let mut tampered = BASE64.decode(&good.csr).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    let body = json!({"csr": BASE64.encode(tampered)});
    let (_, _, reply) = i.register("csr-bad", &key, body).await;
    refused(&reply, "signature does not verify");

    let (_, _, reply) = i
        .register("csr-bad", &key, json!({"csr": "not base64!"}))
        .await;
    refused(&reply, "base64 DER");

    let key = enrolled(&i, "csr-no-policy", None).await;
    let csr = device_key(dir.path(), KeyType::EcP256, "csr-no-policy").csr;
    let (_, _, reply) = i.register("csr-no-policy", &key, json!({"csr": csr})).await;
    refused(&reply, "names no credential policy");

    let key = enrolled(&i, "csr-gone-policy", Some("retired")).await;
    let csr = device_key(dir.path(), KeyType::EcP256, "csr-gone-policy").csr;
    let (_, _, reply) = i
        .register("csr-gone-policy", &key, json!({"csr": csr}))
        .await;
    refused(&reply, "\"retired\" does not exist");

    // Nothing was issued or registered, and each refusal is in the diagnostics with its reason.
    for id in ["csr-bad", "csr-no-policy", "csr-gone-policy"] {
        assert!(i.store().issued_certificates(id).await.unwrap().is_empty());
        assert!(i.store().get_registration(id).await.unwrap().is_none());
    }
    let reason = refusal_reason(&i, "csr-no-policy").await;
    assert!(reason.contains("names no credential policy"), "{reason}");

    // The policy rules: an unknown issuer, no key types, a window as long as the validity.
    for (body, needle) in [
        (
            json!({"issuer": "nobody", "validityDays": 30, "keyTypes": ["ecP256"], "renewalWindowDays": 7}),
            "issuer",
        ),
        (
            json!({"issuer": "onramp", "validityDays": 30, "keyTypes": [], "renewalWindowDays": 7}),
            "keyTypes",
        ),
        (
            json!({"issuer": "onramp", "validityDays": 30, "keyTypes": ["ecP256"], "renewalWindowDays": 30}),
            "renewalWindowDays",
        ),
        (
            json!({"issuer": "onramp", "validityDays": 30, "keyTypes": ["dsa"], "renewalWindowDays": 7}),
            "invalid body",
        ),
    ] {
        let (status, _, reply) = i
            .service_call("PUT", "credentialPolicies/x", Some(body))
            .await;
        assert!(status == 400 || status == 404, "{status} {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{reply}"
        );
    }
    i.finish().await;
}

/// A symmetric-key group (its key returned) for devices' first certificates and an X.509 group on
/// the issuing CA (trusted as a verified CA from the first start) for renewals, both naming
/// `policy`.
async fn issuing_groups(
    store: &Arc<dyn onramp::store::Store>,
    [keys, certs]: [impl AsRef<str>; 2],
    policy: &str,
) -> String {
    let group_key = random_key();
    let with_policy = |attestation| EnrollmentSpec {
        attestation,
        credential_policy_name: Some(policy.into()),
        ..symmetric_spec("", "")
    };
    let sas = Attestation::SymmetricKey {
        primary_key: group_key.clone(),
        secondary_key: random_key(),
    };
    enroll_group(store, keys.as_ref(), with_policy(sas)).await;
    let x509 = Attestation::X509 {
        certificates: vec![],
        ca_references: vec![OWN_ISSUER.into()],
    };
    enroll_group(store, certs.as_ref(), with_policy(x509)).await;
    group_key
}

/// An HTTPS client presenting `chain_pem` with the key at `key_pem`.
pub(crate) fn client_with(i: &Instance, chain_pem: &Path, key_pem: &Path) -> reqwest::Client {
    let mut identity = std::fs::read(chain_pem).unwrap();
    identity.extend(std::fs::read(key_pem).unwrap());
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&i.ca_pem).unwrap())
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .build()
        .unwrap()
}

pub(crate) async fn register_with_certificate(
    i: &Instance,
    client: &reqwest::Client,
    id: &str,
    body: Value,
) -> (u16, Value) {
    let url = format!(
        "{}/{}/registrations/{id}/register?api-version=2019-03-31",
        i.url,
        i.scope()
    );
    let response = client.put(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// An X.509 registration's answer: assigned, through the enrollment group `group`.
pub(crate) fn assert_assigned_through(status: u16, reply: &Value, group: &str) {
    let assigned = (status, reply["status"].as_str());
    assert_eq!(assigned, (202, Some("assigned")), "{reply}");
    let through = &reply["registrationState"]["x509"]["enrollmentGroupId"];
    assert_eq!(through, group, "{reply}");
}

fn presented(chain: &[Vec<u8>]) -> PresentedChain {
    let certs: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    PresentedChain(Arc::from(certs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_over_x509_and_revocation() {
    let i = Instance::start(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let id = "renew-1";
    policy(&i, "fleet", json!({"issuer": "onramp", "validityDays": 10, "keyTypes": ["ecP256"], "renewalWindowDays": 5})).await;
    // The first certificate through a symmetric-key group, renewals through an X.509 group on
    // the issuing CA (trusted as a verified CA from the first start).
    let group_key = issuing_groups(i.store(), ["fleet-keys", "fleet-certs"], "fleet").await;
    let device_secret = sas::derive_device_key(&group_key, id).unwrap();

    let first_key = device_key(dir.path(), KeyType::EcP256, id);
    let body = json!({"registrationId": id, "csr": first_key.csr});
    let (_, _, reply) = i.register(id, &device_secret, body).await;
    let first = chain_of(&reply);
    let first_pem = verify_with_openssl(dir.path(), "first", &first, &first_key);

    // Ten days left, a five-day window: renewing with the certificate is refused for now...
    let client = client_with(&i, &first_pem, &first_key.key_pem);
    let second_key = device_key(dir.path(), KeyType::EcP256, id);
    let body = json!({"registrationId": id, "csr": second_key.csr});
    let (status, reply) = register_with_certificate(&i, &client, id, body.clone()).await;
    assert_eq!(
        (status, reply["errorCode"].as_i64()),
        (400, Some(400209)),
        "{reply}"
    );
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("not due for renewal")
    );
    // ...and allowed once the window covers what is left.
    policy(&i, "fleet", json!({"issuer": "onramp", "validityDays": 20, "keyTypes": ["ecP256"], "renewalWindowDays": 15})).await;
    let (status, reply) = register_with_certificate(&i, &client, id, body).await;
    assert_assigned_through(status, &reply, "fleet-certs");
    let second = chain_of(&reply);
    verify_with_openssl(dir.path(), "second", &second, &second_key);
    let second_serial = serial_of(&second[0]);
    assert_ne!(second_serial, serial_of(&first[0]));

    // The built-in hub takes both; revoking the second leaves the first usable.
    let hub = &i.state.device_hub;
    for chain in [&first, &second] {
        hub.authenticate(HUB, id, None, Some(&presented(chain)))
            .await
            .unwrap();
    }
    let revoke = json!({"serialNumber": second_serial.to_uppercase()});
    let path = format!("registrations/{id}/certificates/revoke");
    let (status, _, revoked) = i.service_call("POST", &path, Some(revoke)).await;
    assert_eq!(status, 200, "{revoked}");
    assert_eq!(revoked[0]["serialNumber"], second_serial);
    let mut hub_events = i.state.bus.subscribe_hub();
    let refusal = hub
        .authenticate(HUB, id, None, Some(&presented(&second)))
        .await;
    assert!(
        matches!(refusal, Err(HubRefusal::Revoked(ref s)) if *s == second_serial),
        "{refusal:?}"
    );
    let event = hub_events.recv().await.unwrap();
    assert!(
        format!("{:?}", event.activity).contains("revoked"),
        "{event:?}"
    );
    hub.authenticate(HUB, id, None, Some(&presented(&first)))
        .await
        .unwrap();

    // Registration with the revoked certificate is refused, with the reason in the diagnostics.
    let second_pem = dir.path().join("second.pem");
    let client = client_with(&i, &second_pem, &second_key.key_pem);
    let (status, reply) =
        register_with_certificate(&i, &client, id, json!({"registrationId": id})).await;
    assert_eq!(
        (status, reply["errorCode"].as_i64()),
        (401, Some(401002)),
        "{reply}"
    );
    let reason = refusal_reason(&i, id).await;
    assert!(reason.contains("was revoked"), "{reason}");

    // The CRL at the address the certificates name lists the serial, signed by the issuer.
    let (_, cert) = x509_parser::parse_x509_certificate(&second[0]).unwrap();
    let crl_url = crl_distribution_point(&cert);
    assert!(crl_url.ends_with("/crl/onramp.crl"), "{crl_url}");
    let crl = i
        .client
        .get(format!("{}/crl/onramp.crl", i.url))
        .send()
        .await
        .unwrap();
    assert_eq!(crl.headers()["content-type"], "application/pkix-crl");
    let crl_path = dir.path().join("onramp.crl");
    std::fs::write(&crl_path, crl.bytes().await.unwrap()).unwrap();
    let root = dir.path().join("second-root.pem");
    let text = openssl(&[
        "crl",
        "-inform",
        "DER",
        "-in",
        crl_path.to_str().unwrap(),
        "-CAfile",
        root.to_str().unwrap(),
        "-noout",
        "-text",
    ]);
    assert!(text.contains(&second_serial.to_uppercase()), "{text}");
    assert!(
        !text.contains(&serial_of(&first[0]).to_uppercase()),
        "{text}"
    );
    let verified = Command::new("openssl")
        .args([
            "crl",
            "-inform",
            "DER",
            "-in",
            crl_path.to_str().unwrap(),
            "-CAfile",
        ])
        .arg(&root)
        .args(["-noout", "-verify"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verified.stderr).contains("verify OK"),
        "{verified:?}"
    );

    // Revoking all of the device's: the first goes too; nothing is left to revoke.
    let (status, _, revoked) = i.service_call("POST", &path, None).await;
    assert_eq!(
        (status, revoked.as_array().map(Vec::len)),
        (200, Some(1)),
        "{revoked}"
    );
    assert!(
        hub.authenticate(HUB, id, None, Some(&presented(&first)))
            .await
            .is_err()
    );
    let (status, _, _) = i.service_call("POST", &path, None).await;
    assert_eq!(status, 404);
    let (_, _, listed) = i
        .service_call("GET", &format!("registrations/{id}/certificates"), None)
        .await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["revoked"].is_string()),
        "{listed}"
    );
    // Revocations are in the audit trail.
    let audit = i.store().recent_audit(20).await.unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "certificate.revoke")
            .count(),
        2
    );
    i.finish().await;
}

fn crl_distribution_point(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    for ext in cert.extensions() {
        if let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() {
            for point in points.iter() {
                if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                    for name in names {
                        if let GeneralName::URI(uri) = name {
                            return uri.to_string();
                        }
                    }
                }
            }
        }
    }
    panic!("no CRL distribution point")
}

/// The official SDKs with an issued certificate, on the server sdk.rs runs at the SDKs' ports: the
/// Python hub client connects with it and reads its twin (py-mqtt); the Node SDK provisions again
/// with it over X.509 through a group on the issuing CA (http). Once revoked, both are refused.
pub(crate) async fn with_the_sdks(ctx: &Ctx, certs: &Path) {
    let dir = certs.join(format!("issued-{}", ctx.transport));
    std::fs::create_dir_all(&dir).unwrap();
    let id = ctx.id("issued");
    let groups = [ctx.id("issuing-keys"), ctx.id("issuing-certs")];
    let group_key = issuing_groups(&ctx.store, groups, "default").await;

    // The device's own client: its derived key proves it, the CSR asks for a certificate.
    let device = device_key(&dir, KeyType::EcP256, &id);
    let secret = sas::derive_device_key(&group_key, &id).unwrap();
    let resource = format!("{}/registrations/{id}", ctx.scope);
    let expiry = chrono::Utc::now().timestamp() as u64 + 600;
    let token = sas::sign(&secret, &resource, expiry, Some("registration")).unwrap();
    let ca = std::fs::read(&ctx.ca).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let reply: Value = client
        .put(format!(
            "https://localhost/{resource}/register?api-version=2019-03-31"
        ))
        .header("Authorization", token)
        .json(&json!({"registrationId": id, "csr": device.csr}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let hub = reply["registrationState"]["assignedHub"]
        .as_str()
        .unwrap()
        .to_string();
    let name = format!("{id}-{}", KeyType::EcP256.as_str());
    verify_with_openssl(&dir, &name, &chain_of(&reply), &device);
    // The SDKs take `<prefix>.pem` (leaf first) and `<prefix>-key.pem`.
    let prefix = dir.join(&name);
    let prefix = prefix.to_str().unwrap();

    let use_it = || match ctx.is_python() {
        true => sdk(
            "device.py",
            &[
                ctx.transport,
                &hub,
                &ctx.scope,
                &id,
                prefix,
                r#"{"firmware": "issued-1.0"}"#,
                &ctx.service,
                "--x509",
                "--hub-only",
            ],
            &ctx.ca,
        ),
        false => ctx.register(&id, prefix, &["--x509"]),
    };
    let out = use_it();
    assert_eq!(out["ok"], true, "{out}");
    match ctx.is_python() {
        true => assert_eq!(out["twin"]["desired"]["telemetryInterval"], 30, "{out}"),
        false => {
            assert_eq!(out["result"]["deviceId"], id, "{out}");
            assert_eq!(out["result"]["assignedHub"], hub, "{out}");
        }
    }

    let path = format!("/registrations/{id}/certificates/revoke");
    let revoked = ctx
        .service_api(reqwest::Method::POST, &path, json!({}))
        .await;
    assert_eq!(revoked.as_array().map(Vec::len), Some(1), "{revoked}");
    let out = use_it();
    match ctx.is_python() {
        true => assert_eq!(
            out["ok"], false,
            "the hub took a revoked certificate: {out}"
        ),
        false => {
            assert_unauthorized(ctx, &out);
            let reason = ctx.refusal_reason(&id).await;
            assert!(reason.contains("was revoked"), "{reason}");
        }
    }
}

/// `onramp admin credential-policy | issuer | certificate` on a running instance's database:
/// the rules refuse with their reason, an uploaded issuer signs a device's CSR, and a revocation
/// from the terminal is what the service API then shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_policies_issuers_and_revocation() {
    let i = Instance::start(Backend::Sqlite).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = i.data_dir().to_str().unwrap().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec![
            "--data-dir",
            &data,
            "--database-url",
            &i.database_url,
            "admin",
        ];
        all.extend_from_slice(args);
        crate::support::process::run(&all, &[])
    };
    let json = |args: &[&str]| crate::support::process::json_of(args, &cli(args));
    let refused = |args: &[&str], needle: &str| {
        let out = cli(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(needle),
            "{args:?}: {stderr}"
        );
    };

    // An intermediate with its key becomes an issuer (its key never shown).
    let intermediate = onramp::test_certs::self_signed("cli issuing CA", true);
    let chain_file = dir.path().join("issuer.pem");
    let key_file = dir.path().join("issuer-key.pem");
    std::fs::write(&chain_file, intermediate.pem()).unwrap();
    std::fs::write(&key_file, intermediate.key.serialize_pem()).unwrap();
    let (chain, key) = (chain_file.to_str().unwrap(), key_file.to_str().unwrap());
    refused(&["issuer", "add", "plant", chain, chain], "cannot sign");
    let issuer = json(&["issuer", "add", "plant", chain, key]);
    assert_eq!(issuer["name"], "plant");
    let issuers = json(&["issuer", "list"]).to_string();
    assert!(
        issuers.contains("\"plant\"") && !issuers.contains("PRIVATE"),
        "{issuers}"
    );

    let set = [
        "credential-policy",
        "set",
        "plant-p256",
        "--issuer",
        "plant",
    ];
    refused(
        &[&set[..], &["--key-types", "dsa"]].concat(),
        "is not one of",
    );
    refused(
        &[
            &set[..],
            &["--validity-days", "7", "--renewal-window-days", "7"],
        ]
        .concat(),
        "renewalWindowDays",
    );
    refused(
        &["credential-policy", "set", "x", "--issuer", "nobody"],
        "nobody",
    );
    let valid = [
        "--validity-days",
        "7",
        "--renewal-window-days",
        "2",
        "--key-types",
        "ecP256",
    ];
    let policy = json(&[&set[..], &valid].concat());
    assert_eq!(
        (&policy["validityDays"], &policy["keyTypes"]),
        (&json!(7), &json!(["ecP256"]))
    );
    let names: Vec<Value> = json(&["credential-policy", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("default"), json!("plant-p256")]);
    refused(&["issuer", "remove", "plant"], "plant-p256");

    // A device's CSR is signed by the uploaded issuer; the terminal lists and revokes it.
    let id = "cli-device";
    let key = enrolled(&i, id, Some("plant-p256")).await;
    let device = device_key(dir.path(), KeyType::EcP256, id);
    let (_, _, reply) = i
        .register(id, &key, json!({"registrationId": id, "csr": device.csr}))
        .await;
    let issued = chain_of(&reply);
    assert_eq!(
        issued[1],
        intermediate.der.to_vec(),
        "signed by the uploaded CA"
    );
    let listed = json(&["certificate", "list", id]);
    assert_eq!(listed[0]["serialNumber"], serial_of(&issued[0]));
    assert_eq!(listed[0]["revoked"], Value::Null);
    refused(
        &["certificate", "revoke", id, "--serial", "00"],
        "unrevoked certificate",
    );
    let revoked = json(&["certificate", "revoke", id]);
    assert_eq!(revoked[0]["serialNumber"], serial_of(&issued[0]));
    let path = format!("registrations/{id}/certificates");
    let (_, _, shown) = i.service_call("GET", &path, None).await;
    assert!(shown[0]["revoked"].is_string(), "{shown}");

    json(&["credential-policy", "delete", "plant-p256"]);
    json(&["issuer", "remove", "plant"]);
    i.finish().await;
}
