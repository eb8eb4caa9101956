-- Jobs the admin API runs outside the request (a reconciliation, an audit replay): the record
-- survives a restart. `state`: queued → running → done | failed. A running job whose runner
-- stopped sending heartbeats is marked failed by any admin node; it can be submitted again.
CREATE TABLE admin_jobs (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT        NOT NULL CHECK (kind IN ('reconcile', 'replay')),
    state        TEXT        NOT NULL DEFAULT 'queued'
                             CHECK (state IN ('queued', 'running', 'done', 'failed')),
    -- What was asked (`{from, to}`, `{at, projections}`), as submitted.
    params       JSONB       NOT NULL,
    -- Progress: `done` of `total` (stream sequences folded, messages replayed).
    done         BIGINT      NOT NULL DEFAULT 0,
    total        BIGINT      NOT NULL DEFAULT 0,
    -- The finished job's report.
    result       JSONB,
    error        TEXT        NOT NULL DEFAULT '',
    created_by   BIGINT      NOT NULL,
    api_key_id   BIGINT,
    -- The process running it (an id per process) and its last heartbeat.
    runner       TEXT        NOT NULL DEFAULT '',
    heartbeat_at TIMESTAMPTZ,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    -- When a replay's schema was dropped by the retention.
    dropped_at   TIMESTAMPTZ
);
CREATE INDEX admin_jobs_state ON admin_jobs (state, id);
