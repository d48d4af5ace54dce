-- Every front end writes the audit trail now: which one made the change, and from where (the
-- service API's client address). Entries written before came only from the console.
ALTER TABLE audit_log ADD COLUMN front_end TEXT NOT NULL DEFAULT 'console';
ALTER TABLE audit_log ADD COLUMN address TEXT;
