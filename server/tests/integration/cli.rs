//! The `onramp` binary as an operator meets it: first start, reuse, admin info, configuration
//! errors, graceful shutdown, and PostgreSQL selected by URL.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::support::HUB;
use crate::support::db;
use crate::support::process::{Server, json_of, run};

fn admin_info(args: &[&str]) -> Value {
    let mut all = vec!["admin", "info", "--json"];
    all.extend_from_slice(args);
    let out = run(&all, &[]);
    assert!(
        out.status.success(),
        "admin info failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("admin info prints JSON")
}

fn is_id_scope(s: &str) -> bool {
    s.len() == 11
        && s.starts_with("0ne")
        && s[3..]
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
}

#[tokio::test]
async fn first_start_bootstraps_and_serves_health_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &[]);
    server.wait_healthy().await;
    let client = server.client();
    let ready = client
        .get(format!("{}/readyz", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    let info = admin_info(&["--data-dir", data.to_str().unwrap()]);
    let scope = info["idScope"].as_str().unwrap();
    assert!(is_id_scope(scope), "{scope}");

    // The console asks for a login, and the first start made an admin whose password only the
    // owner of the data directory can read.
    let page = client.get(server.base_url()).send().await.unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(page.headers()["location"], "/login?next=%2F");
    let password_file = data.join("initial-admin-password");
    let mode = std::fs::metadata(&password_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let password = std::fs::read_to_string(&password_file).unwrap();
    let cookie = server.sign_in("admin", password.trim()).await;

    // The console page is rendered on the server, with the scripts that hydrate it.
    let page = client
        .get(server.base_url())
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("Dashboard"), "{html}");
    assert!(html.contains(scope), "the page shows the ID scope");
    assert!(
        html.contains("/pkg/onramp.js") || html.contains("/pkg/onramp_bg.wasm"),
        "{html}"
    );

    // A restart keeps the first admin (the file is not rewritten).
    drop(server);
    let mut server = Server::start(&data, &[]);
    server.wait_healthy().await;
    assert_eq!(std::fs::read_to_string(&password_file).unwrap(), password);
    server.sign_in("admin", password.trim()).await;

    // Plain HTTP is not served on the TLS port.
    let plain = reqwest::Client::new()
        .get(format!("http://localhost:{}/healthz", server.https_port))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[tokio::test]
async fn admin_info_reports_the_instance_and_later_starts_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let info = admin_info(&["--data-dir", data_arg]);
    for field in [
        "idScope",
        "serviceConnectionString",
        "caCertPath",
        "httpsUrl",
        "mqttUrl",
        "amqpUrl",
        "hubs",
    ] {
        assert!(!info[field].is_null(), "{field} missing: {info}");
    }
    let conn = info["serviceConnectionString"].as_str().unwrap();
    let key = conn.strip_prefix(
        "HostName=localhost;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=",
    );
    let key = key.unwrap_or_else(|| panic!("{conn}"));
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap()
            .len(),
        32
    );
    assert_eq!(info["httpsUrl"], "https://localhost:8443");
    assert_eq!(info["mqttUrl"], "mqtts://localhost:8883");
    assert_eq!(info["amqpUrl"], "amqps://localhost:5671");
    let ca_path = info["caCertPath"].as_str().unwrap();
    assert!(std::path::Path::new(ca_path).is_absolute());
    assert!(
        std::fs::read_to_string(ca_path)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let hubs = info["hubs"].as_array().unwrap();
    assert_eq!(hubs.len(), 1);
    assert_eq!(hubs[0]["hostName"], HUB);
    assert_eq!(hubs[0]["connector"], "builtIn");

    let ca = std::fs::read(data.join("ca.pem")).unwrap();
    let cert = std::fs::read(data.join("server.pem")).unwrap();
    let mut server = Server::start(&data, &[]);
    server.wait_healthy().await;
    server.restart();
    server.wait_healthy().await;
    assert_eq!(
        admin_info(&["--data-dir", data_arg]),
        info,
        "same scope, keys and hubs"
    );
    assert_eq!(std::fs::read(data.join("ca.pem")).unwrap(), ca, "same CA");
    assert_eq!(
        std::fs::read(data.join("server.pem")).unwrap(),
        cert,
        "same server certificate"
    );
}

/// Instances made before built-in hub names had a dot linked a hub named after the host name
/// (`localhost`); their devices and hub identities use that name, so it stays.
#[tokio::test]
async fn an_instance_made_before_dotted_hub_names_keeps_its_hub_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let url = format!("sqlite://{}", data.join("onramp.db").display());
    // What an earlier version's first start left in the store.
    let store = onramp::store::open(&url, 1).await.unwrap();
    let now = chrono::Utc::now();
    let legacy = onramp::model::LinkedHub {
        host_name: "localhost".into(),
        connector: onramp::model::ConnectorKind::BuiltIn,
        region: None,
        allocation_weight: 1,
        apply_allocation_policy: true,
        settings: serde_json::json!({}),
        etag: onramp::model::Etag::new(),
        created: now,
        updated: now,
    };
    store
        .put_hub(legacy, onramp::model::IfMatch::Absent, &[])
        .await
        .unwrap();
    store
        .put_setting("builtin_hub_linked", "localhost")
        .await
        .unwrap();
    store.close().await;

    let args = ["--data-dir", data.to_str().unwrap(), "--database-url", &url];
    let info = admin_info(&args);
    let hubs: Vec<&str> = info["hubs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["hostName"].as_str())
        .collect();
    assert_eq!(hubs, ["localhost"], "{info}");
}

#[test]
fn bad_configuration_fails_at_start_and_names_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let config_file = dir.path().join("onramp.toml");
    std::fs::write(&config_file, "https_port = 9443\nhttps_prot = 1\n").unwrap();
    let config_arg = config_file.to_str().unwrap();
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--config", config_arg, "serve"], vec![], "https_prot"),
        (vec!["--https-port", "70000", "serve"], vec![], "https_port"),
        (vec!["serve"], vec![("ONRAMP_MQTT_PORT", "-1")], "mqtt_port"),
        (
            vec!["serve"],
            vec![
                ("ONRAMP_TLS__CERT_PATH", "/nonexistent/cert.pem"),
                ("ONRAMP_TLS__KEY_PATH", "/etc/hostname"),
            ],
            "tls.cert_path",
        ),
        (
            vec!["--database-url", "mysql://localhost/onramp", "serve"],
            vec![],
            "database_url",
        ),
        (
            vec!["--database-url", "postgres://127.0.0.1:1/onramp", "serve"],
            vec![],
            "cannot connect to PostgreSQL",
        ),
        (
            vec!["--config", "/nonexistent/onramp.toml", "serve"],
            vec![],
            "/nonexistent/onramp.toml",
        ),
        (
            vec!["serve"],
            vec![("ONRAMP_LIMITS__MAX_CONNECTIONS", "0")],
            "limits.max_connections",
        ),
    ];
    for (args, env, want) in cases {
        let mut all = vec!["--data-dir", data_arg];
        all.extend(args.iter().copied());
        let out = run(&all, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            stderr.contains(want),
            "{args:?} {env:?}: expected {want:?} in {stderr}"
        );
    }
}

