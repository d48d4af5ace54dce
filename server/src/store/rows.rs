//! Table rows and their mapping to domain records. `table_row!` declares a row once and derives from
//! it the column list, the SQL statements and the binding for both backends, so no statement is
//! written twice.

use std::sync::{LazyLock, OnceLock};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::{Database, Postgres, Sqlite, query::Query};

use super::{Result, StoreError};
use crate::model::*;

/// Binds a row's fields, in column order, to a statement of backend `DB`.
pub(super) trait BindRow<DB: Database>: Sized {
    fn bind_row<'q>(
        self,
        query: Query<'q, DB, <DB as Database>::Arguments<'q>>,
    ) -> Query<'q, DB, <DB as Database>::Arguments<'q>>;
}

/// The statements of one table, derived from its columns. Parameters are `$n`, which SQLite and
/// PostgreSQL both read as "the n-th bound value", so each statement binds the full row.
pub(super) struct Statements {
    table: String,
    columns: Vec<String>,
    keys: Vec<String>,
    pub select: String,
    pub select_by_key: String,
    /// Insert unless the key exists (returns no row then).
    pub insert: String,
    /// Insert, or replace everything but `created_at` when the key exists.
    pub upsert: String,
    /// Replace if the key exists; with `upsert_if_etag` also only when the etag matches ($n+1).
    pub update: String,
    pub update_if_etag: String,
    pub delete: String,
    pub delete_if_etag: String,
    pub count: String,
    upserts_returning: [OnceLock<String>; BATCH_SIZES.len()],
}

