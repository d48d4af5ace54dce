//! The dashboard: instance identity, counts and linked hubs.

use leptos::prelude::*;

use leptos::server_fn::codec::GetUrl;

use crate::model::InstanceSummary;

#[server(endpoint = "summary", input = GetUrl)]
pub async fn get_summary() -> Result<InstanceSummary, ServerFnError> {
    crate::auth::require(crate::model::Role::Viewer)?;
    crate::backend::backend()?
        .summary()
        .await
        .map_err(crate::backend::refused)
}

#[component]
pub fn Dashboard() -> impl IntoView {
    let (refreshes, set_refreshes) = signal(0u32);
    let summary = Resource::new(move || refreshes.get(), |_| get_summary());
    // Effects run only in the browser: this marks the page as hydrated for people and tests alike.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));

    view! {
        <section class="dashboard" data-hydrated=move || hydrated.get().to_string()>
            <div class="toolbar">
                <h1>"Dashboard"</h1>
                <button id="refresh" on:click=move |_| set_refreshes.update(|n| *n += 1)>"Refresh"</button>
                <span class="refreshes" data-refreshes=move || refreshes.get().to_string()></span>
            </div>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match summary.await {
                        Ok(s) => view! { <SummaryView summary=s/> }.into_any(),
                        Err(e) => view! { <p class="error">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn SummaryView(summary: InstanceSummary) -> impl IntoView {
    let hubs = summary
        .hubs
        .into_iter()
        .map(|hub| {
            view! {
                <tr>
                    <td class="mono">{hub.host_name}</td>
                    <td>{hub.connector}</td>
                    <td>{hub.region.unwrap_or_else(|| "—".into())}</td>
                    <td class="num">{hub.allocation_weight}</td>
                    <td class="num">{hub.devices}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <dl class="identity">
            <dt>"ID scope"</dt>
            <dd id="id-scope" class="mono">{summary.id_scope}</dd>
        </dl>
        <div class="cards">
            <Card label="Enrollments" value=summary.enrollments/>
            <Card label="Enrollment groups" value=summary.groups/>
            <Card label="Registrations" value=summary.registrations/>
        </div>
        <h2>"Linked hubs"</h2>
        <table class="hubs">
            <thead>
                <tr><th>"Host name"</th><th>"Connector"</th><th>"Region"</th><th>"Weight"</th><th>"Devices"</th></tr>
            </thead>
            <tbody>{hubs}</tbody>
        </table>
    }
}

#[component]
fn Card(label: &'static str, value: u64) -> impl IntoView {
    view! {
        <div class="card">
            <div class="card-value">{value}</div>
            <div class="card-label">{label}</div>
        </div>
    }
}
