//! Registration records: a paged list searchable by ID prefix, a detail view, and delete (so the
//! device's next registration starts fresh).

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;
use leptos_router::hooks::{use_params_map, use_query};
use leptos_router::params::Params;

use crate::auth::{CsrfField, may_change};
use crate::forms::{ActionError, encode};
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend, backend::refused};

#[server(endpoint = "registrations", input = GetUrl)]
pub async fn list_registrations(
    filter: RegistrationFilter,
) -> Result<RegistrationPage, ServerFnError> {
    require(Role::Viewer)?;
    backend()?.list_registrations(filter).await.map_err(refused)
}

#[server(endpoint = "registration", input = GetUrl)]
pub async fn get_registration(
    registration_id: String,
) -> Result<Option<RegistrationDetail>, ServerFnError> {
    require(Role::Viewer)?;
    backend()?
        .registration(&registration_id)
        .await
        .map_err(refused)
}

#[server(endpoint = "registration/delete")]
pub async fn delete_registration(
    csrf: String,
    registration_id: String,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    backend()?
        .delete_registration(&user.username, &registration_id)
        .await
        .map_err(refused)
}

/// Revokes the certificate `serial` of the device, or all of its certificates without one.
#[server(endpoint = "certificate/revoke")]
pub async fn revoke_certificates(
    csrf: String,
    registration_id: String,
    serial: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    backend()?
        .revoke_certificates(&user.username, &registration_id, serial.as_deref())
        .await
        .map_err(refused)
}

impl Params for RegistrationFilter {
    fn from_map(
        map: &leptos_router::params::ParamsMap,
    ) -> Result<Self, leptos_router::params::ParamsError> {
        Ok(RegistrationFilter {
            q: map.get("q").unwrap_or_default(),
            after: map.get("after").unwrap_or_default(),
        })
    }
}

