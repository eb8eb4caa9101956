-- Every row of the `notifications` projection's table comes from the log: a rebuild or an audit
-- replay reproduces it exactly. What the API writes itself lives in tables no projection owns:
--
-- * `direct_notifications`: notifications of facts that are not events (an application's review:
--   reference data), written in the review's transaction; negative ids from
--   `notifications_id_seq`, so they never collide with the projection's (event position × 8 + n);
-- * `notification_marks`: a user's read / deleted marks on any notification, by id.
--
-- The API lists the union of both tables minus the deleted, with the read marks applied.
CREATE TABLE direct_notifications (
    id          BIGINT PRIMARY KEY DEFAULT nextval('notifications_id_seq'),
    user_id     BIGINT NOT NULL,
    type        TEXT NOT NULL,
    level       TEXT NOT NULL DEFAULT 'info',
    title       TEXT NOT NULL,
    content     TEXT NOT NULL,
    extra_data  TEXT NOT NULL DEFAULT '{}',
    source      TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX direct_notifications_user ON direct_notifications (user_id, id DESC);

CREATE TABLE notification_marks (
    notification_id BIGINT PRIMARY KEY,
    user_id         BIGINT NOT NULL,
    read_time       TIMESTAMPTZ,
    deleted_at      TIMESTAMPTZ
);
CREATE INDEX notification_marks_user ON notification_marks (user_id);

-- Move what the API had written into the projection's table.
INSERT INTO direct_notifications (id, user_id, type, level, title, content, extra_data, source, created_at)
    SELECT id, user_id, type, level, title, content, extra_data, source, created_at
    FROM notifications WHERE id < 0;
INSERT INTO notification_marks (notification_id, user_id, read_time)
    SELECT id, user_id, COALESCE(read_time, created_at) FROM notifications WHERE is_read;
DELETE FROM notifications WHERE id < 0;
UPDATE notifications SET is_read = FALSE, read_time = NULL WHERE is_read;
