//! Revocation checks for devices of uploaded CAs, when `limits.crl_max_age_secs` is set: each
//! certificate of the device's path is looked up in the CRL it names (its http(s) CRL
//! distribution points), signed by the certificate above it. CRLs are fetched with a timeout and a
//! size bound and kept for the max age. Certificates Onramp issued are checked in its own records
//! instead (`issuance::check_not_revoked`). Checked only once the path to the verified CA is
//! verified, so only certificates the CA signed choose where Onramp fetches from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rustls::pki_types::CertificateDer;

use crate::pki;

/// A CRL larger than this is refused (a CA's CRL is rarely above a few hundred KB).
const MAX_CRL_BYTES: usize = 4 * 1024 * 1024;
/// Distinct CRLs kept; beyond it the oldest goes.
const MAX_CACHED: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum CrlRefusal {
    #[error("the certificate {serial} is revoked (CRL at {url})")]
    Revoked { serial: String, url: String },
    /// No CRL a certificate names could be fetched and trusted: the status is unknown.
    #[error("revocation status unknown: {0}")]
    Unknown(String),
}

/// Fetched CRLs (DER) by URL, with when they were fetched.
type Entries = HashMap<String, (Instant, Arc<Vec<u8>>)>;

pub struct CrlCache {
    http: reqwest::Client,
    max_age: Duration,
    entries: Mutex<Entries>,
}

impl CrlCache {
    /// `None` when CRL checks are off (a max age of zero).
    pub fn new(max_age: Duration, fetch_timeout: Duration) -> Option<CrlCache> {
        if max_age.is_zero() {
            return None;
        }
        // A check the operator turned on must not quietly go off: no client, no start.
        let http = reqwest::Client::builder()
            .timeout(fetch_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .expect("an HTTP client for CRLs (rustls, no proxy settings)");
        Some(CrlCache {
            http,
            max_age,
            entries: Mutex::new(HashMap::new()),
        })
    }

    /// Checks `leaf` and each certificate of `above` (nearest first, ending with the CA) but the
    /// CA itself against the CRLs they name.
    pub async fn check(
        &self,
        leaf: &CertificateDer<'_>,
        above: &[CertificateDer<'static>],
    ) -> Result<(), CrlRefusal> {
        let certs = std::iter::once(leaf).chain(above.iter());
        for (cert, issuer) in certs.zip(above.iter()) {
            self.check_one(cert, issuer).await?;
        }
        Ok(())
    }

    async fn check_one(&self, cert: &[u8], issuer: &[u8]) -> Result<(), CrlRefusal> {
        let urls = pki::crl_urls(cert);
        let mut problems = Vec::new();
        for url in &urls {
            let answer = match self.crl(url).await {
                Ok(crl) => pki::crl_lists(&crl, issuer, cert, Utc::now()),
                Err(e) => Err(e),
            };
            match answer {
                Ok(false) => return Ok(()),
                Ok(true) => {
                    let serial = x509_parser::parse_x509_certificate(cert)
                        .map(|(_, c)| hex::encode(c.raw_serial()))
                        .unwrap_or_default();
                    let url = url.clone();
                    return Err(CrlRefusal::Revoked { serial, url });
                }
                Err(e) => {
                    self.forget(url);
                    problems.push(format!("{url}: {e}"));
                }
            }
        }
        match problems.is_empty() {
            true => Ok(()),
            false => Err(CrlRefusal::Unknown(problems.join("; "))),
        }
    }

    /// The CRL at `url`, from the cache while it is younger than the max age.
    async fn crl(&self, url: &str) -> anyhow::Result<Arc<Vec<u8>>> {
        if let Some((fetched, crl)) = self.lock().get(url)
            && fetched.elapsed() < self.max_age
        {
            return Ok(crl.clone());
        }
        let crl = Arc::new(self.fetch(url).await?);
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED {
            let oldest = entries.iter().min_by_key(|(_, (at, _))| *at);
            if let Some(oldest) = oldest.map(|(url, _)| url.clone()) {
                entries.remove(&oldest);
            }
        }
        entries.insert(url.to_string(), (Instant::now(), crl.clone()));
        Ok(crl)
    }

    async fn fetch(&self, url: &str) -> anyhow::Result<Vec<u8>> {
        let mut response = self.http.get(url).send().await?.error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_CRL_BYTES {
                anyhow::bail!("the CRL is larger than {MAX_CRL_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// A CRL that did not answer is fetched again next time.
    fn forget(&self, url: &str) {
        self.lock().remove(url);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}
