-- Test mode (issue 18): the fault an operator set on an enrollment or group, keyed
-- `individual/{lower-case id}` or `group/{lower-case id}`. `remaining` is its own column so one
-- UPDATE can take a registration from it atomically on any instance; the rest is JSON.
CREATE TABLE fault_injections (
    target     TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,
    remaining  BIGINT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
