//! Persistence. The `Store` trait is all the domain sees; `sql` implements it once for SQLite (the
//! embedded default, WAL mode) and once for PostgreSQL (scale-out), from the same SQL text. This is
//! the only module that knows SQL.

mod group_commit;
mod rows;
pub mod sessions;
mod sql;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::config::{self, DatabaseKind};
use crate::model::*;
use crate::model::{MinuteCount, RecordedFailure, RegistrationEvent};

pub use sql::{PostgresStore, SqliteStore};

/// How a fault's target is keyed: `individual/{id}` or `group/{id}`, the ID lower-cased like
/// every enrollment key.
pub fn fault_key(target: &EnrollmentRef) -> String {
    match target {
        EnrollmentRef::Individual(id) => format!("individual/{}", id.to_ascii_lowercase()),
        EnrollmentRef::Group(id) => format!("group/{}", id.to_ascii_lowercase()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// The etag (or existence) condition of a write did not hold.
    #[error("precondition failed: the record changed or does not exist")]
    PreconditionFailed,
    /// A create collided with an existing record.
    #[error("already exists")]
    Conflict,
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// The database cannot be reached or refuses work for now (down, restarting, out of
    /// connections or disk): unlike a failed statement, the same request may work later.
    pub fn is_unavailable(&self) -> bool {
        let StoreError::Database(e) = self else {
            return false;
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                if code.len() == 5 {
                    // PostgreSQL SQLSTATE classes: connection exception, operator intervention
                    // (shutting down), insufficient resources.
                    ["08", "57", "53"]
                        .iter()
                        .any(|class| code.starts_with(class))
                } else {
                    // SQLite's primary result code (the low byte): BUSY, IOERR, FULL.
                    matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 10 | 13))
                }
            }
            _ => false,
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Largest page any list returns, whatever the caller asks.
pub const MAX_PAGE: u32 = 1000;

/// Everything Onramp keeps. Writes take an `IfMatch` and return the record as stored, with a fresh
/// etag and `updated` time (the store owns both). Writes that take `events` add them to the
/// outbox (`lifecycle_events`) in the change's own transaction: both land or neither does.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn kind(&self) -> DatabaseKind;
    /// Succeeds when the database answers (readiness).
    async fn ping(&self) -> Result<()>;
    /// Closes the pool, waiting for connections in use to be returned.
    async fn close(&self);

    /// Claims this period's run of the periodic job `name`: true (run it) when no instance ran
    /// it after `due` (the time it last ran must be before then), false when another did.
    async fn claim_periodic_run(
        &self,
        name: &str,
        now: DateTime<Utc>,
        due: DateTime<Utc>,
    ) -> Result<bool>;

    /// Whether other instances may share this database (PostgreSQL), so `notify_peers` is worth it.
    fn has_peers(&self) -> bool {
        self.kind() == DatabaseKind::Postgres
    }

    /// Sends `payload` to every instance following this database (`coordination`); nothing on
    /// SQLite, which serves one instance.
    async fn notify_peers(&self, payload: &str) -> Result<()>;
    /// What the instances on this database send (`notify_peers`, this one's own included), or
    /// None where there are no others (SQLite).
    async fn follow_peers(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>>;

    /// The group commit's figures, for the metrics (none where nothing is group-committed).
    fn commit_metrics(&self) -> Option<crate::metrics::CommitMetrics> {
        None
    }

    /// The connection pools as they are now.
    fn pool_use(&self) -> Vec<crate::metrics::PoolUse> {
        Vec::new()
    }

    async fn setting(&self, key: &str) -> Result<Option<String>>;
    async fn put_setting(&self, key: &str, value: &str) -> Result<()>;
    /// Stores `value` unless the key is set, and returns what is stored: the first writer wins, so
    /// instances bootstrapping together agree.
    async fn init_setting(&self, key: &str, value: &str) -> Result<String>;

    async fn get_enrollment(&self, registration_id: &str) -> Result<Option<Enrollment>>;
    async fn put_enrollment(
        &self,
        enrollment: Enrollment,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<Enrollment>;
    async fn delete_enrollment(
        &self,
        registration_id: &str,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<()>;
    async fn list_enrollments(&self, query: &ListQuery) -> Result<Page<Enrollment>>;
    /// Creates or replaces many enrollments in one transaction (bulk import). IDs must be distinct.
    async fn put_enrollments(
        &self,
        enrollments: Vec<Enrollment>,
        events: &[LifecycleEvent],
    ) -> Result<()>;
    /// The stored enrollments among `registration_ids` (bulk import keeps their keys).
    async fn get_enrollments(&self, registration_ids: &[String]) -> Result<Vec<Enrollment>>;
    async fn count_enrollments(&self) -> Result<u64>;

    async fn get_group(&self, group_id: &str) -> Result<Option<EnrollmentGroup>>;
    async fn put_group(
        &self,
        group: EnrollmentGroup,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<EnrollmentGroup>;
    async fn delete_group(
        &self,
        group_id: &str,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<()>;
    async fn list_groups(&self, query: &ListQuery) -> Result<Page<EnrollmentGroup>>;
    async fn count_groups(&self) -> Result<u64>;

    async fn list_hubs(&self) -> Result<Vec<LinkedHub>>;
    async fn get_hub(&self, host_name: &str) -> Result<Option<LinkedHub>>;
    async fn put_hub(
        &self,
        hub: LinkedHub,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<LinkedHub>;
    async fn delete_hub(
        &self,
        host_name: &str,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<()>;

    async fn get_registration(&self, registration_id: &str) -> Result<Option<RegistrationRecord>>;
    async fn put_registration(
        &self,
        record: RegistrationRecord,
        cond: IfMatch,
    ) -> Result<RegistrationRecord>;
    async fn delete_registration(
        &self,
        registration_id: &str,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<()>;
    async fn list_registrations(&self, query: &ListQuery) -> Result<Page<RegistrationRecord>>;
    async fn count_registrations(&self) -> Result<u64>;

    async fn get_operation(&self, operation_id: &str) -> Result<Option<RegistrationOperation>>;
    async fn put_operation(&self, operation: RegistrationOperation) -> Result<()>;
    /// Stores a finished registration in one transaction: the built-in hub identity it created
    /// (if any), its record, its operation and the certificate it issued (if any). All are
    /// written as given (the operation's result quotes the record's etag and times); returns the
    /// record with its stored `created`.
    async fn finish_registration(
        &self,
        identity: Option<HubDevice>,
        record: RegistrationRecord,
        operation: RegistrationOperation,
        issued: Option<IssuedCertificate>,
        events: &[LifecycleEvent],
    ) -> Result<RegistrationRecord>;
    /// Stores the operation unless one with its ID exists (a finished one must not be overwritten
    /// by a late "assigning").
    async fn put_operation_if_absent(&self, operation: RegistrationOperation) -> Result<()>;
    /// Forgets operations created before `before`; returns how many.
    async fn delete_operations_before(&self, before: DateTime<Utc>) -> Result<u64>;

    async fn list_policies(&self) -> Result<Vec<AccessPolicy>>;
    async fn get_policy(&self, name: &str) -> Result<Option<AccessPolicy>>;
    async fn put_policy(&self, policy: AccessPolicy, cond: IfMatch) -> Result<AccessPolicy>;
    async fn delete_policy(&self, name: &str, cond: IfMatch) -> Result<()>;

    async fn list_ca_certificates(&self) -> Result<Vec<CaCertificate>>;
    async fn get_ca_certificate(&self, name: &str) -> Result<Option<CaCertificate>>;
    async fn put_ca_certificate(
        &self,
        ca: CaCertificate,
        cond: IfMatch,
        events: &[LifecycleEvent],
    ) -> Result<CaCertificate>;
    async fn delete_ca_certificate(&self, name: &str, cond: IfMatch) -> Result<()>;

    async fn list_credential_policies(&self) -> Result<Vec<CredentialPolicy>>;
    async fn get_credential_policy(&self, name: &str) -> Result<Option<CredentialPolicy>>;
    async fn put_credential_policy(
        &self,
        policy: CredentialPolicy,
        cond: IfMatch,
    ) -> Result<CredentialPolicy>;
    async fn delete_credential_policy(&self, name: &str, cond: IfMatch) -> Result<()>;

    async fn list_issuers(&self) -> Result<Vec<CertificateIssuer>>;
    async fn get_issuer(&self, name: &str) -> Result<Option<CertificateIssuer>>;
    async fn put_issuer(
        &self,
        issuer: CertificateIssuer,
        cond: IfMatch,
    ) -> Result<CertificateIssuer>;
    async fn delete_issuer(&self, name: &str, cond: IfMatch) -> Result<()>;

    /// A device's issued certificates, the newest first.
    async fn issued_certificates(&self, registration_id: &str) -> Result<Vec<IssuedCertificate>>;
    async fn get_issued_certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>>;
    /// Revokes one certificate of the device (`serial`) or all it holds; returns those revoked
    /// now (already revoked ones keep their time).
    async fn revoke_certificates(
        &self,
        registration_id: &str,
        serial: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<Vec<IssuedCertificate>>;
    /// An issuer's revoked certificates that have not expired at `now` (the CRL's entries).
    async fn revoked_certificates(
        &self,
        issuer: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<IssuedCertificate>>;

    async fn get_hub_device(&self, hub: &str, device_id: &str) -> Result<Option<HubDevice>>;
    async fn put_hub_device(&self, device: HubDevice, cond: IfMatch) -> Result<HubDevice>;
    async fn delete_hub_device(&self, hub: &str, device_id: &str, cond: IfMatch) -> Result<()>;
    async fn count_hub_devices(&self, hub: &str) -> Result<u64>;

    async fn get_user(&self, username: &str) -> Result<Option<ConsoleUser>>;
    async fn put_user(&self, user: ConsoleUser) -> Result<ConsoleUser>;
    async fn list_users(&self) -> Result<Vec<ConsoleUser>>;

    async fn load_session(&self, id: &str) -> Result<Option<StoredSession>>;
    async fn save_session(&self, session: &StoredSession) -> Result<()>;
    async fn delete_session(&self, id: &str) -> Result<()>;
    async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Stores a TPM challenge, replacing any older one for the registration ID.
    async fn put_tpm_challenge(&self, challenge: &TpmChallenge) -> Result<()>;
    /// The device's challenge, if it has not expired at `now`.
    async fn get_tpm_challenge(
        &self,
        registration_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<TpmChallenge>>;
    async fn delete_expired_tpm_challenges(&self, now: DateTime<Utc>) -> Result<u64>;

    /// Sets (or replaces) the test-mode fault of an enrollment or group.
    async fn put_fault_injection(
        &self,
        target: &EnrollmentRef,
        fault: &FaultInjection,
    ) -> Result<()>;
    async fn get_fault_injection(&self, target: &EnrollmentRef) -> Result<Option<FaultInjection>>;
    /// `Ok(false)` when there was none.
    async fn delete_fault_injection(&self, target: &EnrollmentRef) -> Result<bool>;
    /// The targets (`fault_key`) whose fault is not spent.
    async fn live_fault_targets(&self) -> Result<Vec<String>>;
    /// Uses one registration of the target's fault, atomically: the fault with what is left
    /// after this one, or None when there is none or it is spent.
    async fn take_fault_injection(&self, target: &EnrollmentRef) -> Result<Option<FaultInjection>>;

    async fn append_registration_events(&self, events: &[&RegistrationEvent]) -> Result<()>;
    /// Attempts per minute and final status, from `since` on.
    async fn registration_minutes(&self, since: DateTime<Utc>) -> Result<Vec<MinuteCount>>;
    /// The newest failed or disabled attempts first.
    async fn recent_failures(&self, limit: u32) -> Result<Vec<RecordedFailure>>;
    async fn delete_registration_events_before(&self, before: DateTime<Utc>) -> Result<u64>;

    /// The outbox's events after `seq`, oldest first.
    async fn events_after(&self, seq: i64, limit: u32) -> Result<Vec<StoredEvent>>;
    /// The newest event's sequence number (0 when none was ever written).
    async fn last_event_seq(&self) -> Result<i64>;
    /// Forgets events every sink has delivered that are older than `delivered_before`, and any
    /// older than `any_before`.
    async fn delete_old_events(
        &self,
        delivered_before: DateTime<Utc>,
        any_before: DateTime<Utc>,
    ) -> Result<u64>;

    async fn list_event_sinks(&self) -> Result<Vec<EventSink>>;
    async fn get_event_sink(&self, name: &str) -> Result<Option<EventSink>>;
    /// Creates or changes a sink. A new one starts after the newest event (it receives what
    /// happens from now on); a changed one keeps its progress.
    async fn put_event_sink(
        &self,
        name: &str,
        target: &SinkTarget,
        enabled: bool,
    ) -> Result<EventSink>;
    /// `Ok(false)` when there was none.
    async fn delete_event_sink(&self, name: &str) -> Result<bool>;
    /// Takes or extends the lease on a sink's delivery until `until` and returns how far the sink
    /// got; `Ok(None)` while another owner's lease runs (or the sink is gone or disabled).
    async fn lease_event_sink(
        &self,
        name: &str,
        owner: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Option<i64>>;
    /// Records that everything up to `seq` reached the sink.
    async fn event_sink_delivered(&self, name: &str, seq: i64, at: DateTime<Utc>) -> Result<()>;
    async fn event_sink_failed(&self, name: &str, error: &str, at: DateTime<Utc>) -> Result<()>;

    async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry>;
    /// The newest entries first.
    async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditEntry>>;
}

/// Opens the database the URL names, creating the SQLite file if needed, and applies migrations.
pub async fn open(url: &str, max_connections: u32) -> Result<Arc<dyn Store>, anyhow::Error> {
    let kind = config::database_kind(url)?;
    Ok(match kind {
        DatabaseKind::Sqlite => Arc::new(open_sqlite(url, max_connections).await?),
        DatabaseKind::Postgres => {
            let options = PgConnectOptions::from_str(url)?;
            Arc::new(open_postgres(options, max_connections).await?)
        }
    })
}

pub async fn open_sqlite(url: &str, max_connections: u32) -> Result<SqliteStore, anyhow::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true);
    if let Some(parent) = options.get_filename().parent() {
        std::fs::create_dir_all(parent).map_err(|e| {
            anyhow::anyhow!(
                "cannot create the directory of the SQLite database {}: {e}",
                parent.display()
            )
        })?;
    }
    // An embedded database cannot hang up: sqlx's ping before every acquire would only add a
    // round trip to the connection's worker thread per query (measured: a third of throughput).
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect_with(options.clone())
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the SQLite database {url}: {e}"))?;
    sqlx::migrate!("../migrations/sqlite").run(&writer).await?;
    let readers = SqlitePoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .connect_with(options.read_only(true))
        .await?;
    Ok(SqliteStore::with_writer(readers, writer))
}

/// How long a request waits for a PostgreSQL connection. While the database is down the pool
/// keeps reconnecting for this long before the request fails with 503 and `Retry-After`: a
/// device is better told to come back than held while a whole fleet queues behind it.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn open_postgres(
    options: PgConnectOptions,
    max_connections: u32,
) -> Result<PostgresStore, anyhow::Error> {
    let target = format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("")
    );
    // One direct attempt first: a wrong URL fails at once with the server's own words, instead of
    // after the pool's retries.
    let probe = PgConnection::connect_with(&options)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL at {target}: {e}"))?;
    probe.close().await?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
        .connect_with(options)
        .await?;
    sqlx::migrate!("../migrations/postgres").run(&pool).await?;
    Ok(PostgresStore::new(pool))
}
