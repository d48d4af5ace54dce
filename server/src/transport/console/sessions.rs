//! Console sessions: the cookie, how long a session lives, and what it remembers of its user.
//! The rows are kept by the store (`store::sessions`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::store::Store;
use crate::store::sessions::StoreSessions;

pub const COOKIE: &str = "onramp_session";
/// A session ends after this long without a request.
pub(super) const IDLE_EXPIRY: time::Duration = time::Duration::hours(8);
/// A visitor who never signs in is forgotten sooner.
pub(super) const ANONYMOUS_EXPIRY: time::Duration = time::Duration::minutes(15);
/// HttpOnly, Secure, SameSite=Strict session cookies that expire after 8 idle hours.
pub fn session_layer(store: Arc<dyn Store>) -> SessionManagerLayer<StoreSessions> {
    SessionManagerLayer::new(StoreSessions(store))
        .with_name(COOKIE)
        .with_secure(true)
        .with_http_only(true)
        .with_same_site(SameSite::Strict)
        .with_expiry(Expiry::OnInactivity(IDLE_EXPIRY))
}

/// What the session remembers of its user; the role is read afresh from the store each request.
#[derive(Serialize, Deserialize)]
pub(super) struct SessionUser {
    pub(super) username: String,
}
