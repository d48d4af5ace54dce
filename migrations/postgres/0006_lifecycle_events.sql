-- Lifecycle events (issue 19): the outbox. Each row is inserted in the same transaction as the
-- change it describes, under a transaction-scoped advisory lock (store/sql.rs), so `seq` order is
-- commit order and a reader that saw seq n has seen every event below it. `id` is what consumers
-- de-duplicate on. `resource` is JSON without secrets.
CREATE TABLE lifecycle_events (
    seq      BIGSERIAL PRIMARY KEY,
    id       TEXT NOT NULL UNIQUE,
    type     TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    resource TEXT NOT NULL
);

-- Where events go, and how far each sink got. `target` is the sink's JSON (kind, URL, subject or
-- topic, webhook secret). The lease lets one instance of several deliver a sink at a time.
CREATE TABLE event_sinks (
    name              TEXT COLLATE "C" PRIMARY KEY,
    target            TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL,
    delivered_seq     BIGINT NOT NULL,
    delivered_at      TIMESTAMPTZ,
    last_error        TEXT,
    failing_since     TIMESTAMPTZ,
    failures          BIGINT NOT NULL DEFAULT 0,
    lease_owner       TEXT,
    lease_until       TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL
);
