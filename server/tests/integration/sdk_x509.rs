//! X.509 devices through the official SDKs (Node `azure-iot-security-x509` over HTTP, MQTT and
//! MQTT/WebSocket, Python `azure-iot-device` over MQTT and MQTT/WebSocket) with certificates the test makes: an individual enrollment
//! with a self-signed leaf, a group through a root CA verified by proof of possession on the
//! service API, a group through an intermediate, a device revoked by a disabled individual
//! enrollment, and the refusals, each with its reason in the diagnostics events.

use std::path::Path;
use std::time::Duration;

use onramp::attestation::sas;
use onramp::model::*;
use serde_json::{Value, json};

use crate::sdk::{Ctx, assert_disabled, assert_unauthorized};
use crate::support::HUB;
use crate::support::instance::{enroll, enroll_group, symmetric_spec};
use onramp::test_certs::{self as certs, TestCert};

fn x509_spec(certificates: Vec<String>, ca_references: Vec<String>) -> EnrollmentSpec {
    EnrollmentSpec {
        attestation: Attestation::X509 {
            certificates,
            ca_references,
        },
        ..symmetric_spec("", "")
    }
}

impl Ctx {
    fn register_x509(&self, registration_id: &str, prefix: &str) -> Value {
        self.register(registration_id, prefix, &["--x509"])
    }

