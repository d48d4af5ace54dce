//! The `Store` implementation, written once and expanded for SQLite and PostgreSQL. Both read `$n`
//! parameters the same way, and the schemas (see migrations/) differ only in column types.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Database, FromRow, Postgres, Row as _, Sqlite};

use super::group_commit::{self, Batch, Created, HotRow, Job, MAX_JOBS, Queue, TableRows};
use super::rows::*;
use super::{MAX_PAGE, Result, Store, StoreError, fault_key};
use crate::config::DatabaseKind;
use crate::metrics::{CommitMetrics, PoolUse};
use crate::model::*;
use crate::model::{MinuteCount, RecordedFailure, RegistrationEvent};

/// Closes a connection whose transaction failed instead of returning it to the pool. After
/// SQLITE_FULL or an I/O error SQLite may roll the transaction back by itself; sqlx 0.8 does not
/// notice, later issues SAVEPOINTs instead of BEGIN, and every "commit" on that connection then
/// lands in a transaction that never ends (devices told `assigned` and nothing stored: found by
/// tests/integration/outage.rs on a full disk). A new connection has no such past.
fn discard_if_failed<DB: Database, T>(
    conn: &mut sqlx::pool::PoolConnection<DB>,
    result: &Result<T>,
) {
    if result.is_err() {
        conn.close_on_drop();
    }
}

/// The advisory lock key that orders outbox inserts on PostgreSQL ("OUTB" in ASCII).
const OUTBOX_LOCK: i64 = 0x4f55_5442;

/// The LISTEN/NOTIFY channel instances on one database follow each other on (`coordination`).
const PEERS_CHANNEL: &str = "onramp_peers";

/// How long `wanted` trusts what it read of the sinks.
const SINKS_SEEN_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Four parameters an event: 250 rows stay well under either database's parameter limit.
const EVENTS_PER_STATEMENT: usize = 250;

/// Optional filters of a list and the columns they apply to.
struct ListColumns {
    status: Option<&'static str>,
    attestation: Option<&'static str>,
    group: Option<&'static str>,
}

const ENROLLMENT_FILTERS: ListColumns = ListColumns {
    status: Some("provisioning_status"),
    attestation: Some("attestation_type"),
    group: None,
};

const REGISTRATION_FILTERS: ListColumns = ListColumns {
    status: None,
    attestation: Some("attestation_type"),
    group: Some("group_id"),
};

/// `SELECT ... WHERE <filters> AND id > after ORDER BY id LIMIT n+1`, with its string parameters.
fn list_sql(select: &str, query: &ListQuery, columns: &ListColumns) -> (String, Vec<String>, i64) {
    let mut sql = format!("{select} WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    let mut cond = |sql: &mut String, expr: &str, value: String| {
        binds.push(value);
        sql.push_str(&format!(" AND {expr} ${}", binds.len()));
    };
    if let Some(prefix) = query.id_prefix.as_deref().map(key_of) {
        // Every character allowed in an ID sorts below '~', so [prefix, prefix~) is the prefix range
        // (byte order: PostgreSQL columns use the "C" collation).
        cond(&mut sql, "id >=", prefix.clone());
        cond(&mut sql, "id <", format!("{prefix}~"));
    }
    if let Some(after) = &query.after {
        cond(&mut sql, "id >", key_of(after));
    }
    if let (Some(col), Some(status)) = (columns.status, query.status) {
        cond(&mut sql, &format!("{col} ="), status.as_str().into());
    }
    if let (Some(col), Some(kind)) = (columns.attestation, query.attestation) {
        cond(&mut sql, &format!("{col} ="), kind.as_str().into());
    }
    if let (Some(col), Some(group)) = (columns.group, query.group_id.as_deref()) {
        cond(&mut sql, &format!("{col} ="), key_of(group));
    }
    let limit = query.limit.clamp(1, MAX_PAGE);
    sql.push_str(&format!(" ORDER BY id LIMIT ${}", binds.len() + 1));
    (sql, binds, i64::from(limit) + 1)
}

