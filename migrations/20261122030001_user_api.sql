-- issue 3: the complete user API.

-- Orders: whether the one review exists, and how much was refunded.
ALTER TABLE orders ADD COLUMN has_review BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE orders ADD COLUMN refunded_fen BIGINT NOT NULL DEFAULT 0;

-- Payments: recharges (no order) and refunds.
ALTER TABLE payments ADD COLUMN purpose TEXT NOT NULL DEFAULT 'order';
ALTER TABLE payments ADD COLUMN refunded_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE payments ADD COLUMN notify_time TIMESTAMPTZ;

-- Reviews (read model of OrderReviewed; one per order).
CREATE TABLE reviews (
    id            BIGSERIAL PRIMARY KEY,
    order_id      BIGINT NOT NULL UNIQUE,
    user_id       BIGINT NOT NULL,
    counselor_id  BIGINT NOT NULL,
    rating        SMALLINT NOT NULL,
    comment       TEXT NOT NULL,
    is_anonymous  BOOLEAN NOT NULL,
    is_visible    BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX reviews_counselor ON reviews (counselor_id, id DESC);

-- Notifications (read model of the notifications projector; `source` = the event's position,
-- so a re-applied event adds nothing).
CREATE TABLE notifications (
    id          BIGSERIAL PRIMARY KEY,
    user_id     BIGINT NOT NULL,
    type        TEXT NOT NULL,
    level       TEXT NOT NULL DEFAULT 'info',
    title       TEXT NOT NULL,
    content     TEXT NOT NULL,
    extra_data  TEXT NOT NULL DEFAULT '{}',
    is_read     BOOLEAN NOT NULL DEFAULT FALSE,
    read_time   TIMESTAMPTZ,
    source      TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_user ON notifications (user_id, id DESC);

-- Counselor applications (reference data, contract b.1 #16-#19).
CREATE TABLE counselor_applications (
    id               BIGSERIAL PRIMARY KEY,
    user_id          BIGINT NOT NULL REFERENCES users(id),
    name             TEXT NOT NULL,
    gender           TEXT NOT NULL DEFAULT '',
    phone            TEXT NOT NULL,
    email            TEXT NOT NULL DEFAULT '',
    title            TEXT NOT NULL,
    specialty        TEXT NOT NULL,
    years_exp        INT NOT NULL DEFAULT 0,
    bio              TEXT NOT NULL DEFAULT '',
    certificate_img1 TEXT NOT NULL DEFAULT '',
    certificate_img2 TEXT NOT NULL DEFAULT '',
    certificate_img3 TEXT NOT NULL DEFAULT '',
    status           SMALLINT NOT NULL DEFAULT 0,
    reject_reason    TEXT NOT NULL DEFAULT '',
    reviewed_by      BIGINT,
    reviewed_at      TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX counselor_applications_user ON counselor_applications (user_id, id DESC);
-- At most one pending or approved application per user.
CREATE UNIQUE INDEX counselor_applications_open ON counselor_applications (user_id) WHERE status IN (0, 1);

-- Uploaded files' metadata (contract b.1 #43-#45).
CREATE TABLE files (
    id            BIGSERIAL PRIMARY KEY,
    file_name     TEXT NOT NULL,
    original_name TEXT NOT NULL,
    file_path     TEXT NOT NULL,
    file_url      TEXT NOT NULL,
    file_size     BIGINT NOT NULL,
    file_type     TEXT NOT NULL,
    mime_type     TEXT NOT NULL,
    uploader_id   BIGINT NOT NULL,
    relation_id   BIGINT,
    relation_type TEXT NOT NULL DEFAULT '',
    status        SMALLINT NOT NULL DEFAULT 1,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX files_uploader ON files (uploader_id, id DESC);

-- Refresh tokens: stored as SHA-256 hashes; rotated on use (the old one is revoked and points
-- at its successor), revoked on logout and password change. `family` groups a login's chain:
-- re-use of a revoked token revokes the whole family (theft detection).
CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL,
    family      TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    replaced_by TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);

-- Access tokens revoked before expiry (logout, password change): by jti, until they expire.
CREATE TABLE revoked_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at TIMESTAMPTZ NOT NULL
);
-- Every token of a user issued before this instant is revoked (password change).
ALTER TABLE users ADD COLUMN tokens_valid_after TIMESTAMPTZ;

-- Idempotency-Key: the first response to (user, key), with a hash of the request.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status       SMALLINT,
    body         BYTEA,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