    /// A request to the service API, signed with the owner policy of the connection string.
    pub(crate) async fn service_api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Value {
        let field = |name: &str| {
            self.service
                .split(';')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        let (host, policy, key) = (
            field("HostName"),
            field("SharedAccessKeyName"),
            field("SharedAccessKey"),
        );
        let expiry = chrono::Utc::now().timestamp() as u64 + 600;
        let token = sas::sign(&key, &host, expiry, Some(&policy)).unwrap();
        let ca = std::fs::read(&self.ca).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let response = client
            .request(
                method,
                format!("https://{host}{path}?api-version=2021-10-01"),
            )
            .header("Authorization", token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    /// Uploads a CA; unless `verified`, proves possession of its key with a verification
    /// certificate signed by it, as an operator would.
    async fn upload_ca(&self, name: &str, ca: &TestCert, prove: bool) {
        use reqwest::Method;
        let path = format!("/certificates/{name}");
        let uploaded = self
            .service_api(Method::PUT, &path, json!({"certificate": ca.pem()}))
            .await;
        assert_eq!(uploaded["properties"]["isVerified"], false, "{uploaded}");
        if !prove {
            return;
        }
        let coded = self
            .service_api(
                Method::POST,
                &format!("{path}/generateVerificationCode"),
                json!(null),
            )
            .await;
        let code = coded["properties"]["verificationCode"].as_str().unwrap();
        let proof = certs::signed(ca, code, false, (-1, 1));
        let verified = self
            .service_api(
                Method::POST,
                &format!("{path}/verify"),
                json!({"properties": {"certificate": proof.pem()}}),
            )
            .await;
        assert_eq!(verified["properties"]["isVerified"], true, "{verified}");
    }

    /// The reason the diagnostics events give for the last refusal of `registration_id`.
    pub(crate) async fn refusal_reason(&self, registration_id: &str) -> String {
        for _ in 0..40 {
            let failures = self.store.recent_failures(200).await.unwrap();
            if let Some(failure) = failures
                .iter()
                .find(|f| f.registration_id == registration_id)
            {
                return failure.error_message.clone().unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no diagnostics event for {registration_id}");
    }
}

pub async fn x509_devices(ctx: &Ctx, certs_dir: &Path) {
    let dir = certs_dir.join(ctx.transport);
    std::fs::create_dir_all(&dir).unwrap();

    // An individual enrollment with a self-signed device certificate.
    let solo_id = ctx.id("x509-solo");
    let solo = certs::self_signed(&solo_id, false);
    enroll(
        &ctx.store,
        &solo_id,
        None,
        x509_spec(vec![solo.pem()], vec![]),
    )
    .await;
    let out = ctx.register_x509(&solo_id, &solo.write(&dir, "solo", &[]));
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["result"]["deviceId"], solo_id, "{out}");
    let thumbprint = onramp::attestation::x509::sha256_thumbprint(&solo.der);
    if !ctx.is_python() {
        // Node hands the device the whole registration state (Python keeps only some fields).
        let info = &out["result"]["x509"]["certificateInfo"];
        assert_eq!(info["sha256Thumbprint"], thumbprint, "{out}");
    }
    let identity = ctx
        .store
        .get_hub_device(HUB, &solo_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        identity.auth,
        DeviceAuth::SelfSigned {
            primary_thumbprint: thumbprint,
            secondary_thumbprint: None
        },
        "the hub identity is the certificate's thumbprint"
    );

    // A group through a root CA verified by proof of possession.
    let root = certs::self_signed(&format!("{} fleet root", ctx.transport), true);
    let root_name = ctx.id("root");
    ctx.upload_ca(&root_name, &root, true).await;
    let fleet = ctx.id("x509-fleet");
    enroll_group(&ctx.store, &fleet, x509_spec(vec![], vec![root_name])).await;
    let member = ctx.id("x509-fleet-1");
    let leaf = certs::device(&root, &member);
    let out = ctx.register_x509(&member, &leaf.write(&dir, "fleet-1", &[]));
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["result"]["deviceId"], member, "{out}");
    if !ctx.is_python() {
        assert_eq!(out["result"]["x509"]["enrollmentGroupId"], fleet, "{out}");
    }
    let record = ctx.store.get_registration(&member).await.unwrap().unwrap();
    assert_eq!(record.enrollment, EnrollmentRef::Group(fleet.clone()));
    let identity = ctx.store.get_hub_device(HUB, &member).await.unwrap();
    assert_eq!(identity.unwrap().auth, DeviceAuth::CertificateAuthority);

    // A group through an intermediate (the device sends it), under a root verified on upload
    // that another group references: the group nearest the leaf decides.
    let root2 = certs::self_signed(&format!("{} root 2", ctx.transport), true);
    let root2_name = ctx.id("root2");
    ctx.upload_ca(&root2_name, &root2, false).await;
    ctx.service_api(
        reqwest::Method::PUT,
        &format!("/certificates/{root2_name}"),
        json!({"certificate": root2.pem(), "isVerified": true}),
    )
    .await;
    let intermediate = certs::signed(&root2, "line 4 intermediate", true, (-1, 100));
    let line = ctx.id("x509-line4");
    enroll_group(
        &ctx.store,
        &line,
        x509_spec(vec![intermediate.pem()], vec![]),
    )
    .await;
    let wide = ctx.id("x509-root2-wide");
    enroll_group(&ctx.store, &wide, x509_spec(vec![], vec![root2_name])).await;
    let worker = ctx.id("x509-line4-1");
    let leaf = certs::device(&intermediate, &worker);
    let out = ctx.register_x509(&worker, &leaf.write(&dir, "line4-1", &[&intermediate]));
    assert_eq!(out["ok"], true, "{out}");
    let record = ctx.store.get_registration(&worker).await.unwrap().unwrap();
    assert_eq!(record.enrollment, EnrollmentRef::Group(line));

    // A disabled individual enrollment revokes one device of the enabled group.
    let revoked = ctx.id("x509-fleet-2");
    let leaf = certs::device(&root, &revoked);
    let mut spec = x509_spec(vec![leaf.pem()], vec![]);
    spec.provisioning_status = ProvisioningStatus::Disabled;
    enroll(&ctx.store, &revoked, None, spec).await;
    let out = ctx.register_x509(&revoked, &leaf.write(&dir, "fleet-2", &[]));
    assert_disabled(ctx, &out, &revoked).await;

    if ctx.transport == "py-mqtt" {
        let seed = ctx.id("x509-seed-solo");
        let own = certs::self_signed(&seed, false);
        enroll(&ctx.store, &seed, None, x509_spec(vec![own.pem()], vec![])).await;
        device_meets_its_hub(ctx, &seed, &own.write(&dir, "seed-solo", &[])).await;
        let seed = ctx.id("x509-seed-fleet");
        let leaf = certs::device(&root, &seed);
        device_meets_its_hub(ctx, &seed, &leaf.write(&dir, "seed-fleet", &[])).await;
    }
    refusals(ctx, &dir, &root).await;
}

/// Flow steps 7 and 8 with a certificate: the Python hub client connects to the assigned built-in
/// hub with the certificate it provisioned with (by thumbprint, or CA-signed) and reads its twin.
async fn device_meets_its_hub(ctx: &Ctx, registration_id: &str, prefix: &str) {
    let args = [
        ctx.transport,
        &ctx.host,
        &ctx.scope,
        registration_id,
        prefix,
        r#"{"firmware": "x509-1.0"}"#,
        &ctx.service,
        "--x509",
    ];
    let out = crate::sdk::sdk("device.py", &args, &ctx.ca);
    assert_eq!(out["ok"], true, "{out}");
    assert_eq!(out["twin"]["desired"]["telemetryInterval"], 30, "{out}");
    assert_eq!(out["pushReceived"], true, "{out}");
    let device = ctx
        .store
        .get_hub_device(HUB, registration_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(device.reported.properties["firmware"], "x509-1.0");
}

/// Each refused the documented way (401 / 401002), with a diagnostics event saying why.
async fn refusals(ctx: &Ctx, dir: &Path, verified_root: &TestCert) {
    let unverified = certs::self_signed(&format!("{} root 3", ctx.transport), true);
    let unverified_name = ctx.id("root3");
    ctx.upload_ca(&unverified_name, &unverified, false).await;
    enroll_group(
        &ctx.store,
        &ctx.id("x509-unverified"),
        x509_spec(vec![], vec![unverified_name]),
    )
    .await;
    let stranger = certs::self_signed("stranger CA", true);

    let id = |name: &str| ctx.id(&format!("x509-{name}"));
    let cases: Vec<(String, String, &str)> = vec![
        {
            let leaf = certs::device(&unverified, &id("unverified"));
            let prefix = leaf.write(dir, "unverified", &[]);
            (id("unverified"), prefix, "not verified")
        },
        {
            let leaf = certs::signed(verified_root, &id("expired"), false, (-30, -1));
            let prefix = leaf.write(dir, "expired", &[]);
            (id("expired"), prefix, "not valid now")
        },
        {
            let leaf = certs::device(verified_root, "someone-else");
            let prefix = leaf.write(dir, "other-cn", &[]);
            (id("other-cn"), prefix, "differs from the registration ID")
        },
        {
            let leaf = certs::device(&stranger, &id("stranger"));
            let prefix = leaf.write(dir, "stranger", &[]);
            (id("stranger"), prefix, "no known CA")
        },
        {
            let leaf = certs::device(verified_root, &id("tampered"));
            let prefix = leaf.write_pem(dir, "tampered", &leaf.tampered_pem());
            (id("tampered"), prefix, "does not verify")
        },
    ];
    for (registration_id, prefix, reason) in cases {
        let out = ctx.register_x509(&registration_id, &prefix);
        assert_unauthorized(ctx, &out);
        let said = ctx.refusal_reason(&registration_id).await;
        assert!(said.contains(reason), "{registration_id}: {said:?}");
    }
}
