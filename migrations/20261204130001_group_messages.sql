-- Group conversations' messages, read cursors and mentions: the `group_messages` projections'
-- read models, one projection per chat shard stream (subjects `group.<shard>.*`), sharing the
-- tables like the sessions' `chat_messages`.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE group_messages (
    -- The message's id across the chat streams (stream sequence × 64 + shard).
    id            BIGINT PRIMARY KEY,
    group_id      BIGINT      NOT NULL,
    -- Its stream sequence (the resume position and the cursor of paging and read marks).
    seq           BIGINT      NOT NULL,
    sender_id     BIGINT      NOT NULL,
    -- text, image, file
    content_type  TEXT        NOT NULL,
    content       TEXT        NOT NULL,
    file_url      TEXT        NOT NULL DEFAULT '',
    client_msg_id TEXT        NOT NULL,
    mentions      BIGINT[]    NOT NULL DEFAULT '{}',
    recalled_at   TIMESTAMPTZ,
    redacted_at   TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX group_messages_position ON group_messages (group_id, seq);
-- Search: substring matching (LIKE) served by trigrams. Trigrams of Chinese text need a UTF-8
-- character classification (LC_CTYPE), which mychat's clusters are created with.
CREATE INDEX group_messages_content_trgm ON group_messages USING gin (content gin_trgm_ops);

-- A member's read cursor: every message up to `seq` is read.
CREATE TABLE group_reads (
    group_id BIGINT      NOT NULL,
    user_id  BIGINT      NOT NULL,
    seq      BIGINT      NOT NULL,
    read_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

-- `@` mentions: one row per mentioned member and message (the mentioned's notifications).
CREATE TABLE group_mentions (
    user_id    BIGINT      NOT NULL,
    message_id BIGINT      NOT NULL,
    group_id   BIGINT      NOT NULL,
    seq        BIGINT      NOT NULL,
    sender_id  BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (user_id, message_id)
);
CREATE INDEX group_mentions_group ON group_mentions (group_id, seq);
