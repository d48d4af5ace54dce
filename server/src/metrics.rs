//! Prometheus metrics. The first three are Azure DPS's own (AttestationAttempts,
//! RegistrationAttempts, DeviceAssignments) with its dimensions; the rest is what an operator of
//! a server needs: step latencies, connections, the group commit, the database pool, hub
//! connector errors, service API calls and throttling refusals.
//!
//! One `Metrics` per instance (the tests run several in one process, so there is no global
//! registry). The domain, the store and the transports record into it; `transport::metrics_http`
//! serves `render()` in the Prometheus text format (0.0.4). A disabled `Metrics` (no
//! `metrics_address`) records nothing, which is what the benchmark compares against.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `limits` keys that refuse requests, each a series from the start (an alert on
/// `rate(...)` needs a series before the first refusal).
const LIMITS: [&str; 6] = [
    "registrations_per_second",
    "group_registrations_per_second",
    "polls_per_device",
    "service_api_calls_per_minute",
    "max_registrations_in_flight",
    "shed_queue_delay_ms",
];

/// The calls to a linked hub, each a series per hub from the start.
const HUB_OPERATIONS: [&str; 3] = ["provision", "read_twin", "remove"];

/// The steps of one registration, each with its own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Checking the SAS token, certificate chain or TPM-signed token against the enrollments.
    Authenticate,
    /// Choosing the hub: the allocation policy, a custom webhook, the twin to migrate.
    Allocate,
    /// Creating or updating the device identity and its twin on the hub.
    HubWrite,
    /// The group commit of the identity, the record and the operation.
    Commit,
}

impl Step {
    /// Every step, in the order a registration takes them.
    pub const ALL: [Step; 4] = [
        Step::Authenticate,
        Step::Allocate,
        Step::HubWrite,
        Step::Commit,
    ];

    fn label(self) -> &'static str {
        match self {
            Step::Authenticate => "authenticate",
            Step::Allocate => "allocate",
            Step::HubWrite => "hub_write",
            Step::Commit => "commit",
        }
    }
}

/// What a finished registration attempt is counted as.
#[derive(Debug, Clone)]
pub struct AttemptOutcome<'a> {
    pub protocol: &'static str,
    /// The registration's status (`assigned`, `failed`, `disabled`, `assigning`).
    pub status: &'static str,
    /// The hub the device was assigned to, if any.
    pub hub: Option<&'a str>,
    /// The attestation, and whether it succeeded; None when the attempt ended before it (a
    /// malformed request, an unknown scope, throttling).
    pub attestation: Option<(&'static str, bool)>,
    /// The Azure error code of a failed or refused attempt.
    pub error_code: Option<i64>,
    pub latency: Duration,
}

/// The connection pool of one database handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUse {
    /// `main`, or `writer` for SQLite's own one-connection writer pool.
    pub pool: &'static str,
    pub open: u32,
    pub idle: u32,
    pub max: u32,
}

/// Reads the pools at scrape time.
pub type PoolSource = Box<dyn Fn() -> Vec<PoolUse> + Send + Sync>;

/// The group commit's figures, kept by the store that runs it.
#[derive(Debug, Clone)]
pub struct CommitMetrics {
    pub jobs_per_batch: Histogram,
    pub seconds: Histogram,
}

impl Default for CommitMetrics {
    fn default() -> Self {
        CommitMetrics {
            jobs_per_batch: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            seconds: seconds_histogram(),
        }
    }
}

