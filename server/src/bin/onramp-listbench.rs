//! Benchmark: how fast the console's enrollment list answers on a large store, measured where the
//! server measures it (the console backend's `list_enrollments`, exactly what the page's server
//! function calls). Seed first: `onramp enrollments seed --count 1000000 --prefix seed-`.
//!
//!   onramp-listbench --data-dir DIR [--database-url URL] [--runs 50]
//!
//! Prints p50, p99 and max per query, and the target (100 ms) beside them.

use std::time::{Duration, Instant};

use app::backend::ConsoleBackend;
use app::model::EnrollmentFilter;
use clap::Parser;
use onramp::config::Config;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    data_dir: std::path::PathBuf,
    #[arg(long)]
    database_url: Option<String>,
    #[arg(long, default_value_t = 50)]
    runs: usize,
}

const TARGET: Duration = Duration::from_millis(100);

fn filter(q: &str, status: &str, after: &str) -> EnrollmentFilter {
    EnrollmentFilter {
        q: q.into(),
        status: status.into(),
        attestation: String::new(),
        after: after.into(),
        kind: String::new(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = Config {
        data_dir: args.data_dir,
        database_url: args.database_url,
        ..Config::default()
    };
    let state = onramp::service::prepare(config).await?.state;
    let total = state.store.count_enrollments().await?;
    println!(
        "enrollment list on {:?} with {total} enrollments, {} runs each (target: under {} ms)",
        state.store.kind(),
        args.runs,
        TARGET.as_millis()
    );
    let cases = [
        ("first page", filter("", "", "")),
        ("prefix search, 10,000 matches", filter("seed-04", "", "")),
        ("prefix search, 100 matches", filter("seed-01234", "", "")),
        ("prefix search, no match", filter("nobody-", "", "")),
        ("status filter (disabled)", filter("", "disabled", "")),
        ("prefix + status", filter("seed-07", "disabled", "")),
        ("a page deep in the list", filter("", "", "seed-0500000")),
    ];
    let mut worst = Duration::ZERO;
    for (name, filter) in cases {
        let mut times = Vec::with_capacity(args.runs);
        let mut rows = 0;
        for _ in 0..args.runs {
            let started = Instant::now();
            let page = state
                .list_enrollments(filter.clone())
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            times.push(started.elapsed());
            rows = page.rows.len();
        }
        times.sort();
        let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        worst = worst.max(p(0.99));
        println!(
            "  {name:<32} {rows:>3} rows  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            ms(p(0.5)),
            ms(p(0.99)),
            ms(*times.last().unwrap())
        );
    }
    let started = Instant::now();
    state.summary().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "  dashboard counts (not a list)     {:>7.2} ms",
        ms(started.elapsed())
    );
    let verdict = if worst < TARGET { "met" } else { "MISSED" };
    println!("worst p99 {:.2} ms: target {verdict}", ms(worst));
    state.store.close().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