impl Statements {
    fn new(table: &str, columns: &[&str], keys: &[&str]) -> Statements {
        let param = |col: &str| format!("${}", columns.iter().position(|c| *c == col).unwrap() + 1);
        let list = columns.join(", ");
        let values = (1..=columns.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mutable: Vec<&str> = columns
            .iter()
            .copied()
            .filter(|c| !keys.contains(c) && *c != "created_at")
            .collect();
        let excluded = mutable
            .iter()
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let assign = mutable
            .iter()
            .map(|c| format!("{c} = {}", param(c)))
            .collect::<Vec<_>>()
            .join(", ");
        let key_match = keys
            .iter()
            .map(|k| format!("{k} = {}", param(k)))
            .collect::<Vec<_>>()
            .join(" AND ");
        let key_only = keys
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{k} = ${}", i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        let etag_param = columns.len() + 1;
        Statements {
            table: table.into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            keys: keys.iter().map(|c| c.to_string()).collect(),
            select: format!("SELECT {list} FROM {table}"),
            select_by_key: format!("SELECT {list} FROM {table} WHERE {key_only}"),
            insert: format!(
                "INSERT INTO {table} ({list}) VALUES ({values}) ON CONFLICT ({}) DO NOTHING RETURNING created_at",
                keys.join(", ")
            ),
            upsert: format!(
                "INSERT INTO {table} ({list}) VALUES ({values}) ON CONFLICT ({}) DO UPDATE SET {excluded} RETURNING created_at",
                keys.join(", ")
            ),
            update: format!("UPDATE {table} SET {assign} WHERE {key_match} RETURNING created_at"),
            update_if_etag: format!(
                "UPDATE {table} SET {assign} WHERE {key_match} AND etag = ${etag_param} RETURNING created_at"
            ),
            delete: format!("DELETE FROM {table} WHERE {key_only}"),
            delete_if_etag: format!(
                "DELETE FROM {table} WHERE {key_only} AND etag = ${}",
                keys.len() + 1
            ),
            count: format!("SELECT COUNT(*) FROM {table}"),
            upserts_returning: Default::default(),
        }
    }
}

impl Statements {
    /// An upsert of `rows` rows in one statement (rows must have distinct keys).
    pub fn upsert_many(&self, rows: usize) -> String {
        let width = self.columns.len();
        let tuples: Vec<String> = (0..rows)
            .map(|r| {
                format!(
                    "({})",
                    (1..=width)
                        .map(|c| format!("${}", r * width + c))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        let assign: Vec<String> = self
            .columns
            .iter()
            .filter(|c| !self.keys.contains(c) && *c != "created_at")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO UPDATE SET {}",
            self.table,
            self.columns.join(", "),
            tuples.join(", "),
            self.keys.join(", "),
            assign.join(", ")
        )
    }

    /// The columns, comma-separated (for `RETURNING`).
    pub fn column_list(&self) -> String {
        self.columns.join(", ")
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// [`Self::upsert_many`] of one of [`BATCH_SIZES`] rows, returning each row's key columns and
    /// `created_at`; the texts are made once per table and size.
    pub fn upsert_returning(&self, rows: usize) -> &str {
        let slot = BATCH_SIZES
            .iter()
            .position(|&n| n == rows)
            .expect("a batch size");
        self.upserts_returning[slot].get_or_init(|| {
            format!(
                "{} RETURNING {}, created_at",
                self.upsert_many(rows),
                self.keys.join(", ")
            )
        })
    }
}

/// Rows per multi-row statement: batches are cut into these sizes, largest first, so the
/// database's statement cache keeps a handful of texts instead of one per batch size (which
/// evicted the hot registration statements and made SQLite re-parse them: measured 7% of CPU).
pub(super) const BATCH_SIZES: [usize; 6] = [32, 16, 8, 4, 2, 1];

/// `rows` cut into [`BATCH_SIZES`] chunks, largest first.
pub(super) fn batches<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = BATCH_SIZES.iter().copied().find(|&n| n <= rows.len())?;
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// A row type: its table, key columns and statements.
pub(super) trait Row {
    fn statements() -> &'static Statements;
    /// The row's key, for keyset paging (first key column).
    fn key(&self) -> &str;
    /// Every key column, joined by [`KEY_SEPARATOR`] (as [`Statements::upsert_returning`] returns them).
    fn full_key(&self) -> String;
}

/// Joins the columns of a composite key; no ID may contain it.
pub(super) const KEY_SEPARATOR: &str = "\0";

macro_rules! table_row {
    ($row:ident in $table:literal, keys($($key:ident),+) { $($field:ident : $ty:ty),+ $(,)? }) => {
        #[derive(Debug, Clone, sqlx::FromRow)]
        pub(super) struct $row { $(pub $field: $ty),+ }

        impl Row for $row {
            fn statements() -> &'static Statements {
                static STATEMENTS: LazyLock<Statements> = LazyLock::new(|| {
                    Statements::new($table, &[$(stringify!($field)),+], &[$(stringify!($key)),+])
                });
                &STATEMENTS
            }
            fn key(&self) -> &str {
                table_row!(@first self, $($key),+)
            }
            fn full_key(&self) -> String {
                [$(self.$key.as_str()),+].join(KEY_SEPARATOR)
            }
        }

        table_row!(@bind $row, Sqlite, $($field),+);
        table_row!(@bind $row, Postgres, $($field),+);
    };
    (@first $self:ident, $first:ident $(, $rest:ident)*) => {
        $self.$first.as_str()
    };
    (@bind $row:ident, $db:ty, $($field:ident),+) => {
        impl BindRow<$db> for $row {
            fn bind_row<'q>(
                self,
                query: Query<'q, $db, <$db as Database>::Arguments<'q>>,
            ) -> Query<'q, $db, <$db as Database>::Arguments<'q>> {
                query$(.bind(self.$field))+
            }
        }
    };
}

table_row!(EnrollmentRow in "enrollments", keys(id) {
    id: String,
    registration_id: String,
    device_id: Option<String>,
    provisioning_status: String,
    attestation_type: String,
    spec: String,
    optional_device_information: Option<String>,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(GroupRow in "enrollment_groups", keys(id) {
    id: String,
    group_id: String,
    provisioning_status: String,
    attestation_type: String,
    spec: String,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(HubRow in "linked_hubs", keys(id) {
    id: String,
    host_name: String,
    connector: String,
    region: Option<String>,
    allocation_weight: i32,
    apply_allocation_policy: bool,
    settings: String,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(RegistrationRow in "registrations", keys(id) {
    id: String,
    registration_id: String,
    enrollment: String,
    group_id: Option<String>,
    attestation_type: String,
    assigned_hub: Option<String>,
    device_id: Option<String>,
    status: String,
    substatus: Option<String>,
    error_code: Option<i64>,
    error_message: Option<String>,
    payload: Option<String>,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(OperationRow in "registration_operations", keys(operation_id) {
    operation_id: String,
    registration_id: String,
    status: String,
    result: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(PolicyRow in "access_policies", keys(id) {
    id: String,
    name: String,
    rights: String,
    primary_key: String,
    secondary_key: String,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(CaRow in "ca_certificates", keys(id) {
    id: String,
    name: String,
    pem: String,
    sha256_thumbprint: String,
    verified: bool,
    verification_code: Option<String>,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(HubDeviceRow in "hub_devices", keys(hub, id) {
    hub: String,
    id: String,
    device_id: String,
    enabled: bool,
    auth: String,
    iot_edge: bool,
    generation_id: String,
    tags: String,
    desired: String,
    desired_version: i64,
    reported: String,
    reported_version: i64,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(UserRow in "console_users", keys(id) {
    id: String,
    username: String,
    password_hash: String,
    role: String,
    disabled: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(CredentialPolicyRow in "credential_policies", keys(id) {
    id: String,
    name: String,
    spec: String,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(IssuerRow in "certificate_issuers", keys(id) {
    id: String,
    name: String,
    chain_pem: String,
    key_pem: String,
    etag: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
});

table_row!(IssuedRow in "issued_certificates", keys(serial) {
    serial: String,
    device: String,
    registration_id: String,
    issuer: String,
    policy: String,
    key_type: String,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
});

/// A domain record that is stored as one row.
pub(super) trait Stored: Sized {
    type Row: Row;
    fn to_row(&self) -> Result<Self::Row>;
    fn from_row(row: Self::Row) -> Result<Self>;
    /// Gives the record the bookkeeping of a write (fresh etag and update time).
    fn touch(&mut self, now: DateTime<Utc>);
    fn set_created(&mut self, created: DateTime<Utc>);
}

fn json<T: Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

fn from_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    Ok(serde_json::from_str(text)?)
}

fn opt_json<T: DeserializeOwned>(text: Option<String>) -> Result<Option<T>> {
    text.as_deref().map(from_json).transpose()
}

fn parse_or_corrupt<T>(what: &str, value: &str, parsed: Option<T>) -> Result<T> {
    parsed.ok_or_else(|| StoreError::Corrupt(format!("unknown {what} {value:?}")))
}

macro_rules! bookkeeping {
    ($ty:ty, etag) => {
        fn touch(&mut self, now: DateTime<Utc>) {
            self.etag = Etag::new();
            self.updated = now;
        }
        bookkeeping!($ty);
    };
    ($ty:ty) => {
        fn set_created(&mut self, created: DateTime<Utc>) {
            self.created = created;
        }
    };
}

impl Stored for Enrollment {
    type Row = EnrollmentRow;
    fn to_row(&self) -> Result<EnrollmentRow> {
        Ok(EnrollmentRow {
            id: key_of(&self.registration_id),
            registration_id: self.registration_id.clone(),
            device_id: self.device_id.clone(),
            provisioning_status: self.spec.provisioning_status.as_str().into(),
            attestation_type: self.spec.attestation.kind().as_str().into(),
            spec: json(&self.spec)?,
            optional_device_information: self
                .optional_device_information
                .as_ref()
                .map(json)
                .transpose()?,
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: EnrollmentRow) -> Result<Self> {
        Ok(Enrollment {
            registration_id: row.registration_id,
            device_id: row.device_id,
            spec: from_json(&row.spec)?,
            optional_device_information: opt_json(row.optional_device_information)?,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(Enrollment, etag);
}

impl Stored for EnrollmentGroup {
    type Row = GroupRow;
    fn to_row(&self) -> Result<GroupRow> {
        Ok(GroupRow {
            id: key_of(&self.group_id),
            group_id: self.group_id.clone(),
            provisioning_status: self.spec.provisioning_status.as_str().into(),
            attestation_type: self.spec.attestation.kind().as_str().into(),
            spec: json(&self.spec)?,
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: GroupRow) -> Result<Self> {
        Ok(EnrollmentGroup {
            group_id: row.group_id,
            spec: from_json(&row.spec)?,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(EnrollmentGroup, etag);
}

impl Stored for LinkedHub {
    type Row = HubRow;
    fn to_row(&self) -> Result<HubRow> {
        Ok(HubRow {
            id: key_of(&self.host_name),
            host_name: self.host_name.clone(),
            connector: self.connector.as_str().into(),
            region: self.region.clone(),
            allocation_weight: self.allocation_weight as i32,
            apply_allocation_policy: self.apply_allocation_policy,
            settings: json(&self.settings)?,
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: HubRow) -> Result<Self> {
        Ok(LinkedHub {
            connector: parse_or_corrupt(
                "connector",
                &row.connector,
                ConnectorKind::parse(&row.connector),
            )?,
            host_name: row.host_name,
            region: row.region,
            allocation_weight: row.allocation_weight.max(1) as u32,
            apply_allocation_policy: row.apply_allocation_policy,
            settings: from_json(&row.settings)?,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(LinkedHub, etag);
}

impl Stored for RegistrationRecord {
    type Row = RegistrationRow;
    fn to_row(&self) -> Result<RegistrationRow> {
        Ok(RegistrationRow {
            id: key_of(&self.registration_id),
            registration_id: self.registration_id.clone(),
            enrollment: json(&self.enrollment)?,
            group_id: self.enrollment.group_id().map(key_of),
            attestation_type: self.attestation.as_str().into(),
            assigned_hub: self.assigned_hub.clone(),
            device_id: self.device_id.clone(),
            status: self.status.as_str().into(),
            substatus: self.substatus.as_ref().map(json).transpose()?,
            error_code: self.error_code,
            error_message: self.error_message.clone(),
            payload: self.payload.as_ref().map(json).transpose()?,
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: RegistrationRow) -> Result<Self> {
        Ok(RegistrationRecord {
            enrollment: from_json(&row.enrollment)?,
            attestation: parse_or_corrupt(
                "attestation type",
                &row.attestation_type,
                AttestationKind::parse(&row.attestation_type),
            )?,
            status: parse_or_corrupt(
                "status",
                &row.status,
                RegistrationStatus::parse(&row.status),
            )?,
            substatus: opt_json(row.substatus)?,
            payload: opt_json(row.payload)?,
            registration_id: row.registration_id,
            assigned_hub: row.assigned_hub,
            device_id: row.device_id,
            error_code: row.error_code,
            error_message: row.error_message,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(RegistrationRecord, etag);
}

impl Stored for RegistrationOperation {
    type Row = OperationRow;
    fn to_row(&self) -> Result<OperationRow> {
        Ok(OperationRow {
            operation_id: self.operation_id.clone(),
            registration_id: self.registration_id.clone(),
            status: self.status.as_str().into(),
            result: self.result.as_ref().map(json).transpose()?,
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: OperationRow) -> Result<Self> {
        Ok(RegistrationOperation {
            status: parse_or_corrupt(
                "status",
                &row.status,
                RegistrationStatus::parse(&row.status),
            )?,
            result: opt_json(row.result)?,
            operation_id: row.operation_id,
            registration_id: row.registration_id,
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated = now;
    }
    bookkeeping!(RegistrationOperation);
}

impl Stored for AccessPolicy {
    type Row = PolicyRow;
    fn to_row(&self) -> Result<PolicyRow> {
        Ok(PolicyRow {
            id: key_of(&self.name),
            name: self.name.clone(),
            rights: self
                .rights
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(","),
            primary_key: self.primary_key.clone(),
            secondary_key: self.secondary_key.clone(),
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: PolicyRow) -> Result<Self> {
        let rights = row
            .rights
            .split(',')
            .filter(|r| !r.is_empty())
            .map(|r| parse_or_corrupt("right", r, Right::parse(r)))
            .collect::<Result<_>>()?;
        Ok(AccessPolicy {
            name: row.name,
            rights,
            primary_key: row.primary_key,
            secondary_key: row.secondary_key,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(AccessPolicy, etag);
}

impl Stored for CaCertificate {
    type Row = CaRow;
    fn to_row(&self) -> Result<CaRow> {
        Ok(CaRow {
            id: key_of(&self.name),
            name: self.name.clone(),
            pem: self.pem.clone(),
            sha256_thumbprint: self.sha256_thumbprint.clone(),
            verified: self.verified,
            verification_code: self.verification_code.clone(),
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: CaRow) -> Result<Self> {
        Ok(CaCertificate {
            name: row.name,
            pem: row.pem,
            sha256_thumbprint: row.sha256_thumbprint,
            verified: row.verified,
            verification_code: row.verification_code,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(CaCertificate, etag);
}

/// A credential policy's settings, as its `spec` column holds them.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialPolicySpec {
    issuer: String,
    validity_days: u32,
    key_types: Vec<KeyType>,
    renewal_window_days: u32,
}

impl Stored for CredentialPolicy {
    type Row = CredentialPolicyRow;
    fn to_row(&self) -> Result<CredentialPolicyRow> {
        let spec = CredentialPolicySpec {
            issuer: self.issuer.clone(),
            validity_days: self.validity_days,
            key_types: self.key_types.clone(),
            renewal_window_days: self.renewal_window_days,
        };
        Ok(CredentialPolicyRow {
            id: key_of(&self.name),
            name: self.name.clone(),
            spec: json(&spec)?,
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: CredentialPolicyRow) -> Result<Self> {
        let spec: CredentialPolicySpec = from_json(&row.spec)?;
        Ok(CredentialPolicy {
            name: row.name,
            issuer: spec.issuer,
            validity_days: spec.validity_days,
            key_types: spec.key_types,
            renewal_window_days: spec.renewal_window_days,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(CredentialPolicy, etag);
}

impl Stored for CertificateIssuer {
    type Row = IssuerRow;
    fn to_row(&self) -> Result<IssuerRow> {
        Ok(IssuerRow {
            id: key_of(&self.name),
            name: self.name.clone(),
            chain_pem: self.chain_pem.clone(),
            key_pem: self.key_pem.clone(),
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: IssuerRow) -> Result<Self> {
        Ok(CertificateIssuer {
            name: row.name,
            chain_pem: row.chain_pem,
            key_pem: row.key_pem,
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(CertificateIssuer, etag);
}

impl Stored for IssuedCertificate {
    type Row = IssuedRow;
    fn to_row(&self) -> Result<IssuedRow> {
        Ok(IssuedRow {
            serial: self.serial.to_ascii_lowercase(),
            device: key_of(&self.registration_id),
            registration_id: self.registration_id.clone(),
            issuer: self.issuer.clone(),
            policy: self.policy.clone(),
            key_type: self.key_type.as_str().into(),
            not_before: self.not_before,
            not_after: self.not_after,
            revoked_at: self.revoked,
            created_at: self.created,
        })
    }
    fn from_row(row: IssuedRow) -> Result<Self> {
        Ok(IssuedCertificate {
            key_type: parse_or_corrupt("key type", &row.key_type, KeyType::parse(&row.key_type))?,
            serial: row.serial,
            registration_id: row.registration_id,
            issuer: row.issuer,
            policy: row.policy,
            not_before: row.not_before,
            not_after: row.not_after,
            revoked: row.revoked_at,
            created: row.created_at,
        })
    }
    /// Issued certificates change only by revocation, which keeps the rest.
    fn touch(&mut self, _now: DateTime<Utc>) {}
    bookkeeping!(IssuedCertificate);
}

impl Stored for HubDevice {
    type Row = HubDeviceRow;
    fn to_row(&self) -> Result<HubDeviceRow> {
        Ok(HubDeviceRow {
            hub: key_of(&self.hub),
            // Device IDs on a hub are case-sensitive, as on IoT Hub.
            id: self.device_id.clone(),
            device_id: self.device_id.clone(),
            enabled: self.enabled,
            auth: json(&self.auth)?,
            iot_edge: self.iot_edge,
            generation_id: self.generation_id.clone(),
            tags: json(&self.tags)?,
            desired: json(&self.desired.properties)?,
            desired_version: self.desired.version,
            reported: json(&self.reported.properties)?,
            reported_version: self.reported.version,
            etag: self.etag.0.clone(),
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: HubDeviceRow) -> Result<Self> {
        Ok(HubDevice {
            hub: row.hub,
            device_id: row.device_id,
            enabled: row.enabled,
            auth: from_json(&row.auth)?,
            iot_edge: row.iot_edge,
            generation_id: row.generation_id,
            tags: from_json(&row.tags)?,
            desired: TwinProperties {
                properties: from_json(&row.desired)?,
                version: row.desired_version,
            },
            reported: TwinProperties {
                properties: from_json(&row.reported)?,
                version: row.reported_version,
            },
            etag: Etag(row.etag),
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    bookkeeping!(HubDevice, etag);
}

impl Stored for ConsoleUser {
    type Row = UserRow;
    fn to_row(&self) -> Result<UserRow> {
        Ok(UserRow {
            id: key_of(&self.username),
            username: self.username.clone(),
            password_hash: self.password_hash.clone(),
            role: self.role.as_str().into(),
            disabled: self.disabled,
            created_at: self.created,
            updated_at: self.updated,
        })
    }
    fn from_row(row: UserRow) -> Result<Self> {
        Ok(ConsoleUser {
            role: parse_or_corrupt("role", &row.role, Role::parse(&row.role))?,
            username: row.username,
            password_hash: row.password_hash,
            disabled: row.disabled,
            created: row.created_at,
            updated: row.updated_at,
        })
    }
    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated = now;
    }
    bookkeeping!(ConsoleUser);
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub front_end: String,
    pub address: Option<String>,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl AuditRow {
    pub fn into_domain(self) -> Result<AuditEntry> {
        Ok(AuditEntry {
            id: self.id,
            at: self.at,
            actor: self.actor,
            front_end: FrontEnd::parse(&self.front_end).ok_or_else(|| {
                StoreError::Corrupt(format!("unknown front end {:?}", self.front_end))
            })?,
            address: self.address,
            action: self.action,
            target: self.target,
            before: opt_json(self.before)?,
            after: opt_json(self.after)?,
        })
    }
}

pub(super) fn opt_to_json(value: &Option<serde_json::Value>) -> Result<Option<String>> {
    value.as_ref().map(json).transpose()
}

pub(super) fn fault_to_json(fault: &FaultInjection) -> Result<String> {
    json(fault)
}

/// The fault as stored, with the count from its own column (the one the atomic take updates).
pub(super) fn fault_from_row(spec: &str, remaining: i64) -> Result<FaultInjection> {
    let mut fault: FaultInjection = from_json(spec)?;
    fault.remaining = u32::try_from(remaining.max(0)).unwrap_or(u32::MAX);
    Ok(fault)
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct LifecycleEventRow {
    pub seq: i64,
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub resource: String,
}

impl LifecycleEventRow {
    pub fn into_domain(self) -> Result<StoredEvent> {
        let event_type = parse_or_corrupt(
            "event type",
            &self.event_type,
            EventType::parse(&self.event_type),
        )?;
        Ok(StoredEvent {
            seq: self.seq,
            event: LifecycleEvent {
                id: self.id,
                event_type,
                time: self.at,
                resource: from_json(&self.resource)?,
            },
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(super) struct EventSinkRow {
    pub name: String,
    pub target: String,
    pub enabled: bool,
    pub delivered_seq: i64,
    pub delivered_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub failing_since: Option<DateTime<Utc>>,
    pub failures: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(super) const EVENT_SINK_COLUMNS: &str = "name, target, enabled, delivered_seq, delivered_at, \
     last_error, failing_since, failures, created_at, updated_at";

impl EventSinkRow {
    pub fn into_domain(self) -> Result<EventSink> {
        Ok(EventSink {
            name: self.name,
            target: from_json(&self.target)?,
            enabled: self.enabled,
            progress: SinkProgress {
                delivered_seq: self.delivered_seq,
                delivered_at: self.delivered_at,
                last_error: self.last_error,
                failing_since: self.failing_since,
                failures: u64::try_from(self.failures).unwrap_or(0),
            },
            created: self.created_at,
            updated: self.updated_at,
        })
    }
}

pub(super) fn sink_target_json(target: &SinkTarget) -> Result<String> {
    json(target)
}
