//! Linked hubs (add, edit region, weight and participation, remove), the instance's allocation
//! settings, and the what-if tool that shows where a registration would go without registering.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::auth::{CsrfField, may_change};
use crate::forms::ActionError;
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend, backend::refused};

#[server(endpoint = "hubs", input = GetUrl)]
pub async fn list_hubs() -> Result<Vec<HubSummary>, ServerFnError> {
    require(Role::Viewer)?;
    backend()?.hubs().await.map_err(refused)
}

#[server(endpoint = "hub/save")]
pub async fn save_hub(
    csrf: String,
    host_name: String,
    region: String,
    allocation_weight: String,
    apply_allocation_policy: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    let weight = crate::backend::whole_number(&allocation_weight, "the weight")?;
    let hub = HubSummary {
        host_name: host_name.trim().to_string(),
        connector: "builtIn".into(),
        region: Some(region.trim().to_string()).filter(|r| !r.is_empty()),
        allocation_weight: weight,
        apply_allocation_policy: apply_allocation_policy.is_some(),
        devices: 0,
    };
    backend()?
        .save_hub(&user.username, hub)
        .await
        .map_err(refused)
}

#[server(endpoint = "hub/remove")]
pub async fn remove_hub(csrf: String, host_name: String) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    backend()?
        .remove_hub(&user.username, &host_name)
        .await
        .map_err(refused)
}

#[server(endpoint = "allocation", input = GetUrl)]
pub async fn get_allocation() -> Result<AllocationForm, ServerFnError> {
    require(Role::Viewer)?;
    backend()?.allocation().await.map_err(refused)
}

#[server(endpoint = "allocation/save")]
pub async fn save_allocation(
    csrf: String,
    default_policy: String,
    region_map: String,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    let form = AllocationForm {
        default_policy,
        region_map,
    };
    backend()?
        .save_allocation(&user.username, form)
        .await
        .map_err(refused)
}

/// A POST like every form (so it carries the CSRF token), though it changes nothing.
#[server(endpoint = "what-if")]
pub async fn ask_what_if(
    csrf: String,
    registration_id: String,
    client_address: String,
    group_id: String,
) -> Result<WhatIfAnswer, ServerFnError> {
    let _ = csrf;
    require(Role::Viewer)?;
    backend()?
        .what_if(&registration_id, &client_address, &group_id)
        .await
        .map_err(refused)
}

#[component]
pub fn Hubs() -> impl IntoView {
    let save = ServerAction::<SaveHub>::new();
    let remove = ServerAction::<RemoveHub>::new();
    let save_allocation = ServerAction::<SaveAllocation>::new();
    // Loaded in the browser after hydration: this page's streamed server rendering did not
    // hydrate reliably with the release WebAssembly, and an admin page loses little by it.
    let hubs = LocalResource::new(move || {
        save.version().track();
        remove.version().track();
        list_hubs()
    });
    let settings = LocalResource::new(move || {
        save_allocation.version().track();
        get_allocation()
    });
    view! {
        <section class="hubs-page">
            <h1>"Linked hubs"</h1>
            <ActionError action=save/>
            <ActionError action=remove/>
            <Suspense fallback=|| view! { <p class="loading">"Loading…"</p> }>
                {move || Suspend::new(async move {
                    let editable = may_change().await;
                    match (hubs.await, settings.await) {
                        (Ok(hubs), Ok(form)) => view! {
                            <HubTable hubs save remove editable/>
                            <AllocationSettings form save=save_allocation editable/>
                            <WhatIf/>
                        }.into_any(),
                        (Err(e), _) | (_, Err(e)) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                    }
                })}
            </Suspense>
        </section>
    }
}

