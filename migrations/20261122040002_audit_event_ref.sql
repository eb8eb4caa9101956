-- Issue 4: an audit row of an event-sourced admin change points at the event it committed (the
-- event itself carries the actor in its envelope).
ALTER TABLE admin_logs ADD COLUMN event_stream TEXT NOT NULL DEFAULT '';
ALTER TABLE admin_logs ADD COLUMN event_seq BIGINT;
