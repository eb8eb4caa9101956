-- Scoped API keys: the `api_keys` projection's read model of the `ApiKey` aggregate
-- (`ev.apikey.<id>`). A key is found by the public prefix of one of its secrets; only hashes are
-- stored. `last_used_at` is kept by the API (coalesced), outside the projection's columns.
CREATE TABLE api_keys (
    id                   BIGINT PRIMARY KEY,
    name                 TEXT        NOT NULL,
    scopes               TEXT[]      NOT NULL,
    prefix               TEXT        NOT NULL UNIQUE,
    secret_hash          TEXT        NOT NULL,
    previous_prefix      TEXT UNIQUE,
    previous_hash        TEXT,
    previous_valid_until TIMESTAMPTZ,
    created_by           BIGINT      NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ,
    rate_per_minute      INTEGER,
    rotated_at           TIMESTAMPTZ,
    revoked_at           TIMESTAMPTZ,
    last_position        BIGINT      NOT NULL
);

-- When each key was last used (written by the API at most once a minute per key; a table of its
-- own so that a rebuild of the projection keeps it).
CREATE TABLE api_key_usage (
    key_id       BIGINT PRIMARY KEY,
    last_used_at TIMESTAMPTZ NOT NULL
);

CREATE SEQUENCE api_key_ids;
