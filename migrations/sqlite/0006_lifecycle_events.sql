-- Lifecycle events (issue 19): the outbox. Each row is inserted in the same transaction as the
-- change it describes; `seq` orders delivery (SQLite has one writer, so seq order is commit
-- order). `id` is what consumers de-duplicate on. `resource` is JSON without secrets.
CREATE TABLE lifecycle_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    at       TEXT NOT NULL,
    resource TEXT NOT NULL
);

-- Where events go, and how far each sink got. `target` is the sink's JSON (kind, URL, subject or
-- topic, webhook secret). The lease lets one instance of several deliver a sink at a time.
CREATE TABLE event_sinks (
    name              TEXT PRIMARY KEY,
    target            TEXT NOT NULL,
    enabled           INTEGER NOT NULL,
    delivered_seq     INTEGER NOT NULL,
    delivered_at      TEXT,
    last_error        TEXT,
    failing_since     TEXT,
    failures          INTEGER NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL
);
