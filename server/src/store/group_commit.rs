//! Group commit for the registration path's writes (hub identities, registration records,
//! operations). Concurrent registrations each wait for their own commit, but their rows go to the
//! database together: one transaction and one multi-row upsert per table for all that queued
//! while the previous batch ran. On SQLite, whose single writer connection lives on its own
//! thread, one statement per write meant a thread round trip and a commit per row; those
//! hand-offs, not SQL, bounded registrations per second.
//!
//! This module gathers and sorts the rows; `sql.rs` runs them, once per database.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};

use super::rows::{HubDeviceRow, IssuedRow, OperationRow, RegistrationRow, Row};
use super::{Result, StoreError};
use crate::model::LifecycleEvent;

/// Jobs taken into one transaction at most.
pub(super) const MAX_JOBS: usize = 256;

/// A row the group commit writes, "insert or replace all but `created_at`".
#[derive(Clone)]
pub(super) enum HotRow {
    HubDevice(HubDeviceRow),
    Registration(RegistrationRow),
    Operation(OperationRow),
    Issued(IssuedRow),
}

/// Rows that must land in the same transaction, and the caller waiting for their `created_at`s.
pub(super) struct Job {
    pub rows: Vec<HotRow>,
    /// Lifecycle events for the outbox, committed with the rows.
    pub events: Vec<LifecycleEvent>,
    pub done: oneshot::Sender<Result<Vec<DateTime<Utc>>>>,
}

/// Queues jobs for the writer task. Unbounded is safe: every job has a caller awaiting it, so the
/// queue is never longer than the number of registrations in flight.
pub(super) type Queue = mpsc::UnboundedSender<Job>;

/// Queues `rows` and waits for their commit.
pub(super) async fn commit(
    queue: &Queue,
    rows: Vec<HotRow>,
    events: Vec<LifecycleEvent>,
) -> Result<Vec<DateTime<Utc>>> {
    let (done, committed) = oneshot::channel();
    queue
        .send(Job { rows, events, done })
        .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?;
    committed
        .await
        .map_err(|_| StoreError::Database(sqlx::Error::PoolClosed))?
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Table {
    HubDevices,
    Registrations,
    Operations,
    Issued,
}

/// One table's rows of a batch, each key once.
pub(super) struct TableRows<R> {
    pub rows: Vec<R>,
    index: HashMap<String, usize>,
}

impl<R: Row> TableRows<R> {
    fn new() -> Self {
        TableRows {
            rows: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Adds `row`; a later row for the same key replaces the earlier one, which the same commit
    /// would have overwritten anyway (and PostgreSQL refuses one upsert touching a row twice).
    fn add(&mut self, row: R) -> String {
        let key = row.full_key();
        match self.index.get(&key) {
            Some(&at) => self.rows[at] = row,
            None => {
                self.index.insert(key.clone(), self.rows.len());
                self.rows.push(row);
            }
        }
        key
    }
}

/// The rows of several jobs, by table, and where each job's rows went.
pub(super) struct Batch {
    pub hub_devices: TableRows<HubDeviceRow>,
    pub registrations: TableRows<RegistrationRow>,
    pub operations: TableRows<OperationRow>,
    pub issued: TableRows<IssuedRow>,
    pub events: Vec<LifecycleEvent>,
    slots: Vec<Vec<(Table, String)>>,
}

impl Batch {
    pub fn of(jobs: &[Job]) -> Batch {
        let mut batch = Batch {
            hub_devices: TableRows::new(),
            registrations: TableRows::new(),
            operations: TableRows::new(),
            issued: TableRows::new(),
            events: Vec::new(),
            slots: Vec::with_capacity(jobs.len()),
        };
        for job in jobs {
            batch.events.extend(job.events.iter().cloned());
            let slots = job
                .rows
                .iter()
                .map(|row| match row.clone() {
                    HotRow::HubDevice(r) => (Table::HubDevices, batch.hub_devices.add(r)),
                    HotRow::Registration(r) => (Table::Registrations, batch.registrations.add(r)),
                    HotRow::Operation(r) => (Table::Operations, batch.operations.add(r)),
                    HotRow::Issued(r) => (Table::Issued, batch.issued.add(r)),
                })
                .collect();
            batch.slots.push(slots);
        }
        batch
    }

    /// Hands each job its rows' `created_at`s from what the statements returned.
    pub fn reply(self, jobs: Vec<Job>, created: &Created) {
        for (job, slots) in jobs.into_iter().zip(self.slots) {
            let found: Result<Vec<_>> = slots
                .iter()
                .map(|(table, key)| {
                    created.of(*table).get(key).copied().ok_or_else(|| {
                        StoreError::Corrupt("a committed row was not returned".into())
                    })
                })
                .collect();
            let _ = job.done.send(found);
        }
    }
}

/// `created_at` of every committed row, by table and key.
#[derive(Default)]
pub(super) struct Created {
    pub hub_devices: HashMap<String, DateTime<Utc>>,
    pub registrations: HashMap<String, DateTime<Utc>>,
    pub operations: HashMap<String, DateTime<Utc>>,
    pub issued: HashMap<String, DateTime<Utc>>,
}

impl Created {
    fn of(&self, table: Table) -> &HashMap<String, DateTime<Utc>> {
        match table {
            Table::HubDevices => &self.hub_devices,
            Table::Registrations => &self.registrations,
            Table::Operations => &self.operations,
            Table::Issued => &self.issued,
        }
    }
}
