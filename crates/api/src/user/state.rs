//! The user API's application state: what every service shares ([`AppState`]: the database, the
//! command bus, the chat log, the caches, the settings) and what only the user API has
//! ([`UserApi`]: its settings, the payment providers and the sandbox, the login limits). One
//! type per service; a handler takes the part it needs with `State<AppState>` or
//! `State<Arc<UserApi>>` (axum's `FromRef`).

use std::sync::Arc;

use axum::extract::FromRef;
use sqlx::PgPool;
use web::auth::{JwtKeys, TokenGate};

use crate::app::AppState;
use crate::user::config::UserApi;

/// The user API's state (see the module docs).
#[derive(Clone, FromRef)]
pub struct UserState {
    pub app: AppState,
    pub api: Arc<UserApi>,
}

impl web::auth::UserTokens for UserState {
    fn jwt(&self) -> &JwtKeys {
        self.app.jwt()
    }
    fn token_gate(&self) -> &TokenGate {
        self.app.token_gate()
    }
    fn db(&self) -> &PgPool {
        web::auth::UserTokens::db(&self.app)
    }
}
