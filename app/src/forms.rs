//! Small pieces every console page's forms share.

use leptos::prelude::*;

/// Shows the last error of an action, if any.
#[component]
pub fn ActionError<A>(action: ServerAction<A>) -> impl IntoView
where
    A: leptos::server_fn::ServerFn + Clone + Send + Sync + 'static,
    A::Output: Send + Sync + 'static,
    A::Error: std::fmt::Display + Send + Sync + 'static,
{
    move || {
        action.value().with(|value| match value {
            Some(Err(e)) => Some(view! { <p class="error" role="alert">{e.to_string()}</p> }),
            _ => None,
        })
    }
}

/// Percent-encodes a query or path value.
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
