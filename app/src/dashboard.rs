//! The dashboard: instance identity, counts and linked hubs.

use leptos::prelude::*;

use leptos::server_fn::codec::GetUrl;

use crate::model::{FailureRow, InstanceSummary, MinuteBar};

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
    let hub_count = summary.hubs.len() as u64;
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
            <Card label="Linked hubs" value=hub_count/>
        </div>
        <h2>"Registrations per minute (last hour)"</h2>
        <Chart bars=summary.minutes/>
        <h2>"Latest failures"</h2>
        <Failures rows=summary.failures/>
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

/// Assigned (green) stacked under failed (red), one bar per minute, as inline SVG.
#[component]
fn Chart(bars: Vec<MinuteBar>) -> impl IntoView {
    const HEIGHT: f64 = 120.0;
    const WIDTH: f64 = 10.0;
    let peak = bars
        .iter()
        .map(|b| b.assigned + b.failed)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let total_assigned: u64 = bars.iter().map(|b| b.assigned).sum();
    let total_failed: u64 = bars.iter().map(|b| b.failed).sum();
    let columns = bars
        .iter()
        .enumerate()
        .map(|(i, bar)| {
            let x = i as f64 * WIDTH;
            let ok = bar.assigned as f64 / peak * HEIGHT;
            let bad = bar.failed as f64 / peak * HEIGHT;
            let title = format!(
                "{}: {} assigned, {} failed",
                bar.label, bar.assigned, bar.failed
            );
            view! {
                <g>
                    <title>{title}</title>
                    <rect class="assigned" x=x y=HEIGHT - ok width=WIDTH - 2.0 height=ok/>
                    <rect class="failed" x=x y=HEIGHT - ok - bad width=WIDTH - 2.0 height=bad/>
                </g>
            }
        })
        .collect_view();
    let first = bars.first().map(|b| b.label.clone()).unwrap_or_default();
    let last = bars.last().map(|b| b.label.clone()).unwrap_or_default();
    view! {
        <figure class="chart" data-assigned=total_assigned data-failed=total_failed>
            <svg viewBox=format!("0 0 {} {HEIGHT}", WIDTH * 60.0) preserveAspectRatio="none" role="img"
                aria-label=format!("{total_assigned} assigned and {total_failed} failed in the last hour")>
                {columns}
            </svg>
            <figcaption>
                <span>{first}</span>
                <span class="legend"><i class="assigned"></i>{format!("assigned {total_assigned}")}
                    <i class="failed"></i>{format!("failed {total_failed}")}</span>
                <span>{last}</span>
            </figcaption>
        </figure>
    }
}

#[component]
fn Failures(rows: Vec<FailureRow>) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p class="empty">"No failures recorded."</p> }.into_any();
    }
    let rows = rows
        .into_iter()
        .map(|f| {
            let code = f
                .error_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| f.status.clone());
            view! {
                <tr>
                    <td>{f.at.get(11..19).unwrap_or_default().to_string()}</td>
                    <td class="mono">{f.registration_id}</td>
                    <td>{f.protocol}</td>
                    <td class="mono">{code}</td>
                    <td>{f.error_message.unwrap_or_default()}
                        {f.hint.map(|h| view! { <div class="hint">{h}</div> })}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="failures">
            <thead><tr><th>"Time"</th><th>"Registration ID"</th><th>"Protocol"</th><th>"Code"</th><th>"Error"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}
