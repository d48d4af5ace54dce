//! The login page. A plain HTML form posted to the server's `/login` handler, so signing in works
//! before (and without) the WebAssembly; the server checks the CSRF token and the password.

use leptos::prelude::*;
use leptos_router::hooks::use_query_map;

use crate::auth::CsrfField;

#[component]
pub fn Login() -> impl IntoView {
    let query = use_query_map();
    let failed = move || query.with(|q| q.get("error").is_some());
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
                <Show when=failed>
                    <p class="error" role="alert">"Wrong username or password."</p>
                </Show>
                <div><button type="submit" id="sign-in">"Sign in"</button></div>
            </form>
        </section>
    }
}
