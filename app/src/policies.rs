//! Shared access policies of the service API (admins only, as they hold keys): create, change
//! rights, reveal the connection string, re-key, delete.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::auth::CsrfField;
use crate::forms::ActionError;
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend, backend::refused};

const RIGHTS: [&str; 5] = [
    "ServiceConfig",
    "EnrollmentRead",
    "EnrollmentWrite",
    "RegistrationStatusRead",
    "RegistrationStatusWrite",
];

#[server(endpoint = "policies", input = GetUrl)]
pub async fn list_policies() -> Result<Vec<PolicyRow>, ServerFnError> {
    require(Role::Admin)?;
    backend()?.policies().await.map_err(refused)
}

/// Each right is a checkbox: present when ticked.
#[server(endpoint = "policy/save")]
#[allow(clippy::too_many_arguments)]
pub async fn save_policy(
    csrf: String,
    name: String,
    service_config: Option<String>,
    enrollment_read: Option<String>,
    enrollment_write: Option<String>,
    registration_status_read: Option<String>,
    registration_status_write: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    let ticked = [
        service_config,
        enrollment_read,
        enrollment_write,
        registration_status_read,
        registration_status_write,
    ];
    let rights = RIGHTS
        .iter()
        .zip(ticked)
        .filter(|(_, on)| on.is_some())
        .map(|(right, _)| right.to_string())
        .collect();
    backend()?
        .save_policy(&user.username, &name, rights)
        .await
        .map_err(refused)
}

#[server(endpoint = "policy/rekey")]
pub async fn rekey_policy(
    csrf: String,
    name: String,
    secondary: bool,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .rekey_policy(&user.username, &name, secondary)
        .await
        .map_err(refused)
}

#[server(endpoint = "policy/delete")]
pub async fn delete_policy(csrf: String, name: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .delete_policy(&user.username, &name)
        .await
        .map_err(refused)
}

fn rekey_form(rekey: ServerAction<RekeyPolicy>, name: String, secondary: bool) -> impl IntoView {
    let label = if secondary {
        "Re-key secondary"
    } else {
        "Re-key primary"
    };
    view! {
        <ActionForm action=rekey attr:class="inline">
            <CsrfField/>
            <input type="hidden" name="name" value=name/>
            <input type="hidden" name="secondary" value=secondary.to_string()/>
            <button type="submit" class="secondary">{label}</button>
        </ActionForm>
    }
}

fn field(right: &str) -> &'static str {
    match right {
        "ServiceConfig" => "service_config",
        "EnrollmentRead" => "enrollment_read",
        "EnrollmentWrite" => "enrollment_write",
        "RegistrationStatusRead" => "registration_status_read",
        _ => "registration_status_write",
    }
}

#[component]
pub fn Policies() -> impl IntoView {
    let save = ServerAction::<SavePolicy>::new();
    let rekey = ServerAction::<RekeyPolicy>::new();
    let delete = ServerAction::<DeletePolicy>::new();
    let policies = Resource::new(
        move || {
            (
                save.version().get(),
                rekey.version().get(),
                delete.version().get(),
            )
        },
        |_| list_policies(),
    );
    view! {
        <section class="policies">
            <h1>"Access policies"</h1>
            <ActionError action=save/>
            <ActionError action=rekey/>
            <ActionError action=delete/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match policies.await {
                        Ok(rows) => view! { <PolicyTable rows save rekey delete/> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn PolicyTable(
    rows: Vec<PolicyRow>,
    save: ServerAction<SavePolicy>,
    rekey: ServerAction<RekeyPolicy>,
    delete: ServerAction<DeletePolicy>,
) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|p| {
            let (n1, n2, n3, data) = (
                p.name.clone(),
                p.name.clone(),
                p.name.clone(),
                p.name.clone(),
            );
            view! {
                <tr data-policy=data>
                    <td class="mono">{p.name}</td>
                    <td>{p.rights.join(", ")}</td>
                    <td>
                        <details class="reveal">
                            <summary>"Reveal connection string"</summary>
                            <code class="mono connection-string">{p.connection_string}</code>
                        </details>
                    </td>
                    <td class="actions">
                        {rekey_form(rekey, n1, false)}
                        {rekey_form(rekey, n2, true)}
                        <ActionForm action=delete attr:class="inline">
                            <CsrfField/>
                            <input type="hidden" name="name" value=n3/>
                            <button type="submit" class="danger">"Delete"</button>
                        </ActionForm>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let boxes = RIGHTS
        .iter()
        .map(|right| {
            let id = format!("right-{}", field(right));
            let label_for = id.clone();
            view! {
                <label class="check" for=label_for>
                    <input type="checkbox" id=id name=field(right) value="on"/>" "{*right}
                </label>
            }
        })
        .collect_view();
    view! {
        <table class="policy-list">
            <thead><tr><th>"Name"</th><th>"Rights"</th><th>"Connection string"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <h2>"Create a policy, or change a policy's rights"</h2>
        <ActionForm action=save attr:class="editor" attr:id="new-policy">
            <CsrfField/>
            <label for="policy-name">"Name"</label>
            <input id="policy-name" name="name" required autocomplete="off"/>
            <span class="label">"Rights"</span>
            <div class="rights">{boxes}</div>
            <div><button type="submit" id="save-policy">"Save policy"</button></div>
        </ActionForm>
    }
}