/// One listener's connection figures, handed to its accept loop (no lookups per connection).
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    pub open: Gauge,
    pub handshake_failures: Counter,
    /// Connections reset before TLS by load shedding.
    pub shed: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttestationLabels {
    status: &'static str,
    protocol: &'static str,
    attestation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistrationLabels {
    status: &'static str,
    protocol: &'static str,
    hub: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    protocol: &'static str,
    code: i64,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HubLabels {
    hub: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    protocol: &'static str,
    step: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabels {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HubErrorLabels {
    hub: String,
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    operation: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(seconds_histogram)
}

/// Latencies from 0.25 ms to about 8 s.
fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

pub struct Metrics {
    enabled: bool,
    registry: Registry,
    attestation_attempts: Family<AttestationLabels, Counter>,
    registration_attempts: Family<RegistrationLabels, Counter>,
    device_assignments: Family<HubLabels, Counter>,
    registration_errors: Family<ErrorLabels, Counter>,
    registration_seconds: Histograms<ProtocolLabels>,
    step_seconds: Histograms<StepLabels>,
    open_connections: Family<ListenerLabels, Gauge>,
    handshake_failures: Family<ListenerLabels, Counter>,
    hub_errors: Family<HubErrorLabels, Counter>,
    service_requests: Family<ServiceLabels, Counter>,
    service_seconds: Histograms<OperationLabels>,
    throttled: Family<LimitLabels, Counter>,
    events_delivered: Family<SinkLabels, Counter>,
    event_failures: Family<SinkLabels, Counter>,
    pool_open: Family<PoolLabels, Gauge>,
    pool_idle: Family<PoolLabels, Gauge>,
    pool_max: Family<PoolLabels, Gauge>,
    pools: Option<PoolSource>,
}

impl Metrics {
    /// Metrics that record; `commit` and `pools` come from the store.
    pub fn new(commit: Option<CommitMetrics>, pools: Option<PoolSource>) -> Metrics {
        let mut metrics = Metrics::build(true, pools);
        if let Some(commit) = commit {
            let registry = &mut metrics.registry;
            registry.register(
                "onramp_group_commit_jobs",
                "Registrations written per group-commit transaction",
                commit.jobs_per_batch,
            );
            registry.register(
                "onramp_group_commit_duration_seconds",
                "Time one group-commit transaction takes",
                commit.seconds,
            );
        }
        metrics
    }

    /// Metrics that record nothing (no `metrics_address`).
    pub fn disabled() -> Metrics {
        Metrics::build(false, None)
    }

    fn build(enabled: bool, pools: Option<PoolSource>) -> Metrics {
        let metrics = Metrics {
            enabled,
            registry: Registry::default(),
            attestation_attempts: Family::default(),
            registration_attempts: Family::default(),
            device_assignments: Family::default(),
            registration_errors: Family::default(),
            registration_seconds: histograms(),
            step_seconds: histograms(),
            open_connections: Family::default(),
            handshake_failures: Family::default(),
            hub_errors: Family::default(),
            service_requests: Family::default(),
            service_seconds: histograms(),
            throttled: Family::default(),
            events_delivered: Family::default(),
            event_failures: Family::default(),
            pool_open: Family::default(),
            pool_idle: Family::default(),
            pool_max: Family::default(),
            pools,
        };
        if enabled {
            for limit in LIMITS {
                let _ = metrics.throttled.get_or_create(&LimitLabels { limit });
            }
        }
        metrics.registered()
    }

    fn registered(mut self) -> Metrics {
        let r = &mut self.registry;
        r.register(
            "onramp_attestation_attempts",
            "Device attestations (DPS AttestationAttempts), by status, protocol and attestation",
            self.attestation_attempts.clone(),
        );
        r.register(
            "onramp_registration_attempts",
            "Registration attempts (DPS RegistrationAttempts), by final status, protocol and hub",
            self.registration_attempts.clone(),
        );
        r.register(
            "onramp_device_assignments",
            "Devices assigned to a hub (DPS DeviceAssignments)",
            self.device_assignments.clone(),
        );
        r.register(
            "onramp_registration_errors",
            "Failed or refused registration attempts, by protocol and Azure error code",
            self.registration_errors.clone(),
        );
        r.register(
            "onramp_registration_duration_seconds",
            "Time from a register request to its answer, by protocol",
            self.registration_seconds.clone(),
        );
        r.register(
            "onramp_registration_step_duration_seconds",
            "Time one step of a registration takes, by protocol and step",
            self.step_seconds.clone(),
        );
        r.register(
            "onramp_open_connections",
            "Device connections open now, by listener",
            self.open_connections.clone(),
        );
        r.register(
            "onramp_tls_handshake_failures",
            "TLS handshakes that failed or timed out, by listener",
            self.handshake_failures.clone(),
        );
        r.register(
            "onramp_hub_connector_errors",
            "Calls to a linked hub that failed, by hub and operation",
            self.hub_errors.clone(),
        );
        r.register(
            "onramp_service_api_requests",
            "Service API calls, by operation and HTTP status",
            self.service_requests.clone(),
        );
        r.register(
            "onramp_service_api_request_duration_seconds",
            "Time a service API call takes, by operation",
            self.service_seconds.clone(),
        );
        r.register(
            "onramp_throttled_requests",
            "Requests refused by a limit (429 or 503), by the `limits` key that refused them",
            self.throttled.clone(),
        );
        r.register(
            "onramp_lifecycle_events_delivered",
            "Lifecycle events delivered, by sink (a redelivery after a crash counts again)",
            self.events_delivered.clone(),
        );
        r.register(
            "onramp_lifecycle_event_delivery_failures",
            "Deliveries to a sink that failed and will be retried, by sink",
            self.event_failures.clone(),
        );
        r.register(
            "onramp_db_pool_connections",
            "Database connections open, by pool",
            self.pool_open.clone(),
        );
        r.register(
            "onramp_db_pool_idle_connections",
            "Database connections open and idle, by pool",
            self.pool_idle.clone(),
        );
        r.register(
            "onramp_db_pool_max_connections",
            "The most connections a pool opens",
            self.pool_max.clone(),
        );
        self
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Counts one registration attempt, as its diagnostics event reports it.
    pub fn attempt(&self, outcome: &AttemptOutcome<'_>) {
        if !self.enabled {
            return;
        }
        let protocol = outcome.protocol;
        if let Some((attestation, succeeded)) = outcome.attestation {
            let status = if succeeded { "success" } else { "failure" };
            self.attestation_attempts
                .get_or_create(&AttestationLabels {
                    status,
                    protocol,
                    attestation,
                })
                .inc();
        }
        if let Some(code) = outcome.error_code {
            let labels = ErrorLabels { protocol, code };
            self.registration_errors.get_or_create(&labels).inc();
        }
        let hub = outcome.hub.unwrap_or_default().to_string();
        if outcome.status == "assigned" {
            let labels = HubLabels { hub: hub.clone() };
            self.device_assignments.get_or_create(&labels).inc();
        }
        let labels = RegistrationLabels {
            status: outcome.status,
            protocol,
            hub,
        };
        self.registration_attempts.get_or_create(&labels).inc();
        self.registration_seconds
            .get_or_create(&ProtocolLabels { protocol })
            .observe(outcome.latency.as_secs_f64());
    }

    pub fn step(&self, protocol: &'static str, step: Step, took: Duration) {
        if !self.enabled {
            return;
        }
        let labels = StepLabels {
            protocol,
            step: step.label(),
        };
        self.step_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// Starts a linked hub's error series at zero.
    pub fn declare_hub(&self, hub: &str) {
        if !self.enabled {
            return;
        }
        for operation in HUB_OPERATIONS {
            let labels = HubErrorLabels {
                hub: hub.to_string(),
                operation,
            };
            let _ = self.hub_errors.get_or_create(&labels);
        }
    }

    pub fn hub_error(&self, hub: &str, operation: &'static str) {
        if !self.enabled {
            return;
        }
        let labels = HubErrorLabels {
            hub: hub.to_string(),
            operation,
        };
        self.hub_errors.get_or_create(&labels).inc();
    }

    /// `limit` is the `limits` key of the limit that refused.
    pub fn throttled(&self, limit: &'static str) {
        if self.enabled {
            self.throttled.get_or_create(&LimitLabels { limit }).inc();
        }
    }

    /// `count` lifecycle events reached the sink.
    pub fn events_delivered(&self, sink: &str, count: usize) {
        if self.enabled {
            let labels = SinkLabels {
                sink: sink.to_string(),
            };
            self.events_delivered
                .get_or_create(&labels)
                .inc_by(count as u64);
            let _ = self.event_failures.get_or_create(&labels);
        }
    }

    pub fn event_delivery_failed(&self, sink: &str) {
        if self.enabled {
            let labels = SinkLabels {
                sink: sink.to_string(),
            };
            self.event_failures.get_or_create(&labels).inc();
        }
    }

    /// One service API call; `operation` is its method and route (`PUT /enrollments/{id}`).
    pub fn service_call(&self, operation: &str, status: u16, took: Duration) {
        if !self.enabled {
            return;
        }
        let operation = operation.to_string();
        self.service_seconds
            .get_or_create(&OperationLabels {
                operation: operation.clone(),
            })
            .observe(took.as_secs_f64());
        self.service_requests
            .get_or_create(&ServiceLabels { operation, status })
            .inc();
    }

    /// The handles one listener's accept loop counts with; detached ones when disabled.
    pub fn listener(&self, listener: &'static str) -> ListenerMetrics {
        if !self.enabled {
            return ListenerMetrics::default();
        }
        let labels = ListenerLabels { listener };
        ListenerMetrics {
            open: self.open_connections.get_or_create_owned(&labels),
            handshake_failures: self.handshake_failures.get_or_create_owned(&labels),
            shed: self.throttled.get_or_create_owned(&LimitLabels {
                limit: "shed_queue_delay_ms",
            }),
        }
    }

    /// The exposition, with the pools read now.
    pub fn render(&self) -> String {
        for pool in self.pools.as_ref().map(|read| read()).unwrap_or_default() {
            let labels = PoolLabels { pool: pool.pool };
            self.pool_open.get_or_create(&labels).set(pool.open.into());
            self.pool_idle.get_or_create(&labels).set(pool.idle.into());
            self.pool_max.get_or_create(&labels).set(pool.max.into());
        }
        let mut text = String::new();
        prometheus_text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assigned(hub: &str) -> AttemptOutcome<'_> {
        AttemptOutcome {
            protocol: "https",
            status: "assigned",
            hub: Some(hub),
            attestation: Some(("symmetricKey", true)),
            error_code: None,
            latency: Duration::from_millis(3),
        }
    }

    #[test]
    fn an_assignment_counts_an_attestation_an_attempt_and_an_assignment() {
        let metrics = Metrics::new(None, None);
        metrics.attempt(&assigned("hub.localhost"));
        metrics.attempt(&AttemptOutcome {
            status: "failed",
            hub: None,
            attestation: Some(("x509", false)),
            error_code: Some(401_002),
            ..assigned("")
        });
        let text = metrics.render();
        for line in [
            r#"onramp_attestation_attempts_total{status="success",protocol="https",attestation="symmetricKey"} 1"#,
            r#"onramp_attestation_attempts_total{status="failure",protocol="https",attestation="x509"} 1"#,
            r#"onramp_registration_attempts_total{status="assigned",protocol="https",hub="hub.localhost"} 1"#,
            r#"onramp_device_assignments_total{hub="hub.localhost"} 1"#,
            r#"onramp_registration_errors_total{protocol="https",code="401002"} 1"#,
            r#"onramp_registration_duration_seconds_count{protocol="https"} 2"#,
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(!text.contains(r#"onramp_device_assignments_total{hub=""}"#));
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let metrics = Metrics::disabled();
        metrics.attempt(&assigned("hub.localhost"));
        metrics.throttled("registrations_per_second");
        metrics.listener("https").open.inc();
        let text = metrics.render();
        assert!(!text.contains("hub.localhost"), "{text}");
        assert!(!text.contains("registrations_per_second"), "{text}");
        assert!(!text.contains("onramp_open_connections{"), "{text}");
    }

    #[test]
    fn listener_handles_update_the_registered_series() {
        let metrics = Metrics::new(None, None);
        let https = metrics.listener("https");
        https.open.inc();
        https.open.inc();
        https.open.dec();
        https.handshake_failures.inc();
        let text = metrics.render();
        assert!(
            text.contains(r#"onramp_open_connections{listener="https"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"onramp_tls_handshake_failures_total{listener="https"} 1"#));
    }

    #[test]
    fn pools_and_the_group_commit_are_read_into_the_exposition() {
        let commit = CommitMetrics::default();
        commit.jobs_per_batch.observe(3.0);
        let pools: PoolSource = Box::new(|| {
            vec![PoolUse {
                pool: "main",
                open: 4,
                idle: 3,
                max: 16,
            }]
        });
        let text = Metrics::new(Some(commit), Some(pools)).render();
        for line in [
            r#"onramp_db_pool_connections{pool="main"} 4"#,
            r#"onramp_db_pool_idle_connections{pool="main"} 3"#,
            r#"onramp_db_pool_max_connections{pool="main"} 16"#,
            "onramp_group_commit_jobs_count 1",
            "onramp_group_commit_jobs_sum 3.0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
