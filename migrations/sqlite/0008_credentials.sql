-- Certificates issued at provisioning (issue 21). `spec` is the policy's JSON (issuer, validity,
-- key types, renewal window). An issuer's key is a secret like an enrollment key: never returned.
CREATE TABLE credential_policies (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    etag       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE certificate_issuers (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    chain_pem  TEXT NOT NULL,
    key_pem    TEXT NOT NULL,
    etag       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Every certificate signed, committed with the registration that delivers it. `device` is the
-- registration ID's key (lower case), for "this device's certificates".
CREATE TABLE issued_certificates (
    serial          TEXT PRIMARY KEY,
    device          TEXT NOT NULL,
    registration_id TEXT NOT NULL,
    issuer          TEXT NOT NULL,
    policy          TEXT NOT NULL,
    key_type        TEXT NOT NULL,
    not_before      TEXT NOT NULL,
    not_after       TEXT NOT NULL,
    revoked_at      TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX issued_certificates_by_device ON issued_certificates (device, not_after);
CREATE INDEX issued_certificates_revoked ON issued_certificates (issuer, revoked_at);
