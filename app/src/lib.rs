#![recursion_limit = "256"]
//! Onramp's admin console: Leptos components rendered on the server and hydrated in the browser.
//! Server functions stay thin: they call the `ConsoleBackend` the server provides by context.

pub mod audit;
pub mod auth;
pub mod cas;
pub mod credentials;
pub mod dashboard;
pub mod enrollments;
pub mod forms;
pub mod hubs;
pub mod live;
pub mod login;
pub mod model;
pub mod policies;
pub mod registrations;
pub mod sinks;
pub mod test_fault;
pub mod users;

#[cfg(feature = "ssr")]
pub mod backend;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::{
    ParamSegment, StaticSegment,
    components::{Route, Router, Routes},
};

use auth::{CsrfField, CurrentSession};

/// The console's built browser files under `/pkg`. scripts/build-site.sh names them after their
/// content (`onramp.<hash>.js`, ...) and lists them in `pkg/assets.json`, so browsers may cache
/// them for good; without that file (site not built) the plain names are used.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SiteAssets {
    pub js: String,
    pub wasm: String,
    pub css: String,
}

impl Default for SiteAssets {
    fn default() -> Self {
        SiteAssets {
            js: "onramp.js".into(),
            wasm: "onramp_bg.wasm".into(),
            css: "onramp.css".into(),
        }
    }
}

/// The HTML document around the app; the server renders it for every console page. The tags
/// are leptos' `HydrationScripts` (preload the JS and wasm, then hydrate), with the hashed names.
pub fn shell(assets: SiteAssets) -> impl IntoView {
    let SiteAssets { js, wasm, css } = assets;
    let hydrate = format!(
        "import({:?}).then(m => m.default({{module_or_path: {:?}}}).then(() => m.hydrate()));",
        format!("/pkg/{js}"),
        format!("/pkg/{wasm}"),
    );
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <link rel="stylesheet" id="onramp" href=format!("/pkg/{css}")/>
                <link rel="modulepreload" href=format!("/pkg/{js}") crossorigin=""/>
                <link
                    rel="preload"
                    href=format!("/pkg/{wasm}")
                    r#as="fetch"
                    r#type="application/wasm"
                    crossorigin=""
                />
                <script type="module" nonce=leptos::nonce::use_nonce()>{hydrate}</script>
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    auth::provide_session();
    // Effects run only in the browser: this marks the page as hydrated for people and tests alike.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    view! {
        <Title text="Onramp"/>
        <Router>
            <TopBar/>
            <main data-hydrated=move || hydrated.get().to_string()>
                <Routes fallback=|| view! { <p class="empty">"Page not found."</p> }>
                    <Route path=StaticSegment("") view=dashboard::Dashboard/>
                    <Route path=StaticSegment("login") view=login::Login/>
                    <Route
                        path=(StaticSegment("console"), StaticSegment("enrollments"))
                        view=enrollments::Enrollments
                    />
                    <Route
                        path=(StaticSegment("console"), StaticSegment("enrollments"), ParamSegment("id"))
                        view=enrollments::EnrollmentPage
                    />
                    <Route path=(StaticSegment("console"), StaticSegment("audit")) view=audit::Audit/>
                    <Route path=(StaticSegment("console"), StaticSegment("live")) view=live::LiveLog/>
                    <Route path=(StaticSegment("console"), StaticSegment("hubs")) view=hubs::Hubs/>
                    <Route path=(StaticSegment("console"), StaticSegment("policies")) view=policies::Policies/>
                    <Route path=(StaticSegment("console"), StaticSegment("sinks")) view=sinks::Sinks/>
                    <Route path=(StaticSegment("console"), StaticSegment("certificates")) view=cas::CaCertificates/>
                    <Route path=(StaticSegment("console"), StaticSegment("credentials")) view=credentials::Credentials/>
                    <Route path=(StaticSegment("console"), StaticSegment("users")) view=users::Users/>
                    <Route
                        path=(StaticSegment("console"), StaticSegment("registrations"))
                        view=registrations::Registrations
                    />
                    <Route
                        path=(StaticSegment("console"), StaticSegment("registrations"), ParamSegment("id"))
                        view=registrations::RegistrationPage
                    />
                </Routes>
            </main>
        </Router>
    }
}

/// The brand, the navigation and, when signed in, the user and a sign-out button.
#[component]
fn TopBar() -> impl IntoView {
    let session = expect_context::<CurrentSession>().0;
    let user = move || session.get().and_then(Result::ok).and_then(|s| s.user);
    view! {
        <header class="topbar">
            <a class="brand" href="/">"Onramp"</a>
            <Transition>
                {move || user().map(|user| view! {
                    <nav>
                        <a href="/">"Dashboard"</a>
                        <a href="/console/enrollments">"Enrollments"</a>
                        <a href="/console/registrations">"Registrations"</a>
                        <a href="/console/hubs">"Hubs"</a>
                        <a href="/console/live">"Live log"</a>
                        <a href="/console/audit">"Audit"</a>
                        {(user.role == model::Role::Admin).then(|| view! {
                            <a href="/console/policies">"Policies"</a>
                            <a href="/console/certificates">"CA certificates"</a>
                            <a href="/console/credentials">"Issued certificates"</a>
                            <a href="/console/sinks">"Event sinks"</a>
                            <a href="/console/users">"Users"</a>
                        })}
                    </nav>
                    <span class="whoami">{user.username}" · "{user.role.label()}</span>
                    <form method="post" action="/logout" class="inline">
                        <CsrfField/>
                        <button type="submit" id="sign-out" class="secondary">"Sign out"</button>
                    </form>
                })}
            </Transition>
        </header>
    }
}

#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(App);
}
