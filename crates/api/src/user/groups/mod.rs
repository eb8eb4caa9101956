//! Group conversations over HTTP (seeds 002 and 004): groups and their members ([`manage`]),
//! and their messages, read cursors, search and mentions ([`messages`]).
//!
//! Decisions are the `Group` aggregate's (`ev.group.<id>`, [`domain::Group`]); messages,
//! recalls and read cursors are group records in the chat shard streams
//! ([`eventstore::group_chat`]), appended only after the group accepted them; every read comes
//! from the read models (`groups`, `group_members`, `group_messages`, `group_reads`,
//! `group_mentions`), and every write waits for the read model it changes (read-your-writes).

pub mod manage;
pub mod messages;

use domain::{Group, GroupError};
use eventstore::CommandError;
use utoipa_axum::router::OpenApiRouter;

use crate::user::state::UserState;
use crate::{ApiError, AppState};

/// The user-API routes of group conversations.
pub fn router() -> OpenApiRouter<UserState> {
    manage::router().merge(messages::router())
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

/// A group command's refusal as HTTP: an invalid field names it (400), other rules map by
/// [`web::error::Rejection`].
pub fn refused(e: CommandError<GroupError>) -> ApiError {
    match e {
        CommandError::Rejected(GroupError::Invalid { field, reason }) => {
            ApiError::field(field, reason)
        }
        other => other.into(),
    }
}
