//! Overload (issue 18, point 4): devices arrive at a fixed rate whatever the server answers (an
//! open loop, as a fleet coming online does), first at a quarter of the rate the server sustains,
//! then at twice it. For each phase it prints the admitted registrations' p50/p99, measured from
//! each device's scheduled start so a queue in the server cannot hide, and how the rest were
//! refused: 503 or 429 at once, or the connection closed before TLS.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Figures, Target};

/// What one device was told.
pub enum Outcome {
    Assigned,
    /// 503 or 429 with `Retry-After`: refused at once.
    Refused(u16),
    /// The connection closed or failed before the TLS handshake ended.
    NotConnected,
    Failed(String),
}

/// One device over HTTPS on a fresh connection, classified.
pub async fn attempt(target: &Target, request: String) -> Outcome {
    let Ok(mut tls) = target.connect().await else {
        return Outcome::NotConnected;
    };
    let mut response = Vec::with_capacity(2048);
    let exchanged = async {
        tls.write_all(request.as_bytes()).await?;
        tls.read_to_end(&mut response).await
    };
    if let Err(e) = exchanged.await {
        return Outcome::Failed(e.to_string());
    }
    let text = String::from_utf8_lossy(&response);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    match status {
        202 if text.contains(r#""status":"assigned""#) => Outcome::Assigned,
        429 | 503 if text.to_ascii_lowercase().contains("\r\nretry-after:") => {
            Outcome::Refused(status)
        }
        _ => Outcome::Failed(text.lines().next().unwrap_or("no reply").to_string()),
    }
}

/// One phase's figures.
pub struct Phase {
    offered_rate: f64,
    admitted: Figures,
    refused: Vec<u16>,
    not_connected: usize,
    failed: usize,
    first_failure: Option<String>,
}

impl Phase {
    /// The admitted registrations' p99 (none admitted: none).
    pub fn p99(&self) -> Option<Duration> {
        (self.admitted.count > 0).then(|| self.admitted.percentile(0.99))
    }

    pub fn print(&self, what: &str) {
        let count = |status| self.refused.iter().filter(|s| **s == status).count();
        println!(
            "{what}: offered {:.0}/s for {:.1} s",
            self.offered_rate,
            self.admitted.elapsed.as_secs_f64()
        );
        if self.admitted.count > 0 {
            self.admitted.print("  admitted (assigned)");
        } else {
            println!("  admitted (assigned): none");
        }
        println!(
            "  refused at once: {} with 503, {} with 429; closed before TLS: {}; failed otherwise: {}{}",
            count(503),
            count(429),
            self.not_connected,
            self.failed,
            self.first_failure
                .as_ref()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        );
    }
}

/// Starts `attempt(i)` at `i / rate` seconds for `secs` seconds, without waiting for replies.
pub async fn open_loop<F, Fut>(rate: f64, secs: f64, attempt: F) -> Phase
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let count = (rate * secs).round() as usize;
    let started = Instant::now();
    let mut devices = tokio::task::JoinSet::new();
    for i in 0..count {
        let due = started + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let device = attempt(i);
        devices.spawn(async move { (device.await, due.elapsed()) });
    }
    let mut phase = Phase {
        offered_rate: rate,
        admitted: Figures {
            count: 0,
            elapsed: Duration::ZERO,
            latencies: Vec::with_capacity(count),
            server_cpu: None,
        },
        refused: Vec::new(),
        not_connected: 0,
        failed: 0,
        first_failure: None,
    };
    while let Some(joined) = devices.join_next().await {
        let (outcome, latency) = joined.expect("a device task panicked");
        match outcome {
            Outcome::Assigned => phase.admitted.latencies.push(latency),
            Outcome::Refused(status) => phase.refused.push(status),
            Outcome::NotConnected => phase.not_connected += 1,
            Outcome::Failed(why) => {
                phase.failed += 1;
                phase.first_failure.get_or_insert(why);
            }
        }
    }
    phase.admitted.latencies.sort();
    phase.admitted.count = phase.admitted.latencies.len();
    phase.admitted.elapsed = started.elapsed();
    phase
}
