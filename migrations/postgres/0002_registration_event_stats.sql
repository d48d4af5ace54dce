-- Registration attempts feed the dashboard: per-minute counts (the unix minute, so both databases
-- group the same way) and the latest failures with their messages.
ALTER TABLE registration_events ADD COLUMN minute BIGINT NOT NULL DEFAULT 0;
ALTER TABLE registration_events ADD COLUMN error_message TEXT;
CREATE INDEX registration_events_by_minute ON registration_events (minute, status);
CREATE INDEX registration_events_failures ON registration_events (id) WHERE status IN ('failed', 'disabled');
