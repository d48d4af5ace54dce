//! Devices that ask for a certificate (issue 21): the same HTTPS registration as the plain
//! symmetric-key devices, with a P-256 CSR in the body, through a group whose credential policy
//! (the instance's `default`) signs it. The keys and CSRs are made before the clock starts: a
//! device makes its key once, at the factory or first boot, not while registering.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use onramp::model::*;

use crate::{Args, Figures, Target, on_server, register_request_with, run, send_register};

/// The group the CSR devices register through and their register bodies, by device index.
pub struct Devices {
    group_key: String,
    ids: Vec<String>,
    bodies: Vec<String>,
}

/// Seeds the group (naming the default credential policy) and makes each device's key and CSR.
pub async fn seed(
    store: &dyn onramp::store::Store,
    prefix: &str,
    count: usize,
) -> anyhow::Result<Arc<Devices>> {
    let group_key = random_key(64);
    let now = Utc::now();
    let group = EnrollmentGroup {
        group_id: format!("loadgen-csr-{}", now.timestamp_millis()),
        spec: EnrollmentSpec {
            credential_policy_name: Some("default".into()),
            ..EnrollmentSpec::new(Attestation::SymmetricKey {
                primary_key: group_key.clone(),
                secondary_key: random_key(64),
            })
        },
        etag: Etag::new(),
        created: now,
        updated: now,
    };
    store.put_group(group, IfMatch::Any, &[]).await?;
    let prefix = prefix.to_string();
    let (ids, bodies) = tokio::task::spawn_blocking(move || {
        (0..count)
            .map(|i| {
                let id = format!("{prefix}-csr-{i}");
                let body = format!(r#"{{"registrationId":"{id}","csr":"{}"}}"#, csr_for(&id)?);
                Ok((id, body))
            })
            .collect::<anyhow::Result<(Vec<_>, Vec<_>)>>()
    })
    .await??;
    Ok(Arc::new(Devices {
        group_key,
        ids,
        bodies,
    }))
}

fn csr_for(id: &str) -> anyhow::Result<String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, id);
    Ok(BASE64.encode(params.serialize_request(&key)?.der()))
}

/// Runs the CSR devices and prints their rate beside the plain registrations'.
pub async fn compare(
    target: &Arc<Target>,
    scope: &str,
    devices: Arc<Devices>,
    plain: &Figures,
    args: &Args,
) -> anyhow::Result<()> {
    let (target, scope) = (target.clone(), scope.to_string());
    let figures = on_server(
        args.server_pid,
        run(devices.ids.len(), args.concurrency, move |i| {
            let (target, scope, devices) = (target.clone(), scope.clone(), devices.clone());
            async move {
                let (id, body) = (&devices.ids[i], &devices.bodies[i]);
                let request = register_request_with(&target, &scope, &devices.group_key, id, body)?;
                let reply = send_register(&target, id, &request).await?;
                if !reply.contains("issuedCertificateChain") {
                    anyhow::bail!("no certificate was issued to {id}");
                }
                Ok(())
            }
        }),
    )
    .await?;
    figures.print("registrations (HTTPS, symmetric key + P-256 CSR, certificate issued)");
    println!(
        "ratio: registrations with issuance/s are {:.0}% of the plain symmetric-key rate",
        100.0 * figures.rate() / plain.rate()
    );
    if let (Some(issued), Some(plain)) = (figures.server_cpu_each(), plain.server_cpu_each()) {
        println!(
            "server CPU per registration: with issuance {:.2} ms, plain {:.2} ms",
            issued * 1e3,
            plain * 1e3
        );
    }
    Ok(())
}
