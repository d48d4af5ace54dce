//! Serves the Leptos console: server-rendered pages, server functions, the built assets under
//! `/pkg`, and sign-in and sign-out, all behind the session guard (console_auth).

use std::sync::Arc;

use app::backend::SharedBackend;
use app::{App, shell};
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::{get, post};
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::{ServeDir, ServeFile};

use super::{console_auth, console_live};
use crate::service::AppState;

/// The name the console's wasm, JS and CSS are built under (scripts/build-site.sh).
pub const OUTPUT_NAME: &str = "onramp";

pub fn router(state: AppState) -> Router {
    let site_root = state.config.site_root.clone();
    let max_body = state.config.limits.max_body_bytes;
    let options = LeptosOptions::builder()
        .output_name(OUTPUT_NAME)
        .site_root(site_root.display().to_string())
        .site_pkg_dir("pkg")
        .build();
    let backend: SharedBackend = Arc::new(state.clone());
    let context = move || provide_context(backend.clone());
    let server_fns = {
        let context = context.clone();
        move |request: Request<Body>| handle_server_fns_with_context(context.clone(), request)
    };
    Router::new()
        .leptos_routes_with_context(&options, generate_route_list(App), context, {
            let options = options.clone();
            move || shell(options.clone())
        })
        .route("/api/{*fn_name}", post(server_fns.clone()).get(server_fns))
        .nest_service("/pkg", ServeDir::new(site_root.join("pkg")))
        .route_service(
            "/favicon.svg",
            ServeFile::new(site_root.join("favicon.svg")),
        )
        .with_state(options)
        .merge(
            Router::new()
                .route("/login", post(console_auth::login))
                .route("/logout", post(console_auth::logout))
                .route("/console/events", get(console_live::events))
                .with_state(state.clone()),
        )
        // Route layers: a path no route matches is a plain 404, with no session work.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            console_auth::guard,
        ))
        .route_layer(console_auth::session_layer(state.store.clone()))
        .layer(RequestBodyLimitLayer::new(max_body))
}
