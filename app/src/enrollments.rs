//! Individual enrollments: a paged, searchable list, the create/edit form, and per-row enable,
//! disable and delete; an enrollment's page also holds its test mode (`test_fault`).

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;
use leptos_router::hooks::{use_params_map, use_query, use_query_map};
use leptos_router::params::Params;

use crate::auth::{CsrfField, current_role, may_change};
use crate::forms::{ActionError, CopyButton, PemField, encode};
use crate::model::*;
use crate::test_fault::{TestFault, TestFaultActions};

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend};

#[server(endpoint = "enrollments", input = GetUrl)]
pub async fn list_enrollments(filter: EnrollmentFilter) -> Result<EnrollmentPage, ServerFnError> {
    require(Role::Viewer)?;
    backend()?
        .list_enrollments(filter)
        .await
        .map_err(crate::backend::refused)
}

/// `kind` is "group" for an enrollment group, anything else for an individual enrollment.
#[server(endpoint = "enrollment", input = GetUrl)]
pub async fn get_enrollment(
    registration_id: String,
    kind: Option<String>,
) -> Result<Option<EnrollmentDetail>, ServerFnError> {
    let user = require(Role::Viewer)?;
    backend()?
        .enrollment(
            &registration_id,
            kind.as_deref() == Some("group"),
            user.role >= Role::Operator,
        )
        .await
        .map_err(crate::backend::refused)
}

/// `csrf` is checked by the server before this runs; it is a field so forms can carry it.
#[server(endpoint = "enrollment/save")]
#[allow(clippy::too_many_arguments)]
pub async fn save_enrollment(
    csrf: String,
    kind: Option<String>,
    create: bool,
    registration_id: String,
    device_id: String,
    provisioning_status: String,
    initial_twin: String,
    reprovision: String,
    allocation_policy: String,
    iot_hubs: String,
    webhook_url: Option<String>,
    attestation: Option<String>,
    primary_certificate: Option<String>,
    secondary_certificate: Option<String>,
    ca_reference: Option<String>,
    endorsement_key: Option<String>,
    credential_policy: Option<String>,
) -> Result<String, ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    let form = EnrollmentForm {
        registration_id: registration_id.trim().to_string(),
        device_id,
        provisioning_status,
        initial_twin,
        reprovision,
        allocation_policy,
        iot_hubs,
        webhook_url: webhook_url.unwrap_or_default(),
        attestation: attestation.unwrap_or_default(),
        primary_certificate: primary_certificate.unwrap_or_default(),
        secondary_certificate: secondary_certificate.unwrap_or_default(),
        ca_reference: ca_reference.unwrap_or_default(),
        endorsement_key: endorsement_key.unwrap_or_default(),
        credential_policy: credential_policy.unwrap_or_default(),
    };
    let id = form.registration_id.clone();
    backend()?
        .save_enrollment(
            &user.username,
            form,
            kind.as_deref() == Some("group"),
            create,
        )
        .await
        .map_err(crate::backend::refused)?;
    Ok(id)
}

#[server(endpoint = "enrollment/status")]
pub async fn set_enrollment_status(
    csrf: String,
    kind: Option<String>,
    registration_id: String,
    enabled: bool,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    backend()?
        .set_enrollment_status(
            &user.username,
            &registration_id,
            kind.as_deref() == Some("group"),
            enabled,
        )
        .await
        .map_err(crate::backend::refused)
}

/// Regenerates the primary (or secondary) symmetric key.
#[server(endpoint = "enrollment/roll-key")]
pub async fn roll_key(
    csrf: String,
    kind: Option<String>,
    registration_id: String,
    secondary: bool,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    let group = kind.as_deref() == Some("group");
    backend()?
        .roll_key(&user.username, &registration_id, group, secondary)
        .await
        .map_err(crate::backend::refused)
}

#[server(endpoint = "enrollment/delete")]
pub async fn delete_enrollment(
    csrf: String,
    kind: Option<String>,
    registration_id: String,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    backend()?
        .delete_enrollment(
            &user.username,
            &registration_id,
            kind.as_deref() == Some("group"),
        )
        .await
        .map_err(crate::backend::refused)
}

impl Params for EnrollmentFilter {
    fn from_map(
        map: &leptos_router::params::ParamsMap,
    ) -> Result<Self, leptos_router::params::ParamsError> {
        let text = |key: &str| map.get(key).unwrap_or_default();
        Ok(EnrollmentFilter {
            q: text("q"),
            status: text("status"),
            attestation: text("attestation"),
            after: text("after"),
            kind: text("kind"),
        })
    }
}

