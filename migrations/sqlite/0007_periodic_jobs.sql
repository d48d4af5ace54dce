-- Periodic background work (the janitor's sweep) runs once per period across the instances on a
-- database: an instance runs a job only when it moves `last_run_at` forward itself.
CREATE TABLE periodic_jobs (
    name        TEXT PRIMARY KEY,
    last_run_at TEXT NOT NULL
);
