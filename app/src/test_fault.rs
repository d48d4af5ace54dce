//! Test mode on an enrollment's page: the fault its next registrations get, so a firmware team
//! can exercise its device's retry code against a real endpoint. Operators set and clear it; the
//! rules (bounds, which effects go together) and the audit are the server's.

use leptos::prelude::*;

use crate::auth::CsrfField;
use crate::forms::ActionError;
use crate::model::*;

#[cfg(feature = "ssr")]
use crate::{auth::require, backend::backend};

/// `csrf` is checked by the server before this runs; it is a field so forms can carry it.
#[server(endpoint = "enrollment/test-fault")]
#[allow(clippy::too_many_arguments)]
pub async fn set_test_fault(
    csrf: String,
    kind: Option<String>,
    registration_id: String,
    remaining: String,
    error_code: String,
    retry_after_seconds: String,
    latency_ms: String,
    drop_connection: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    let form = TestFaultForm {
        remaining,
        error_code,
        retry_after_seconds,
        latency_ms,
        drop_connection,
    };
    let group = kind.as_deref() == Some("group");
    backend()?
        .set_test_fault(&user.username, &registration_id, group, form)
        .await
        .map_err(crate::backend::refused)
}

#[server(endpoint = "enrollment/test-fault/clear")]
pub async fn clear_test_fault(
    csrf: String,
    kind: Option<String>,
    registration_id: String,
) -> Result<(), ServerFnError> {
    let _ = csrf;
    let user = require(Role::Operator)?;
    let group = kind.as_deref() == Some("group");
    backend()?
        .clear_test_fault(&user.username, &registration_id, group)
        .await
        .map_err(crate::backend::refused)
}

/// The set and clear actions; the page reloads its enrollment when either runs.
#[derive(Clone, Copy)]
pub struct TestFaultActions {
    pub set: ServerAction<SetTestFault>,
    pub clear: ServerAction<ClearTestFault>,
}

impl TestFaultActions {
    pub fn new() -> Self {
        TestFaultActions {
            set: ServerAction::new(),
            clear: ServerAction::new(),
        }
    }

    /// Changes whenever a fault was set or cleared.
    pub fn version(&self) -> (usize, usize) {
        (self.set.version().get(), self.clear.version().get())
    }
}

impl Default for TestFaultActions {
    fn default() -> Self {
        Self::new()
    }
}

#[component]
pub fn TestFault(
    registration_id: String,
    kind: String,
    current: Option<String>,
    actions: TestFaultActions,
) -> impl IntoView {
    let TestFaultActions { set, clear } = actions;
    let (id, kind2, id2) = (registration_id.clone(), kind.clone(), registration_id);
    let clear_form = current.is_some().then(|| {
        view! {
            <ActionForm action=clear attr:class="inline">
                <CsrfField/>
                <input type="hidden" name="kind" value=kind2/>
                <input type="hidden" name="registration_id" value=id2/>
                <button type="submit" class="secondary">"Clear test fault"</button>
            </ActionForm>
        }
    });
    view! {
        <h2>"Test mode"</h2>
        <p class="muted">"Answer this enrollment's next registrations with an error, a delay or a dropped connection, to test a device's retry code. Every change is audited; each registration it touches says so in the live log."</p>
        <p class="test-fault">{current.unwrap_or_else(|| "No test fault set.".into())}</p>
        {clear_form}
        <ActionError action=clear/>
        <ActionForm action=set attr:class="editor" attr:id="test-fault-form">
            <CsrfField/>
            <input type="hidden" name="kind" value=kind/>
            <input type="hidden" name="registration_id" value=id/>
            <label for="fault_remaining">"Registrations it answers"</label>
            <input id="fault_remaining" name="remaining" type="number" min="1" max="10000" value="1" required/>
            <label for="fault_error_code">"Error code (empty: none; 429001 throttled, 503001 unavailable, 500001 internal)"</label>
            <input id="fault_error_code" name="error_code" inputmode="numeric" autocomplete="off" placeholder="503001"/>
            <label for="fault_retry_after">"Retry-After seconds (with 429 or 5xx; empty: 3)"</label>
            <input id="fault_retry_after" name="retry_after_seconds" inputmode="numeric" autocomplete="off"/>
            <label for="fault_latency">"Added latency (ms)"</label>
            <input id="fault_latency" name="latency_ms" inputmode="numeric" autocomplete="off" value="0"/>
            <label class="check"><input type="checkbox" id="fault_drop" name="drop_connection" value="true"/>" Register, then drop the connection before the reply"</label>
            <ActionError action=set/>
            <div><button type="submit" id="set-fault">"Set test fault"</button></div>
        </ActionForm>
    }
}
