//! What the metrics cost one registration, measured on the real `Metrics`: everything a
//! registration records (its attempt, its four step latencies, the connection gauge, one
//! group-commit batch of its own, a pessimistic bound), on one thread and on two at once (the
//! families' locks are shared), plus a share of one scrape per second.
//!
//! `cargo bench -p server --bench metrics_cost [registrations/s]` prints nanoseconds per
//! registration; `scripts/bench.sh` sets them against the server CPU time a registration takes.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use onramp::metrics::{AttemptOutcome, CommitMetrics, Metrics, Step};

const HUBS: [&str; 2] = ["hub-a.localhost", "hub-b.localhost"];
const PER_THREAD: u32 = 400_000;

fn record_one_registration(metrics: &Metrics, commit: &CommitMetrics, n: u32) {
    let connection = metrics.listener("https");
    connection.open.inc();
    for step in Step::ALL {
        metrics.step(
            "https",
            step,
            Duration::from_micros(u64::from(n % 900) + 50),
        );
    }
    commit.jobs_per_batch.observe(1.0);
    commit.seconds.observe(0.000_4);
    metrics.attempt(&AttemptOutcome {
        protocol: "https",
        status: "assigned",
        hub: Some(HUBS[n as usize % HUBS.len()]),
        attestation: Some(("symmetricKey", true)),
        error_code: None,
        latency: Duration::from_micros(u64::from(n % 5_000) + 300),
    });
    connection.open.dec();
}

/// CPU nanoseconds per registration with `threads` threads recording at once (each thread
/// busy the whole time, so the CPU time is the wall time times the threads).
fn per_registration(threads: u32) -> f64 {
    let commit = CommitMetrics::default();
    let metrics = Arc::new(Metrics::new(Some(commit.clone()), None));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (metrics, commit) = (metrics.clone(), commit.clone());
            std::thread::spawn(move || {
                for n in 0..PER_THREAD {
                    record_one_registration(black_box(&metrics), &commit, n);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("a recording thread");
    }
    let took = started.elapsed();
    assert!(
        metrics.render().contains(&format!(
            "onramp_device_assignments_total{{hub=\"{}\"}} {}",
            HUBS[0],
            threads * PER_THREAD / 2
        )),
        "the registrations were not all counted"
    );
    took.as_nanos() as f64 / f64::from(PER_THREAD)
}

/// Microseconds one scrape of a busy instance takes to render.
fn scrape_micros() -> f64 {
    let commit = CommitMetrics::default();
    let metrics = Metrics::new(Some(commit.clone()), None);
    for n in 0..10_000 {
        record_one_registration(&metrics, &commit, n);
    }
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(metrics.render());
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

fn main() {
    let rate: f64 = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse().ok())
        .unwrap_or(2_000.0);
    let one = per_registration(1);
    let two = per_registration(2);
    let scrape = scrape_micros();
    let scrape_share = scrape * 1_000.0 / rate;
    println!(
        "metrics recorded per registration: {one:.0} ns on one thread, {two:.0} ns each with two threads recording"
    );
    println!(
        "one scrape renders in {scrape:.0} us: {scrape_share:.0} ns per registration at {rate:.0}/s and one scrape a second"
    );
    println!(
        "metrics cost per registration: {:.0} ns",
        two.max(one) + scrape_share
    );
}
