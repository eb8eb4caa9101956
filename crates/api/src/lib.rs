//! mychat's HTTP APIs: the user API (:8080) and the admin API (:8081), on axum.
//!
//! Reads come from the Postgres read models; writes become commands on the event-sourced
//! aggregates ([`eventstore::CommandBus`]), answered once the commit is durable in JetStream and,
//! where the client reads it back next, once the read model shows it ([`AppState::settle`]).
//! Every body is MyChat's `{code, msg, data}` envelope (contract a.3); errors are [`ApiError`].

pub mod admin;
pub mod app;
pub mod user;

pub use app::{seed, ApiSettings, AppState, Services};
pub use user::config::UserApiConfig;
pub use web::auth::{AuthUser, JwtKeys, TokenGate};
pub use web::envelope::{health, ok, ok_msg};
pub use web::error::{ApiError, ApiResult};
pub use web::extract::{Json as ApiJson, Path as ApiPath, Query as ApiQuery};
pub use web::gateway_bus as admin_bus;
pub use web::paging::{empty_as_none, paging, PageQuery, MAX_PAGE};
pub use web::{auth, error, money, observe};

/// The admin API (:8081); see [`admin::router`].
pub use admin::router as admin_router;
/// The user API (:8080); see [`user::router`].
pub use user::router as user_router_with;

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_match_literally() {
        use crate::admin::common::contains_pattern;
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern("plain"), "%plain%");
    }
}
