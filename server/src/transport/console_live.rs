//! The console's live diagnostics log: registration events from the diagnostics bus, streamed to
//! the browser as server-sent events while they happen. A browser that falls behind is told how
//! many events it missed instead of slowing registrations down.

use std::convert::Infallible;
use std::time::Duration;

use app::model::LiveEvent;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use crate::diagnostics::RegistrationEvent;
use crate::proto::timestamp;
use crate::service::AppState;

/// GET /console/events (behind the console's sign-in guard). The subscription ends when the
/// browser goes away: the response body, and with it the receiver, is dropped.
pub async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures::stream::unfold(state.bus.subscribe(), |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(event) => Event::default()
                .event("registration")
                .json_data(live_event(&event))
                .ok()?,
            Err(RecvError::Lagged(missed)) => {
                Event::default().event("missed").data(missed.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

pub fn live_event(e: &RegistrationEvent) -> LiveEvent {
    LiveEvent {
        at: timestamp(e.at),
        registration_id: e.registration_id.clone(),
        protocol: e.protocol.as_str().into(),
        attestation: e.attestation.map(|a| a.as_str().into()),
        enrollment: e.enrollment.as_ref().map(|r| r.label()),
        hub: e.hub.clone(),
        status: e.status.as_str().into(),
        error_code: e.error_code,
        error_message: e.error_message.clone(),
        hint: e.hint().map(String::from),
        latency_ms: e.latency_ms,
    }
}
