-- Certificates issued at provisioning (issue 21). `spec` is the policy's JSON (issuer, validity,
-- key types, renewal window). An issuer's key is a secret like an enrollment key: never returned.
CREATE TABLE credential_policies (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    spec       TEXT NOT NULL,
    etag       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE certificate_issuers (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT NOT NULL,
    chain_pem  TEXT NOT NULL,
    key_pem    TEXT NOT NULL,
    etag       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- Every certificate signed, committed with the registration that delivers it. `device` is the
-- registration ID's key (lower case), for "this device's certificates".
CREATE TABLE issued_certificates (
    serial          TEXT COLLATE "C" PRIMARY KEY,
    device          TEXT COLLATE "C" NOT NULL,
    registration_id TEXT NOT NULL,
    issuer          TEXT NOT NULL,
    policy          TEXT NOT NULL,
    key_type        TEXT NOT NULL,
    not_before      TIMESTAMPTZ NOT NULL,
    not_after       TIMESTAMPTZ NOT NULL,
    revoked_at      TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX issued_certificates_by_device ON issued_certificates (device, not_after);
CREATE INDEX issued_certificates_revoked ON issued_certificates (issuer, revoked_at);
