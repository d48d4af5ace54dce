//! The console's live diagnostics log: registration events and built-in hub events (connections,
//! refusals, twin changes) from the diagnostics bus, streamed to the browser as server-sent events
//! while they happen, this instance's and those of the others on the same database. A browser that falls behind is told how many events it missed instead of
//! slowing registrations down.

use std::convert::Infallible;
use std::time::Duration;

use app::model::LiveEvent;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::diagnostics::{HubActivity, HubEvent, RegistrationEvent};
use crate::proto::timestamp;
use crate::state::AppState;

/// GET /console/events (behind the console's sign-in guard). The subscription ends when the
/// browser goes away: the response body, and with it the receiver, is dropped.
pub async fn events(
    State(state): State<AppState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let registrations = forward(state.bus.subscribe(), "registration", live_event);
    let hub = forward(state.bus.subscribe_hub(), "hub", hub_event);
    // Other instances on the same database (`coordination`) show in the same log.
    let (peers, peers_hub) = state.bus.subscribe_peers();
    let peers = forward(peers, "registration", live_event);
    let peers_hub = forward(peers_hub, "hub", hub_event);
    let stream = futures::stream::select_all([
        registrations.boxed(),
        hub.boxed(),
        peers.boxed(),
        peers_hub.boxed(),
    ]);
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// One bus subscription as server-sent events named `name`.
fn forward<T: Send + Sync + 'static>(
    receiver: broadcast::Receiver<Arc<T>>,
    name: &'static str,
    render: fn(&T) -> LiveEvent,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(receiver, move |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(event) => Event::default()
                .event(name)
                .json_data(render(&event))
                .ok()?,
            Err(RecvError::Lagged(missed)) => {
                Event::default().event("missed").data(missed.to_string())
            }
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    })
}

/// A hub event in the live log's shape: the device ID in the ID column, what happened as the
/// status, and for a refused connection the reason with a hint.
pub fn hub_event(e: &HubEvent) -> LiveEvent {
    let (status, refusal) = match &e.activity {
        HubActivity::Connected => ("connected", None),
        HubActivity::Refused { reason } => ("refused", Some(reason.clone())),
        HubActivity::Disconnected => ("disconnected", None),
        HubActivity::Replaced => ("replaced", None),
        HubActivity::ReportedPatched { .. } => ("reported", None),
        HubActivity::DesiredPatched { .. } => ("desired", None),
    };
    let hint = refusal.as_ref().map(|_| {
        "The device could not sign in to its hub: check its key or certificate, and that its \
         identity exists and is enabled on that hub."
            .to_string()
    });
    LiveEvent {
        at: timestamp(e.at),
        registration_id: e.device_id.clone(),
        protocol: e.protocol.as_str().into(),
        attestation: None,
        enrollment: None,
        hub: Some(e.hub.clone()),
        status: status.into(),
        error_code: refusal.as_ref().map(|_| 401),
        error_message: refusal,
        hint,
        latency_ms: 0,
    }
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
        hint: e.fault.clone().or_else(|| e.hint().map(String::from)),
        latency_ms: e.latency_ms,
    }
}
