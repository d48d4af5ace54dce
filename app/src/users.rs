//! Console users (admins only): create a user or set a user's password and role, disable and
//! re-enable. Sign-in itself is the server's `/login`.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::auth::CsrfField;
use crate::forms::ActionError;
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend, backend::refused};

#[server(endpoint = "users", input = GetUrl)]
pub async fn list_users() -> Result<Vec<UserRow>, ServerFnError> {
    require(Role::Admin)?;
    backend()?.users().await.map_err(refused)
}

#[server(endpoint = "user/save")]
pub async fn save_user(
    csrf: String,
    username: String,
    password: String,
    role: String,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    let role = match role.as_str() {
        "viewer" => Role::Viewer,
        "operator" => Role::Operator,
        "admin" => Role::Admin,
        other => {
            return Err(refused(crate::backend::BackendError::Invalid(format!(
                "unknown role {other:?}"
            ))));
        }
    };
    backend()?
        .save_user(&user.username, &username, &password, role)
        .await
        .map_err(refused)
}

#[server(endpoint = "user/disabled")]
pub async fn set_user_disabled(
    csrf: String,
    username: String,
    disabled: bool,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Admin)?;
    backend()?
        .set_user_disabled(&user.username, &username, disabled)
        .await
        .map_err(refused)
}

#[component]
pub fn Users() -> impl IntoView {
    let save = ServerAction::<SaveUser>::new();
    let toggle = ServerAction::<SetUserDisabled>::new();
    let users = Resource::new(
        move || (save.version().get(), toggle.version().get()),
        |_| list_users(),
    );
    view! {
        <section class="users">
            <h1>"Console users"</h1>
            <ActionError action=toggle/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    match users.await {
                        Ok(rows) => view! { <UserTable rows save toggle/> }.into_any(),
                        Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn UserTable(
    rows: Vec<UserRow>,
    save: ServerAction<SaveUser>,
    toggle: ServerAction<SetUserDisabled>,
) -> impl IntoView {
    let rows = rows
        .into_iter()
        .map(|u| {
            let (name, data) = (u.username.clone(), u.username.clone());
            let label = if u.disabled { "Enable" } else { "Disable" };
            view! {
                <tr data-user=data>
                    <td class="mono">{u.username}</td>
                    <td>{u.role.label()}</td>
                    <td>{if u.disabled { "disabled" } else { "active" }}</td>
                    <td>{u.created}</td>
                    <td class="actions">
                        <ActionForm action=toggle attr:class="inline">
                            <CsrfField/>
                            <input type="hidden" name="username" value=name/>
                            <input type="hidden" name="disabled" value=(!u.disabled).to_string()/>
                            <button type="submit" class="secondary">{label}</button>
                        </ActionForm>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let saved = move || save.value().with(|v| matches!(v, Some(Ok(_))));
    view! {
        <table class="user-list">
            <thead><tr><th>"Username"</th><th>"Role"</th><th>"State"</th><th>"Created"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        <h2>"Add a user, or set a user's password and role"</h2>
        <ActionForm action=save attr:class="editor" attr:id="user-form">
            <CsrfField/>
            <label for="user-name">"Username"</label>
            <input id="user-name" name="username" required autocomplete="off"/>
            <label for="user-password">"Password (at least 10 characters)"</label>
            <input id="user-password" name="password" type="password" required autocomplete="new-password"/>
            <label for="user-role">"Role"</label>
            <select id="user-role" name="role">
                <option value="viewer">"viewer"</option>
                <option value="operator">"operator"</option>
                <option value="admin">"admin"</option>
            </select>
            <ActionError action=save/>
            <Show when=saved>
                <p class="saved" role="status">"Saved."</p>
            </Show>
            <div><button type="submit" id="save-user">"Save user"</button></div>
        </ActionForm>
    }
}
