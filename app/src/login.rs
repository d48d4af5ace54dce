//! The login page. A plain HTML form posted to the server's `/login` handler, so signing in works
//! before (and without) the WebAssembly; the server checks the CSRF token and the password.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::auth::CsrfField;

#[component]
pub fn Login() -> impl IntoView {
    let query = use_query_map();
    // `error=locked&retry=N`: too many failures; any other `error`: a wrong name or password.
    let error = move || query.with(|q| q.get("error"));
    let message = move || match error().as_deref() {
        None => None,
        Some("locked") => {
            let minutes = query
                .with(|q| q.get("retry"))
                .and_then(|s| s.parse::<u64>().ok())
                .map_or(1, |secs| secs.div_ceil(60).max(1));
            Some(format!(
                "Too many failed sign-ins. Try again in {minutes} minute{}.",
                if minutes == 1 { "" } else { "s" }
            ))
        }
        Some(_) => Some("Wrong username or password.".to_string()),
    };
    let next = move || query.with(|q| q.get("next").unwrap_or_else(|| "/".into()));
    view! {
        <section class="login">
            <h1>"Sign in"</h1>
            <form method="post" action="/login" class="editor">
                <CsrfField/>
                <input type="hidden" name="next" value=next/>
                <label for="username">"Username"</label>
                <input id="username" name="username" autocomplete="username" required autofocus/>
                <label for="password">"Password"</label>
                <input id="password" name="password" type="password" autocomplete="current-password" required/>
                {move || message().map(|text| view! { <p class="error" role="alert">{text}</p> })}
                <div><button type="submit" id="sign-in">"Sign in"</button></div>
            </form>
        </section>
    }
}
