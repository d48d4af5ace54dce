//! The HTTPS front end: health endpoints, the device, service, admin and credentials APIs, CRLs,
//! the built-in hubs' REST subset, the console, and MQTT and AMQP over WebSocket (an upgrade on
//! any path).

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use tower::ServiceExt;
use tower_http::trace::TraceLayer;

use super::websocket::{self, WebSocketSessions};
use crate::state::AppState;

pub fn router(state: AppState, mqtt_sessions: WebSocketSessions) -> Router {
    let routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/crl/{file}", get(super::credentials_api::crl))
        .with_state(state.clone())
        .merge(super::device_api::router(state.clone()))
        .merge(super::service_api::router(state.clone()))
        .merge(super::admin_api::router(state.clone()))
        .merge(super::credentials_api::router(state.clone()))
        .merge(super::hub_api::router(state.clone()))
        .merge(super::openapi::router())
        .merge(super::console::router(state));
    // Service paths are case-insensitive: canonicalise them before routing.
    Router::new()
        .fallback_service(routes.map_request(super::service_api::canonical_path))
        .layer(axum::middleware::from_fn_with_state(
            mqtt_sessions,
            websocket::intercept,
        ))
        .layer(TraceLayer::new_for_http())
}

/// Alive: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Ready: the store answers and no shutdown has begun, so requests can be served.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.draining.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match state.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "store not reachable");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable")
        }
    }
}
