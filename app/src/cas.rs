//! CA certificates (admins only): upload a root or intermediate, get its verification code, verify
//! it with a certificate for that code signed by its key (proof of possession), delete. Only
//! verified CAs authenticate X.509 devices of enrollment groups.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::auth::CsrfField;
use crate::forms::{ActionError, PemField};
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend, backend::refused};

#[server(endpoint = "cas", input = GetUrl)]
pub async fn list_cas() -> Result<Vec<CaRow>, ServerFnError> {
    require(Role::Admin)?;
    backend()?.cas().await.map_err(refused)
}

/// `verified` is the checkbox: present when ticked.
#[server(endpoint = "ca/upload")]
pub async fn upload_ca(
    csrf: String,
    name: String,
    pem: String,
    verified: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .upload_ca(&user.username, &name, &pem, verified.is_some())
        .await
        .map_err(refused)
}

#[server(endpoint = "ca/code")]
pub async fn generate_code(csrf: String, name: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .generate_ca_code(&user.username, &name)
        .await
        .map_err(refused)
}

#[server(endpoint = "ca/verify")]
pub async fn verify_ca(csrf: String, name: String, pem: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .verify_ca(&user.username, &name, &pem)
        .await
        .map_err(refused)
}

#[server(endpoint = "ca/delete")]
pub async fn delete_ca(csrf: String, name: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .delete_ca(&user.username, &name)
        .await
        .map_err(refused)
}

/// The page's actions, passed to the rows together.
#[derive(Clone, Copy)]
struct Actions {
    upload: ServerAction<UploadCa>,
    code: ServerAction<GenerateCode>,
    verify: ServerAction<VerifyCa>,
    delete: ServerAction<DeleteCa>,
}

#[component]
pub fn CaCertificates() -> impl IntoView {
    let actions = Actions {
        upload: ServerAction::new(),
        code: ServerAction::new(),
        verify: ServerAction::new(),
        delete: ServerAction::new(),
    };
    let cas = Resource::new(
        move || {
            (
                actions.upload.version().get(),
                actions.code.version().get(),
                actions.verify.version().get(),
                actions.delete.version().get(),
            )
        },
        |_| list_cas(),
    );
    view! {
        <section class="cas">
            <h1>"CA certificates"</h1>
            <ActionError action=actions.upload/>
            <ActionError action=actions.code/>
            <ActionError action=actions.verify/>
            <ActionError action=actions.delete/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match cas.await {
                        Ok(rows) => view! {
                            <CaTable rows actions/>
                            <UploadForm upload=actions.upload/>
                        }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn CaTable(rows: Vec<CaRow>, actions: Actions) -> impl IntoView {
    if rows.is_empty() {
        return view! { <p class="empty">"No CA certificates yet."</p> }.into_any();
    }
    let rows = rows
        .into_iter()
        .map(|ca| view! { <CaRowView ca actions/> })
        .collect_view();
    view! {
        <table class="ca-list">
            <thead><tr><th>"Name"</th><th>"Subject"</th><th>"Expires"</th><th>"Status"</th><th>"Proof of possession"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
    .into_any()
}

#[component]
fn CaRowView(ca: CaRow, actions: Actions) -> impl IntoView {
    let status = if ca.verified {
        "Verified"
    } else {
        "Unverified"
    };
    let proof = (!ca.verified).then(|| view! { <ProofSteps ca=ca.clone() actions/> });
    let name = ca.name.clone();
    view! {
        <tr data-ca=ca.name.clone()>
            <td class="mono">{ca.name.clone()}</td>
            <td>{ca.subject}</td>
            <td>{ca.expiry}</td>
            <td class="ca-status">{status}</td>
            <td>{proof}</td>
            <td class="actions">
                <ActionForm action=actions.delete attr:class="inline">
                    <CsrfField/>
                    <input type="hidden" name="name" value=name/>
                    <button type="submit" class="danger">"Delete"</button>
                </ActionForm>
            </td>
        </tr>
    }
}

/// Generate the code, then paste the certificate signed for it.
#[component]
fn ProofSteps(ca: CaRow, actions: Actions) -> impl IntoView {
    let (name, name2) = (ca.name.clone(), ca.name.clone());
    let code = ca.verification_code.map(|code| {
        view! {
            <p>"Sign a certificate with subject CN "<code class="mono verification-code">{code}</code>
               " with this CA's key, and paste it here:"</p>
            <ActionForm action=actions.verify attr:class="verify-ca">
                <CsrfField/>
                <input type="hidden" name="name" value=name2/>
                <textarea name="pem" rows="4" required placeholder="-----BEGIN CERTIFICATE-----"></textarea>
                <button type="submit">"Verify"</button>
            </ActionForm>
        }
    });
    view! {
        <ActionForm action=actions.code attr:class="inline">
            <CsrfField/>
            <input type="hidden" name="name" value=name/>
            <button type="submit" class="secondary">"Generate verification code"</button>
        </ActionForm>
        {code}
    }
}

#[component]
fn UploadForm(upload: ServerAction<UploadCa>) -> impl IntoView {
    view! {
        <h2>"Upload a CA certificate"</h2>
        <ActionForm action=upload attr:class="editor" attr:id="upload-ca">
            <CsrfField/>
            <label for="ca-name">"Name"</label>
            <input id="ca-name" name="name" required autocomplete="off"/>
            <PemField id="ca-pem" name="pem" label="Certificate (PEM)".to_string() required=true/>
            <div>
                <label class="check" for="ca-verified">
                    <input type="checkbox" id="ca-verified" name="verified" value="on"/>
                    " Trust without proof of possession (verified on upload)"
                </label>
            </div>
            <div><button type="submit" id="upload-ca-button">"Upload"</button></div>
        </ActionForm>
    }
}
