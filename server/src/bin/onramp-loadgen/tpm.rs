//! TPM devices over HTTPS: each device opens a fresh TLS connection, sends its EK and SRK, gets
//! the 401 challenge, recovers the key from the blob as its TPM would
//! (`attestation::tpm::device`), and sends the signed register on the same connection, as the
//! official SDKs do. The final result's hub-key blob is not activated: a device does that after
//! the registration, outside what the server is measured for.
//!
//! RSA key generation dominates a software TPM's cost, so a few TPMs are made and the devices'
//! individual enrollments share their keys: what the server does per registration does not depend
//! on whether an EK is unique.

use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::Utc;
use onramp::attestation::sas;
use onramp::attestation::tpm::device::SoftTpm;
use onramp::model::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::Target;

/// How many distinct software TPMs the devices share.
const DISTINCT_TPMS: usize = 8;

/// A software TPM and the `tpm` part of the register body it sends.
pub struct Device {
    tpm: SoftTpm,
    attestation: String,
}

impl Device {
    fn new() -> anyhow::Result<Device> {
        let tpm = SoftTpm::rsa()?;
        let (ek, srk) = (
            BASE64.encode(tpm.endorsement_key()),
            BASE64.encode(tpm.storage_root_key()),
        );
        let attestation = format!(r#""tpm":{{"endorsementKey":"{ek}","storageRootKey":"{srk}"}}"#);
        Ok(Device { tpm, attestation })
    }

    fn activate(&self, blob: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.tpm.activate(&BASE64.decode(blob)?)?)
    }
}

/// The software TPMs, and one enabled individual TPM enrollment per device ID.
pub async fn seed(
    store: &dyn onramp::store::Store,
    ids: impl Iterator<Item = String>,
) -> anyhow::Result<Arc<Vec<Device>>> {
    let tpms = tokio::task::spawn_blocking(|| {
        (0..DISTINCT_TPMS)
            .map(|_| Device::new())
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await??;
    let now = Utc::now();
    let enrollments = ids
        .enumerate()
        .map(|(i, registration_id)| Enrollment {
            registration_id,
            device_id: None,
            spec: EnrollmentSpec::new(Attestation::Tpm {
                endorsement_key: BASE64.encode(tpms[i % DISTINCT_TPMS].tpm.endorsement_key()),
                storage_root_key: None,
            }),
            optional_device_information: None,
            etag: Etag::new(),
            created: now,
            updated: now,
        })
        .collect();
    store.put_enrollments(enrollments, &[]).await?;
    Ok(Arc::new(tpms))
}

/// The TPM the `i`-th device holds.
pub fn of(tpms: &[Device], i: usize) -> &Device {
    &tpms[i % DISTINCT_TPMS]
}

/// One device: challenge, activation, signed register; expects the final `assigned` state.
pub async fn register(target: &Target, scope: &str, tpm: &Device, id: &str) -> anyhow::Result<()> {
    let mut tls = target.connect().await?;
    let body = format!(r#"{{"registrationId":"{id}",{}}}"#, tpm.attestation);
    let (status, challenge) = exchange(&mut tls, target, scope, id, None, &body).await?;
    if status != 401 {
        bail!("{id}: expected the challenge, got {status}: {challenge}");
    }
    let challenge: serde_json::Value = serde_json::from_str(&challenge)?;
    let blob = challenge["authenticationKey"]
        .as_str()
        .with_context(|| format!("{id}: no authenticationKey in {challenge}"))?;
    let key = tpm.activate(blob)?;
    let expiry = Utc::now().timestamp() as u64 + 3600;
    let resource = format!("{scope}/registrations/{id}");
    let token = sas::sign(&BASE64.encode(key), &resource, expiry, Some("registration"))?;
    let (status, reply) = exchange(&mut tls, target, scope, id, Some(&token), &body).await?;
    if status != 202 || !reply.contains(r#""status":"assigned""#) {
        bail!("{id}: unexpected reply {status}: {reply}");
    }
    tls.shutdown().await.ok();
    Ok(())
}

/// One request and its response on a kept-alive connection.
async fn exchange(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    target: &Target,
    scope: &str,
    id: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let authorization = token.map(|t| format!("Authorization: {t}\r\n"));
    let request = format!(
        "PUT /{scope}/registrations/{id}/register?api-version=2019-03-31 HTTP/1.1\r\nHost: {}\r\n{}\
         Content-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n{body}",
        target.address,
        authorization.unwrap_or_default(),
        body.len()
    );
    tls.write_all(request.as_bytes()).await?;
    read_response(tls).await
}

async fn read_response(
    tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> anyhow::Result<(u16, String)> {
    let mut buffer = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if tls.read_buf(&mut buffer).await? == 0 {
            bail!("the connection closed mid-response");
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no content-length")?;
    while buffer.len() < head_end + length {
        if tls.read_buf(&mut buffer).await? == 0 {
            bail!("the connection closed mid-body");
        }
    }
    let body = String::from_utf8_lossy(&buffer[head_end..head_end + length]).into_owned();
    Ok((status, body))
}
