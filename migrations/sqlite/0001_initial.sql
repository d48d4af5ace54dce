-- Onramp schema, SQLite flavour (keep in step with ../postgres/0001_initial.sql).
-- IDs that Azure treats case-insensitively are keyed in lower case (`id`) beside the spelling kept.
-- JSON documents are TEXT; timestamps are RFC 3339 TEXT as sqlx writes them.

CREATE TABLE instance_settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE enrollments (
    id                          TEXT PRIMARY KEY,
    registration_id             TEXT NOT NULL,
    device_id                   TEXT,
    provisioning_status         TEXT NOT NULL,
    attestation_type            TEXT NOT NULL,
    spec                        TEXT NOT NULL,
    optional_device_information TEXT,
    etag                        TEXT NOT NULL,
    created_at                  TEXT NOT NULL,
    updated_at                  TEXT NOT NULL
);
CREATE INDEX enrollments_by_status ON enrollments (provisioning_status, id);
CREATE INDEX enrollments_by_attestation ON enrollments (attestation_type, id);

CREATE TABLE enrollment_groups (
    id                  TEXT PRIMARY KEY,
    group_id            TEXT NOT NULL,
    provisioning_status TEXT NOT NULL,
    attestation_type    TEXT NOT NULL,
    spec                TEXT NOT NULL,
    etag                TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE linked_hubs (
    id                      TEXT PRIMARY KEY,
    host_name               TEXT NOT NULL,
    connector               TEXT NOT NULL,
    region                  TEXT,
    allocation_weight       INTEGER NOT NULL CHECK (allocation_weight BETWEEN 1 AND 1000),
    apply_allocation_policy INTEGER NOT NULL,
    settings                TEXT NOT NULL,
    etag                    TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);

CREATE TABLE registrations (
    id               TEXT PRIMARY KEY,
    registration_id  TEXT NOT NULL,
    enrollment       TEXT NOT NULL,
    group_id         TEXT,
    attestation_type TEXT NOT NULL,
    assigned_hub     TEXT,
    device_id        TEXT,
    status           TEXT NOT NULL,
    substatus        TEXT,
    error_code       INTEGER,
    error_message    TEXT,
    payload          TEXT,
    etag             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX registrations_by_group ON registrations (group_id, id);
CREATE INDEX registrations_by_hub ON registrations (assigned_hub);

CREATE TABLE registration_operations (
    operation_id    TEXT PRIMARY KEY,
    registration_id TEXT NOT NULL,
    status          TEXT NOT NULL,
    result          TEXT,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX registration_operations_by_created ON registration_operations (created_at);

-- TPM challenges and other one-time values, so any instance can finish what another began.
CREATE TABLE attestation_nonces (
    registration_id TEXT PRIMARY KEY,
    nonce           BLOB NOT NULL,
    expires_at      TEXT NOT NULL
);

CREATE TABLE access_policies (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    rights        TEXT NOT NULL,
    primary_key   TEXT NOT NULL,
    secondary_key TEXT NOT NULL,
    etag          TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE ca_certificates (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL,
    pem               TEXT NOT NULL,
    sha256_thumbprint TEXT NOT NULL,
    verified          INTEGER NOT NULL,
    verification_code TEXT,
    etag              TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
CREATE INDEX ca_certificates_by_thumbprint ON ca_certificates (sha256_thumbprint);

CREATE TABLE hub_devices (
    hub              TEXT NOT NULL,
    id               TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    enabled          INTEGER NOT NULL,
    auth             TEXT NOT NULL,
    iot_edge         INTEGER NOT NULL,
    generation_id    TEXT NOT NULL,
    tags             TEXT NOT NULL,
    desired          TEXT NOT NULL,
    desired_version  INTEGER NOT NULL,
    reported         TEXT NOT NULL,
    reported_version INTEGER NOT NULL,
    etag             TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (hub, id)
);

CREATE TABLE console_users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL,
    disabled      INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE TABLE console_sessions (
    id         TEXT PRIMARY KEY,
    data       BLOB NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     TEXT NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before TEXT,
    after  TEXT
);

-- Registration attempts as the diagnostics bus saw them (dashboard charts, audit trail).
CREATE TABLE registration_events (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    at               TEXT NOT NULL,
    tracking_id      TEXT NOT NULL,
    registration_id  TEXT NOT NULL,
    protocol         TEXT NOT NULL,
    attestation_type TEXT,
    enrollment       TEXT,
    hub              TEXT,
    status           TEXT NOT NULL,
    error_code       INTEGER,
    latency_ms       INTEGER NOT NULL
);
CREATE INDEX registration_events_by_time ON registration_events (at);
