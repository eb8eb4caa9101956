//! `groups` and `group_members`: the read model of the `Group` aggregate (`ev.group.>`), what
//! the group lists, member lists and the gateway's membership checks read.
//!
//! Every event of a group is on its own subject, in order, so the group row's `last_position`
//! guards them all: an event at or below it was applied already (a replayed batch changes
//! nothing). Group traffic is small next to orders and chat, so each event is applied on its own
//! (the runtime's default batch loops over [`Projection::apply`]).

use anyhow::Context as _;
use async_trait::async_trait;
use domain::{GroupEvent, GroupRole};
use sqlx::PgConnection;

use crate::runtime::{LogMessage, Projection};

/// The `groups` projection.
pub struct Groups;

#[async_trait]
impl Projection for Groups {
    fn name(&self) -> &'static str {
        "groups"
    }
    fn tables(&self) -> Vec<&'static str> {
        vec!["groups", "group_members"]
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.group.>".into()]
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        for stored in message.event_refs()? {
            let event: GroupEvent = crate::runtime::decode(&stored).with_context(|| {
                format!(
                    "unknown event {} v{} on {}",
                    stored.event_type, stored.event_version, message.subject
                )
            })?;
            let group = stored
                .aggregate_id_i64()
                .with_context(|| format!("group id {} is not a number", stored.aggregate_id))?;
            apply_event(tx, group, stored.position(), event).await?;
        }
        Ok(())
    }
}

/// Moves the group's guard to `pos`; false when the event was applied already.
async fn advance(
    tx: &mut PgConnection,
    group: i64,
    pos: i64,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<bool> {
    let moved = sqlx::query(
        "UPDATE groups SET last_position = $2, updated_at = $3 \
         WHERE id = $1 AND last_position < $2",
    )
    .bind(group)
    .bind(pos)
    .bind(at)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    Ok(moved == 1)
}

async fn recount(tx: &mut PgConnection, group: i64) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE groups SET member_count = \
         (SELECT count(*) FROM group_members WHERE group_id = $1) WHERE id = $1",
    )
    .bind(group)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn set_role(
    tx: &mut PgConnection,
    group: i64,
    user: i64,
    role: GroupRole,
) -> anyhow::Result<()> {
    sqlx::query("UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2")
        .bind(group)
        .bind(user)
        .bind(role.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn add_members(
    tx: &mut PgConnection,
    group: i64,
    users: &[i64],
    role: GroupRole,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO group_members (group_id, user_id, role, joined_at) \
         SELECT $1, u, $3, $4 FROM unnest($2::bigint[]) AS t(u) \
         ON CONFLICT (group_id, user_id) DO NOTHING",
    )
    .bind(group)
    .bind(users)
    .bind(role.as_str())
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn apply_event(
    tx: &mut PgConnection,
    group: i64,
    pos: i64,
    event: GroupEvent,
) -> anyhow::Result<()> {
    if let GroupEvent::GroupCreated {
        name,
        notice,
        avatar,
        owner_id,
        member_ids,
        member_cap,
        at,
        ..
    } = event
    {
        let inserted = sqlx::query(
            "INSERT INTO groups (id, name, notice, avatar, owner_id, member_count, member_cap, \
             created_at, updated_at, last_position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) ON CONFLICT (id) DO NOTHING",
        )
        .bind(group)
        .bind(&name)
        .bind(&notice)
        .bind(&avatar)
        .bind(owner_id)
        .bind(member_ids.len() as i32 + 1)
        .bind(member_cap as i32)
        .bind(at)
        .bind(pos)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            add_members(tx, group, &[owner_id], GroupRole::Owner, at).await?;
            add_members(tx, group, &member_ids, GroupRole::Member, at).await?;
        }
        return Ok(());
    }
    let at = match &event {
        GroupEvent::GroupCreated { at, .. }
        | GroupEvent::GroupUpdated { at, .. }
        | GroupEvent::MembersAdded { at, .. }
        | GroupEvent::MemberRemoved { at, .. }
        | GroupEvent::MemberLeft { at, .. }
        | GroupEvent::MemberRoleChanged { at, .. }
        | GroupEvent::OwnershipTransferred { at, .. }
        | GroupEvent::MemberMuted { at, .. }
        | GroupEvent::GroupMuted { at, .. }
        | GroupEvent::GroupDissolved { at, .. } => *at,
    };
    if !advance(tx, group, pos, at).await? {
        return Ok(());
    }
    match event {
        GroupEvent::GroupCreated { .. } => {}
        GroupEvent::GroupUpdated {
            name,
            notice,
            avatar,
            ..
        } => {
            sqlx::query(
                "UPDATE groups SET name = COALESCE($2, name), notice = COALESCE($3, notice), \
                 avatar = COALESCE($4, avatar) WHERE id = $1",
            )
            .bind(group)
            .bind(name)
            .bind(notice)
            .bind(avatar)
            .execute(&mut *tx)
            .await?;
        }
        GroupEvent::MembersAdded { user_ids, .. } => {
            add_members(tx, group, &user_ids, GroupRole::Member, at).await?;
            recount(tx, group).await?;
        }
        GroupEvent::MemberRemoved { user_id, .. } | GroupEvent::MemberLeft { user_id, .. } => {
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(group)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            recount(tx, group).await?;
        }
        GroupEvent::MemberRoleChanged { user_id, role, .. } => {
            set_role(tx, group, user_id, role).await?;
        }
        GroupEvent::OwnershipTransferred {
            from_user_id,
            to_user_id,
            ..
        } => {
            set_role(tx, group, from_user_id, GroupRole::Admin).await?;
            set_role(tx, group, to_user_id, GroupRole::Owner).await?;
            sqlx::query(
                "UPDATE group_members SET muted_until = NULL WHERE group_id = $1 AND user_id = $2",
            )
            .bind(group)
            .bind(to_user_id)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE groups SET owner_id = $2 WHERE id = $1")
                .bind(group)
                .bind(to_user_id)
                .execute(&mut *tx)
                .await?;
        }
        GroupEvent::MemberMuted { user_id, until, .. } => {
            sqlx::query(
                "UPDATE group_members SET muted_until = $3 WHERE group_id = $1 AND user_id = $2",
            )
            .bind(group)
            .bind(user_id)
            .bind(until)
            .execute(&mut *tx)
            .await?;
        }
        GroupEvent::GroupMuted { muted, .. } => {
            sqlx::query("UPDATE groups SET all_muted = $2 WHERE id = $1")
                .bind(group)
                .bind(muted)
                .execute(&mut *tx)
                .await?;
        }
        GroupEvent::GroupDissolved { at, .. } => {
            sqlx::query("UPDATE groups SET dissolved_at = $2 WHERE id = $1")
                .bind(group)
                .bind(at)
                .execute(&mut *tx)
                .await?;
        }
    }
    Ok(())
}
