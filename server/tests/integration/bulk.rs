//! Bulk import and export of enrollments on SQLite and PostgreSQL: validation per row, duplicate
//! rows, resuming from a checkpoint, and round trips through CSV and JSON lines.

use onramp::bulk::{self, Format};
use onramp::model::*;
use serde_json::{Value, json};

use crate::support::HUB;
use crate::support::instance::{Instance, random_key};

/// Imports here are made as an operator at the command line would make them.
fn operator() -> Actor {
    Actor::cli("tester")
}

crate::backend_suite!(
    csv_import_reports_bad_rows_and_resumes,
    jsonl_round_trip,
    seeding_fills_a_store_for_the_console
);

async fn csv_import_reports_bad_rows_and_resumes(i: &Instance) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.csv");
    let key = random_key();
    let mut text =
        String::from("registrationId,primaryKey,provisioningStatus,iotHubs,tags,desired\n");
    for n in 0..2_500 {
        text.push_str(&format!(
            "dev-{n:05},{key},enabled,{HUB},\"{{\"\"line\"\":{n}}}\",\"{{\"\"interval\"\":5}}\"\n"
        ));
    }
    text.push_str("-bad-id,,,,,\n");
    text.push_str("dev-x,not-base64!,,,,\n");
    text.push_str("dev-y,,sleeping,,,\n");
    text.push_str("dev-z,,,,[1],\n");
    text.push_str(&format!("dev-00007,{key},disabled,,,\n"));
    std::fs::write(&path, &text).unwrap();

    let mut calls = 0;
    let report = bulk::import(&i.state.admin, &operator(), &path, true, |_, total| {
        calls += 1;
        assert_eq!(total, 2_505);
    })
    .await
    .unwrap();
    assert_eq!(
        (report.imported, report.failed, report.resumed_from),
        (2_501, 4, 0),
        "{report:?}"
    );
    assert!(calls >= 1);
    let errors = std::fs::read_to_string(report.errors_file.unwrap()).unwrap();
    let rows: Vec<u64> = errors
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["row"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(rows, [2_501, 2_502, 2_503, 2_504], "{errors}");
    assert!(
        errors.contains("invalid registration ID")
            && errors.contains("base64")
            && errors.contains("tags"),
        "{errors}"
    );
    assert_eq!(i.store().count_enrollments().await.unwrap(), 2_500);
    let e = i
        .store()
        .get_enrollment("dev-00042")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        e.spec.attestation,
        Attestation::SymmetricKey {
            primary_key: key.clone(),
            secondary_key: match &e.spec.attestation {
                Attestation::SymmetricKey { secondary_key, .. } => secondary_key.clone(),
                _ => unreachable!(),
            }
        }
    );
    assert_eq!(e.spec.initial_twin.as_ref().unwrap().tags["line"], 42);
    assert_eq!(e.spec.iot_hubs, [HUB]);
    let later_row = i
        .store()
        .get_enrollment("dev-00007")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        later_row.spec.provisioning_status,
        ProvisioningStatus::Disabled,
        "a later row for the same ID wins"
    );
    assert!(
        !dir.path().join("fleet.csv.progress").exists(),
        "the checkpoint goes when the import is done"
    );

    // An interrupted run left a checkpoint at row 2,000: the rest is imported, the start is not.
    for n in 0..2_500 {
        i.store()
            .delete_enrollment(&format!("dev-{n:05}"), IfMatch::Any, &[])
            .await
            .unwrap();
    }
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::write(
        dir.path().join("fleet.csv.progress"),
        json!({"file_len": len, "done": 2_000}).to_string(),
    )
    .unwrap();
    let report = bulk::import(&i.state.admin, &operator(), &path, true, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (report.resumed_from, report.imported, report.failed),
        (2_000, 501, 4),
        "{report:?}"
    );
    assert!(
        i.store()
            .get_enrollment("dev-01999")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        i.store()
            .get_enrollment("dev-02000")
            .await
            .unwrap()
            .is_some()
    );
    // --restart ignores the checkpoint.
    std::fs::write(
        dir.path().join("fleet.csv.progress"),
        json!({"file_len": len, "done": 2_000}).to_string(),
    )
    .unwrap();
    let report = bulk::import(&i.state.admin, &operator(), &path, false, |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.resumed_from, report.imported), (0, 2_501));

    let mut csv_out = Vec::new();
    assert_eq!(
        bulk::export(i.store().as_ref(), &mut csv_out, Format::Csv)
            .await
            .unwrap(),
        2_500
    );
    let exported = String::from_utf8(csv_out).unwrap();
    assert!(exported.starts_with("registrationId,deviceId,attestationType"));
    assert!(
        exported.contains(&format!("dev-00042,,symmetricKey,{key},")),
        "keys are exported"
    );

    let unknown = dir.path().join("bad.csv");
    std::fs::write(&unknown, "registrationId,colour\nx,red\n").unwrap();
    let err = bulk::import(&i.state.admin, &operator(), &unknown, true, |_, _| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("colour"), "{err}");
}

