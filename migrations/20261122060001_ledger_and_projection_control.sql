-- Issue 6: the double-entry ledger projection, projection versions and worker status.

-- The version of the projection code that built the rows (a changed version triggers a
-- blue/green rebuild when the projectors start).
ALTER TABLE projection_checkpoints ADD COLUMN version INT NOT NULL DEFAULT 1;

-- The state of each projection's active worker, for `mychat projections status` and /metrics.
-- state: 'running' | 'stopped' (a poison event: poison_seq and error say which and why).
CREATE TABLE projection_status (
    name       TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    poison_seq BIGINT,
    error      TEXT,
    worker     TEXT,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The ledger: one row per posting line. amount_fen > 0 is a debit, < 0 a credit; the lines of
-- one event sum to zero, so every posting in the table does too.
CREATE TABLE ledger_postings (
    stream_seq  BIGINT NOT NULL,
    idx         INT NOT NULL,
    line        INT NOT NULL,
    account     TEXT NOT NULL,
    amount_fen  BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    aggregate   TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream_seq, idx, line)
);
CREATE INDEX ledger_postings_account ON ledger_postings (account, stream_seq);

-- Each account's balance: the signed sum of its postings (debit positive).
CREATE TABLE ledger_balances (
    account     TEXT PRIMARY KEY,
    balance_fen BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
