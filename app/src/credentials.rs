//! Certificates issued at provisioning (admins only): credential policies (which issuer signs,
//! validity, key types, renewal window) and the issuers, the instance's own CA and intermediates
//! uploaded with their keys. A device's issued certificates and their revocation are on its
//! registration page.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::auth::{CsrfField, has_role};
use crate::forms::{ActionError, PemField};
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend, backend::refused, backend::whole_number};

/// The key types a policy may allow: the form field and the API name.
const KEY_TYPES: [(&str, &str); 5] = [
    ("ec_p256", "ecP256"),
    ("ec_p384", "ecP384"),
    ("rsa2048", "rsa2048"),
    ("rsa3072", "rsa3072"),
    ("ed25519", "ed25519"),
];

#[server(endpoint = "credentials", input = GetUrl)]
pub async fn list_credentials() -> Result<CredentialsOverview, ServerFnError> {
    require(Role::Admin)?;
    backend()?.credentials().await.map_err(refused)
}

/// Each key type is a checkbox: present when ticked.
#[server(endpoint = "credential-policy/save")]
#[allow(clippy::too_many_arguments)]
pub async fn save_credential_policy(
    csrf: String,
    name: String,
    issuer: String,
    validity_days: String,
    renewal_window_days: String,
    ec_p256: Option<String>,
    ec_p384: Option<String>,
    rsa2048: Option<String>,
    rsa3072: Option<String>,
    ed25519: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    let ticked = [ec_p256, ec_p384, rsa2048, rsa3072, ed25519];
    let form = CredentialPolicyForm {
        name,
        issuer,
        validity_days: whole_number(&validity_days, "the validity")?,
        renewal_window_days: whole_number(&renewal_window_days, "the renewal window")?,
        key_types: KEY_TYPES
            .iter()
            .zip(ticked)
            .filter(|(_, on)| on.is_some())
            .map(|((_, api), _)| api.to_string())
            .collect(),
    };
    backend()?
        .save_credential_policy(&user.username, form)
        .await
        .map_err(refused)
}

#[server(endpoint = "credential-policy/delete")]
pub async fn delete_credential_policy(csrf: String, name: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .delete_credential_policy(&user.username, &name)
        .await
        .map_err(refused)
}

#[server(endpoint = "issuer/upload")]
pub async fn upload_issuer(
    csrf: String,
    name: String,
    chain_pem: String,
    key_pem: String,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .upload_issuer(&user.username, &name, &chain_pem, &key_pem)
        .await
        .map_err(refused)
}

#[server(endpoint = "issuer/delete")]
pub async fn delete_issuer(csrf: String, name: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .delete_issuer(&user.username, &name)
        .await
        .map_err(refused)
}

/// The page's actions, passed to its parts together.
#[derive(Clone, Copy)]
struct Actions {
    save: ServerAction<SaveCredentialPolicy>,
    delete: ServerAction<DeleteCredentialPolicy>,
    upload: ServerAction<UploadIssuer>,
    remove: ServerAction<DeleteIssuer>,
}

