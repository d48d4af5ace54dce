//! Console sign-in: sessions kept in the database (any instance serves any user), the guard that
//! sends anonymous visitors to the login page, and CSRF protection on every state-changing request.
//!
//! CSRF: each session holds a random token; every request that is not GET or HEAD must carry it,
//! as the `csrf` form field (forms and server functions) or the `X-CSRF-Token` header, and must not
//! come from another origin. Reads are GET, so they need no token.

use app::model::{SessionInfo, SignedIn};
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;
use tower_sessions::{Expiry, Session};

use super::sessions::{ANONYMOUS_EXPIRY, IDLE_EXPIRY, SessionUser};
use super::views::view_role;
use crate::domain::admin::SignIn;
use crate::state::AppState;

const CSRF_KEY: &str = "csrf";
const USER_KEY: &str = "user";
const CSRF_HEADER: &str = "x-csrf-token";

/// Paths anyone may use: the login page, its form, its session lookup, and signing out.
fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/logout" | "/api/whoami")
}

/// Static files: public, and no business of the session.
fn is_asset(path: &str) -> bool {
    path == "/favicon.svg" || path.starts_with("/pkg/")
}

fn session_failed(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "console session store failed");
    (StatusCode::SERVICE_UNAVAILABLE, "session store unavailable").into_response()
}

fn forbidden(why: &'static str) -> Response {
    (StatusCode::FORBIDDEN, why).into_response()
}

/// The guard in front of every console route: establishes the CSRF token, resolves the user,
/// refuses cross-site or tokenless changes, and sends anonymous visitors to the login page.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if is_asset(&path) {
        return next.run(request).await;
    }
    let Some(session) = request.extensions().get::<Session>().cloned() else {
        return session_failed("session layer missing");
    };
    let user = match signed_in(&state, &session).await {
        Ok(user) => user,
        Err(e) => return session_failed(e),
    };
    // Anonymous visitors get the login page and nothing else; no session is stored for them
    // elsewhere, so probing the console costs the server no writes.
    if user.is_none() && !is_public(&path) {
        return if path.starts_with("/api/") {
            (StatusCode::UNAUTHORIZED, "sign in first").into_response()
        } else {
            let next = request
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            Redirect::to(&format!("/login?next={}", encode(&next))).into_response()
        };
    }
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    let csrf = match session.get::<String>(CSRF_KEY).await {
        Ok(Some(token)) => token,
        // A change can only carry a token the session already issued.
        Ok(None) if !reading => return forbidden("missing or wrong CSRF token"),
        Ok(None) => match issue_csrf_token(&session, user.is_some()).await {
            Ok(token) => token,
            Err(e) => return session_failed(e),
        },
        Err(e) => return session_failed(e),
    };
    let (mut parts, body) = request.into_parts();
    let body = if reading {
        body
    } else {
        match checked_change(&state, &parts, body, &csrf).await {
            Ok(body) => body,
            Err(refusal) => return refusal,
        }
    };
    parts.extensions.insert(SessionInfo { csrf, user });
    next.run(Request::from_parts(parts, body)).await
}

/// The body of a same-origin change that carries the session's CSRF token, or the refusal.
async fn checked_change(
    state: &AppState,
    parts: &axum::http::request::Parts,
    body: Body,
    csrf: &str,
) -> Result<Body, Response> {
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or(parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or_default();
    if !same_origin(&parts.headers, host) {
        return Err(forbidden("cross-origin request refused"));
    }
    let bytes = axum::body::to_bytes(body, state.config.limits.max_body_bytes)
        .await
        .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "body too large").into_response())?;
    if !carries_token(&parts.headers, &bytes, csrf) {
        return Err(forbidden("missing or wrong CSRF token"));
    }
    Ok(Body::from(bytes))
}

/// A fresh token. A visitor who has not signed in keeps it (and the session row) 15 minutes.
async fn issue_csrf_token(
    session: &Session,
    signed_in: bool,
) -> Result<String, tower_sessions::session::Error> {
    if !signed_in {
        session.set_expiry(Some(Expiry::OnInactivity(ANONYMOUS_EXPIRY)));
    }
    let token = crate::model::random_key(32);
    session.insert(CSRF_KEY, &token).await?;
    Ok(token)
}

