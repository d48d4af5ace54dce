-- The HMAC key a TPM device was challenged with (the key inside its activation blob) and the
-- storage root key it was wrapped to (the final blob, with the hub key, goes to the same), until it
-- expires: any instance on the database checks the signed retry and the polls with it. Keyed by
-- the lower-cased registration ID; a newer challenge replaces the older one.
CREATE TABLE tpm_challenges (
    registration_id TEXT COLLATE "C" PRIMARY KEY,
    hmac_key        BYTEA NOT NULL,
    storage_root_key BYTEA NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX tpm_challenges_by_expiry ON tpm_challenges (expires_at);
