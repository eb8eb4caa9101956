//! Chat: sessions (start, messages, end) and their history (the session and billing lists).

pub mod history;
pub mod sessions;

use axum::Router;

use crate::app::AppState;

/// The routes of this area.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(history::router())
        .merge(sessions::router())
}