/// The session's user, if it still exists and is enabled.
async fn signed_in(state: &AppState, session: &Session) -> anyhow::Result<Option<SignedIn>> {
    let Some(user) = session.get::<SessionUser>(USER_KEY).await? else {
        return Ok(None);
    };
    Ok(state
        .store
        .get_user(&user.username)
        .await?
        .filter(|u| !u.disabled)
        .map(|u| SignedIn {
            username: u.username,
            role: view_role(u.role),
        }))
}

/// Browsers send `Origin` on cross-site POSTs; when present it must name this host (the `Host`
/// header, or the `:authority` of HTTP/2).
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    origin
        .strip_prefix("https://")
        .is_some_and(|o| o.eq_ignore_ascii_case(host))
}

fn carries_token(headers: &HeaderMap, body: &Bytes, expected: &str) -> bool {
    let from_header = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_form = || {
        url::form_urlencoded::parse(body)
            .find(|(key, _)| key == "csrf")
            .map(|(_, value)| value.into_owned())
    };
    from_header
        .or_else(from_form)
        .is_some_and(|sent| bool::from(sent.as_bytes().ct_eq(expected.as_bytes())))
}

fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// Where to go after signing in: only paths on this site.
fn safe_next(next: &str) -> &str {
    if next.starts_with('/') && !next.starts_with("//") && !next.starts_with("/\\") {
        next
    } else {
        "/"
    }
}

/// POST /login: checks the password, then gives the browser a new session ID (no fixation) and a
/// new CSRF token.
pub async fn login(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Response {
    let address = peer.map(|Extension(ConnectInfo(peer))| peer.ip().to_canonical());
    let signed_in = state
        .admin
        .sign_in(&form.username, &form.password, address)
        .await;
    let next = safe_next(&form.next);
    let user = match signed_in {
        Ok(SignIn::Accepted(user)) => user,
        Ok(SignIn::Refused) => {
            tracing::info!("console sign-in refused");
            let to = format!("/login?error=1&next={}", encode(next));
            return Redirect::to(&to).into_response();
        }
        Ok(SignIn::Locked(left)) => {
            tracing::warn!(retry_after_secs = left.as_secs(), "console sign-in locked");
            let secs = left.as_secs().max(1);
            let to = format!("/login?error=locked&retry={secs}&next={}", encode(next));
            return Redirect::to(&to).into_response();
        }
        Err(e) => return session_failed(e),
    };
    let established = async {
        session.cycle_id().await?;
        session.set_expiry(Some(Expiry::OnInactivity(IDLE_EXPIRY)));
        session
            .insert(
                USER_KEY,
                SessionUser {
                    username: user.username.clone(),
                },
            )
            .await?;
        session.insert(CSRF_KEY, crate::model::random_key(32)).await
    };
    if let Err(e) = established.await {
        return session_failed(e);
    }
    Redirect::to(next).into_response()
}

/// POST /logout: forgets the session everywhere.
pub async fn logout(State(state): State<AppState>, session: Session) -> Response {
    if let Ok(Some(user)) = session.get::<SessionUser>(USER_KEY).await {
        state.admin.signed_out(&user.username).await;
    }
    if let Err(e) = session.flush().await {
        return session_failed(e);
    }
    Redirect::to("/login").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next("/enrollments?q=a"), "/enrollments?q=a");
        assert_eq!(safe_next("https://evil.example/"), "/");
        assert_eq!(safe_next("//evil.example/"), "/");
        assert_eq!(safe_next("/\\evil.example"), "/");
        assert_eq!(safe_next(""), "/");
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_form() {
        let mut headers = HeaderMap::new();
        let form = Bytes::from_static(b"registration_id=a&csrf=tok%2Ben");
        assert!(carries_token(&headers, &form, "tok+en"));
        assert!(!carries_token(&headers, &form, "other"));
        assert!(!carries_token(&headers, &Bytes::new(), "tok+en"));
        headers.insert(CSRF_HEADER, "tok+en".parse().unwrap());
        assert!(carries_token(&headers, &Bytes::new(), "tok+en"));
    }

    #[test]
    fn cross_origin_posts_are_recognised() {
        let mut headers = HeaderMap::new();
        let host = "localhost:8443";
        assert!(
            same_origin(&headers, host),
            "no Origin: not a browser cross-site request"
        );
        headers.insert(header::ORIGIN, "https://localhost:8443".parse().unwrap());
        assert!(same_origin(&headers, host));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&headers, host));
        headers.insert(header::ORIGIN, "http://localhost:8443".parse().unwrap());
        assert!(!same_origin(&headers, host));
    }
}
