//! Load shedding at the door: under overload a new connection is reset at once, before its TLS
//! handshake (the costliest part of a registration), so the devices already let in are served in
//! time instead of everyone waiting in one growing queue; the refused retry.
//!
//! Overload is read off the runtime itself: how late it gets to a timer that is due, probed every
//! millisecond. The lag steers a limit on handshakes in progress, as TCP steers its window: over
//! the threshold the limit drops to 80% of the handshakes then in progress, under it the limit
//! grows by one per probe. Lag does not depend on the clients' network latency (slow clients hold
//! handshakes open but cost nothing), and it counts every kind of work on the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// The limit never drops below this: a handful of devices always get in.
const MIN_LIMIT: usize = 8;

/// The handshakes in progress, the limit the lag sets on them, and the connections refused.
#[derive(Debug)]
pub struct LoadGauge {
    /// Lag (in µs) above which the limit shrinks; 0: the gauge never refuses.
    threshold_us: u128,
    max_limit: usize,
    limit: AtomicUsize,
    in_progress: AtomicUsize,
    shed: AtomicUsize,
}

/// A handshake's place in the count; gives it back when dropped.
pub struct Handshake(Option<Arc<LoadGauge>>);

impl Drop for Handshake {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.in_progress.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Default for LoadGauge {
    /// A gauge that never refuses.
    fn default() -> Self {
        LoadGauge::new(Duration::ZERO, usize::MAX)
    }
}

impl LoadGauge {
    fn new(threshold: Duration, max_limit: usize) -> LoadGauge {
        LoadGauge {
            threshold_us: threshold.as_micros(),
            max_limit,
            limit: AtomicUsize::new(max_limit),
            in_progress: AtomicUsize::new(0),
            shed: AtomicUsize::new(0),
        }
    }

    /// A gauge that never refuses (`threshold` zero), or one probing the lag until `shutdown`;
    /// the limit starts at, and never exceeds, `max_handshakes`.
    pub fn start(
        threshold: Duration,
        max_handshakes: usize,
        shutdown: CancellationToken,
    ) -> Arc<LoadGauge> {
        let gauge = Arc::new(LoadGauge::new(threshold, max_handshakes.max(MIN_LIMIT)));
        if !threshold.is_zero() {
            tokio::spawn(probe(gauge.clone(), shutdown));
        }
        gauge
    }

    /// Lets `tcp` start its handshake, or resets it at once (no TLS work, no lingering close).
    pub fn admit(self: &Arc<Self>, tcp: &TcpStream) -> Option<Handshake> {
        if self.threshold_us == 0 {
            return Some(Handshake(None));
        }
        let now = self.in_progress.fetch_add(1, Ordering::Relaxed);
        let handshake = Handshake(Some(self.clone()));
        if now < self.limit.load(Ordering::Relaxed) {
            return Some(handshake);
        }
        let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
        self.shed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Connections refused so far.
    pub fn shed_count(&self) -> usize {
        self.shed.load(Ordering::Relaxed)
    }

    /// One probe's lag: shrink the limit below what is in progress, or let it grow.
    fn record(&self, lag: Duration) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        let over = lag.as_micros() > self.threshold_us;
        let next = if over {
            let in_progress = self.in_progress.load(Ordering::Relaxed);
            (in_progress.min(limit) * 4 / 5).max(MIN_LIMIT)
        } else {
            (limit + 1).min(self.max_limit)
        };
        self.limit.store(next, Ordering::Relaxed);
        over
    }
}

/// Every millisecond: how late the runtime wakes a task whose timer is due (the event-loop lag;
/// tokio's timers have a 1 ms grain, so an idle runtime reads 0 to 1 ms).
async fn probe(gauge: Arc<LoadGauge>, shutdown: CancellationToken) {
    let mut lagging = false;
    loop {
        let due = Instant::now() + Duration::from_millis(1);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        let lag = due.elapsed();
        let over = gauge.record(lag);
        if over && !lagging {
            tracing::info!(
                ?lag,
                "the runtime lags: limiting TLS handshakes in progress"
            );
        }
        if !over && lagging {
            tracing::info!(refused_so_far = gauge.shed_count(), "the runtime caught up");
        }
        lagging = over;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connection() -> (TcpStream, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        (tcp, listener)
    }

    #[tokio::test]
    async fn lag_shrinks_the_limit_below_what_is_in_progress_and_calm_lets_it_grow() {
        let gauge = Arc::new(LoadGauge::new(Duration::from_millis(2), 100));
        let (tcp, _listener) = connection().await;
        let held: Vec<_> = (0..20).map(|_| gauge.admit(&tcp).unwrap()).collect();
        gauge.record(Duration::from_millis(5));
        assert_eq!(
            gauge.limit.load(Ordering::Relaxed),
            16,
            "80% of the 20 in progress"
        );
        assert!(gauge.admit(&tcp).is_none(), "a 21st is refused");
        assert_eq!(gauge.shed_count(), 1);
        drop(held);
        assert!(gauge.admit(&tcp).is_some(), "finished handshakes make room");
        for _ in 0..10 {
            gauge.record(Duration::from_micros(300));
        }
        assert_eq!(
            gauge.limit.load(Ordering::Relaxed),
            26,
            "one more per calm probe"
        );
        for _ in 0..10 {
            gauge.record(Duration::from_millis(9));
        }
        assert_eq!(
            gauge.limit.load(Ordering::Relaxed),
            MIN_LIMIT,
            "never below the floor"
        );
    }

    #[tokio::test]
    async fn without_a_threshold_nothing_is_refused() {
        let gauge = Arc::new(LoadGauge::default());
        let (tcp, _listener) = connection().await;
        let held: Vec<_> = (0..1000).map(|_| gauge.admit(&tcp).unwrap()).collect();
        assert_eq!(held.len(), 1000);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_runtime_pulls_the_limit_below_what_is_in_progress() {
        let shutdown = CancellationToken::new();
        let gauge = LoadGauge::start(Duration::from_millis(2), 100, shutdown.clone());
        let (tcp, _listener) = connection().await;
        let held: Vec<_> = (0..50).map(|_| gauge.admit(&tcp).unwrap()).collect();
        // Not asserted idle first: on a machine busy with other tests the probe lags too.
        // 20 tasks that each hold the thread for 2 ms at a time: the probe waits behind them.
        let busy: Vec<_> = (0..20)
            .map(|_| {
                tokio::spawn(async {
                    for _ in 0..30 {
                        std::thread::sleep(Duration::from_millis(2));
                        tokio::task::yield_now().await;
                    }
                })
            })
            .collect();
        for task in busy {
            task.await.unwrap();
        }
        assert!(
            gauge.limit.load(Ordering::Relaxed) < 50,
            "the lag pulled the limit below the 50 in progress"
        );
        drop(held);
        shutdown.cancel();
    }
}
