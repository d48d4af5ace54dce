//! Keeps the store bounded: finished registration operations are only needed while their device
//! polls, console sessions and TPM challenges only until they expire. One sweep runs at start and then every few
//! minutes; on a shared database one instance sweeps per period, for all. Registration events are kept a
//! week; lifecycle events an hour after every sink has them, and a week at most.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::store::{Store, StoreError};

pub const EVERY: Duration = Duration::from_secs(300);
/// How much earlier than `EVERY` an instance's next sweep may come and still be its turn.
const DRIFT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub operations: u64,
    pub sessions: u64,
    pub tpm_challenges: u64,
    pub events: u64,
    pub lifecycle_events: u64,
}

/// Registration events (dashboard history) are kept this long.
pub const EVENT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Lifecycle events every sink has delivered are kept this long, to look into; undelivered ones up
/// to `EVENT_RETENTION`, after which a sink down that long misses them.
pub const DELIVERED_EVENT_RETENTION: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Forgets operations created more than `retention` before `now`, expired sessions and TPM
/// challenges, and week-old registration events.
pub async fn sweep(
    store: &dyn Store,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<Swept, StoreError> {
    let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::hours(1));
    Ok(Swept {
        operations: store.delete_operations_before(cutoff).await?,
        sessions: store.delete_expired_sessions(now).await?,
        tpm_challenges: store.delete_expired_tpm_challenges(now).await?,
        events: store
            .delete_registration_events_before(now - EVENT_RETENTION)
            .await?,
        lifecycle_events: store
            .delete_old_events(now - DELIVERED_EVENT_RETENTION, now - EVENT_RETENTION)
            .await?,
    })
}

/// Sweeps unless another instance on the same database swept in this period (`EVERY`, less a
/// little for timers that drift); None when it was another's turn.
pub async fn sweep_if_due(
    store: &dyn Store,
    now: DateTime<Utc>,
    retention: Duration,
) -> Result<Option<Swept>, StoreError> {
    let period = chrono::Duration::from_std(EVERY - DRIFT).expect("a short period");
    if !store
        .claim_periodic_run("janitor", now, now - period)
        .await?
    {
        return Ok(None);
    }
    sweep(store, now, retention).await.map(Some)
}

pub async fn run(store: Arc<dyn Store>, retention: Duration, shutdown: CancellationToken) {
    loop {
        match sweep_if_due(store.as_ref(), Utc::now(), retention).await {
            Ok(Some(swept)) if swept != Swept::default() => {
                tracing::debug!(?swept, "janitor swept")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "janitor sweep failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
