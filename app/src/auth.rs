//! Who is signed in, and the role checks server functions make before they touch anything. The
//! server authenticates each request and attaches its `SessionInfo`; nothing here trusts the
//! browser.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::model::{Role, SessionInfo};

#[server(endpoint = "whoami", input = GetUrl)]
pub async fn whoami() -> Result<SessionInfo, ServerFnError> {
    session_info()
}

/// This request's session, as the server attached it.
#[cfg(feature = "ssr")]
pub fn session_info() -> Result<SessionInfo, ServerFnError> {
    use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<SessionInfo>().cloned())
        .ok_or_else(|| ServerFnError::new("no console session"))
}

/// The signed-in user if their role is at least `min`; otherwise the request fails with 403.
#[cfg(feature = "ssr")]
pub fn require(min: Role) -> Result<crate::model::SignedIn, ServerFnError> {
    match session_info()?.user {
        Some(user) if user.role >= min => Ok(user),
        _ => {
            if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
                response.set_status(http::StatusCode::FORBIDDEN);
            }
            Err(ServerFnError::new(format!(
                "forbidden: this needs the {} role",
                min.label()
            )))
        }
    }
}

/// The session, fetched once per page and shared by context.
#[derive(Clone, Copy)]
pub struct CurrentSession(pub Resource<Result<SessionInfo, ServerFnError>>);

pub fn provide_session() {
    provide_context(CurrentSession(Resource::new_blocking(|| (), |_| whoami())));
}

/// The current session's CSRF token ("" until it is known); forms send it as `csrf`.
pub fn csrf_token() -> impl Fn() -> String + Copy {
    let session = expect_context::<CurrentSession>().0;
    move || {
        session
            .get()
            .and_then(Result::ok)
            .map(|s| s.csrf)
            .unwrap_or_default()
    }
}

/// The signed-in user's role, if known yet.
pub fn current_role() -> impl Fn() -> Option<Role> + Copy {
    let session = expect_context::<CurrentSession>().0;
    move || {
        session
            .get()
            .and_then(Result::ok)
            .and_then(|s| s.user)
            .map(|u| u.role)
    }
}

/// Whether the signed-in user may change things (operator or admin), once the session is known.
/// Awaited inside a `Suspend`, so the server and the hydrating browser decide alike.
pub async fn may_change() -> bool {
    has_role(Role::Operator).await
}

/// Whether the signed-in user has at least the role `min`, once the session is known.
pub async fn has_role(min: Role) -> bool {
    let session = expect_context::<CurrentSession>().0;
    session
        .await
        .ok()
        .and_then(|s| s.user)
        .is_some_and(|u| u.role >= min)
}

/// A hidden `csrf` field for a form.
#[component]
pub fn CsrfField() -> impl IntoView {
    let token = csrf_token();
    view! {
        <Transition>
            <input type="hidden" name="csrf" prop:value=token value=token/>
        </Transition>
    }
}