#[test]
fn config_show_prints_the_effective_config_with_secrets_redacted() {
    let out = run(
        &[
            "--https-port",
            "9443",
            "--database-url",
            "postgres://onramp:hunter2@db.internal/onramp",
            "config",
            "show",
        ],
        &[("ONRAMP_HOSTNAME", "dps.example.test")],
    );
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("onramp:***@db.internal"), "{shown}");
    let parsed: toml::Table = shown.parse().expect("config show prints TOML");
    assert_eq!(parsed["https_port"].as_integer(), Some(9443));
    assert_eq!(parsed["hostname"].as_str(), Some("dps.example.test"));
    assert_eq!(
        parsed["limits"]["max_body_bytes"].as_integer(),
        Some(96 * 1024)
    );
}

#[tokio::test]
async fn sigterm_stops_accepting_and_exits_cleanly() {
    stops_accepting_and_exits_cleanly_on("TERM").await;
}

#[tokio::test]
async fn sigint_stops_accepting_and_exits_cleanly() {
    stops_accepting_and_exits_cleanly_on("INT").await;
}

/// `SIG{signal}` stops a serving instance within a bound: exit code 0, the shutdown logged, the
/// port closed.
async fn stops_accepting_and_exits_cleanly_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("data"), &["--log-format", "json"]);
    server.wait_healthy().await;
    let status = server.stop(signal, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let log = server.log();
    let messages: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON log lines"))
        .collect();
    let said = |text: &str| {
        messages.iter().any(|m| {
            m["fields"]["message"]
                .as_str()
                .is_some_and(|s| s.contains(text))
        })
    };
    assert!(said(&format!("SIG{signal} received")), "{log}");
    assert!(said("Onramp stopped"), "{log}");
    let refused = std::net::TcpStream::connect(("127.0.0.1", server.https_port));
    assert!(refused.is_err(), "the port is closed after shutdown");
}

