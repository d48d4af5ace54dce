#![recursion_limit = "256"]
//! Onramp's admin console: Leptos components rendered on the server and hydrated in the browser.
//! Server functions stay thin: they call the `ConsoleBackend` the server provides by context.

pub mod audit;
pub mod auth;
pub mod cas;
pub mod dashboard;
pub mod enrollments;
pub mod forms;
pub mod hubs;
pub mod live;
pub mod login;
pub mod model;
pub mod policies;
pub mod registrations;
pub mod users;

#[cfg(feature = "ssr")]
pub mod backend;

use leptos::prelude::*;
use leptos_meta::{MetaTags, Stylesheet, Title, provide_meta_context};
use leptos_router::{
    ParamSegment, StaticSegment,
    components::{Route, Router, Routes},
};

use auth::{CsrfField, CurrentSession};

/// The HTML document around the app; the server renders it for every console page.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="icon" type="image/svg+xml" href="/favicon.svg"/>
                <HydrationScripts options/>
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
        <Stylesheet id="onramp" href="/pkg/onramp.css"/>
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
                    <Route path=(StaticSegment("console"), StaticSegment("certificates")) view=cas::CaCertificates/>
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