#[component]
pub fn Registrations() -> impl IntoView {
    let query = use_query::<RegistrationFilter>();
    let filter = move || query.get().unwrap_or_default();
    let delete = ServerAction::<DeleteRegistration>::new();
    let page = Resource::new(
        move || (filter(), delete.version().get()),
        |(filter, _)| list_registrations(filter),
    );
    view! {
        <section class="registrations">
            <div class="toolbar"><h1>"Registration records"</h1></div>
            <form class="filters" method="get" action="/console/registrations" role="search">
                <label>"Registration ID starts with"
                    <input type="search" name="q" value=move || filter().q autocomplete="off"/>
                </label>
                <button type="submit">"Search"</button>
            </form>
            <ActionError action=delete/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let editable = may_change().await;
                    match page.await {
                        Ok(page) => view! { <RegistrationTable page q=filter().q delete editable/> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn RegistrationTable(
    page: RegistrationPage,
    q: String,
    delete: ServerAction<DeleteRegistration>,
    editable: bool,
) -> impl IntoView {
    if page.rows.is_empty() {
        return view! { <p class="empty">"No registration records match."</p> }.into_any();
    }
    let next = page.next.map(|after| {
        let href = format!(
            "/console/registrations?q={}&after={}",
            encode(&q),
            encode(&after)
        );
        view! { <a class="next" href=href>"Next page →"</a> }
    });
    let rows = page
        .rows
        .into_iter()
        .map(|r| {
            let href = format!("/console/registrations/{}", encode(&r.registration_id));
            let data_id = r.registration_id.clone();
            let id = r.registration_id.clone();
            let status_class = format!("status {}", r.status);
            let action = editable.then(|| {
                view! {
                    <ActionForm action=delete attr:class="inline">
                        <CsrfField/>
                        <input type="hidden" name="registration_id" value=id/>
                        <button type="submit" class="danger">"Delete"</button>
                    </ActionForm>
                }
            });
            view! {
                <tr data-id=data_id>
                    <td class="mono"><a href=href>{r.registration_id}</a></td>
                    <td class="mono">{r.enrollment}</td>
                    <td><span class=status_class>{r.status}</span></td>
                    <td class="mono">{r.assigned_hub.unwrap_or_default()}</td>
                    <td class="mono">{r.device_id.unwrap_or_default()}</td>
                    <td>{r.updated}</td>
                    <td class="actions">{action}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="registration-list">
            <thead><tr><th>"Registration ID"</th><th>"Enrollment"</th><th>"Status"</th><th>"Hub"</th>
                <th>"Device ID"</th><th>"Updated"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {next}
    }
    .into_any()
}

#[component]
pub fn RegistrationPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let delete = ServerAction::<DeleteRegistration>::new();
    let revoke = ServerAction::<RevokeCertificates>::new();
    let detail = Resource::new(
        move || (id(), delete.version().get(), revoke.version().get()),
        |(id, _, _)| get_registration(id),
    );
    view! {
        <section class="registration">
            <p><a href="/console/registrations">"← Registration records"</a></p>
            <ActionError action=delete/>
            <ActionError action=revoke/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let editable = may_change().await;
                    match detail.await {
                        Ok(Some(detail)) => view! { <RegistrationView detail delete revoke editable/> }.into_any(),
                        Ok(None) => view! { <p class="empty" role="status">"No registration record: the device's next registration starts fresh."</p> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn RegistrationView(
    detail: RegistrationDetail,
    delete: ServerAction<DeleteRegistration>,
    revoke: ServerAction<RevokeCertificates>,
    editable: bool,
) -> impl IntoView {
    let r = detail.row;
    let issued = (!detail.issued.is_empty()).then(|| {
        let id = r.registration_id.clone();
        view! { <Issued rows=detail.issued registration_id=id revoke editable/> }
    });
    let id = r.registration_id.clone();
    let error = detail.error_code.map(|code| {
        view! { <dt>"Error"</dt><dd><span class="mono">{code}</span>" "{detail.error_message.clone().unwrap_or_default()}</dd> }
    });
    let payload = detail
        .payload
        .map(|p| view! { <dt>"Payload"</dt><dd><pre class="mono">{p}</pre></dd> });
    let action = editable.then(|| view! {
        <ActionForm action=delete>
            <CsrfField/>
            <input type="hidden" name="registration_id" value=id/>
            <button type="submit" class="danger" id="delete-registration">"Delete record"</button>
        </ActionForm>
    });
    view! {
        <h1 class="mono">{r.registration_id}</h1>
        <dl class="facts">
            <dt>"Status"</dt><dd class="reg-status">{r.status}</dd>
            <dt>"Substatus"</dt><dd>{detail.substatus.unwrap_or_default()}</dd>
            <dt>"Enrollment"</dt><dd class="mono">{r.enrollment}</dd>
            <dt>"Attestation"</dt><dd>{detail.attestation}</dd>
            <dt>"Hub"</dt><dd class="mono">{r.assigned_hub.unwrap_or_default()}</dd>
            <dt>"Device ID"</dt><dd class="mono">{r.device_id.unwrap_or_default()}</dd>
            {error}
            {payload}
            <dt>"Created"</dt><dd>{detail.created}</dd>
            <dt>"Updated"</dt><dd>{r.updated}</dd>
        </dl>
        {action}
        {issued}
        {detail.on_hub.map(|hub| view! { <OnHub hub/> })}
    }
}

/// The certificates issued to the device, each with its revocation (or a button for it).
#[component]
fn Issued(
    rows: Vec<IssuedRow>,
    registration_id: String,
    revoke: ServerAction<RevokeCertificates>,
    editable: bool,
) -> impl IntoView {
    let revoke_form = move |serial: Option<String>, label: &'static str| {
        let id = registration_id.clone();
        view! {
            <ActionForm action=revoke attr:class="inline">
                <CsrfField/>
                <input type="hidden" name="registration_id" value=id/>
                {serial.map(|s| view! { <input type="hidden" name="serial" value=s/> })}
                <button type="submit" class="danger">{label}</button>
            </ActionForm>
        }
    };
    let any_valid = rows.iter().any(|c| c.revoked.is_none());
    let all = (editable && any_valid).then(|| revoke_form(None, "Revoke all"));
    let rows = rows
        .into_iter()
        .map(|c| {
            let state = match (&c.revoked, editable) {
                (Some(at), _) => {
                    view! { <span class="revoked">"revoked "{at.clone()}</span> }.into_any()
                }
                (None, true) => revoke_form(Some(c.serial.clone()), "Revoke").into_any(),
                (None, false) => view! { <span>"valid"</span> }.into_any(),
            };
            let key = c.serial.clone();
            view! {
                <tr data-serial=key>
                    <td class="mono">{c.serial}</td>
                    <td class="mono">{c.policy}</td>
                    <td class="mono">{c.issuer}</td>
                    <td>{c.key_type}</td>
                    <td>{c.not_before}</td>
                    <td>{c.not_after}</td>
                    <td class="issued-state">{state}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Issued certificates"</h2>
        <table class="issued-list">
            <thead><tr><th>"Serial"</th><th>"Policy"</th><th>"Issuer"</th><th>"Key"</th><th>"Valid from"</th><th>"Until"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {all}
    }
}

/// The device on its built-in hub: connection, authentication, twin, recent telemetry.
#[component]
fn OnHub(hub: HubDeviceView) -> impl IntoView {
    let connection = if hub.connected {
        "connected"
    } else {
        "not connected"
    };
    let telemetry = if hub.telemetry.is_empty() {
        view! { <p class="empty">"No telemetry received since the server started."</p> }.into_any()
    } else {
        let rows = hub
            .telemetry
            .into_iter()
            .map(|m| {
                let body = if m.truncated {
                    format!("{}…", m.body)
                } else {
                    m.body
                };
                view! {
                    <tr class="telemetry">
                        <td>{m.received}</td>
                        <td class="mono">{m.properties}</td>
                        <td class="mono telemetry-body">{body}</td>
                    </tr>
                }
            })
            .collect_view();
        view! {
            <table class="telemetry-list">
                <thead><tr><th>"Received"</th><th>"Properties"</th><th>"Body"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
        }
        .into_any()
    };
    view! {
        <h2>"On the hub"</h2>
        <dl class="facts on-hub">
            <dt>"Connection"</dt><dd class="hub-connection" data-connected=hub.connected.to_string()>{connection}</dd>
            <dt>"Identity"</dt><dd>{if hub.enabled { "enabled" } else { "disabled" }}", "{hub.authentication}</dd>
        </dl>
        <h3>"Twin"</h3>
        <pre class="mono twin">{hub.twin}</pre>
        <h3>"Recent telemetry"</h3>
        {telemetry}
    }
}