#[component]
fn HubTable(
    hubs: Vec<HubSummary>,
    save: ServerAction<SaveHub>,
    remove: ServerAction<RemoveHub>,
    editable: bool,
) -> impl IntoView {
    let rows = hubs
        .into_iter()
        .map(|hub| {
            let host = hub.host_name.clone();
            let form_id = format!("hub-{host}");
            let region = hub.region.clone().unwrap_or_default();
            let (weight, apply) = (hub.allocation_weight, hub.apply_allocation_policy);
            let edit = editable.then(|| {
                let (host2, host3, form_id2) = (host.clone(), host.clone(), form_id.clone());
                view! {
                    <ActionForm action=save attr:class="inline" attr:id=form_id2>
                        <CsrfField/>
                        <input type="hidden" name="host_name" value=host2/>
                        <input name="region" aria-label="Region" value=region size="10"/>
                        <input name="allocation_weight" aria-label="Weight" type="number" min="1" max="1000"
                            value=weight.to_string() class="weight"/>
                        <label class="check"><input name="apply_allocation_policy" type="checkbox" value="on"
                            checked=apply/>" allocate"</label>
                        <button type="submit" class="secondary">"Save"</button>
                    </ActionForm>
                    <ActionForm action=remove attr:class="inline">
                        <CsrfField/>
                        <input type="hidden" name="host_name" value=host3/>
                        <button type="submit" class="danger">"Remove"</button>
                    </ActionForm>
                }
            });
            view! {
                <tr data-host=host.clone()>
                    <td class="mono">{host.clone()}</td>
                    <td>{hub.region.clone().unwrap_or_else(|| "—".into())}</td>
                    <td class="num">{hub.allocation_weight}</td>
                    <td>{if hub.apply_allocation_policy { "yes" } else { "only when named" }}</td>
                    <td class="num">{hub.devices}</td>
                    <td class="actions">{edit}</td>
                </tr>
            }
        })
        .collect_view();
    let add = editable.then(|| view! {
        <div class="add-hub">
            <h2>"Link a hub"</h2>
            <ActionForm action=save attr:class="editor" attr:id="add-hub">
                        <CsrfField/>
                        <label for="new-host">"Host name"</label>
                        <input id="new-host" name="host_name" required autocomplete="off"/>
                        <label for="new-region">"Region"</label>
                        <input id="new-region" name="region" autocomplete="off"/>
                        <label for="new-weight">"Allocation weight (1-1000)"</label>
                        <input id="new-weight" name="allocation_weight" type="number" min="1" max="1000" value="1"/>
                        <label for="new-apply">"Takes part in allocation"</label>
                        <div><input id="new-apply" name="apply_allocation_policy" type="checkbox" value="on" checked/></div>
                        <div><button type="submit">"Link hub"</button></div>
                    </ActionForm>
        </div>
    });
    view! {
        <table class="hub-list">
            <thead><tr><th>"Host name"</th><th>"Region"</th><th class="num">"Weight"</th><th>"Allocation"</th>
                <th class="num">"Devices"</th><th></th></tr></thead>
            <tbody>{rows}</tbody>
        </table>
        {add}
    }
}

#[component]
fn AllocationSettings(
    form: AllocationForm,
    save: ServerAction<SaveAllocation>,
    editable: bool,
) -> impl IntoView {
    let option = |value: &'static str, label: &'static str| {
        let selected = form.default_policy == value;
        view! { <option value=value selected=selected>{label}</option> }
    };
    let options = (
        option("hashed", "weighted hashed"),
        option("geoLatency", "lowest latency / geo"),
        option("static", "static"),
    );
    let saved = move || save.value().with(|v| matches!(v, Some(Ok(_))));
    view! {
        <h2>"Allocation settings"</h2>
        <ActionForm action=save attr:class="editor" attr:id="allocation">
            <CsrfField/>
            <label for="default_policy">"Default policy"</label>
            <select id="default_policy" name="default_policy" disabled=!editable>{options}</select>
            <label for="region_map">"Client networks to regions (one \"CIDR region\" per line)"</label>
            <textarea id="region_map" name="region_map" rows="4" class="mono"
                readonly=!editable>{form.region_map.clone()}</textarea>
            <ActionError action=save/>
            <Show when=saved>
                <p class="saved" role="status">"Saved."</p>
            </Show>
            <div hidden=!editable><button type="submit" id="save-allocation">"Save settings"</button></div>
        </ActionForm>
    }
}

#[component]
fn WhatIf() -> impl IntoView {
    let ask = ServerAction::<AskWhatIf>::new();
    view! {
        <div class="what-if">
        <h2>"What if…"</h2>
        <ActionForm action=ask attr:class="editor" attr:id="what-if">
            <CsrfField/>
            <label for="wi-id">"Registration ID"</label>
            <input id="wi-id" name="registration_id" required autocomplete="off"/>
            <label for="wi-client">"Client address (optional)"</label>
            <input id="wi-client" name="client_address" placeholder="203.0.113.7" autocomplete="off"/>
            <label for="wi-group">"Enrollment group (when no individual enrollment)"</label>
            <input id="wi-group" name="group_id" autocomplete="off"/>
            <div><button type="submit" id="ask">"Show the hub"</button></div>
        </ActionForm>
        <ActionError action=ask/>
        {move || ask.value().get().and_then(Result::ok).map(|answer| view! { <WhatIfView answer/> })}
        </div>
    }
}

#[component]
fn WhatIfView(answer: WhatIfAnswer) -> impl IntoView {
    view! {
        <dl class="facts what-if-answer">
            <dt>"Enrollment"</dt><dd class="mono wi-enrollment">{answer.enrollment.unwrap_or_else(|| "none".into())}</dd>
            <dt>"Policy"</dt><dd class="wi-policy">{answer.policy.unwrap_or_else(|| "—".into())}</dd>
            <dt>"Hub"</dt><dd class="mono wi-hub">{answer.hub.unwrap_or_else(|| "none".into())}</dd>
            {answer.reason.map(|r| view! { <dt>"Why"</dt><dd class="wi-reason">{r}</dd> })}
            <dt>"Assigned now"</dt><dd class="mono">{answer.current_hub.unwrap_or_else(|| "—".into())}</dd>
        </dl>
    }
}
