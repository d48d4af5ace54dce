//! The live diagnostics log: registration attempts as they happen, streamed from the server
//! (server-sent events on `/console/events`), filtered in the browser, with a pause that holds
//! new events back until resumed. Failures show their error code, message and likely cause.

use std::collections::VecDeque;

use leptos::prelude::*;

use crate::model::LiveEvent;

/// Events kept on screen (and held while paused).
const KEEP: usize = 500;

#[derive(Clone, Copy)]
struct Filters {
    registration_id: RwSignal<String>,
    status: RwSignal<String>,
    protocol: RwSignal<String>,
    hub: RwSignal<String>,
}

impl Filters {
    fn admit(&self, e: &LiveEvent) -> bool {
        let id = self.registration_id.get().to_lowercase();
        let status = self.status.get();
        let protocol = self.protocol.get();
        let hub = self.hub.get().to_lowercase();
        e.registration_id.to_lowercase().contains(&id)
            && (status.is_empty() || status == e.status)
            && (protocol.is_empty() || protocol == e.protocol)
            && (hub.is_empty()
                || e.hub
                    .as_deref()
                    .unwrap_or_default()
                    .to_lowercase()
                    .contains(&hub))
    }
}

fn push(list: &mut VecDeque<LiveEvent>, event: LiveEvent) {
    list.push_front(event);
    list.truncate(KEEP);
}

#[component]
pub fn LiveLog() -> impl IntoView {
    let shown = RwSignal::new(VecDeque::<LiveEvent>::new());
    let held = RwSignal::new(VecDeque::<LiveEvent>::new());
    let paused = RwSignal::new(false);
    let connected = RwSignal::new(false);
    let missed = RwSignal::new(0u64);
    let filters = Filters {
        registration_id: RwSignal::new(String::new()),
        status: RwSignal::new(String::new()),
        protocol: RwSignal::new(String::new()),
        hub: RwSignal::new(String::new()),
    };
    let receive = move |event: LiveEvent| {
        let target = if paused.get_untracked() { held } else { shown };
        target.update(|list| push(list, event));
    };
    subscribe(receive, connected, missed);
    let toggle_pause = move |_| {
        if paused.get_untracked() {
            let waiting: Vec<LiveEvent> =
                held.with_untracked(|h| h.iter().rev().cloned().collect());
            held.update_untracked(VecDeque::clear);
            shown.update(|list| waiting.into_iter().for_each(|e| push(list, e)));
        }
        paused.update(|p| *p = !*p);
    };
    let rows = move || {
        shown
            .get()
            .into_iter()
            .filter(|e| filters.admit(e))
            .map(|e| view! { <EventRow event=e/> })
            .collect_view()
    };
    view! {
        <section class="live">
            <div class="toolbar">
                <h1>"Live diagnostics"</h1>
                <span class="connection" data-connected=move || connected.get().to_string()>
                    {move || if connected.get() { "● live" } else { "○ connecting…" }}
                </span>
                <button id="pause" type="button" on:click=toggle_pause>
                    {move || if paused.get() { format!("Resume ({} waiting)", held.with(|h| h.len())) } else { "Pause".into() }}
                </button>
            </div>
            <FilterBar filters/>
            <Show when=move || missed.get() != 0>
                <p class="muted" role="status">{move || format!("{} events were missed while the browser was busy.", missed.get())}</p>
            </Show>
            <table class="live-log">
                <thead>
                    <tr><th>"Time"</th><th>"Registration / device ID"</th><th>"Protocol"</th><th>"Attestation"</th>
                        <th>"Hub"</th><th>"Status"</th><th class="num">"ms"</th></tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </section>
    }
}

