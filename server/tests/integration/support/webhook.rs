//! A custom-allocation webhook for tests: a real HTTP server on a free port that records each
//! request and answers with a fixed reply (after an optional delay).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use serde_json::Value;

/// The webhook's URL (with a `code` key, as Azure Functions URLs carry) and the requests it saw.
pub type Webhook = (String, Arc<Mutex<Vec<Value>>>);

/// A custom-allocation webhook on a free port that records requests and answers with `reply`.
pub async fn webhook(status: u16, reply: Value) -> Webhook {
    slow_webhook(status, reply, Duration::ZERO).await
}

pub async fn slow_webhook(status: u16, reply: Value, delay: Duration) -> Webhook {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/allocate",
        post(move |Json(request): Json<Value>| {
            let log = log.clone();
            let reply = reply.clone();
            async move {
                log.lock().unwrap().push(request);
                tokio::time::sleep(delay).await;
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    Json(reply),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/allocate?code=s3cret",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}
