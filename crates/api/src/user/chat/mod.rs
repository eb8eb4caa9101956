//! Chat: sessions (start, end), their messages, and their history (the session and billing
//! lists).

pub mod history;
pub mod messages;
pub mod sessions;

use utoipa_axum::router::OpenApiRouter;

use crate::user::state::UserState;

/// The routes of this area, with their documentation.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .merge(history::router())
        .merge(messages::router())
        .merge(sessions::router())
}
