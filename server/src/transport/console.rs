//! Serves the Leptos console: server-rendered pages, server functions, and the built assets under
//! `/pkg`. Implements the console's backend on the domain services.

use std::sync::Arc;

use app::backend::{BackendFuture, ConsoleBackend, SharedBackend};
use app::model::{HubSummary, InstanceSummary};
use app::{App, shell};
use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::post;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::{ServeDir, ServeFile};

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
    let backend: SharedBackend = Arc::new(state);
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
        .layer(RequestBodyLimitLayer::new(max_body))
}

impl ConsoleBackend for AppState {
    fn summary(&self) -> BackendFuture<'_, InstanceSummary> {
        Box::pin(async move {
            let store = &self.store;
            let failed = |e: crate::store::StoreError| e.to_string();
            let mut hubs = Vec::new();
            for hub in store.list_hubs().await.map_err(failed)? {
                hubs.push(HubSummary {
                    devices: store
                        .count_hub_devices(&hub.host_name)
                        .await
                        .map_err(failed)?,
                    host_name: hub.host_name,
                    connector: hub.connector.as_str().into(),
                    region: hub.region,
                    allocation_weight: hub.allocation_weight,
                });
            }
            Ok(InstanceSummary {
                id_scope: self.instance.id_scope.clone(),
                enrollments: store.count_enrollments().await.map_err(failed)?,
                groups: store.count_groups().await.map_err(failed)?,
                registrations: store.count_registrations().await.map_err(failed)?,
                hubs,
            })
        })
    }
}
