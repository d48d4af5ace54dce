//! The audit trail hears every front end: a change through the service API, one through the
//! `onramp` command line and one through the console backend each leave an entry naming its actor
//! and front end, with no key, password or hash in it; the console's audit page lists all three.

use app::backend::ConsoleBackend;
use chrono::Utc;
use onramp::attestation::sas;
use onramp::model::*;
use serde_json::json;

use crate::support::instance::{Instance, random_key};
use crate::support::process::run;

crate::backend_suite!(
    every_front_end_is_audited_with_its_actor,
    a_console_user_cannot_disable_themselves_from_any_front_end,
);

async fn every_front_end_is_audited_with_its_actor(i: &Instance) {
    // Service API: an enrollment with keys the caller chose.
    let key = random_key();
    let owner = &i.state.instance.owner_policy;
    let expiry = Utc::now().timestamp() as u64 + 600;
    let token = sas::sign(&owner.primary_key, "localhost", expiry, Some(&owner.name)).unwrap();
    let body = json!({
        "registrationId": "audited-1",
        "attestation": {"type": "symmetricKey", "symmetricKey": {"primaryKey": key, "secondaryKey": key}},
    });
    let response = i
        .client
        .put(format!(
            "{}/enrollments/audited-1?api-version=2021-10-01",
            i.url
        ))
        .header("Authorization", token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // Command line: a policy, as `onramp` run by the operator makes it.
    let data = i.data_dir().to_str().unwrap();
    let args = [
        "--data-dir",
        data,
        "--database-url",
        &i.database_url,
        "admin",
        "policy",
        "set",
        "ops",
        "--rights",
        "EnrollmentRead",
    ];
    let out = run(&args, &[("USER", "operator-7")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli_policy = i.store().get_policy("ops").await.unwrap().unwrap();

    // Console: a user created by a signed-in admin, through the backend the pages call.
    let backend: &dyn ConsoleBackend = &i.state;
    let password = "correct horse battery";
    backend
        .save_user("root-admin", "viewer-1", password, app::model::Role::Viewer)
        .await
        .unwrap();

    let entries = i.store().recent_audit(50).await.unwrap();
    let find = |action: &str, target: &str| {
        entries
            .iter()
            .find(|e| e.action == action && e.target == target)
            .unwrap_or_else(|| panic!("no {action} of {target} in {entries:#?}"))
    };
    let service = find("enrollment.create", "enrollment/audited-1");
    assert_eq!(
        (service.actor.as_str(), service.front_end),
        (owner.name.as_str(), FrontEnd::ServiceApi)
    );
    assert_eq!(service.address.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        service.after.as_ref().unwrap()["registrationId"],
        "audited-1"
    );
    let cli = find("policy.create", "policy/ops");
    assert_eq!(
        (cli.actor.as_str(), cli.front_end),
        ("operator-7", FrontEnd::Cli)
    );
    assert_eq!(cli.after, Some(json!({"rights": ["EnrollmentRead"]})));
    let console = find("user.create", "user/viewer-1");
    assert_eq!(
        (console.actor.as_str(), console.front_end),
        ("root-admin", FrontEnd::Console)
    );

    let trail = serde_json::to_string(&entries).unwrap();
    let user = i.store().get_user("viewer-1").await.unwrap().unwrap();
    for secret in [
        key.as_str(),
        cli_policy.primary_key.as_str(),
        cli_policy.secondary_key.as_str(),
        password,
        user.password_hash.as_str(),
    ] {
        assert!(!trail.contains(secret), "a secret is in the audit trail");
    }

    // What the console's audit page shows: all three, each with its front end.
    let rows = backend.audit(50).await.unwrap();
    let via = |target: &str| {
        let row = rows.iter().find(|r| r.target == target).unwrap();
        (row.actor.clone(), row.via.clone(), row.address.clone())
    };
    assert_eq!(
        via("enrollment/audited-1"),
        (
            owner.name.clone(),
            "service-api".into(),
            Some("127.0.0.1".into())
        )
    );
    assert_eq!(via("policy/ops"), ("operator-7".into(), "cli".into(), None));
    assert_eq!(
        via("user/viewer-1"),
        ("root-admin".into(), "console".into(), None)
    );
}

/// The rule lives in the domain, so it holds for the console and for any other caller of `Admin`.
async fn a_console_user_cannot_disable_themselves_from_any_front_end(i: &Instance) {
    let admin = &i.state.admin;
    let alice = Actor::console("alice");
    admin
        .put_user(&alice, "alice", "long enough password", Role::Admin)
        .await
        .unwrap();
    let refused = admin.set_user_disabled(&alice, "Alice", true).await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("your own account"),
        "refused with the rule's reason"
    );
    assert!(!i.store().get_user("alice").await.unwrap().unwrap().disabled);
    // Another operator may; the command line is not a console user, so it may too.
    let disabled = admin
        .set_user_disabled(&Actor::cli("root"), "alice", true)
        .await;
    assert!(disabled.unwrap().disabled);
    let entries = i.store().recent_audit(5).await.unwrap();
    assert_eq!(
        (entries[0].action.as_str(), entries[0].front_end),
        ("user.disable", FrontEnd::Cli)
    );
}