fn may_edit() -> impl Fn() -> bool + Copy {
    let role = current_role();
    move || role().is_some_and(|r| r >= Role::Operator)
}

#[component]
pub fn Enrollments() -> impl IntoView {
    let query = use_query::<EnrollmentFilter>();
    let filter = move || query.get().unwrap_or_default();
    let toggle = ServerAction::<SetEnrollmentStatus>::new();
    let delete = ServerAction::<DeleteEnrollment>::new();
    let page = Resource::new(
        move || (filter(), toggle.version().get(), delete.version().get()),
        |(filter, _, _)| list_enrollments(filter),
    );
    let may_edit = may_edit();
    let groups = filter().kind == "group";
    let (title, new_label, new_href) = match groups {
        true => (
            "Enrollment groups",
            "New group",
            "/console/enrollments/new?kind=group",
        ),
        false => (
            "Individual enrollments",
            "New enrollment",
            "/console/enrollments/new",
        ),
    };
    view! {
        <section class="enrollments">
            <nav class="tabs">
                // Full loads: the filter form and title are rendered per kind.
                <a href="/console/enrollments" rel="external" class:active=!groups>"Individual"</a>
                <a href="/console/enrollments?kind=group" rel="external" class:active=groups>"Groups"</a>
            </nav>
            <div class="toolbar">
                <h1>{title}</h1>
                <Transition>
                    <Show when=may_edit>
                        <a class="button" href=new_href>{new_label}</a>
                    </Show>
                </Transition>
            </div>
            <FilterForm filter=filter()/>
            <ActionError action=toggle/>
            <ActionError action=delete/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match page.await {
                        Ok(page) => view! { <EnrollmentTable page filter=filter() toggle delete/> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn FilterForm(filter: EnrollmentFilter) -> impl IntoView {
    let option = |value: &'static str, label: &'static str, current: &str| {
        let selected = value == current;
        view! { <option value=value selected=selected>{label}</option> }
    };
    view! {
        <form class="filters" method="get" action="/console/enrollments" role="search">
            <input type="hidden" name="kind" value=filter.kind.clone()/>
            <label>"ID starts with"
                <input type="search" name="q" value=filter.q.clone() autocomplete="off"/>
            </label>
            <label>"Status"
                <select name="status">
                    {option("", "any", &filter.status)}
                    {option("enabled", "enabled", &filter.status)}
                    {option("disabled", "disabled", &filter.status)}
                </select>
            </label>
            <label>"Attestation"
                <select name="attestation">
                    {option("", "any", &filter.attestation)}
                    {option("symmetricKey", "symmetric key", &filter.attestation)}
                    {option("x509", "X.509", &filter.attestation)}
                    {option("tpm", "TPM", &filter.attestation)}
                </select>
            </label>
            <button type="submit">"Search"</button>
        </form>
    }
}

#[component]
fn EnrollmentTable(
    page: EnrollmentPage,
    filter: EnrollmentFilter,
    toggle: ServerAction<SetEnrollmentStatus>,
    delete: ServerAction<DeleteEnrollment>,
) -> impl IntoView {
    if page.rows.is_empty() {
        return view! { <p class="empty">"No enrollments match."</p> }.into_any();
    }
    let may_edit = may_edit();
    let next = page.next.map(|after| {
        let href = format!(
            "/console/enrollments?kind={}&q={}&status={}&attestation={}&after={}",
            encode(&filter.kind),
            encode(&filter.q),
            encode(&filter.status),
            encode(&filter.attestation),
            encode(&after)
        );
        view! { <a class="next" href=href>"Next page →"</a> }
    });
    let rows = page
        .rows
        .into_iter()
        .map(|row| {
            let actions = may_edit().then(|| row_actions(&row, &filter.kind, toggle, delete));
            let href = format!(
                "/console/enrollments/{}?kind={}",
                encode(&row.registration_id),
                encode(&filter.kind)
            );
            let status_class = format!("status {}", row.status);
            let data_id = row.registration_id.clone();
            view! {
                <tr data-id=data_id>
                    <td class="mono"><a href=href>{row.registration_id}</a></td>
                    <td class="mono">{row.device_id.unwrap_or_default()}</td>
                    <td>{row.attestation}</td>
                    <td><span class=status_class>{row.status}</span></td>
                    <td>{row.updated}</td>
                    <td class="actions">{actions}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <table class="enrollment-list">
            <thead>
                <tr><th>"Registration ID"</th><th>"Device ID"</th><th>"Attestation"</th><th>"Status"</th><th>"Updated"</th><th></th></tr>
            </thead>
            <tbody>{rows}</tbody>
        </table>
        {next}
    }
    .into_any()
}

/// Derives the key a device of this group signs with (operators, who may see the group key).
#[server(endpoint = "group/derive-key")]
pub async fn derive_key(
    csrf: String,
    group_id: String,
    registration_id: String,
) -> Result<String, ServerFnError> {
    let _ = csrf;
    require(Role::Operator)?;
    backend()?
        .derive_device_key(&group_id, &registration_id)
        .await
        .map_err(crate::backend::refused)
}

#[component]
fn DeriveKey(group_id: String) -> impl IntoView {
    let derive = ServerAction::<DeriveKey>::new();
    view! {
        <h2>"Device key for a registration ID"</h2>
        <ActionForm action=derive attr:class="editor" attr:id="derive-key">
            <CsrfField/>
            <input type="hidden" name="group_id" value=group_id/>
            <label for="derive-id">"Registration ID"</label>
            <input id="derive-id" name="registration_id" required autocomplete="off"/>
            <div><button type="submit" id="derive">"Derive key"</button></div>
        </ActionForm>
        <ActionError action=derive/>
        {move || derive.value().get().and_then(Result::ok).map(|key| view! {
            <p>"Device key: "<code class="mono derived-key">{key.clone()}</code>" "<CopyButton text=key/></p>
        })}
    }
}

/// Enable or disable, and delete, for one row.
fn row_actions(
    row: &EnrollmentRow,
    kind: &str,
    toggle: ServerAction<SetEnrollmentStatus>,
    delete: ServerAction<DeleteEnrollment>,
) -> impl IntoView + use<> {
    let enabled = row.status == "enabled";
    let (id, id2) = (row.registration_id.clone(), row.registration_id.clone());
    let (kind, kind2) = (kind.to_string(), kind.to_string());
    let label = if enabled { "Disable" } else { "Enable" };
    view! {
        <ActionForm action=toggle attr:class="inline">
            <CsrfField/>
            <input type="hidden" name="kind" value=kind/>
            <input type="hidden" name="registration_id" value=id/>
            <input type="hidden" name="enabled" value=(!enabled).to_string()/>
            <button type="submit" class="secondary">{label}</button>
        </ActionForm>
        <ActionForm action=delete attr:class="inline">
            <CsrfField/>
            <input type="hidden" name="kind" value=kind2/>
            <input type="hidden" name="registration_id" value=id2/>
            <button type="submit" class="danger">"Delete"</button>
        </ActionForm>
    }
}

#[component]
pub fn EnrollmentPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let kind = move || query.with(|q| q.get("kind").unwrap_or_default());
    let roll = ServerAction::<RollKey>::new();
    let faults = TestFaultActions::new();
    let detail = Resource::new(
        move || (id(), kind(), roll.version().get(), faults.version()),
        |(id, kind, _, _)| async move {
            if id == "new" {
                Ok(None)
            } else {
                get_enrollment(id, Some(kind)).await
            }
        },
    );
    view! {
        <section class="enrollment">
            <p><a href=move || format!("/console/enrollments?kind={}", kind())>"← Enrollments"</a></p>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let kind = kind();
                    let group = kind == "group";
                    let editable = may_change().await;
                    match (id().as_str(), detail.await) {
                        ("new", _) => view! {
                            <h1>{if group { "New enrollment group" } else { "New enrollment" }}</h1>
                            <EnrollmentEditor form=EnrollmentForm {
                                provisioning_status: "enabled".into(),
                                reprovision: "migrate".into(),
                                attestation: "symmetricKey".into(),
                                ..EnrollmentForm::default()
                            } kind create=true/>
                        }.into_any(),
                        (_, Ok(Some(detail))) => view! { <EnrollmentView detail kind roll faults editable/> }.into_any(),
                        (id, Ok(None)) => view! { <p class="error" role="alert">{format!("No enrollment {id:?}.")}</p> }.into_any(),
                        (_, Err(e)) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn EnrollmentView(
    detail: EnrollmentDetail,
    kind: String,
    roll: ServerAction<RollKey>,
    faults: TestFaultActions,
    /// Whether the user may change it (decided in the page's `Suspend`, as on the server).
    editable: bool,
) -> impl IntoView {
    let id = detail.form.registration_id.clone();
    let derive = (kind == "group" && detail.keys.is_some())
        .then(|| view! { <DeriveKey group_id=detail.form.registration_id.clone()/> });
    let registration = detail.registration.map(|r| {
        view! {
            <h2>"Registration"</h2>
            <dl class="facts registration">
                <dt>"Status"</dt><dd class="reg-status">{r.status}</dd>
                <dt>"Substatus"</dt><dd>{r.substatus.unwrap_or_default()}</dd>
                <dt>"Hub"</dt><dd class="mono">{r.assigned_hub.unwrap_or_default()}</dd>
                <dt>"Device ID"</dt><dd class="mono">{r.device_id.unwrap_or_default()}</dd>
                <dt>"Updated"</dt><dd>{r.updated}</dd>
            </dl>
        }
    });
    let roll_form = |secondary: bool| {
        let (id, kind) = (id.clone(), kind.clone());
        let label = if secondary {
            "Regenerate secondary"
        } else {
            "Regenerate primary"
        };
        view! {
            <ActionForm action=roll attr:class="inline">
                <CsrfField/>
                <input type="hidden" name="kind" value=kind/>
                <input type="hidden" name="registration_id" value=id/>
                <input type="hidden" name="secondary" value=secondary.to_string()/>
                <button type="submit" class="secondary">{label}</button>
            </ActionForm>
        }
    };
    let keys = detail.keys.map(|(primary, secondary)| {
        view! {
            <details class="keys">
                <summary>"Reveal symmetric keys"</summary>
                <dl class="facts">
                    <dt>"Primary key"</dt>
                    <dd><span class="mono primary-key">{primary.clone()}</span>" "<CopyButton text=primary/></dd>
                    <dt>"Secondary key"</dt>
                    <dd><span class="mono secondary-key">{secondary.clone()}</span>" "<CopyButton text=secondary/></dd>
                </dl>
                <div class="key-actions">{roll_form(false)}{roll_form(true)}</div>
            </details>
            <ActionError action=roll/>
        }
    });
    let may_edit = may_edit();
    let test_fault = editable.then(|| {
        view! { <TestFault registration_id=id.clone() kind=kind.clone() current=detail.test_fault actions=faults/> }
    });
    let form = detail.form.clone();
    view! {
        <h1 class="mono">{detail.form.registration_id.clone()}</h1>
        <dl class="facts">
            <dt>"Attestation"</dt><dd>{detail.attestation}</dd>
            <dt>"Created"</dt><dd>{detail.created}</dd>
            <dt>"Updated"</dt><dd>{detail.updated}</dd>
        </dl>
        {keys}
        {derive}
        {registration}
        {test_fault}
        <Show when=may_edit fallback=|| view! { <p class="muted">"Read-only: your role cannot change enrollments."</p> }>
            <h2>"Edit"</h2>
            <EnrollmentEditor form=form.clone() kind=kind.clone() create=false/>
        </Show>
    }
}

/// How devices prove themselves: symmetric keys (generated, kept on edit), X.509 certificates
/// (pasted PEM; a group may instead name a registered CA), or a TPM endorsement key. Only the
/// chosen kind's fields are shown.
#[component]
fn AttestationFields(form: EnrollmentForm, group: bool) -> impl IntoView {
    let (kind, set_kind) = signal(form.attestation.clone());
    let shown = move |which: &'static str| move || kind.get() != which;
    let mut choices = vec![
        ("symmetricKey", "symmetric key"),
        ("x509", "X.509 certificate"),
    ];
    if !group {
        choices.push(("tpm", "TPM"));
    }
    let options = choices
        .into_iter()
        .map(|(value, label)| {
            let selected = value == form.attestation;
            view! { <option value=value selected=selected>{label}</option> }
        })
        .collect_view();
    let certificate_label = if group {
        "signing certificate (root or intermediate)"
    } else {
        "device certificate"
    };
    view! {
        <label for="attestation">"Attestation"</label>
        <select name="attestation" id="attestation"
            on:change=move |ev| set_kind.set(event_target_value(&ev))>{options}</select>
        <fieldset class="attestation x509" hidden=shown("x509")>
            <PemField id="primary_certificate" name="primary_certificate"
                label=format!("Primary {certificate_label} (PEM)") initial=form.primary_certificate.clone()/>
            <PemField id="secondary_certificate" name="secondary_certificate"
                label=format!("Secondary {certificate_label} (PEM, optional)") initial=form.secondary_certificate.clone()/>
            <label for="ca_reference" hidden=!group>"Or a CA certificate registered here (name)"</label>
            <input id="ca_reference" name="ca_reference" value=form.ca_reference.clone()
                autocomplete="off" hidden=!group/>
        </fieldset>
        <fieldset class="attestation tpm" hidden=shown("tpm")>
            <label for="endorsement_key">"Endorsement key (base64)"</label>
            <textarea id="endorsement_key" name="endorsement_key" rows="4" class="mono">{form.endorsement_key.clone()}</textarea>
        </fieldset>
        <p class="muted" hidden=shown("symmetricKey")>"Keys are generated (64 random bytes) and kept when you save."</p>
    }
}

#[component]
fn EnrollmentEditor(form: EnrollmentForm, kind: String, create: bool) -> impl IntoView {
    let group = kind == "group";
    let save = ServerAction::<SaveEnrollment>::new();
    let saved = move || save.value().with(|v| matches!(v, Some(Ok(_))));
    let select = |name: &'static str, current: &str, choices: &[(&'static str, &'static str)]| {
        let options = choices
            .iter()
            .map(|(value, label)| {
                let selected = *value == current;
                view! { <option value=*value selected=selected>{*label}</option> }
            })
            .collect_view();
        view! { <select name=name id=name>{options}</select> }
    };
    view! {
        <ActionForm action=save attr:class="editor">
            <CsrfField/>
            <input type="hidden" name="create" value=create.to_string()/>
            <input type="hidden" name="kind" value=kind/>
            <label for="registration_id">{if group { "Group ID" } else { "Registration ID" }}</label>
            <input id="registration_id" name="registration_id" required value=form.registration_id.clone()
                readonly=!create autocomplete="off"/>
            <label for="device_id" hidden=group>"Device ID (empty: the registration ID)"</label>
            <input id="device_id" name="device_id" value=form.device_id.clone() autocomplete="off" hidden=group/>
            <AttestationFields form=form.clone() group/>
            <label for="provisioning_status">"Provisioning status"</label>
            {select("provisioning_status", &form.provisioning_status, &[("enabled", "enabled"), ("disabled", "disabled")])}
            <label for="reprovision">"On re-registration"</label>
            {select("reprovision", &form.reprovision, &[
                ("migrate", "re-provision and migrate data"),
                ("reset", "re-provision and reset to initial config"),
                ("never", "never re-provision"),
            ])}
            <label for="allocation_policy">"Allocation policy"</label>
            {select("allocation_policy", &form.allocation_policy, &[
                ("", "instance default"),
                ("hashed", "weighted hashed"),
                ("geoLatency", "lowest latency / geo"),
                ("static", "static"),
                ("custom", "custom (webhook)"),
            ])}
            <label for="webhook_url">"Custom allocation webhook URL"</label>
            <input id="webhook_url" name="webhook_url" type="url" value=form.webhook_url.clone()
                placeholder="https://allocator.example/api/allocate" autocomplete="off"/>
            <label for="credential_policy">"Credential policy (signs the devices' CSRs; empty: none)"</label>
            <input id="credential_policy" name="credential_policy" value=form.credential_policy.clone() autocomplete="off"/>
            <label for="iot_hubs">"Hubs (comma-separated; empty: all linked hubs)"</label>
            <input id="iot_hubs" name="iot_hubs" value=form.iot_hubs.clone() autocomplete="off"/>
            <label for="initial_twin">"Initial twin (JSON: tags and properties.desired)"</label>
            <textarea id="initial_twin" name="initial_twin" rows="8" class="mono"
                placeholder=r#"{"tags": {}, "properties": {"desired": {}}}"#>{form.initial_twin.clone()}</textarea>
            <ActionError action=save/>
            <Show when=saved>
                <p class="saved" role="status">"Saved."</p>
            </Show>
            <div><button type="submit" id="save">{if create { "Create" } else { "Save" }}</button></div>
        </ActionForm>
    }
}
