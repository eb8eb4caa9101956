//! mychat's HTTP APIs: the user API (:8080) and the admin API (:8081), on axum.
//!
//! Reads come from the Postgres read models; writes become commands on the event-sourced
//! aggregates ([`eventstore::CommandBus`]), answered once the commit is durable in JetStream and,
//! where the client reads it back next, once the read model shows it ([`AppState::settle`]).
//! Every body is MyChat's `{code, msg, data}` envelope (contract a.3); errors are [`ApiError`].

pub mod accounts;
pub mod admin;
pub mod admin_business;
pub mod admin_common;
pub mod admin_finance;
pub mod admin_lowcode;
pub mod admin_online;
pub mod admin_openapi;
pub mod admin_people;
pub mod admin_rbac;
pub mod admin_routes;
pub mod admin_system;
pub mod applications;
pub mod chat;
pub mod chat_lists;
pub mod counselor_terms;
pub mod files;
pub mod finance;
pub mod idempotency;
pub mod ids;
pub mod ledger_reads;
pub mod notifications;
pub mod openapi;
pub mod order_actions;
pub mod orders;
pub mod payment_queries;
pub mod payments;
pub mod providers;
pub mod reviews;
pub mod seed;
pub mod swagger;
pub mod user_config;
pub mod users;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use eventstore::CommandBus;
use projections::CheckpointWatch;
use sqlx::PgPool;
use tower_http::trace::TraceLayer;

pub use web::gateway_bus as admin_bus;
pub use web::paging::{empty_as_none, paging, PageQuery, MAX_OFFSET};
pub use web::{auth, error, money, observe};
pub use web::auth::{AuthUser, JwtKeys, TokenGate};
pub use web::envelope::{health, ok, ok_msg};
pub use web::error::{ApiError, ApiResult};
pub use web::extract::{Json as ApiJson, Path as ApiPath, Query as ApiQuery};
pub use user_config::UserApiConfig;

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// The user API's public base URL (`http://127.0.0.1:8080`): the sandbox cashier's `pay_url`
    /// and the sandbox provider's notify URL are built from it.
    pub public_url: String,
    /// The sandbox provider's HMAC-SHA256 key (signs and verifies its callbacks; secret).
    pub sandbox_secret: secrecy::SecretString,
    /// How long a command handler waits for the read model the client reads next.
    pub settle_timeout: Duration,
    /// The origins CORS allows (`https://chat.example.com`); empty: any origin ([`cors`]).
    pub cors_origins: Vec<String>,
    /// The business time zone: the calendar every admin figure groups and filters days,
    /// weeks, months and years by ("today", date ranges, series, reports).
    pub business_zone: chrono_tz::Tz,
}

/// Everything a handler needs: [`Services`] behind one `Arc`. Cloning it (axum does, for every
/// middleware and extractor of every request) is one reference count, not a clone of each
/// client (an `async_nats::Client` clone alone costs several atomic operations).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// The state of a service made of `services`.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What the handlers share (see [`AppState`]).
pub struct Services {
    pub db: PgPool,
    pub bus: CommandBus,
    pub nats: async_nats::Client,
    pub jwt: Arc<JwtKeys>,
    /// What authenticating a user token needs from the database, remembered per process.
    pub tokens: auth::TokenGate,
    /// The chat log (the layout of the chat streams and their committers).
    pub chat: eventstore::ChatLog,
    /// Counselors' terms for new orders, remembered per process.
    pub counselors: counselor_terms::CounselorTerms,
    /// New aggregates' ids, taken from their sequences in blocks.
    pub ids: Arc<ids::IdBlocks>,
    pub watch: CheckpointWatch,
    pub settings: Arc<ApiSettings>,
}

impl Services {
    /// Waits (up to `settings.settle_timeout`) until projection `name` has applied stream
    /// sequence `seq`, so that the client's next read shows its write. `None` (a no-op command)
    /// returns at once. Lag is logged, not an error: the write is already durable.
    #[tracing::instrument(level = "debug", name = "read_your_writes", skip(self))]
    pub async fn settle(&self, name: &str, seq: Option<u64>) {
        if let Some(seq) = seq {
            if !self
                .watch
                .wait_for(name, seq, self.settings.settle_timeout)
                .await
            {
                tracing::warn!(projection = name, seq, "read model lags behind the write");
            }
        }
    }
}

/// CORS as MyChat's clients need it ([`web::cors::layer`]).
pub fn cors(origins: &[String]) -> tower_http::cors::CorsLayer {
    web::cors::layer(origins)
}

impl web::auth::UserTokens for AppState {
    fn jwt(&self) -> &JwtKeys {
        &self.jwt
    }
    fn token_gate(&self) -> &TokenGate {
        &self.tokens
    }
    fn db(&self) -> &PgPool {
        &self.db
    }
}

/// The user API (:8080) with explicit issue-3 settings: every route of contract b.1 and seed
/// 001, `Idempotency-Key` on state-changing requests, `/uploads/...`, the OpenAPI document at
/// `/api-docs/openapi.json` and Swagger UI at `/swagger`.
pub fn user_router_with(state: AppState, config: user_config::UserApiConfig) -> Router {
    // Issue 8: a missing file is an `ApiError` 404 (not an empty body).
    let uploads = tower_http::services::ServeDir::new(&config.upload_dir).not_found_service(
        axum::handler::HandlerWithoutStateExt::into_service(|| async {
            ApiError::not_found("file")
        }),
    );
    let router = Router::new()
        .route("/health", get(health))
        .merge(users::router())
        .merge(orders::router())
        .merge(payments::router(config.sandbox_payments))
        .merge(chat::router())
        .merge(finance::router())
        .merge(accounts::router())
        .merge(order_actions::router())
        .merge(payment_queries::router())
        .merge(reviews::router())
        .merge(applications::router())
        .merge(notifications::router())
        .merge(chat_lists::router())
        .merge(files::router())
        .merge(openapi::router())
        .merge(swagger::swagger_ui(openapi::SPEC_URL))
        .nest_service(
            "/uploads",
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(files::uploads_guard))
                .service(uploads),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            idempotency::layer,
        ))
        .layer(axum::Extension(
            user_config::UserApi::with_sandbox(
                config.clone(),
                secrecy::ExposeSecret::expose_secret(&state.settings.sandbox_secret),
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = format!("{e:#}"), "sandbox providers unavailable");
                user_config::UserApi::new(config)
            }),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(cors(&state.settings.cors_origins))
        .with_state(state);
    // Issue 8: request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("user_api", router)
}

/// The admin API (:8081).
pub fn admin_router(state: AppState) -> Router {
    let router = Router::new()
        .route("/health", get(health))
        // Issue 4: every admin route behind the RBAC guard (admin::router's routes included).
        .merge(admin_rbac::router(&state))
        // Issue 8: the admin login is rate-limited like the user login.
        .layer(axum::Extension(admin::AdminLoginLimiter::new(
            web::auth::LoginLimits::default(),
        )))
        .layer(TraceLayer::new_for_http())
        .layer(cors(&state.settings.cors_origins))
        .with_state(state);
    // Issue 8: request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("admin_api", router)
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_patterns_match_literally() {
        use crate::admin_common::contains_pattern;
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern("plain"), "%plain%");
    }
}