async fn jsonl_round_trip(i: &Instance) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.jsonl");
    let lines: Vec<String> = (0..300)
        .map(|n| {
            json!({
                "registrationId": format!("tpm-{n}"),
                "attestation": {"type": "tpm", "tpm": {"endorsementKey": onramp::test_certs::TPM_ENDORSEMENT_KEY}},
                "capabilities": {"iotEdge": n % 2 == 0},
                "allocationPolicy": "geolatency",
            })
            .to_string()
        })
        .chain(["{not json".to_string(), String::new()])
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    let report = bulk::import(&i.state.admin, &operator(), &path, true, |_, _| {})
        .await
        .unwrap();
    assert_eq!((report.imported, report.failed), (300, 1), "{report:?}");
    let e = i.store().get_enrollment("tpm-10").await.unwrap().unwrap();
    assert!(e.spec.iot_edge);
    assert_eq!(e.spec.allocation_policy, Some(AllocationPolicy::GeoLatency));

    let mut out = Vec::new();
    assert_eq!(
        bulk::export(i.store().as_ref(), &mut out, Format::JsonLines)
            .await
            .unwrap(),
        300
    );
    let back = dir.path().join("back.jsonl");
    std::fs::write(&back, &out).unwrap();
    for n in 0..300 {
        i.store()
            .delete_enrollment(&format!("tpm-{n}"), IfMatch::Any, &[])
            .await
            .unwrap();
    }
    let report = bulk::import(&i.state.admin, &operator(), &back, true, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (report.imported, report.failed),
        (300, 0),
        "an export imports again unchanged"
    );
    assert_eq!(
        i.store()
            .get_enrollment("tpm-10")
            .await
            .unwrap()
            .unwrap()
            .spec,
        e.spec
    );
}

async fn seeding_fills_a_store_for_the_console(i: &Instance) {
    let store = i.store();
    let mut batches = Vec::new();
    let seeded = bulk::seed(
        &i.state.admin,
        &operator(),
        12_000,
        "seed-",
        |done, total| batches.push((done, total)),
    )
    .await
    .unwrap();
    assert_eq!(seeded, 12_000);
    assert_eq!(batches.last(), Some(&(12_000, 12_000)));
    assert!(batches.len() >= 2, "written in batches: {batches:?}");
    assert_eq!(store.count_enrollments().await.unwrap(), 12_000);
    let disabled = store
        .list_enrollments(&ListQuery {
            status: Some(ProvisioningStatus::Disabled),
            limit: 1000,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(disabled.items.len(), 1000);
    assert_eq!(disabled.items[0].registration_id, "seed-0000009");
    let e = store.get_enrollment("seed-0011999").await.unwrap().unwrap();
    let Attestation::SymmetricKey {
        primary_key,
        secondary_key,
    } = &e.spec.attestation
    else {
        panic!("symmetric key expected");
    };
    assert_ne!(
        primary_key, secondary_key,
        "keys are generated per enrollment"
    );
    assert_eq!(e.spec.initial_twin.unwrap().tags["seed"], 11_999);
}
