//! Serves the Leptos console: server-rendered pages, server functions, the built assets under
//! `/pkg`, the live log, and sign-in and sign-out, all behind the session guard (`auth`).
//! `backend` answers the pages' server functions through the domain; `forms` reads what they
//! send and `views` shapes what they show.

mod auth;
mod backend;
mod forms;
mod headers;
mod live;
mod sessions;
mod views;

use std::path::Path;
use std::sync::Arc;

use app::backend::SharedBackend;
use app::{App, SiteAssets, shell};
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use axum::routing::{get, post};
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::{ServeDir, ServeFile};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::state::AppState;

/// The name the console's wasm, JS and CSS are built under (scripts/build-site.sh).
pub const OUTPUT_NAME: &str = "onramp";

pub fn router(state: AppState) -> Router {
    headers::secured(pages(state))
}

fn pages(state: AppState) -> Router {
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
            let assets = site_assets(&site_root);
            move || {
                headers::set_page_policy();
                shell(assets.clone())
            }
        })
        .route("/api/{*fn_name}", post(server_fns.clone()).get(server_fns))
        .nest_service("/pkg", built_assets(&site_root))
        .route_service(
            "/favicon.svg",
            ServeFile::new(site_root.join("favicon.svg")),
        )
        .with_state(options)
        .merge(
            Router::new()
                .route("/login", post(auth::login))
                .route("/logout", post(auth::logout))
                .route("/console/events", get(live::events))
                .with_state(state.clone()),
        )
        // Route layers: a path no route matches is a plain 404, with no session work.
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .route_layer(sessions::session_layer(state.store.clone()))
        .layer(RequestBodyLimitLayer::new(max_body))
        // Pages and server function answers change with every visit: revalidate them.
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        ))
}

/// The names scripts/build-site.sh gave the console's files (`pkg/assets.json`).
fn site_assets(site_root: &Path) -> SiteAssets {
    let manifest = site_root.join("pkg").join("assets.json");
    match std::fs::read(&manifest) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %manifest.display(), error = %e, "unreadable asset list; plain names used");
            SiteAssets::default()
        }),
        Err(_) => SiteAssets::default(),
    }
}

/// `/pkg`: the built files, sent as their `.br` or `.gz` sibling when the browser takes it. Their
/// names change with their content, so a browser keeps them for a year without asking again.
fn built_assets(site_root: &Path) -> Router {
    let files = ServeDir::new(site_root.join("pkg"))
        .precompressed_br()
        .precompressed_gzip();
    Router::new()
        .fallback_service(files)
        .layer(axum::middleware::map_response(cache_for_good))
}

async fn cache_for_good(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    // Only a file that exists: a 404 must not stick in the browser's cache.
    if response.status().is_success() {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
    }
    response
}