#[tokio::test]
async fn a_postgres_url_selects_postgresql() {
    if db::skip_postgres() {
        return;
    }
    let base = db::postgres_url();
    let schema = db::create_schema(&base).await;
    let url = format!("{base}?options=-c%20search_path%3D{schema}");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&data, &["--database-url", &url]);
    server.wait_healthy().await;
    let ready = server
        .client()
        .get(format!("{}/readyz", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let first = admin_info(&["--data-dir", data.to_str().unwrap(), "--database-url", &url]);
    assert!(
        !data.join("onramp.db").exists(),
        "no SQLite file when PostgreSQL is selected"
    );
    // Another instance on the same database sees the same instance.
    let other = dir.path().join("other");
    let second = admin_info(&[
        "--data-dir",
        other.to_str().unwrap(),
        "--database-url",
        &url,
    ]);
    assert_eq!(first["idScope"], second["idScope"]);
    assert_eq!(
        first["serviceConnectionString"],
        second["serviceConnectionString"]
    );
    server.terminate(Duration::from_secs(15));
    db::drop_schema(&base, &schema).await;
}

#[test]
fn admin_policy_and_hub_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let json = |args: &[&str]| -> Value {
        let mut all = vec!["--data-dir", d, "admin"];
        all.extend_from_slice(args);
        let out = run(&all, &[]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).unwrap()
        }
    };
    let created = json(&[
        "policy",
        "set",
        "reader",
        "--rights",
        "EnrollmentRead,RegistrationStatusRead",
    ]);
    assert_eq!(
        created["rights"],
        serde_json::json!(["EnrollmentRead", "RegistrationStatusRead"])
    );
    let rekeyed = json(&["policy", "rekey", "reader", "--secondary"]);
    assert_eq!(rekeyed["primaryKey"], created["primaryKey"]);
    assert_ne!(rekeyed["secondaryKey"], created["secondaryKey"]);
    assert_eq!(json(&["policy", "list"]).as_array().unwrap().len(), 2);
    json(&["policy", "delete", "reader"]);
    let refused = run(
        &[
            "--data-dir",
            d,
            "admin",
            "policy",
            "set",
            "x",
            "--rights",
            "Nope",
        ],
        &[],
    );
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("unknown right")
    );

    let hub = json(&[
        "hub",
        "set",
        "hub-2.localhost",
        "--region",
        "eu",
        "--weight",
        "5",
    ]);
    assert_eq!(
        (hub["hostName"].as_str(), hub["allocationWeight"].as_u64()),
        (Some("hub-2.localhost"), Some(5))
    );
    assert_eq!(json(&["hub", "list"]).as_array().unwrap().len(), 2);
    json(&["hub", "remove", "hub-2.localhost"]);
    assert_eq!(
        json(&["info", "--json"])["hubs"].as_array().unwrap().len(),
        1
    );
    let refused = run(
        &[
            "--data-dir",
            d,
            "admin",
            "hub",
            "set",
            "hub-3.localhost",
            "--weight",
            "0",
        ],
        &[],
    );
    assert!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("allocationWeight")
    );
}

