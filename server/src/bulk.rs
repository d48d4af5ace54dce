//! Bulk import and export of individual enrollments, beyond the service API's 10 items: CSV or
//! JSON lines in, validated exactly as the service API validates, written in batches. Imports are
//! resumable (a checkpoint beside the file) and report each bad row without stopping.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::domain::admin::{self, Admin};
use crate::model::*;
use crate::proto::service as wire;
use crate::store::Store;

/// Rows written per transaction; also how often the checkpoint moves.
const BATCH: usize = 5_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// `.csv` is CSV; anything else is JSON lines.
    pub fn of(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::JsonLines,
        }
    }
}

/// CSV columns; `registrationId` is required, the rest optional. `iotHubs` is `;`-separated;
/// `tags` and `desired` are JSON objects.
pub const CSV_COLUMNS: &[&str] = &[
    "registrationId",
    "deviceId",
    "attestationType",
    "primaryKey",
    "secondaryKey",
    "endorsementKey",
    "provisioningStatus",
    "allocationPolicy",
    "iotHubs",
    "iotEdge",
    "tags",
    "desired",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportReport {
    /// Rows accepted (a later row for the same ID replaces an earlier one).
    pub imported: u64,
    pub failed: u64,
    /// Rows skipped because an earlier run had imported them (resume).
    pub resumed_from: u64,
    pub elapsed: Duration,
    pub errors_file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize, PartialEq)]
struct Checkpoint {
    file_len: u64,
    done: u64,
}

fn checkpoint_path(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.progress", file.display()))
}

fn errors_path(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.errors.jsonl", file.display()))
}

/// One input row as the IndividualEnrollment JSON the service API takes.
type Row = Result<Value, String>;

fn rows(path: &Path, format: Format) -> anyhow::Result<Box<dyn Iterator<Item = Row>>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(match format {
        Format::JsonLines => Box::new(
            BufReader::new(file)
                .lines()
                .map(|line| line.map_err(|e| e.to_string()))
                .filter(|line| !matches!(line, Ok(l) if l.trim().is_empty()))
                .map(|line| {
                    line.and_then(|l| {
                        serde_json::from_str(&l).map_err(|e| format!("invalid JSON: {e}"))
                    })
                }),
        ),
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(file);
            let headers: Vec<String> = reader.headers()?.iter().map(str::to_string).collect();
            if let Some(unknown) = headers.iter().find(|h| !CSV_COLUMNS.contains(&h.as_str())) {
                bail!(
                    "unknown CSV column {unknown:?}; known: {}",
                    CSV_COLUMNS.join(", ")
                );
            }
            Box::new(reader.into_records().map(move |record| {
                let record = record.map_err(|e| e.to_string())?;
                csv_row(&headers, &record)
            }))
        }
    })
}

fn csv_row(headers: &[String], record: &csv::StringRecord) -> Row {
    let field = |name: &str| -> Option<&str> {
        headers
            .iter()
            .position(|h| h == name)
            .and_then(|i| record.get(i))
            .filter(|v| !v.is_empty())
    };
    let object = |name: &str| -> Result<Value, String> {
        match field(name) {
            None => Ok(json!({})),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(v @ Value::Object(_)) => Ok(v),
                _ => Err(format!("`{name}` must be a JSON object")),
            },
        }
    };
    let attestation = match field("attestationType").unwrap_or("symmetricKey") {
        t if t.eq_ignore_ascii_case("tpm") => {
            json!({"type": "tpm", "tpm": {"endorsementKey": field("endorsementKey")}})
        }
        t => {
            json!({"type": t, "symmetricKey": {"primaryKey": field("primaryKey"), "secondaryKey": field("secondaryKey")}})
        }
    };
    let mut value = json!({
        "registrationId": field("registrationId"),
        "deviceId": field("deviceId"),
        "attestation": attestation,
        "provisioningStatus": field("provisioningStatus"),
        "allocationPolicy": field("allocationPolicy"),
        "iotHubs": field("iotHubs").map(|h| h.split(';').map(str::trim).filter(|s| !s.is_empty()).collect::<Vec<_>>()),
        "initialTwin": {"tags": object("tags")?, "properties": {"desired": object("desired")?}},
    });
    if let Some(edge) = field("iotEdge") {
        let edge: bool = edge
            .parse()
            .map_err(|_| "`iotEdge` must be true or false".to_string())?;
        value["capabilities"] = json!({"iotEdge": edge});
    }
    Ok(value)
}

/// A row through the service API's build step.
fn to_enrollment(value: &Value) -> Result<Enrollment, String> {
    admin::build::<Enrollment>(value, None).map_err(|e| e.to_string())
}

