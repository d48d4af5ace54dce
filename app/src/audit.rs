//! The audit trail: who changed what, newest first.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::model::AuditRow;

#[server(endpoint = "audit", input = GetUrl)]
pub async fn recent_audit() -> Result<Vec<AuditRow>, ServerFnError> {
    crate::auth::require(crate::model::Role::Viewer)?;
    crate::backend::backend()?
        .audit(200)
        .await
        .map_err(crate::backend::refused)
}

#[component]
pub fn Audit() -> impl IntoView {
    let entries = Resource::new(|| (), |_| recent_audit());
    view! {
        <section class="audit">
            <h1>"Audit trail"</h1>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match entries.await {
                        Ok(rows) if rows.is_empty() => view! { <p class="empty">"Nothing changed yet."</p> }.into_any(),
                        Ok(rows) => view! { <AuditTable rows/> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn AuditTable(rows: Vec<AuditRow>) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|r| {
            view! {
                <tr>
                    <td>{r.at}</td>
                    <td>{r.actor}</td>
                    <td class="via">{r.via}</td>
                    <td class="mono">{r.address}</td>
                    <td class="mono">{r.action}</td>
                    <td class="mono">{r.target}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="audit-list">
            <thead><tr><th>"When"</th><th>"Who"</th><th>"Via"</th><th>"From"</th><th>"What"</th><th>"Target"</th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}
