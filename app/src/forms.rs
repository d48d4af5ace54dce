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

/// A PEM text area with a file picker that loads a certificate file (`.pem`, `.cer`, `.crt`) into
/// it, so operators can paste or upload.
#[component]
pub fn PemField(
    id: &'static str,
    name: &'static str,
    label: String,
    #[prop(optional)] initial: String,
    #[prop(optional)] required: bool,
) -> impl IntoView {
    let (text, set_text) = signal(initial);
    let load = move |ev: leptos::ev::Event| {
        #[cfg(feature = "hydrate")]
        {
            use wasm_bindgen::JsCast;
            let input: Option<web_sys::HtmlInputElement> =
                ev.target().and_then(|t| t.dyn_into().ok());
            let Some(file) = input.and_then(|i| i.files()).and_then(|f| f.get(0)) else {
                return;
            };
            leptos::task::spawn_local(async move {
                let read = wasm_bindgen_futures::JsFuture::from(file.text()).await;
                if let Some(content) = read.ok().and_then(|v| v.as_string()) {
                    set_text.set(content);
                }
            });
        }
        #[cfg(not(feature = "hydrate"))]
        let _ = (ev, set_text);
    };
    let file_id = format!("{id}_file");
    view! {
        <label for=id>{label}</label>
        <div class="pem-field">
            <textarea id=id name=name rows="5" class="mono" required=required
                placeholder="-----BEGIN CERTIFICATE-----"
                prop:value=move || text.get()
                on:input=move |ev| set_text.set(event_target_value(&ev))>{text.get_untracked()}</textarea>
            <input type="file" id=file_id accept=".pem,.cer,.crt" class="pem-file"
                aria-label="Load a certificate file" on:change=load/>
        </div>
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
