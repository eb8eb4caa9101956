//! Admin API: people — the administrator's own session ([`session`]), administrators
//! ([`administrators`]), users ([`users`]), counselors ([`counselors`]) and their applications
//! ([`applications`]), and uploads ([`uploads`]) (contract c.1–c.4). Reference data: plain
//! Postgres rows, changed in one statement each.
//!
//! Rows are rendered by Postgres (`to_jsonb(t)`) and typed on the way out
//! ([`crate::admin::common::typed_row`]): each row struct lists its fields in the order Postgres
//! writes them, so the responses are the rows exactly as before.

pub mod administrators;
pub mod applications;
pub mod counselors;
pub mod session;
pub mod uploads;
pub mod users;

use axum::Json;
use web::envelope::{message, Message};

/// Liveness probe of the old admin backend
///
/// `{code: 200, msg}`: a probe the old admin backend had (contract c.1 #17).
#[utoipa::path(get, path = "/api/test", tag = "auth",
    responses((status = 200, description = "the admin API runs", body = Message)))]
pub async fn test_route() -> Json<Message> {
    message("admin API is running")
}
