//! Group conversations over HTTP (seeds 002 and 004): groups and their members ([`manage`]),
//! and their messages, read cursors, search and mentions ([`messages`]).
//!
//! Decisions are the `Group` aggregate's (`ev.group.<id>`, [`domain::Group`]); messages,
//! recalls and read cursors are group records in the chat shard streams
//! ([`eventstore::group_chat`]), appended only after the group accepted them; every read comes
//! from the read models (`groups`, `group_members`, `group_messages`, `group_reads`,
//! `group_mentions`), and every write waits for the read model it changes (read-your-writes).

pub mod access;
pub mod manage;
pub mod members;
pub mod messages;

use utoipa_axum::router::OpenApiRouter;

use crate::user::state::UserState;

/// The user-API routes of group conversations.
pub fn router() -> OpenApiRouter<UserState> {
    manage::router()
        .merge(members::router())
        .merge(messages::router())
}