/// `onramp admin ca`: upload, verification code, proof of possession, list, remove.
#[test]
fn admin_ca_commands_verify_a_ca_by_proof_of_possession() {
    use onramp::test_certs as certs;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let admin = |args: &[&str]| {
        let mut all = vec!["--data-dir", d, "admin", "ca"];
        all.extend_from_slice(args);
        run(&all, &[])
    };
    let json = |args: &[&str]| json_of(args, &admin(args));
    let root = certs::self_signed("cli root", true);
    let root_file = dir.path().join("root.pem");
    std::fs::write(&root_file, root.pem()).unwrap();
    let root_path = root_file.to_str().unwrap();
    let added = json(&["add", "plant", root_path]);
    assert_eq!(added["properties"]["isVerified"], false);
    assert_eq!(added["properties"]["subject"], "CN=cli root");

    // A certificate that is not a CA, or a proof before a code, is refused with the reason.
    let leaf = certs::device(&root, "device-1");
    let leaf_file = dir.path().join("leaf.pem");
    std::fs::write(&leaf_file, leaf.pem()).unwrap();
    let refused = admin(&["add", "leaf", leaf_file.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not a CA"),
        "{refused:?}"
    );
    let refused = admin(&["verify", "plant", leaf_file.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("verification code first"));

    let code = json(&["code", "plant"])["properties"]["verificationCode"]
        .as_str()
        .unwrap()
        .to_string();
    let proof = certs::signed(&root, &code, false, (-1, 1));
    let proof_file = dir.path().join("proof.pem");
    std::fs::write(&proof_file, proof.pem()).unwrap();
    let verified = json(&["verify", "plant", proof_file.to_str().unwrap()]);
    assert_eq!(verified["properties"]["isVerified"], true);
    // Beside the instance's own issuing CA, trusted from the first start.
    let names = |list: Value| -> Vec<String> {
        let list = list.as_array().unwrap().clone();
        list.iter()
            .map(|ca| ca["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(json(&["list"])), ["onramp", "plant"]);
    json(&["remove", "plant"]);
    assert_eq!(names(json(&["list"])), ["onramp"]);
}

/// The enrollments a data directory's SQLite store holds, by registration ID.
async fn stored_ids(data: &std::path::Path) -> Vec<String> {
    stored_enrollments(data)
        .await
        .into_iter()
        .map(|e| e.registration_id)
        .collect()
}

async fn stored_enrollments(data: &std::path::Path) -> Vec<onramp::model::Enrollment> {
    use onramp::store::Store;
    let url = format!("sqlite://{}", data.join("onramp.db").display());
    let store = onramp::store::open_sqlite(&url, 1).await.unwrap();
    let page = store
        .list_enrollments(&onramp::model::ListQuery {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    store.close().await;
    assert!(page.next.is_none());
    page.items
}

/// `onramp enrollments import FILE` and `onramp enrollments export` as an operator runs them: a bad
/// row is reported by number without stopping the import (the exit status is 1 then, for
/// scripts), the same file imported again replaces rather than duplicates, an interrupted import
/// resumes from its checkpoint, and what is exported imports into another instance as the same set.
#[tokio::test]
async fn enrollments_import_and_export_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let onramp = |data: &std::path::Path, args: &[&str]| {
        let mut all = vec!["--data-dir", data.to_str().unwrap(), "enrollments"];
        all.extend_from_slice(args);
        run(&all, &[])
    };
    let import = |data: &std::path::Path, file: &std::path::Path| -> Value {
        let out = onramp(data, &["import", file.to_str().unwrap()]);
        let report: Value =
            serde_json::from_slice(&out.stdout).expect("import prints a JSON report");
        let refused_rows = report["failed"].as_u64().unwrap() > 0;
        assert_eq!(
            out.status.code(),
            Some(i32::from(refused_rows)),
            "import {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        report
    };
    let summary = |report: &Value| {
        (
            report["imported"].as_u64().unwrap(),
            report["failed"].as_u64().unwrap(),
            report["resumedFrom"].as_u64().unwrap(),
        )
    };

    // CSV: 21 rows, the 15th with an invalid registration ID.
    let csv_file = dir.path().join("fleet.csv");
    let mut csv = String::from("registrationId,primaryKey,provisioningStatus,iotHubs,tags\n");
    for n in 0..21 {
        if n == 14 {
            csv.push_str("-bad-id,,,,\n");
        } else {
            let key = crate::support::instance::random_key();
            csv.push_str(&format!(
                "csv-{n:02},{key},enabled,localhost,\"{{\"\"n\"\":{n}}}\"\n"
            ));
        }
    }
    std::fs::write(&csv_file, &csv).unwrap();
    let report = import(&data, &csv_file);
    assert_eq!(summary(&report), (20, 1, 0), "{report}");
    let errors_file = report["errorsFile"].as_str().unwrap();
    assert_eq!(errors_file, format!("{}.errors.jsonl", csv_file.display()));
    let errors: Vec<Value> = std::fs::read_to_string(errors_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["row"], 15, "the bad row by number");
    assert!(
        errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("invalid registration ID"),
        "{errors:?}"
    );
    let csv_ids = stored_ids(&data).await;
    assert_eq!(csv_ids.len(), 20);
    assert!(!csv_ids.iter().any(|id| id.contains("bad")));

    // The same file again: nothing duplicated, nothing resumed (the first run finished).
    let report = import(&data, &csv_file);
    assert_eq!(summary(&report), (20, 1, 0), "{report}");
    assert_eq!(stored_ids(&data).await, csv_ids);

    // An interrupted run (a checkpoint after row 10) resumes at row 11.
    let len = std::fs::metadata(&csv_file).unwrap().len();
    std::fs::write(
        dir.path().join("fleet.csv.progress"),
        serde_json::json!({"file_len": len, "done": 10}).to_string(),
    )
    .unwrap();
    let report = import(&data, &csv_file);
    assert_eq!(summary(&report), (10, 1, 10), "{report}");
    assert!(!dir.path().join("fleet.csv.progress").exists());
    assert_eq!(stored_ids(&data).await, csv_ids);

    // Rows without keys get generated ones, and a re-import keeps them (devices use them).
    let keyless = dir.path().join("keyless.csv");
    std::fs::write(&keyless, "registrationId\nkeyless-1\nkeyless-2\n").unwrap();
    let keys = |enrollments: Vec<onramp::model::Enrollment>| -> Vec<_> {
        enrollments
            .into_iter()
            .filter(|e| e.registration_id.starts_with("keyless"))
            .map(|e| e.spec.attestation)
            .collect()
    };
    assert_eq!(summary(&import(&data, &keyless)), (2, 0, 0));
    let generated = keys(stored_enrollments(&data).await);
    assert!(
        matches!(&generated[..], [onramp::model::Attestation::SymmetricKey { primary_key, .. }, _] if primary_key.len() == 88)
    );
    assert_eq!(summary(&import(&data, &keyless)), (2, 0, 0));
    assert_eq!(keys(stored_enrollments(&data).await), generated);
    assert_eq!(keys(stored_enrollments(&data).await).len(), 2);

    // JSON lines, one of them not JSON.
    let jsonl_file = dir.path().join("fleet.jsonl");
    let mut lines: Vec<String> = (0..5)
        .map(|n| {
            serde_json::json!({
                "registrationId": format!("tpm-{n}"),
                "attestation": {"type": "tpm", "tpm": {"endorsementKey": onramp::test_certs::TPM_ENDORSEMENT_KEY}},
                "capabilities": {"iotEdge": true},
                "optionalDeviceInformation": {"n": n},
            })
            .to_string()
        })
        .collect();
    lines.insert(2, "{not json".into());
    std::fs::write(&jsonl_file, lines.join("\n")).unwrap();
    let report = import(&data, &jsonl_file);
    assert_eq!(summary(&report), (5, 1, 0), "{report}");
    let errors = std::fs::read_to_string(report["errorsFile"].as_str().unwrap()).unwrap();
    assert!(
        errors.contains("\"row\":3") && errors.contains("invalid JSON"),
        "{errors}"
    );
    assert_eq!(stored_ids(&data).await.len(), 27);

    // Files that cannot be imported at all fail with the reason and a non-zero exit.
    let unknown_column = dir.path().join("bad.csv");
    std::fs::write(&unknown_column, "registrationId,colour\nx,red\n").unwrap();
    let missing = dir.path().join("missing.csv");
    for (file, reason) in [(&unknown_column, "colour"), (&missing, "missing.csv")] {
        let out = onramp(&data, &["import", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(reason), "{stderr}");
    }

    // Export: JSON lines on standard output, CSV to a file; each imports elsewhere as the same set.
    let out = onramp(&data, &["export"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 27 enrollments"));
    let exported = String::from_utf8(out.stdout).unwrap();
    let documents = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|l| {
                let mut e: Value = serde_json::from_str(l).unwrap();
                for field in ["etag", "createdDateTimeUtc", "lastUpdatedDateTimeUtc"] {
                    e.as_object_mut().unwrap().remove(field);
                }
                e
            })
            .collect()
    };
    assert_eq!(documents(&exported).len(), 27);
    let jsonl_copy = dir.path().join("export.jsonl");
    std::fs::write(&jsonl_copy, &exported).unwrap();
    let other = dir.path().join("other");
    assert_eq!(summary(&import(&other, &jsonl_copy)), (27, 0, 0));
    let again = onramp(&other, &["export", "--format", "jsonl"]);
    assert_eq!(
        documents(&String::from_utf8(again.stdout).unwrap()),
        documents(&exported),
        "the JSON-lines export re-imports to the same enrollments, keys included"
    );

    let csv_copy = dir.path().join("export.csv");
    let out = onramp(&data, &["export", "--output", csv_copy.to_str().unwrap()]);
    assert!(out.status.success());
    let third = dir.path().join("third");
    assert_eq!(summary(&import(&third, &csv_copy)), (27, 0, 0));
    let again = onramp(&third, &["export", "--format", "csv"]);
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        std::fs::read_to_string(&csv_copy).unwrap(),
        "the CSV export re-imports to the same rows"
    );
}
