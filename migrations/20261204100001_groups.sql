-- Group conversations: the `groups` projection's read model of the `Group` aggregate
-- (`ev.group.<id>`). One row per group, one per member; `last_position` guards each group's
-- events (all of one group's events are on one subject, in order).
CREATE TABLE groups (
    id            BIGINT PRIMARY KEY,
    name          TEXT        NOT NULL,
    notice        TEXT        NOT NULL DEFAULT '',
    avatar        TEXT        NOT NULL DEFAULT '',
    owner_id      BIGINT      NOT NULL,
    member_count  INTEGER     NOT NULL DEFAULT 0,
    member_cap    INTEGER     NOT NULL,
    all_muted     BOOLEAN     NOT NULL DEFAULT FALSE,
    dissolved_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    last_position BIGINT      NOT NULL
);
CREATE INDEX groups_owner ON groups (owner_id);

CREATE TABLE group_members (
    group_id    BIGINT      NOT NULL,
    user_id     BIGINT      NOT NULL,
    -- owner, admin, member
    role        TEXT        NOT NULL,
    muted_until TIMESTAMPTZ,
    joined_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
-- "my groups": the groups a user belongs to.
CREATE INDEX group_members_user ON group_members (user_id, group_id);

-- New groups' ids (taken in blocks by the API, like the other aggregates).
CREATE SEQUENCE group_ids;
