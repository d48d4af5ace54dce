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

/// A button that copies `text` to the clipboard (a secret stays out of the page's selection).
#[component]
pub fn CopyButton(text: String) -> impl IntoView {
    let (copied, set_copied) = signal(false);
    let copy = move |_| {
        #[cfg(feature = "hydrate")]
        {
            let _ = window().navigator().clipboard().write_text(&text);
            set_copied.set(true);
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (&text, set_copied);
    };
    view! {
        <button type="button" class="secondary copy" on:click=copy>
            {move || if copied.get() { "Copied" } else { "Copy" }}
        </button>
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