/// Imports `path`. With `resume`, rows an interrupted run of the same file committed are skipped.
/// `progress(done, total)` is called after every batch.
pub async fn import(
    admin: &Admin,
    actor: &Actor,
    path: &Path,
    resume: bool,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<ImportReport> {
    let started = Instant::now();
    let format = Format::of(path);
    let file_len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let total = rows(path, format)?.count() as u64;
    let checkpoint = checkpoint_path(path);
    let resumed_from = match std::fs::read(&checkpoint)
        .ok()
        .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok())
    {
        Some(c) if resume && c.file_len == file_len => c.done,
        _ => 0,
    };
    let errors_file = errors_path(path);
    let mut errors = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed_from > 0)
        .truncate(resumed_from == 0)
        .open(&errors_file)?;
    let mut report = ImportReport {
        resumed_from,
        ..Default::default()
    };
    let mut batch: HashMap<String, Enrollment> = HashMap::with_capacity(BATCH);
    let mut done = resumed_from;
    for (index, row) in rows(path, format)?.enumerate().skip(resumed_from as usize) {
        let line = index as u64 + 1;
        match row.and_then(|value| to_enrollment(&value)) {
            Ok(enrollment) => {
                report.imported += 1;
                batch.insert(key_of(&enrollment.registration_id), enrollment);
            }
            Err(error) => {
                report.failed += 1;
                writeln!(errors, "{}", json!({"row": line, "error": error}))?;
            }
        }
        done = line;
        if batch.len() >= BATCH {
            flush(admin, &mut batch, &checkpoint, file_len, done).await?;
            progress(done, total);
        }
    }
    flush(admin, &mut batch, &checkpoint, file_len, done).await?;
    progress(done, total);
    let source = path.file_name().unwrap_or_default().to_string_lossy();
    admin
        .imported(actor, &source, report.imported, report.failed)
        .await;
    let _ = std::fs::remove_file(&checkpoint);
    if report.failed == 0 {
        let _ = std::fs::remove_file(&errors_file);
    } else {
        report.errors_file = Some(errors_file);
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

async fn flush(
    admin: &Admin,
    batch: &mut HashMap<String, Enrollment>,
    checkpoint: &Path,
    file_len: u64,
    done: u64,
) -> anyhow::Result<()> {
    if !batch.is_empty() {
        let rows = batch.drain().map(|(_, e)| e).collect();
        admin.import_enrollments(rows).await?;
    }
    std::fs::write(
        checkpoint,
        serde_json::to_vec(&Checkpoint { file_len, done })?,
    )?;
    Ok(())
}

enum Sink<'a> {
    Csv(Box<csv::Writer<&'a mut dyn Write>>),
    JsonLines(&'a mut dyn Write),
}

/// Writes every individual enrollment, keys included, as JSON lines or CSV.
pub async fn export(store: &dyn Store, out: &mut dyn Write, format: Format) -> anyhow::Result<u64> {
    let mut sink = match format {
        Format::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(CSV_COLUMNS)?;
            Sink::Csv(Box::new(writer))
        }
        Format::JsonLines => Sink::JsonLines(out),
    };
    let mut query = ListQuery {
        limit: crate::store::MAX_PAGE,
        ..Default::default()
    };
    let mut count = 0;
    loop {
        let page = store.list_enrollments(&query).await?;
        for enrollment in &page.items {
            match &mut sink {
                Sink::Csv(writer) => writer.write_record(csv_record(enrollment))?,
                Sink::JsonLines(out) => {
                    writeln!(out, "{}", wire::individual_enrollment(enrollment, true))?
                }
            }
            count += 1;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    match sink {
        Sink::Csv(mut writer) => writer.flush()?,
        Sink::JsonLines(out) => out.flush()?,
    }
    Ok(count)
}

fn csv_record(e: &Enrollment) -> Vec<String> {
    let (kind, primary, secondary, ek) = match &e.spec.attestation {
        Attestation::SymmetricKey {
            primary_key,
            secondary_key,
        } => (
            "symmetricKey",
            primary_key.as_str(),
            secondary_key.as_str(),
            "",
        ),
        Attestation::Tpm {
            endorsement_key, ..
        } => ("tpm", "", "", endorsement_key.as_str()),
        Attestation::X509 { .. } => ("x509", "", "", ""),
    };
    let twin = e.spec.initial_twin.clone().unwrap_or_default();
    let object = |m: Map<String, Value>| {
        if m.is_empty() {
            String::new()
        } else {
            Value::Object(m).to_string()
        }
    };
    let policy = e.spec.allocation_policy.map(|p| {
        serde_json::to_value(p)
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_string()
    });
    vec![
        e.registration_id.clone(),
        e.device_id.clone().unwrap_or_default(),
        kind.into(),
        primary.into(),
        secondary.into(),
        ek.into(),
        e.spec.provisioning_status.as_str().into(),
        policy.unwrap_or_default(),
        e.spec.iot_hubs.join(";"),
        e.spec.iot_edge.to_string(),
        object(twin.tags),
        object(twin.desired),
    ]
}

/// Seeds `count` enrollments named `{prefix}{n:07}` (for trying the console and benchmarking its
/// lists at scale): symmetric keys, every tenth one disabled, written in batches through the same
/// validation as an import. `progress(done, count)` is called after every batch.
pub async fn seed(
    admin: &Admin,
    actor: &Actor,
    count: u64,
    prefix: &str,
    mut progress: impl FnMut(u64, u64),
) -> anyhow::Result<u64> {
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(BATCH as u64);
        let enrollments = (done..done + batch)
            .map(|n| {
                let status = if n % 10 == 9 { "disabled" } else { "enabled" };
                let document = json!({
                    "registrationId": format!("{prefix}{n:07}"),
                    "attestation": {"type": "symmetricKey"},
                    "provisioningStatus": status,
                    "initialTwin": {"tags": {"seed": n}},
                });
                to_enrollment(&document).map_err(|e| anyhow::anyhow!(e))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        admin.import_enrollments(enrollments).await?;
        done += batch;
        progress(done, count);
    }
    admin
        .imported(actor, &format!("seed/{prefix}"), done, 0)
        .await;
    Ok(done)
}
