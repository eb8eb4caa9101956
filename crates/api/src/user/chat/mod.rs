//! Chat: sessions (start, end), their messages, and their history (the session and billing
//! lists).

pub mod history;
pub mod messages;
pub mod sessions;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The routes of this area, with their documentation.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(history::router())
        .merge(messages::router())
        .merge(sessions::router())
}
