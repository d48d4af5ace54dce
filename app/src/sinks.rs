//! Lifecycle event sinks (admins only, as a webhook holds a secret): where events go, how far
//! each got (delivered sequence, lag, last error), create or change one, delete one.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::auth::CsrfField;
use crate::forms::ActionError;
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend, backend::refused};

#[server(endpoint = "sinks", input = GetUrl)]
pub async fn list_sinks() -> Result<Vec<SinkRow>, ServerFnError> {
    require(Role::Admin)?;
    backend()?.sinks().await.map_err(refused)
}

/// `channel` is the NATS subject or MQTT topic; `enabled` a checkbox, present when ticked.
#[server(endpoint = "sink/save")]
pub async fn save_sink(
    csrf: String,
    name: String,
    kind: String,
    url: String,
    channel: String,
    secret: String,
    enabled: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    let form = SinkForm {
        name,
        kind,
        url,
        channel,
        secret,
        enabled: enabled.is_some(),
    };
    backend()?
        .save_sink(&user.username, form)
        .await
        .map_err(refused)
}

#[server(endpoint = "sink/delete")]
pub async fn delete_sink(csrf: String, name: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .delete_sink(&user.username, &name)
        .await
        .map_err(refused)
}

#[component]
pub fn Sinks() -> impl IntoView {
    let save = ServerAction::<SaveSink>::new();
    let delete = ServerAction::<DeleteSink>::new();
    let sinks = Resource::new(
        move || (save.version().get(), delete.version().get()),
        |_| list_sinks(),
    );
    view! {
        <section class="sinks">
            <h1>"Event sinks"</h1>
            <p class="muted">
                "Lifecycle events (enrollments, groups, registrations, hubs, CAs) are delivered to each sink at least once, in order; consumers de-duplicate on the event ID."
            </p>
            <ActionError action=save/>
            <ActionError action=delete/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match sinks.await {
                        Ok(rows) => view! { <SinkTable rows delete/> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
            <SinkEditor save/>
        </section>
    }
}

#[component]
fn SinkTable(rows: Vec<SinkRow>, delete: ServerAction<DeleteSink>) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|s| {
            let (name, data) = (s.name.clone(), s.name.clone());
            let status = match (&s.last_error, s.enabled) {
                (_, false) => "disabled".to_string(),
                (Some(error), _) => format!("failing ({} tries): {error}", s.failures),
                (None, _) => "delivering".to_string(),
            };
            view! {
                <tr data-sink=data>
                    <td class="mono">{s.name}</td>
                    <td>{s.kind}</td>
                    <td class="mono">{s.url}" "{s.channel.unwrap_or_default()}</td>
                    <td class="num" data-field="delivered">{s.delivered_seq}</td>
                    <td class="num" data-field="lag">{s.lag}</td>
                    <td>{s.last_delivered.unwrap_or_else(|| "never".into())}</td>
                    <td data-field="status">{status}</td>
                    <td class="actions">
                        <ActionForm action=delete attr:class="inline">
                            <CsrfField/>
                            <input type="hidden" name="name" value=name/>
                            <button type="submit" class="danger">"Delete"</button>
                        </ActionForm>
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="sink-list">
            <thead>
                <tr>
                    <th>"Name"</th><th>"Kind"</th><th>"Target"</th><th>"Delivered up to"</th>
                    <th>"Lag (events)"</th><th>"Last delivery"</th><th>"Status"</th><th></th>
                </tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
fn SinkEditor(save: ServerAction<SaveSink>) -> impl IntoView {
    view! {
        <h2>"Add a sink, or change one"</h2>
        <ActionForm action=save attr:class="editor" attr:id="new-sink">
            <CsrfField/>
            <label for="sink-name">"Name"</label>
            <input id="sink-name" name="name" required autocomplete="off"/>
            <label for="sink-kind">"Kind"</label>
            <select id="sink-kind" name="kind">
                <option value="webhook">"Webhook (HMAC-signed POST)"</option>
                <option value="nats">"NATS"</option>
                <option value="mqtt">"MQTT"</option>
            </select>
            <label for="sink-url">"URL"</label>
            <input id="sink-url" name="url" required placeholder="https://…, nats://host:4222, mqtt://host:1883"/>
            <label for="sink-channel">"Subject or topic"</label>
            <input id="sink-channel" name="channel" placeholder="onramp.events (NATS), onramp/events (MQTT)"/>
            <label for="sink-secret">"Webhook secret"</label>
            <input id="sink-secret" name="secret" type="password" autocomplete="off" placeholder="at least 16 characters; empty keeps the stored one"/>
            <label class="check" for="sink-enabled">
                <input type="checkbox" id="sink-enabled" name="enabled" value="on" checked/>" Enabled"
            </label>
            <div><button type="submit" id="save-sink">"Save sink"</button></div>
        </ActionForm>
    }
}