#[component]
pub fn Credentials() -> impl IntoView {
    let actions = Actions {
        save: ServerAction::new(),
        delete: ServerAction::new(),
        upload: ServerAction::new(),
        remove: ServerAction::new(),
    };
    let overview = Resource::new(
        move || {
            (
                actions.save.version().get(),
                actions.delete.version().get(),
                actions.upload.version().get(),
                actions.remove.version().get(),
            )
        },
        |_| list_credentials(),
    );
    view! {
        <section class="credentials">
            <h1>"Issued certificates"</h1>
            <p class="muted">"Devices whose enrollment names a credential policy may send a CSR when they register; the policy's issuer signs it (CN = registration ID, client authentication)."</p>
            <ActionError action=actions.save/>
            <ActionError action=actions.delete/>
            <ActionError action=actions.upload/>
            <ActionError action=actions.remove/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match overview.await {
                        Ok(overview) => view! {
                            <PolicyTable policies=overview.policies delete=actions.delete/>
                            <IssuerTable issuers=overview.issuers remove=actions.remove/>
                        }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
            // Apart from the tables: a refused save keeps what the admin typed.
            <Suspense>
                {move || Suspend::new(async move {
                    has_role(Role::Admin).await.then(|| view! {
                        <PolicyForm save=actions.save/>
                        <IssuerForm upload=actions.upload/>
                    })
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn PolicyTable(
    policies: Vec<CredentialPolicyRow>,
    delete: ServerAction<DeleteCredentialPolicy>,
) -> impl IntoView {
    let rows = policies
        .into_iter()
        .map(|p| {
            let (key, name) = (p.name.clone(), p.name.clone());
            view! {
                <tr data-credential-policy=key>
                    <td class="mono">{name}</td>
                    <td class="mono">{p.issuer}</td>
                    <td class="num validity">{p.validity_days}" days"</td>
                    <td class="key-types">{p.key_types.join(", ")}</td>
                    <td class="num">{p.renewal_window_days}" days"</td>
                    <td>{p.updated}</td>
                    <td class="actions">
                        <ActionForm action=delete attr:class="inline">
                            <CsrfField/>
                            <input type="hidden" name="name" value=p.name/>
                            <button type="submit" class="danger">"Delete"</button>
                        </ActionForm>
                    </td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <h2>"Credential policies"</h2>
        <table class="credential-policy-list">
            <thead><tr><th>"Name"</th><th>"Issuer"</th><th>"Validity"</th><th>"Key types"</th><th>"Renewal window"</th><th>"Updated"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
fn PolicyForm(save: ServerAction<SaveCredentialPolicy>) -> impl IntoView {
    let boxes = KEY_TYPES
        .iter()
        .map(|(field, api)| {
            let (id, label_for) = (format!("key-{field}"), format!("key-{field}"));
            view! {
                <label class="check" for=label_for>
                    <input type="checkbox" id=id name=*field value="on" checked={*field != "ed25519"}/>" "{*api}
                </label>
            }
        })
        .collect_view();
    view! {
        <h2>"Create or replace a credential policy"</h2>
        <ActionForm action=save attr:class="editor" attr:id="credential-policy">
            <CsrfField/>
            <label for="credential-policy-name">"Name"</label>
            <input id="credential-policy-name" name="name" required autocomplete="off"/>
            <label for="credential-policy-issuer">"Issuer"</label>
            <input id="credential-policy-issuer" name="issuer" value="onramp" list="issuer-names" required autocomplete="off"/>
            <label for="credential-policy-validity">"Validity (days)"</label>
            <input id="credential-policy-validity" name="validity_days" type="number" min="1" max="3650" value="90"/>
            <label for="credential-policy-window">"Renewal window before expiry (days)"</label>
            <input id="credential-policy-window" name="renewal_window_days" type="number" min="0" value="30"/>
            <span class="label">"Key types"</span>
            <div class="rights">{boxes}</div>
            <div><button type="submit" id="save-credential-policy">"Save policy"</button></div>
        </ActionForm>
    }
}

#[component]
fn IssuerTable(issuers: Vec<IssuerRow>, remove: ServerAction<DeleteIssuer>) -> impl IntoView {
    // The policy editor's issuer field suggests these.
    let names = issuers
        .iter()
        .map(|i| view! { <option value=i.name.clone()></option> })
        .collect_view();
    let rows = issuers
        .into_iter()
        .map(|i| {
            let name = i.name.clone();
            let action = (!i.own).then(|| {
                view! {
                    <ActionForm action=remove attr:class="inline">
                        <CsrfField/>
                        <input type="hidden" name="name" value=name/>
                        <button type="submit" class="danger">"Delete"</button>
                    </ActionForm>
                }
            });
            let kind = if i.own {
                "this instance's own"
            } else {
                "uploaded"
            };
            let key = i.name.clone();
            view! {
                <tr data-issuer=key>
                    <td class="mono">{i.name}</td>
                    <td>{i.subject}</td>
                    <td>{i.expiry}</td>
                    <td>{kind}</td>
                    <td class="actions">{action}</td>
                </tr>
            }
        })
        .collect_view();
    view! {
        <datalist id="issuer-names">{names}</datalist>
        <h2>"Issuers"</h2>
        <table class="issuer-list">
            <thead><tr><th>"Name"</th><th>"Subject"</th><th>"Expires"</th><th>"Kind"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
    }
}

#[component]
fn IssuerForm(upload: ServerAction<UploadIssuer>) -> impl IntoView {
    view! {
        <h2>"Upload an intermediate CA"</h2>
        <p class="muted">"It signs for the policies that name it, and authenticates its devices' renewals as a verified CA. The key is kept on the server and never shown again."</p>
        <ActionForm action=upload attr:class="editor" attr:id="upload-issuer">
            <CsrfField/>
            <label for="issuer-name">"Name"</label>
            <input id="issuer-name" name="name" required autocomplete="off"/>
            <PemField id="issuer-chain" name="chain_pem" label="Certificates (PEM, the CA first)".to_string() required=true/>
            <label for="issuer-key">"Private key (PEM)"</label>
            <textarea id="issuer-key" name="key_pem" rows="4" class="mono" required autocomplete="off"
                placeholder="-----BEGIN PRIVATE KEY-----"></textarea>
            <div><button type="submit" id="upload-issuer-button">"Upload"</button></div>
        </ActionForm>
    }
}
