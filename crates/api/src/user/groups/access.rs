//! What every group route shares: the group as the log has it, membership checks (against the
//! log or the member read model), group commands run with read-your-writes, and how a group's
//! refusal reads over HTTP.

use axum::http::HeaderMap;
use domain::{Group, GroupCommand};
use eventstore::Actor;
use serde::Serialize;
use utoipa::ToSchema;
use web::command::request_meta;
use web::envelope::{reply, Reply};

use crate::{ApiError, AppState, AuthUser};

/// A group changed (the change is visible to the next read).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Changed {
    /// The group's id.
    pub group_id: i64,
}

/// Refuses ids that are not users (400 naming `field`).
///
/// # Errors
/// 422 for an unknown id; 5xx on a database error.
pub async fn known_users(state: &AppState, field: &str, ids: &[i64]) -> Result<(), ApiError> {
    if ids.is_empty() {
        return Ok(());
    }
    let known: Vec<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(&state.db)
        .await?;
    if let Some(unknown) = ids.iter().find(|id| !known.contains(id)) {
        return Err(ApiError::unprocessable(
            field,
            format!("user {unknown} does not exist"),
        ));
    }
    Ok(())
}

/// Runs a command on group `id` as `user` and waits until the `groups` read model shows it.
///
/// # Errors
/// The group's refusal (an invalid field is a 400 naming it), or the store's.
pub async fn run(
    state: &AppState,
    headers: &HeaderMap,
    user: &AuthUser,
    id: i64,
    command: GroupCommand,
) -> Reply<Changed> {
    let meta = request_meta(headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<Group>(&id.to_string(), command, &meta)
        .await?;
    state.settle("groups", committed.stream_sequence).await;
    Ok(reply(Changed { group_id: id }))
}

/// 404 for an unknown group, 403 when `user_id` is not in its member read model.
pub async fn member_of_read_model(state: &AppState, id: i64, user_id: i64) -> Result<(), ApiError> {
    let row: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT m.role FROM groups g LEFT JOIN group_members m \
         ON m.group_id = g.id AND m.user_id = $2 WHERE g.id = $1",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(&state.db)
    .await?;
    match row {
        None => Err(ApiError::not_found("group")),
        Some((None,)) => Err(ApiError::forbidden("not a member of this group")),
        Some((Some(_),)) => Ok(()),
    }
}

/// The group `id` as the log has it (the authoritative state, not a read model).
///
/// # Errors
/// 404 for an unknown group; 5xx when the log cannot be read.
pub async fn load_group(state: &AppState, id: i64) -> Result<Group, ApiError> {
    let (group, version) = state.bus.load::<Group>(&id.to_string()).await?;
    if version == 0 || !group.created {
        return Err(ApiError::not_found("group"));
    }
    Ok(group)
}

/// The group `id`, for one of its members.
///
/// # Errors
/// 404 unknown; 403 when `user_id` is not a member.
pub async fn member_group(state: &AppState, id: i64, user_id: i64) -> Result<Group, ApiError> {
    let group = load_group(state, id).await?;
    if !group.members.contains_key(&user_id) {
        return Err(ApiError::forbidden("not a member of this group"));
    }
    Ok(group)
}
