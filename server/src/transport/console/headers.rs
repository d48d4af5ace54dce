//! Security headers on everything the console sends: pages get a Content Security Policy whose
//! only inline script is the one carrying this response's nonce (leptos_axum draws one per
//! request and puts it on its own inline scripts; the shell's hydration script takes it too);
//! every response forbids framing and MIME sniffing and asks for HTTPS from now on.

use axum::Router;
use axum::http::{HeaderValue, header};
use leptos::nonce::use_nonce;
use leptos::prelude::use_context;
use leptos_axum::ResponseOptions;
use tower_http::set_header::SetResponseHeaderLayer;

/// The policy of a page: scripts from this site and the nonce's inline one, WebAssembly
/// compilation, styles from this site (Leptos sets `style` attributes), no plugins, no framing,
/// forms and fetches to this site only.
pub fn page_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// Called while a page renders: its response gets the policy with its nonce.
pub fn set_page_policy() {
    let (Some(nonce), Some(response)) = (use_nonce(), use_context::<ResponseOptions>()) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&page_policy(&nonce)) {
        response.insert_header(header::CONTENT_SECURITY_POLICY, value);
    }
}

/// What every console response carries (a page's own policy is kept).
pub fn secured(router: Router) -> Router {
    let always = [
        (
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ];
    let router = always.into_iter().fold(router, |router, (name, value)| {
        router.layer(SetResponseHeaderLayer::overriding(
            name,
            HeaderValue::from_static(value),
        ))
    });
    // Anything that is not a page (server function answers, assets, redirects) runs no script.
    router.layer(SetResponseHeaderLayer::if_not_present(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ))
}
