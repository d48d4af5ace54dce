//! CRL checks for devices of uploaded CAs (`limits.crl_max_age_secs`): a CRL server on loopback
//! serves the CA's CRL; a device whose certificate names it is answered 503 while the CRL cannot
//! be fetched or trusted, registers while the CRL does not list it, and is refused once it does.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use onramp::model::*;
use onramp::test_certs as certs;
use serde_json::json;

use crate::issuance::{
    assert_assigned_through, client_with, refusal_reason, register_with_certificate,
};
use crate::support::instance::{Instance, enroll_group, symmetric_spec};

type Served = Arc<Mutex<Option<Vec<u8>>>>;

/// Serves `served` at `/ca.crl` (503 while it is `None`); returns the URL.
async fn crl_server(served: Served) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ca.crl", listener.local_addr().unwrap());
    let crl = move || {
        let body = served.lock().unwrap().clone();
        async move {
            match body {
                Some(der) => der.into_response(),
                None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            }
        }
    };
    let app = axum::Router::new().route("/ca.crl", axum::routing::get(crl));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The diagnostics' reason for the revocation refusal (the recorder writes a moment later).
async fn revocation_reason(i: &Instance) -> String {
    for _ in 0..50 {
        let failures = i.store().recent_failures(10).await.unwrap();
        let revoked = failures
            .into_iter()
            .find_map(|f| f.error_message.filter(|m| m.contains("revoked")));
        if let Some(reason) = revoked {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no revocation in the diagnostics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_cas_crl_is_checked_at_registration() {
    const MAX_AGE: Duration = Duration::from_secs(1);
    let i = Instance::with_limits(|l| {
        l.crl_max_age_secs = MAX_AGE.as_secs();
        l.crl_fetch_timeout_secs = 1;
    })
    .await;
    let served: Served = Arc::default();
    let url = crl_server(served.clone()).await;
    let root = certs::self_signed("CRL root", true);
    let body = json!({"certificate": root.pem(), "isVerified": true});
    let (status, _, reply) = i
        .service_call("PUT", "certificates/crl-root", Some(body))
        .await;
    assert_eq!(status, 200, "{reply}");
    let spec = EnrollmentSpec {
        attestation: Attestation::X509 {
            certificates: vec![],
            ca_references: vec!["crl-root".into()],
        },
        ..symmetric_spec("", "")
    };
    enroll_group(i.store(), "crl-fleet", spec).await;

    let dir = tempfile::tempdir().unwrap();
    let id = "crl-dev-1";
    let device = certs::device_with_crl(&root, id, &url);
    let prefix = device.write(dir.path(), id, &[]);
    let pem = |suffix: &str| PathBuf::from(format!("{prefix}{suffix}"));
    let client = client_with(&i, &pem(".pem"), &pem("-key.pem"));
    let register = || register_with_certificate(&i, &client, id, json!({"registrationId": id}));
    let unknown = |status: u16, reason: String| {
        assert_eq!(status, 503);
        assert!(reason.contains("revocation status unknown"), "{reason}");
        assert!(reason.contains(&url), "the reason names the CRL: {reason}");
    };

    // The CRL server answers 503: the device is told to retry, nothing is registered.
    let (status, _) = register().await;
    unknown(status, refusal_reason(&i, id).await);
    assert!(i.store().get_registration(id).await.unwrap().is_none());

    // An empty CRL: the device registers (and the CRL is kept for the max age).
    *served.lock().unwrap() = Some(certs::crl(&root, &[]));
    let (status, reply) = register().await;
    assert_assigned_through(status, &reply, "crl-fleet");

    // Listed: refused once the kept CRL is older than the max age.
    *served.lock().unwrap() = Some(certs::crl(&root, &[&device]));
    tokio::time::sleep(MAX_AGE + Duration::from_millis(100)).await;
    let (status, reply) = register().await;
    assert_eq!(status, 401, "{reply}");
    let reason = revocation_reason(&i).await;
    assert!(reason.contains(&format!("CRL at {url}")), "{reason}");

    // A CRL with the CA's name but another key's signature proves nothing.
    let impostor = certs::self_signed("CRL root", true);
    *served.lock().unwrap() = Some(certs::crl(&impostor, &[]));
    tokio::time::sleep(MAX_AGE + Duration::from_millis(100)).await;
    let (status, _) = register().await;
    assert_eq!(status, 503);
    i.finish().await;
}