#[component]
fn FilterBar(filters: Filters) -> impl IntoView {
    let text = |label: &'static str, id: &'static str, signal: RwSignal<String>| {
        view! {
            <label>{label}
                <input id=id type="search" autocomplete="off" prop:value=move || signal.get()
                    on:input=move |ev| signal.set(event_target_value(&ev))/>
            </label>
        }
    };
    let choice = |label: &'static str,
                  id: &'static str,
                  signal: RwSignal<String>,
                  options: &'static [&'static str]| {
        let options = options
            .iter()
            .map(|o| view! { <option value=*o>{if o.is_empty() { "any" } else { *o }}</option> })
            .collect_view();
        view! {
            <label>{label}
                <select id=id on:change=move |ev| signal.set(event_target_value(&ev))>{options}</select>
            </label>
        }
    };
    view! {
        <div class="filters" role="search">
            {text("Registration ID contains", "filter-id", filters.registration_id)}
            {choice("Status", "filter-status", filters.status, &[
                "", "assigned", "failed", "disabled", "assigning",
                "connected", "refused", "disconnected", "reported", "desired",
            ])}
            {choice("Protocol", "filter-protocol", filters.protocol, &["", "https", "mqtt", "mqtt-ws", "amqp", "amqp-ws", "hub-mqtt"])}
            {text("Hub contains", "filter-hub", filters.hub)}
        </div>
    }
}

#[component]
fn EventRow(event: LiveEvent) -> impl IntoView {
    let failure = event.error_code.map(|code| {
        view! {
            <tr class="failure-detail">
                <td></td>
                <td colspan="6">
                    <span class="mono">{code}</span>" "{event.error_message.clone().unwrap_or_default()}
                    {event.hint.clone().map(|hint| view! { <div class="hint">{hint}</div> })}
                </td>
            </tr>
        }
    });
    let disabled_hint = (event.error_code.is_none())
        .then_some(event.hint.clone())
        .flatten()
        .map(|hint| view! { <tr class="failure-detail"><td></td><td colspan="6"><div class="hint">{hint}</div></td></tr> });
    let (row_class, status_class) = (
        format!("event {}", event.status),
        format!("status {}", event.status),
    );
    let data_id = event.registration_id.clone();
    view! {
        <tr class=row_class data-registration-id=data_id>
            <td>{event.at.get(11..23).unwrap_or_default().to_string()}</td>
            <td class="mono">{event.registration_id}</td>
            <td>{event.protocol}</td>
            <td>{event.attestation.unwrap_or_default()}</td>
            <td class="mono">{event.hub.unwrap_or_default()}</td>
            <td><span class=status_class>{event.status}</span></td>
            <td class="num">{event.latency_ms}</td>
        </tr>
        {failure}
        {disabled_hint}
    }
}

/// Opens the event stream in the browser (nothing happens during server rendering).
#[cfg(feature = "hydrate")]
fn subscribe(
    receive: impl Fn(LiveEvent) + 'static,
    connected: RwSignal<bool>,
    missed: RwSignal<u64>,
) {
    use wasm_bindgen::JsCast;
    use wasm_bindgen::closure::Closure;
    use web_sys::{EventSource, MessageEvent};

    let Ok(source) = EventSource::new("/console/events") else {
        return;
    };
    let on_open = Closure::<dyn Fn()>::new(move || connected.set(true));
    let on_error = Closure::<dyn Fn()>::new(move || connected.set(false));
    let on_event = Closure::<dyn Fn(MessageEvent)>::new(move |message: MessageEvent| {
        let Some(data) = message.data().as_string() else {
            return;
        };
        if let Ok(event) = serde_json::from_str::<LiveEvent>(&data) {
            receive(event);
        }
    });
    let on_missed = Closure::<dyn Fn(MessageEvent)>::new(move |message: MessageEvent| {
        let count = message
            .data()
            .as_string()
            .and_then(|d| d.parse::<u64>().ok())
            .unwrap_or(0);
        missed.update(|m| *m += count);
    });
    source.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    source.set_onerror(Some(on_error.as_ref().unchecked_ref()));
    for name in ["registration", "hub"] {
        let _ = source.add_event_listener_with_callback(name, on_event.as_ref().unchecked_ref());
    }
    let _ = source.add_event_listener_with_callback("missed", on_missed.as_ref().unchecked_ref());
    let closures = send_wrapper::SendWrapper::new((source, on_open, on_error, on_event, on_missed));
    on_cleanup(move || closures.0.close());
}

#[cfg(not(feature = "hydrate"))]
fn subscribe(
    _receive: impl Fn(LiveEvent) + 'static,
    _connected: RwSignal<bool>,
    _missed: RwSignal<u64>,
) {
}
