-- mychat: reference data (plain Postgres) and the read models built by the projectors.
-- Money columns are BIGINT fen (1/100 CNY). Times are timestamptz (UTC).

-- Reference data ---------------------------------------------------------------------------

CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    email         TEXT NOT NULL DEFAULT '',
    phone         TEXT NOT NULL DEFAULT '',
    avatar        TEXT NOT NULL DEFAULT '',
    status        SMALLINT NOT NULL DEFAULT 1,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at    TIMESTAMPTZ
);

CREATE TABLE counselors (
    id         BIGSERIAL PRIMARY KEY,
    user_id    BIGINT UNIQUE REFERENCES users(id),
    name       TEXT NOT NULL,
    title      TEXT NOT NULL DEFAULT '',
    avatar     TEXT NOT NULL DEFAULT '',
    bio        TEXT NOT NULL DEFAULT '',
    specialty  TEXT NOT NULL DEFAULT '',
    price_fen  BIGINT NOT NULL CHECK (price_fen > 0),
    years_exp  INT NOT NULL DEFAULT 0,
    rating     DOUBLE PRECISION NOT NULL DEFAULT 5.0,
    status     SMALLINT NOT NULL DEFAULT 1,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE administrators (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    real_name     TEXT NOT NULL DEFAULT '',
    email         TEXT NOT NULL DEFAULT '',
    phone         TEXT NOT NULL DEFAULT '',
    avatar        TEXT NOT NULL DEFAULT '',
    role          TEXT NOT NULL DEFAULT 'admin',
    status        SMALLINT NOT NULL DEFAULT 1,
    last_login    TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Ids of event-sourced aggregates are allocated here before their first command.
CREATE SEQUENCE order_ids;
CREATE SEQUENCE payment_ids;
CREATE SEQUENCE withdrawal_ids;

-- Projection checkpoints: the last stream sequence each projector applied, written in the
-- same transaction as the rows it changed.
CREATE TABLE projection_checkpoints (
    name       TEXT PRIMARY KEY,
    position   BIGINT NOT NULL DEFAULT 0,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Read models --------------------------------------------------------------------------------
-- Each row remembers the position of the last event applied (last_position = stream sequence
-- × 1024 + the event's index in its commit); updates are guarded by it, so a re-delivered event
-- is a no-op even without the checkpoint.

CREATE TABLE orders (
    id            BIGINT PRIMARY KEY,
    order_no      TEXT NOT NULL,
    user_id       BIGINT NOT NULL,
    counselor_id  BIGINT NOT NULL,
    duration      INT NOT NULL,
    price_fen     BIGINT NOT NULL,
    amount_fen    BIGINT NOT NULL,
    status        SMALLINT NOT NULL,
    schedule_time TIMESTAMPTZ,
    notes         TEXT NOT NULL DEFAULT '',
    payment_id    BIGINT,
    session_id    BIGINT,
    pay_time      TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    last_position BIGINT NOT NULL
);
CREATE INDEX orders_user ON orders (user_id, id DESC);
CREATE INDEX orders_counselor ON orders (counselor_id, id DESC);

CREATE TABLE payments (
    id             BIGINT PRIMARY KEY,
    payment_no     TEXT NOT NULL UNIQUE,
    order_id       BIGINT NOT NULL,
    user_id        BIGINT NOT NULL,
    payment_method TEXT NOT NULL,
    trade_type     TEXT NOT NULL,
    amount_fen     BIGINT NOT NULL,
    status         SMALLINT NOT NULL,
    transaction_id TEXT,
    pay_time       TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    last_position BIGINT NOT NULL
);
CREATE INDEX payments_user ON payments (user_id, id DESC);

CREATE TABLE chat_sessions (
    id               BIGINT PRIMARY KEY,
    order_id         BIGINT NOT NULL UNIQUE,
    user_id          BIGINT NOT NULL,
    counselor_id     BIGINT NOT NULL,
    counselor_user_id BIGINT NOT NULL,
    status           SMALLINT NOT NULL,
    start_time       TIMESTAMPTZ,
    end_time         TIMESTAMPTZ,
    duration         BIGINT NOT NULL DEFAULT 0,
    price_fen        BIGINT NOT NULL,
    prepaid_minutes  INT NOT NULL,
    total_amount_fen BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    last_position BIGINT NOT NULL
);
CREATE INDEX chat_sessions_user ON chat_sessions (user_id, id DESC);
CREATE INDEX chat_sessions_counselor ON chat_sessions (counselor_id, id DESC);

-- One row per message in the CHAT stream; id = the message's stream sequence.
CREATE TABLE chat_messages (
    id            BIGINT PRIMARY KEY,
    session_id    BIGINT NOT NULL,
    sender_id     BIGINT NOT NULL,
    sender_type   TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    content       TEXT NOT NULL,
    file_url      TEXT NOT NULL DEFAULT '',
    client_msg_id TEXT NOT NULL,
    is_read       BOOLEAN NOT NULL DEFAULT FALSE,
    read_time     TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX chat_messages_session ON chat_messages (session_id, id);

CREATE TABLE chat_billings (
    session_id        BIGINT PRIMARY KEY,
    order_id          BIGINT NOT NULL,
    user_id           BIGINT NOT NULL,
    counselor_id      BIGINT NOT NULL,
    duration          BIGINT NOT NULL,
    billed_minutes    INT NOT NULL,
    price_fen         BIGINT NOT NULL,
    total_amount_fen  BIGINT NOT NULL,
    platform_fee_fen  BIGINT NOT NULL,
    counselor_fee_fen BIGINT NOT NULL,
    refund_fen        BIGINT NOT NULL,
    status            SMALLINT NOT NULL DEFAULT 1,
    created_at        TIMESTAMPTZ NOT NULL,
    last_position BIGINT NOT NULL
);
CREATE INDEX chat_billings_user ON chat_billings (user_id);
CREATE INDEX chat_billings_counselor ON chat_billings (counselor_id);

CREATE TABLE counselor_accounts (
    counselor_id     BIGINT PRIMARY KEY,
    total_income_fen BIGINT NOT NULL DEFAULT 0,
    balance_fen      BIGINT NOT NULL DEFAULT 0,
    frozen_fen       BIGINT NOT NULL DEFAULT 0,
    withdrawn_fen    BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    last_position BIGINT NOT NULL
);

CREATE TABLE withdrawals (
    id              BIGINT PRIMARY KEY,
    counselor_id    BIGINT NOT NULL,
    amount_fen      BIGINT NOT NULL,
    status          SMALLINT NOT NULL,
    bank_name       TEXT NOT NULL DEFAULT '',
    bank_account    TEXT NOT NULL DEFAULT '',
    account_name    TEXT NOT NULL DEFAULT '',
    rejected_reason TEXT NOT NULL DEFAULT '',
    audited_at      TIMESTAMPTZ,
    transferred_at  TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL,
    last_position BIGINT NOT NULL
);
CREATE INDEX withdrawals_counselor ON withdrawals (counselor_id, id DESC);
CREATE INDEX withdrawals_status ON withdrawals (status, id DESC);

CREATE TABLE user_wallets (
    user_id     BIGINT PRIMARY KEY,
    balance_fen BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL,
    last_position BIGINT NOT NULL
);

CREATE TABLE wallet_transactions (
    stream_seq  BIGINT NOT NULL,
    idx         INT NOT NULL,
    user_id     BIGINT NOT NULL,
    type        TEXT NOT NULL,
    amount_fen  BIGINT NOT NULL,
    balance_fen BIGINT NOT NULL,
    description TEXT NOT NULL,
    order_id    BIGINT,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (stream_seq, idx)
);
CREATE INDEX wallet_transactions_user ON wallet_transactions (user_id, stream_seq DESC);