macro_rules! sql_store {
    ($store:ident, $db:ty, $kind:expr) => {
        pub struct $store {
            pool: sqlx::Pool<$db>,
            /// Where writes go. For SQLite a pool of one connection: SQLite admits one writer at a
            /// time, and queueing writers here (asynchronously) beats them colliding on the
            /// database lock and sleeping in its busy handler. For PostgreSQL the same pool.
            writer: sqlx::Pool<$db>,
            /// The group commit's writer task, started with the first hot write (so a store can be
            /// made outside a runtime).
            hot_writes: std::sync::OnceLock<Queue>,
            commit_metrics: CommitMetrics,
            /// Whether `writer` is a pool of its own (SQLite) rather than `pool` again.
            separate_writer: bool,
            /// Whether any event sink exists, and when that was read (see `wanted`).
            sinks_seen: std::sync::Mutex<Option<(std::time::Instant, bool)>>,
        }

        impl $store {
            pub fn new(pool: sqlx::Pool<$db>) -> Self {
                Self { separate_writer: false, ..Self::with_writer(pool.clone(), pool) }
            }

            pub fn with_writer(pool: sqlx::Pool<$db>, writer: sqlx::Pool<$db>) -> Self {
                $store { pool, writer, hot_writes: std::sync::OnceLock::new(), commit_metrics: CommitMetrics::default(), separate_writer: true, sinks_seen: std::sync::Mutex::new(None) }
            }

            /// Writes `rows` in the next group commit; returns their `created_at`s.
            async fn commit_hot(&self, rows: Vec<HotRow>, events: Vec<LifecycleEvent>) -> Result<Vec<DateTime<Utc>>> {
                let queue = self.hot_writes.get_or_init(|| {
                    let (queue, jobs) = tokio::sync::mpsc::unbounded_channel();
                    tokio::spawn(Self::hot_writer(self.writer.clone(), jobs, self.commit_metrics.clone()));
                    queue
                });
                group_commit::commit(queue, rows, events).await
            }

            /// An insert-or-replace of `record` through the group commit.
            async fn upsert_hot<T: Stored>(&self, mut record: T, wrap: fn(T::Row) -> HotRow) -> Result<T> {
                record.touch(Utc::now());
                let created = self.commit_hot(vec![wrap(record.to_row()?)], Vec::new()).await?;
                record.set_created(created[0]);
                Ok(record)
            }

            /// Commits whatever queued while the previous batch ran. A failed batch is retried
            /// job by job, so one bad row fails only its own caller.
            async fn hot_writer(
                writer: sqlx::Pool<$db>,
                mut queue: tokio::sync::mpsc::UnboundedReceiver<Job>,
                metrics: CommitMetrics,
            ) {
                let mut jobs = Vec::with_capacity(MAX_JOBS);
                while queue.recv_many(&mut jobs, MAX_JOBS).await > 0 {
                    let batch = Batch::of(&jobs);
                    let started = std::time::Instant::now();
                    let committed = Self::commit_batch(&writer, &batch).await;
                    metrics.jobs_per_batch.observe(jobs.len() as f64);
                    metrics.seconds.observe(started.elapsed().as_secs_f64());
                    match committed {
                        Ok(created) => batch.reply(std::mem::take(&mut jobs), &created),
                        Err(e) if jobs.len() == 1 => {
                            let _ = jobs.pop().unwrap().done.send(Err(e));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, jobs = jobs.len(), "group commit failed; retrying its jobs one by one");
                            for job in jobs.drain(..) {
                                let alone = Batch::of(std::slice::from_ref(&job));
                                match Self::commit_batch(&writer, &alone).await {
                                    Ok(created) => alone.reply(vec![job], &created),
                                    Err(e) => {
                                        let _ = job.done.send(Err(e));
                                    }
                                }
                            }
                        }
                    }
                }
            }

            async fn commit_batch(writer: &sqlx::Pool<$db>, batch: &Batch) -> Result<Created> {
                let mut conn = writer.acquire().await?;
                let result = Self::commit_batch_on(&mut conn, batch).await;
                discard_if_failed(&mut conn, &result);
                result
            }

            async fn commit_batch_on(conn: &mut <$db as Database>::Connection, batch: &Batch) -> Result<Created> {
                let mut created = Created::default();
                let mut tx = sqlx::Connection::begin(conn).await?;
                Self::upsert_rows(&mut tx, &batch.hub_devices, &mut created.hub_devices).await?;
                Self::upsert_rows(&mut tx, &batch.registrations, &mut created.registrations).await?;
                Self::upsert_rows(&mut tx, &batch.operations, &mut created.operations).await?;
                Self::upsert_rows(&mut tx, &batch.issued, &mut created.issued).await?;
                Self::insert_events(&mut tx, &batch.events).await?;
                tx.commit().await?;
                Ok(created)
            }

            async fn insert_enrollment_rows(conn: &mut <$db as Database>::Connection, rows: Vec<EnrollmentRow>, events: &[LifecycleEvent]) -> Result<()> {
                let statements = EnrollmentRow::statements();
                // Measured: a few hundred rows per statement is fastest on both databases.
                let per_statement = 4_000 / statements.width();
                let mut tx = sqlx::Connection::begin(conn).await?;
                let mut rows = rows.into_iter().peekable();
                while rows.peek().is_some() {
                    let chunk: Vec<EnrollmentRow> = rows.by_ref().take(per_statement).collect();
                    let sql = statements.upsert_many(chunk.len());
                    let mut query = sqlx::query(&sql);
                    for row in chunk {
                        query = row.bind_row(query);
                    }
                    query.execute(&mut *tx).await?;
                }
                Self::insert_events(&mut tx, events).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn upsert_rows<R>(
                tx: &mut sqlx::Transaction<'_, $db>,
                table: &TableRows<R>,
                created: &mut std::collections::HashMap<String, DateTime<Utc>>,
            ) -> Result<()>
            where
                R: Row + BindRow<$db> + Clone + Send,
            {
                let statements = R::statements();
                for chunk in batches(&table.rows) {
                    let mut query = sqlx::query(statements.upsert_returning(chunk.len()));
                    for row in chunk {
                        query = row.clone().bind_row(query);
                    }
                    for returned in query.fetch_all(&mut **tx).await? {
                        let keys = (0..statements.key_count())
                            .map(|i| returned.try_get::<String, _>(i))
                            .collect::<std::result::Result<Vec<_>, _>>()?;
                        created.insert(keys.join(KEY_SEPARATOR), returned.try_get(statements.key_count())?);
                    }
                }
                Ok(())
            }

            pub fn pool(&self) -> &sqlx::Pool<$db> {
                &self.pool
            }

            async fn fetch<T>(&self, keys: &[&str]) -> Result<Option<T>>
            where
                T: Stored,
                T::Row: for<'r> FromRow<'r, <$db as Database>::Row> + Send + Unpin,
            {
                let mut query = sqlx::query_as::<_, T::Row>(&T::Row::statements().select_by_key);
                for key in keys {
                    query = query.bind(key.to_string());
                }
                query.fetch_optional(&self.pool).await?.map(T::from_row).transpose()
            }

            async fn fetch_all<T>(&self) -> Result<Vec<T>>
            where
                T: Stored,
                T::Row: for<'r> FromRow<'r, <$db as Database>::Row> + Send + Unpin,
            {
                let sql = format!("{} ORDER BY 1", T::Row::statements().select);
                sqlx::query_as::<_, T::Row>(&sql)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .map(T::from_row)
                    .collect()
            }

            async fn write<T>(&self, mut record: T, cond: IfMatch, events: &[LifecycleEvent]) -> Result<T>
            where
                T: Stored,
                T::Row: BindRow<$db> + Send,
            {
                record.touch(Utc::now());
                let row = record.to_row()?;
                let events = self.wanted(events).await?;
                let mut conn = self.writer.acquire().await?;
                let result = match events.is_empty() {
                    true => Self::write_on(&mut conn, row, cond).await,
                    false => async {
                        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                        let created = Self::write_on(&mut tx, row, cond).await?;
                        Self::insert_events(&mut tx, events).await?;
                        tx.commit().await?;
                        Ok(created)
                    }
                    .await,
                };
                discard_if_failed(&mut conn, &result);
                record.set_created(result?);
                Ok(record)
            }

            /// Runs the statement `cond` asks for; returns the row's stored `created_at`.
            async fn write_on<R: Row + BindRow<$db>>(conn: &mut <$db as Database>::Connection, row: R, cond: IfMatch) -> Result<DateTime<Utc>> {
                let statements = R::statements();
                let creating = matches!(cond, IfMatch::Absent);
                let returned = match cond {
                    IfMatch::Any => row.bind_row(sqlx::query(&statements.upsert)).fetch_optional(&mut *conn).await?,
                    IfMatch::Absent => row.bind_row(sqlx::query(&statements.insert)).fetch_optional(&mut *conn).await?,
                    IfMatch::Exists => row.bind_row(sqlx::query(&statements.update)).fetch_optional(&mut *conn).await?,
                    IfMatch::Etag(tag) => {
                        row.bind_row(sqlx::query(&statements.update_if_etag))
                            .bind(tag.0)
                            .fetch_optional(&mut *conn)
                            .await?
                    }
                };
                match returned {
                    Some(row) => Ok(row.try_get(0)?),
                    None if creating => Err(StoreError::Conflict),
                    None => Err(StoreError::PreconditionFailed),
                }
            }

            /// The events worth writing: none while no sink exists, as a new sink starts after the
            /// newest event and nobody would ever read them (the default instance pays nothing for
            /// the outbox). Read at most once per `SINKS_SEEN_FOR`, so another instance's new sink
            /// gets the events of changes made from about a second after it was added.
            async fn wanted<'e>(&self, events: &'e [LifecycleEvent]) -> Result<&'e [LifecycleEvent]> {
                if events.is_empty() {
                    return Ok(events);
                }
                let seen = *self.sinks_seen.lock().unwrap();
                let any = match seen {
                    Some((at, any)) if at.elapsed() < SINKS_SEEN_FOR => any,
                    _ => {
                        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_sinks").fetch_one(&self.pool).await?;
                        *self.sinks_seen.lock().unwrap() = Some((std::time::Instant::now(), n > 0));
                        n > 0
                    }
                };
                Ok(if any { events } else { &[] })
            }

            /// Adds `events` to the outbox inside the caller's transaction. On PostgreSQL a
            /// transaction-scoped advisory lock makes the events of concurrent transactions
            /// commit in `seq` order, so a sink that delivered up to n can never later see an
            /// event below n appear (SQLite has one writer: its order is commit order anyway).
            async fn insert_events(conn: &mut <$db as Database>::Connection, events: &[LifecycleEvent]) -> Result<()> {
                if events.is_empty() {
                    return Ok(());
                }
                if matches!($kind, DatabaseKind::Postgres) {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(OUTBOX_LOCK).execute(&mut *conn).await?;
                }
                for chunk in events.chunks(EVENTS_PER_STATEMENT) {
                    let values: Vec<String> = (0..chunk.len())
                        .map(|i| format!("(${}, ${}, ${}, ${})", 4 * i + 1, 4 * i + 2, 4 * i + 3, 4 * i + 4))
                        .collect();
                    let sql = format!("INSERT INTO lifecycle_events (id, type, at, resource) VALUES {}", values.join(", "));
                    let mut query = sqlx::query(&sql);
                    for event in chunk {
                        query = query
                            .bind(event.id.clone())
                            .bind(event.event_type.as_str())
                            .bind(event.time)
                            .bind(event.resource.to_string());
                    }
                    query.execute(&mut *conn).await?;
                }
                Ok(())
            }

            async fn remove<R: Row>(&self, keys: &[&str], cond: IfMatch, events: &[LifecycleEvent]) -> Result<()> {
                let statements = R::statements();
                let sql = match cond {
                    IfMatch::Etag(_) => &statements.delete_if_etag,
                    _ => &statements.delete,
                };
                let mut query = sqlx::query(sql);
                for key in keys {
                    query = query.bind(key.to_string());
                }
                if let IfMatch::Etag(tag) = &cond {
                    query = query.bind(tag.0.clone());
                }
                let events = self.wanted(events).await?;
                let mut conn = self.writer.acquire().await?;
                let removed: Result<bool> = async {
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    let removed = query.execute(&mut *tx).await?.rows_affected() > 0;
                    if removed {
                        Self::insert_events(&mut tx, events).await?;
                    }
                    tx.commit().await?;
                    Ok(removed)
                }
                .await;
                discard_if_failed(&mut conn, &removed);
                drop(conn);
                if removed? {
                    return Ok(());
                }
                let mut exists = sqlx::query(&statements.select_by_key);
                for key in keys {
                    exists = exists.bind(key.to_string());
                }
                match exists.fetch_optional(&self.pool).await? {
                    Some(_) => Err(StoreError::PreconditionFailed),
                    None => Err(StoreError::NotFound),
                }
            }

            async fn list<T>(&self, query: &ListQuery, columns: &ListColumns) -> Result<Page<T>>
            where
                T: Stored,
                T::Row: for<'r> FromRow<'r, <$db as Database>::Row> + Send + Unpin,
            {
                let (sql, binds, limit) = list_sql(&T::Row::statements().select, query, columns);
                let mut q = sqlx::query_as::<_, T::Row>(&sql);
                for value in binds {
                    q = q.bind(value);
                }
                let mut rows = q.bind(limit).fetch_all(&self.pool).await?;
                let next = if rows.len() as i64 == limit {
                    rows.pop();
                    rows.last().map(|row| row.key().to_string())
                } else {
                    None
                };
                let items = rows.into_iter().map(T::from_row).collect::<Result<_>>()?;
                Ok(Page { items, next })
            }

            async fn count<R: Row>(&self) -> Result<u64> {
                let n: i64 = sqlx::query_scalar(&R::statements().count).fetch_one(&self.pool).await?;
                Ok(n as u64)
            }
        }

        #[async_trait]
        impl Store for $store {
            fn kind(&self) -> DatabaseKind {
                $kind
            }

            async fn ping(&self) -> Result<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn close(&self) {
                self.writer.close().await;
                self.pool.close().await;
            }

            async fn claim_periodic_run(&self, name: &str, now: DateTime<Utc>, due: DateTime<Utc>) -> Result<bool> {
                let claimed = sqlx::query(
                    "INSERT INTO periodic_jobs (name, last_run_at) VALUES ($1, $2) ON CONFLICT (name) \
                     DO UPDATE SET last_run_at = excluded.last_run_at WHERE periodic_jobs.last_run_at <= $3",
                )
                .bind(name)
                .bind(now)
                .bind(due)
                .execute(&self.writer)
                .await?;
                Ok(claimed.rows_affected() == 1)
            }

            async fn notify_peers(&self, payload: &str) -> Result<()> {
                if matches!($kind, DatabaseKind::Postgres) {
                    sqlx::query("SELECT pg_notify($1, $2)").bind(PEERS_CHANNEL).bind(payload).execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn follow_peers(&self) -> Result<Option<tokio::sync::mpsc::Receiver<String>>> {
                Self::listen_for_peers(&self.pool).await
            }

            fn commit_metrics(&self) -> Option<CommitMetrics> {
                Some(self.commit_metrics.clone())
            }

            fn pool_use(&self) -> Vec<PoolUse> {
                let of = |name, pool: &sqlx::Pool<$db>| PoolUse {
                    pool: name,
                    open: pool.size(),
                    idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                    max: pool.options().get_max_connections(),
                };
                let mut pools = vec![of("main", &self.pool)];
                if self.separate_writer {
                    pools.push(of("writer", &self.writer));
                }
                pools
            }

            async fn setting(&self, key: &str) -> Result<Option<String>> {
                Ok(sqlx::query_scalar("SELECT value FROM instance_settings WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn put_setting(&self, key: &str, value: &str) -> Result<()> {
                sqlx::query(
                    "INSERT INTO instance_settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn init_setting(&self, key: &str, value: &str) -> Result<String> {
                sqlx::query("INSERT INTO instance_settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&self.writer)
                    .await?;
                self.setting(key).await?.ok_or(StoreError::NotFound)
            }

            async fn get_enrollment(&self, registration_id: &str) -> Result<Option<Enrollment>> {
                self.fetch(&[&key_of(registration_id)]).await
            }

            async fn put_enrollment(&self, enrollment: Enrollment, cond: IfMatch, events: &[LifecycleEvent]) -> Result<Enrollment> {
                self.write(enrollment, cond, events).await
            }

            async fn delete_enrollment(&self, registration_id: &str, cond: IfMatch, events: &[LifecycleEvent]) -> Result<()> {
                self.remove::<EnrollmentRow>(&[&key_of(registration_id)], cond, events).await
            }

            async fn list_enrollments(&self, query: &ListQuery) -> Result<Page<Enrollment>> {
                self.list(query, &ENROLLMENT_FILTERS).await
            }

            async fn put_enrollments(&self, enrollments: Vec<Enrollment>, events: &[LifecycleEvent]) -> Result<()> {
                let now = Utc::now();
                let mut rows = Vec::with_capacity(enrollments.len());
                for mut enrollment in enrollments {
                    enrollment.touch(now);
                    rows.push(enrollment.to_row()?);
                }
                let events = self.wanted(events).await?;
                let mut conn = self.writer.acquire().await?;
                let result = Self::insert_enrollment_rows(&mut conn, rows, events).await;
                discard_if_failed(&mut conn, &result);
                result
            }

            async fn get_enrollments(&self, registration_ids: &[String]) -> Result<Vec<Enrollment>> {
                let keys: Vec<String> = registration_ids.iter().map(|id| key_of(id)).collect();
                let mut found = Vec::new();
                for chunk in batches(&keys) {
                    let params: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                    let sql = format!("{} WHERE id IN ({})", EnrollmentRow::statements().select, params.join(", "));
                    let mut query = sqlx::query_as::<_, EnrollmentRow>(&sql);
                    for key in chunk {
                        query = query.bind(key);
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        found.push(Enrollment::from_row(row)?);
                    }
                }
                Ok(found)
            }

            async fn count_enrollments(&self) -> Result<u64> {
                self.count::<EnrollmentRow>().await
            }

            async fn get_group(&self, group_id: &str) -> Result<Option<EnrollmentGroup>> {
                self.fetch(&[&key_of(group_id)]).await
            }

            async fn put_group(&self, group: EnrollmentGroup, cond: IfMatch, events: &[LifecycleEvent]) -> Result<EnrollmentGroup> {
                self.write(group, cond, events).await
            }

            async fn delete_group(&self, group_id: &str, cond: IfMatch, events: &[LifecycleEvent]) -> Result<()> {
                self.remove::<GroupRow>(&[&key_of(group_id)], cond, events).await
            }

            async fn list_groups(&self, query: &ListQuery) -> Result<Page<EnrollmentGroup>> {
                self.list(query, &ENROLLMENT_FILTERS).await
            }

            async fn count_groups(&self) -> Result<u64> {
                self.count::<GroupRow>().await
            }

            async fn list_hubs(&self) -> Result<Vec<LinkedHub>> {
                self.fetch_all().await
            }

            async fn get_hub(&self, host_name: &str) -> Result<Option<LinkedHub>> {
                self.fetch(&[&key_of(host_name)]).await
            }

            async fn put_hub(&self, hub: LinkedHub, cond: IfMatch, events: &[LifecycleEvent]) -> Result<LinkedHub> {
                self.write(hub, cond, events).await
            }

            async fn delete_hub(&self, host_name: &str, cond: IfMatch, events: &[LifecycleEvent]) -> Result<()> {
                self.remove::<HubRow>(&[&key_of(host_name)], cond, events).await
            }

            async fn get_registration(&self, registration_id: &str) -> Result<Option<RegistrationRecord>> {
                self.fetch(&[&key_of(registration_id)]).await
            }

            async fn put_registration(
                &self,
                record: RegistrationRecord,
                cond: IfMatch,
            ) -> Result<RegistrationRecord> {
                match cond {
                    IfMatch::Any => self.upsert_hot(record, HotRow::Registration).await,
                    cond => self.write(record, cond, &[]).await,
                }
            }

            async fn finish_registration(
                &self,
                identity: Option<HubDevice>,
                mut record: RegistrationRecord,
                operation: RegistrationOperation,
                issued: Option<IssuedCertificate>,
                events: &[LifecycleEvent],
            ) -> Result<RegistrationRecord> {
                let mut rows = vec![HotRow::Registration(record.to_row()?), HotRow::Operation(operation.to_row()?)];
                if let Some(device) = identity {
                    rows.push(HotRow::HubDevice(device.to_row()?));
                }
                if let Some(certificate) = issued {
                    rows.push(HotRow::Issued(certificate.to_row()?));
                }
                let events = self.wanted(events).await?.to_vec();
                let created = self.commit_hot(rows, events).await?;
                record.set_created(created[0]);
                Ok(record)
            }

            async fn delete_registration(&self, registration_id: &str, cond: IfMatch, events: &[LifecycleEvent]) -> Result<()> {
                self.remove::<RegistrationRow>(&[&key_of(registration_id)], cond, events).await
            }

            async fn list_registrations(&self, query: &ListQuery) -> Result<Page<RegistrationRecord>> {
                self.list(query, &REGISTRATION_FILTERS).await
            }

            async fn count_registrations(&self) -> Result<u64> {
                self.count::<RegistrationRow>().await
            }

            async fn get_operation(&self, operation_id: &str) -> Result<Option<RegistrationOperation>> {
                self.fetch(&[operation_id]).await
            }

            async fn put_operation(&self, operation: RegistrationOperation) -> Result<()> {
                self.upsert_hot(operation, HotRow::Operation).await.map(drop)
            }

            async fn put_operation_if_absent(&self, operation: RegistrationOperation) -> Result<()> {
                match self.write(operation, IfMatch::Absent, &[]).await {
                    Ok(_) | Err(StoreError::Conflict) => Ok(()),
                    Err(e) => Err(e),
                }
            }

            async fn delete_operations_before(&self, before: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM registration_operations WHERE created_at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn list_policies(&self) -> Result<Vec<AccessPolicy>> {
                self.fetch_all().await
            }

            async fn get_policy(&self, name: &str) -> Result<Option<AccessPolicy>> {
                self.fetch(&[&key_of(name)]).await
            }

            async fn put_policy(&self, policy: AccessPolicy, cond: IfMatch) -> Result<AccessPolicy> {
                self.write(policy, cond, &[]).await
            }

            async fn delete_policy(&self, name: &str, cond: IfMatch) -> Result<()> {
                self.remove::<PolicyRow>(&[&key_of(name)], cond, &[]).await
            }

            async fn list_ca_certificates(&self) -> Result<Vec<CaCertificate>> {
                self.fetch_all().await
            }

            async fn get_ca_certificate(&self, name: &str) -> Result<Option<CaCertificate>> {
                self.fetch(&[&key_of(name)]).await
            }

            async fn put_ca_certificate(&self, ca: CaCertificate, cond: IfMatch, events: &[LifecycleEvent]) -> Result<CaCertificate> {
                self.write(ca, cond, events).await
            }

            async fn delete_ca_certificate(&self, name: &str, cond: IfMatch) -> Result<()> {
                self.remove::<CaRow>(&[&key_of(name)], cond, &[]).await
            }

            async fn list_credential_policies(&self) -> Result<Vec<CredentialPolicy>> {
                self.fetch_all().await
            }

            async fn get_credential_policy(&self, name: &str) -> Result<Option<CredentialPolicy>> {
                self.fetch(&[&key_of(name)]).await
            }

            async fn put_credential_policy(&self, policy: CredentialPolicy, cond: IfMatch) -> Result<CredentialPolicy> {
                self.write(policy, cond, &[]).await
            }

            async fn delete_credential_policy(&self, name: &str, cond: IfMatch) -> Result<()> {
                self.remove::<CredentialPolicyRow>(&[&key_of(name)], cond, &[]).await
            }

            async fn list_issuers(&self) -> Result<Vec<CertificateIssuer>> {
                self.fetch_all().await
            }

            async fn get_issuer(&self, name: &str) -> Result<Option<CertificateIssuer>> {
                self.fetch(&[&key_of(name)]).await
            }

            async fn put_issuer(&self, issuer: CertificateIssuer, cond: IfMatch) -> Result<CertificateIssuer> {
                self.write(issuer, cond, &[]).await
            }

            async fn delete_issuer(&self, name: &str, cond: IfMatch) -> Result<()> {
                self.remove::<IssuerRow>(&[&key_of(name)], cond, &[]).await
            }

            async fn issued_certificates(&self, registration_id: &str) -> Result<Vec<IssuedCertificate>> {
                let sql = format!("{} WHERE device = $1 ORDER BY not_after DESC", IssuedRow::statements().select);
                let rows: Vec<IssuedRow> = sqlx::query_as(&sql)
                    .bind(key_of(registration_id))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(IssuedCertificate::from_row).collect()
            }

            async fn get_issued_certificate(&self, serial: &str) -> Result<Option<IssuedCertificate>> {
                self.fetch(&[&serial.to_ascii_lowercase()]).await
            }

            async fn revoke_certificates(&self, registration_id: &str, serial: Option<&str>, at: DateTime<Utc>) -> Result<Vec<IssuedCertificate>> {
                let columns = IssuedRow::statements().column_list();
                let rows: Vec<IssuedRow> = match serial {
                    Some(serial) => sqlx::query_as(&format!(
                        "UPDATE issued_certificates SET revoked_at = $3 WHERE device = $1 AND serial = $2 \
                         AND revoked_at IS NULL RETURNING {columns}"
                    ))
                    .bind(key_of(registration_id))
                    .bind(serial.to_ascii_lowercase())
                    .bind(at)
                    .fetch_all(&self.writer)
                    .await?,
                    None => sqlx::query_as(&format!(
                        "UPDATE issued_certificates SET revoked_at = $2 WHERE device = $1 \
                         AND revoked_at IS NULL RETURNING {columns}"
                    ))
                    .bind(key_of(registration_id))
                    .bind(at)
                    .fetch_all(&self.writer)
                    .await?,
                };
                rows.into_iter().map(IssuedCertificate::from_row).collect()
            }

            async fn revoked_certificates(&self, issuer: &str, now: DateTime<Utc>) -> Result<Vec<IssuedCertificate>> {
                let sql = format!(
                    "{} WHERE issuer = $1 AND revoked_at IS NOT NULL AND not_after > $2 ORDER BY serial",
                    IssuedRow::statements().select
                );
                let rows: Vec<IssuedRow> = sqlx::query_as(&sql)
                    .bind(issuer)
                    .bind(now)
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(IssuedCertificate::from_row).collect()
            }

            async fn get_hub_device(&self, hub: &str, device_id: &str) -> Result<Option<HubDevice>> {
                self.fetch(&[&key_of(hub), device_id]).await
            }

            async fn put_hub_device(&self, device: HubDevice, cond: IfMatch) -> Result<HubDevice> {
                match cond {
                    IfMatch::Any => self.upsert_hot(device, HotRow::HubDevice).await,
                    cond => self.write(device, cond, &[]).await,
                }
            }

            async fn delete_hub_device(&self, hub: &str, device_id: &str, cond: IfMatch) -> Result<()> {
                self.remove::<HubDeviceRow>(&[&key_of(hub), device_id], cond, &[]).await
            }

            async fn count_hub_devices(&self, hub: &str) -> Result<u64> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hub_devices WHERE hub = $1")
                    .bind(key_of(hub))
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n as u64)
            }

            async fn get_user(&self, username: &str) -> Result<Option<ConsoleUser>> {
                self.fetch(&[&key_of(username)]).await
            }

            async fn put_user(&self, user: ConsoleUser) -> Result<ConsoleUser> {
                self.write(user, IfMatch::Any, &[]).await
            }

            async fn list_users(&self) -> Result<Vec<ConsoleUser>> {
                self.fetch_all().await
            }

            async fn load_session(&self, id: &str) -> Result<Option<StoredSession>> {
                let row = sqlx::query("SELECT id, data, expires_at FROM console_sessions WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(|row| {
                    Ok(StoredSession {
                        id: row.try_get(0)?,
                        data: row.try_get(1)?,
                        expires: row.try_get(2)?,
                    })
                })
                .transpose()
            }

            async fn save_session(&self, session: &StoredSession) -> Result<()> {
                sqlx::query(
                    "INSERT INTO console_sessions (id, data, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at",
                )
                .bind(&session.id)
                .bind(&session.data)
                .bind(session.expires)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn delete_session(&self, id: &str) -> Result<()> {
                sqlx::query("DELETE FROM console_sessions WHERE id = $1").bind(id).execute(&self.writer).await?;
                Ok(())
            }

            async fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn put_tpm_challenge(&self, challenge: &TpmChallenge) -> Result<()> {
                sqlx::query(
                    "INSERT INTO tpm_challenges (registration_id, hmac_key, storage_root_key, expires_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (registration_id) DO UPDATE SET \
                     hmac_key = excluded.hmac_key, storage_root_key = excluded.storage_root_key, \
                     expires_at = excluded.expires_at",
                )
                .bind(key_of(&challenge.registration_id))
                .bind(&challenge.hmac_key)
                .bind(&challenge.storage_root_key)
                .bind(challenge.expires)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_tpm_challenge(
                &self,
                registration_id: &str,
                now: DateTime<Utc>,
            ) -> Result<Option<TpmChallenge>> {
                let row = sqlx::query(
                    "SELECT registration_id, hmac_key, storage_root_key, expires_at FROM tpm_challenges \
                     WHERE registration_id = $1 AND expires_at >= $2",
                )
                .bind(key_of(registration_id))
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| {
                    Ok(TpmChallenge {
                        registration_id: row.try_get(0)?,
                        hmac_key: row.try_get(1)?,
                        storage_root_key: row.try_get(2)?,
                        expires: row.try_get(3)?,
                    })
                })
                .transpose()
            }

            async fn delete_expired_tpm_challenges(&self, now: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM tpm_challenges WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn put_fault_injection(
                &self,
                target: &EnrollmentRef,
                fault: &FaultInjection,
            ) -> Result<()> {
                sqlx::query(
                    "INSERT INTO fault_injections (target, spec, remaining, updated_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (target) DO UPDATE SET \
                     spec = excluded.spec, remaining = excluded.remaining, updated_at = excluded.updated_at",
                )
                .bind(fault_key(target))
                .bind(fault_to_json(fault)?)
                .bind(i64::from(fault.remaining))
                .bind(Utc::now())
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_fault_injection(
                &self,
                target: &EnrollmentRef,
            ) -> Result<Option<FaultInjection>> {
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT spec, remaining FROM fault_injections WHERE target = $1")
                        .bind(fault_key(target))
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(|(spec, remaining)| fault_from_row(&spec, remaining)).transpose()
            }

            async fn delete_fault_injection(&self, target: &EnrollmentRef) -> Result<bool> {
                let done = sqlx::query("DELETE FROM fault_injections WHERE target = $1")
                    .bind(fault_key(target))
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn live_fault_targets(&self) -> Result<Vec<String>> {
                Ok(sqlx::query_scalar("SELECT target FROM fault_injections WHERE remaining > 0")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn take_fault_injection(
                &self,
                target: &EnrollmentRef,
            ) -> Result<Option<FaultInjection>> {
                let row: Option<(String, i64)> = sqlx::query_as(
                    "UPDATE fault_injections SET remaining = remaining - 1 \
                     WHERE target = $1 AND remaining > 0 RETURNING spec, remaining",
                )
                .bind(fault_key(target))
                .fetch_optional(&self.writer)
                .await?;
                row.map(|(spec, remaining)| fault_from_row(&spec, remaining)).transpose()
            }

            async fn append_registration_events(&self, events: &[&RegistrationEvent]) -> Result<()> {
                for chunk in batches(events) {
                    let mut sql = String::from(
                        "INSERT INTO registration_events (at, minute, tracking_id, registration_id, protocol, \
                         attestation_type, enrollment, hub, status, error_code, error_message, latency_ms) VALUES ",
                    );
                    for i in 0..chunk.len() {
                        let n = i * 12;
                        let params: Vec<String> = (1..=12).map(|k| format!("${}", n + k)).collect();
                        sql.push_str(if i == 0 { "(" } else { ", (" });
                        sql.push_str(&params.join(", "));
                        sql.push(')');
                    }
                    let mut query = sqlx::query(&sql);
                    for e in chunk {
                        query = query
                            .bind(e.at)
                            .bind(e.at.timestamp().div_euclid(60))
                            .bind(&e.tracking_id)
                            .bind(&e.registration_id)
                            .bind(e.protocol.as_str())
                            .bind(e.attestation.map(|a| a.as_str()))
                            .bind(e.enrollment.as_ref().map(|r| r.label()))
                            .bind(&e.hub)
                            .bind(e.status.as_str())
                            .bind(e.error_code)
                            .bind(&e.error_message)
                            .bind(i64::try_from(e.latency_ms).unwrap_or(i64::MAX));
                    }
                    query.execute(&self.writer).await?;
                }
                Ok(())
            }

            async fn registration_minutes(&self, since: DateTime<Utc>) -> Result<Vec<MinuteCount>> {
                let rows: Vec<(i64, String, i64)> = sqlx::query_as(
                    "SELECT minute, status, COUNT(*) FROM registration_events WHERE minute >= $1 \
                     GROUP BY minute, status ORDER BY minute",
                )
                .bind(since.timestamp().div_euclid(60))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(minute, status, count)| {
                        Ok(MinuteCount {
                            minute,
                            status: RegistrationStatus::parse(&status)
                                .ok_or_else(|| StoreError::Corrupt(format!("event status {status:?}")))?,
                            count: u64::try_from(count).unwrap_or(0),
                        })
                    })
                    .collect()
            }

            async fn recent_failures(&self, limit: u32) -> Result<Vec<RecordedFailure>> {
                let rows: Vec<(DateTime<Utc>, String, String, String, Option<i64>, Option<String>)> = sqlx::query_as(
                    "SELECT at, registration_id, protocol, status, error_code, error_message FROM registration_events \
                     WHERE status IN ('failed', 'disabled') ORDER BY id DESC LIMIT $1",
                )
                .bind(i64::from(limit.min(MAX_PAGE)))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(at, registration_id, protocol, status, error_code, error_message)| {
                        Ok(RecordedFailure {
                            at,
                            registration_id,
                            protocol,
                            status: RegistrationStatus::parse(&status)
                                .ok_or_else(|| StoreError::Corrupt(format!("event status {status:?}")))?,
                            error_code,
                            error_message,
                        })
                    })
                    .collect()
            }

            async fn delete_registration_events_before(&self, before: DateTime<Utc>) -> Result<u64> {
                let done = sqlx::query("DELETE FROM registration_events WHERE at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn events_after(&self, seq: i64, limit: u32) -> Result<Vec<StoredEvent>> {
                let rows: Vec<LifecycleEventRow> = sqlx::query_as(
                    "SELECT seq, id, type, at, resource FROM lifecycle_events WHERE seq > $1 ORDER BY seq LIMIT $2",
                )
                .bind(seq)
                .bind(i64::from(limit.min(MAX_PAGE)))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(LifecycleEventRow::into_domain).collect()
            }

            async fn last_event_seq(&self) -> Result<i64> {
                Ok(sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM lifecycle_events")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn delete_old_events(&self, delivered_before: DateTime<Utc>, any_before: DateTime<Utc>) -> Result<u64> {
                // With no sink, nothing waits for an event: MIN over no rows is NULL, so COALESCE
                // lets every old one go.
                let done = sqlx::query(
                    "DELETE FROM lifecycle_events WHERE at < $2 OR (at < $1 AND seq <= \
                     (SELECT COALESCE(MIN(delivered_seq), 9223372036854775807) FROM event_sinks))",
                )
                .bind(delivered_before)
                .bind(any_before)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected())
            }

            async fn list_event_sinks(&self) -> Result<Vec<EventSink>> {
                let rows: Vec<EventSinkRow> = sqlx::query_as(&format!("SELECT {EVENT_SINK_COLUMNS} FROM event_sinks ORDER BY name"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.into_iter().map(EventSinkRow::into_domain).collect()
            }

            async fn get_event_sink(&self, name: &str) -> Result<Option<EventSink>> {
                let row: Option<EventSinkRow> = sqlx::query_as(&format!("SELECT {EVENT_SINK_COLUMNS} FROM event_sinks WHERE name = $1"))
                    .bind(name)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(EventSinkRow::into_domain).transpose()
            }

            async fn put_event_sink(&self, name: &str, target: &SinkTarget, enabled: bool) -> Result<EventSink> {
                let now = Utc::now();
                let row: EventSinkRow = sqlx::query_as(&format!(
                    "INSERT INTO event_sinks (name, target, enabled, delivered_seq, created_at, updated_at) \
                     VALUES ($1, $2, $3, (SELECT COALESCE(MAX(seq), 0) FROM lifecycle_events), $4, $4) \
                     ON CONFLICT (name) DO UPDATE SET target = excluded.target, enabled = excluded.enabled, \
                     updated_at = excluded.updated_at RETURNING {EVENT_SINK_COLUMNS}"
                ))
                .bind(name)
                .bind(sink_target_json(target)?)
                .bind(enabled)
                .bind(now)
                .fetch_one(&self.writer)
                .await?;
                *self.sinks_seen.lock().unwrap() = None;
                row.into_domain()
            }

            async fn delete_event_sink(&self, name: &str) -> Result<bool> {
                let done = sqlx::query("DELETE FROM event_sinks WHERE name = $1")
                    .bind(name)
                    .execute(&self.writer)
                    .await?;
                *self.sinks_seen.lock().unwrap() = None;
                Ok(done.rows_affected() > 0)
            }

            async fn lease_event_sink(&self, name: &str, owner: &str, now: DateTime<Utc>, until: DateTime<Utc>) -> Result<Option<i64>> {
                Ok(sqlx::query_scalar(
                    "UPDATE event_sinks SET lease_owner = $2, lease_until = $4 WHERE name = $1 AND enabled \
                     AND (lease_owner IS NULL OR lease_owner = $2 OR lease_until < $3) RETURNING delivered_seq",
                )
                .bind(name)
                .bind(owner)
                .bind(now)
                .bind(until)
                .fetch_optional(&self.writer)
                .await?)
            }

            async fn event_sink_delivered(&self, name: &str, seq: i64, at: DateTime<Utc>) -> Result<()> {
                sqlx::query(
                    "UPDATE event_sinks SET delivered_seq = $2, delivered_at = $3, last_error = NULL, \
                     failing_since = NULL, failures = 0 WHERE name = $1 AND delivered_seq < $2",
                )
                .bind(name)
                .bind(seq)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn event_sink_failed(&self, name: &str, error: &str, at: DateTime<Utc>) -> Result<()> {
                sqlx::query(
                    "UPDATE event_sinks SET last_error = $2, failing_since = COALESCE(failing_since, $3), \
                     failures = failures + 1 WHERE name = $1",
                )
                .bind(name)
                .bind(error)
                .bind(at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditEntry> {
                let row: AuditRow = sqlx::query_as(
                    "INSERT INTO audit_log (at, actor, front_end, address, action, target, before, after) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                     RETURNING id, at, actor, front_end, address, action, target, before, after",
                )
                .bind(Utc::now())
                .bind(entry.actor.name)
                .bind(entry.actor.front_end.as_str())
                .bind(entry.actor.address)
                .bind(entry.action)
                .bind(entry.target)
                .bind(opt_to_json(&entry.before)?)
                .bind(opt_to_json(&entry.after)?)
                .fetch_one(&self.writer)
                .await?;
                row.into_domain()
            }

            async fn recent_audit(&self, limit: u32) -> Result<Vec<AuditEntry>> {
                let rows: Vec<AuditRow> = sqlx::query_as(
                    "SELECT id, at, actor, front_end, address, action, target, before, after FROM audit_log ORDER BY id DESC LIMIT $1",
                )
                .bind(i64::from(limit.min(MAX_PAGE)))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(AuditRow::into_domain).collect()
            }
        }
    };
}

sql_store!(SqliteStore, Sqlite, DatabaseKind::Sqlite);
sql_store!(PostgresStore, Postgres, DatabaseKind::Postgres);

impl SqliteStore {
    /// One instance per SQLite file: no one to follow.
    async fn listen_for_peers(
        _: &sqlx::SqlitePool,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>> {
        Ok(None)
    }
}

impl PostgresStore {
    /// A connection of its own that LISTENs; the listener reconnects by itself after a lost
    /// connection (what was sent meanwhile is lost: notifications are best effort).
    async fn listen_for_peers(
        pool: &sqlx::PgPool,
    ) -> Result<Option<tokio::sync::mpsc::Receiver<String>>> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener.listen(PEERS_CHANNEL).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    _ = sender.closed() => return,
                    received = listener.recv() => received,
                };
                match received {
                    Ok(notification) => {
                        if sender
                            .send(notification.payload().to_string())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "peer notifications interrupted; reconnecting");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Some(receiver))
    }
}
