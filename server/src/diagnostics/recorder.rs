//! Keeps registration events in the store for the dashboard (per-minute counts, latest failures).
//! Events are written in batches, at most every quarter second, so recording costs a registration
//! nothing on its own path; a recorder that falls behind skips events rather than slowing the bus.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::{DiagnosticsBus, RegistrationEvent};
use crate::store::Store;

const FLUSH_EVERY: Duration = Duration::from_millis(250);
const MAX_BATCH: usize = 1_000;

pub async fn run(store: Arc<dyn Store>, bus: DiagnosticsBus, shutdown: CancellationToken) {
    let mut events = bus.subscribe();
    let mut batch: Vec<Arc<RegistrationEvent>> = Vec::new();
    loop {
        let deadline = tokio::time::sleep(FLUSH_EVERY);
        tokio::pin!(deadline);
        // Gather until the deadline or a full batch.
        let stop = loop {
            tokio::select! {
                _ = shutdown.cancelled() => break true,
                _ = &mut deadline => break false,
                received = events.recv() => match received {
                    Ok(event) => {
                        batch.push(event);
                        if batch.len() >= MAX_BATCH {
                            break false;
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "diagnostics recorder fell behind; events not recorded");
                    }
                    Err(RecvError::Closed) => break true,
                },
            }
        };
        if stop {
            // Events already on the bus when the stop came are kept too.
            while let Ok(event) = events.try_recv() {
                batch.push(event);
            }
        }
        flush(store.as_ref(), &mut batch).await;
        if stop {
            return;
        }
    }
}

async fn flush(store: &dyn Store, batch: &mut Vec<Arc<RegistrationEvent>>) {
    if batch.is_empty() {
        return;
    }
    let events: Vec<&RegistrationEvent> = batch.iter().map(Arc::as_ref).collect();
    if let Err(e) = store.append_registration_events(&events).await {
        tracing::warn!(error = %e, count = events.len(), "registration events not recorded");
    }
    batch.clear();
}
