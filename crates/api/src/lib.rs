//! mychat's HTTP APIs: the user API (:8080) and the admin API (:8081), on axum.
//!
//! Reads come from the Postgres read models; writes become commands on the event-sourced
//! aggregates ([`eventstore::CommandBus`]), answered once the commit is durable in JetStream and,
//! where the client reads it back next, once the read model shows it ([`AppState::settle`]).
//! Every body is MyChat's `{code, msg, data}` envelope (contract a.3); errors are [`ApiError`].

pub mod accounts;
pub mod admin;
pub mod admin_bus;
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
pub mod auth;
pub mod chat;
pub mod chat_lists;
pub mod counselor_terms;
pub mod error;
pub mod files;
pub mod finance;
pub mod idempotency;
pub mod ids;
pub mod ledger_reads;
pub mod money;
pub mod notifications;
pub mod observe;
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

use axum::http::{header, Method};
use axum::routing::get;
use axum::{Json, Router};
use eventstore::CommandBus;
use projections::CheckpointWatch;
use serde::Serialize;
use sqlx::PgPool;
use tower_http::cors::{Any, CorsLayer};
use tower_http::trace::TraceLayer;

pub use auth::{AuthAdmin, AuthUser, JwtKeys, TokenGate};
pub use error::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult};
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

/// MyChat's success envelope: `{code: 200, msg: "success", data}`.
pub fn ok<T: Serialize>(data: T) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "code": 200, "msg": "success", "data": data }))
}

/// MyChat's success envelope without data: `{code: 200, msg}`.
pub fn ok_msg(msg: &str) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "code": 200, "msg": msg }))
}

/// `GET /health`: `{status: "ok"}` (no envelope, as MyChat's).
pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// CORS as MyChat's clients need it (contract a.1): the usual headers and methods, from
/// `origins` (e.g. `https://chat.example.com`; empty: any origin, which MyChat's clients need by
/// default). A request from another origin gets no `Access-Control-Allow-Origin`, so the
/// browser refuses the response. An origin that is not a header value is skipped (the settings
/// refuse it at startup).
pub fn cors(origins: &[String]) -> CorsLayer {
    let list: Vec<axum::http::HeaderValue> = origins
        .iter()
        .filter_map(|o| axum::http::HeaderValue::from_str(o).ok())
        .collect();
    let origins = if list.is_empty() {
        tower_http::cors::AllowOrigin::from(Any)
    } else {
        tower_http::cors::AllowOrigin::list(list)
    };
    CorsLayer::new()
        .allow_origin(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::ACCEPT,
            header::ORIGIN,
            header::CACHE_CONTROL,
            header::HeaderName::from_static("x-requested-with"),
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
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
            user_config::LoginLimits::default(),
        )))
        .layer(TraceLayer::new_for_http())
        .layer(cors(&state.settings.cors_origins))
        .with_state(state);
    // Issue 8: request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("admin_api", router)
}

/// The largest row offset a page may start at (10 million rows).
pub const MAX_OFFSET: i64 = 10_000_000;

/// Page and page size from MyChat's query parameters: `page` ≥ 1 (default 1), `page_size` in
/// 1..=100 (default `default_size`).
///
/// # Errors
/// 400 naming `page` or `page_size` when out of range (`page` too, when the page would start
/// beyond [`MAX_OFFSET`]).
pub fn paging(
    page: Option<i64>,
    page_size: Option<i64>,
    default_size: i64,
) -> Result<(i64, i64), ApiError> {
    let page = page.unwrap_or(1);
    let size = page_size.unwrap_or(default_size);
    if page < 1 {
        return Err(ApiError::field("page", "must be at least 1"));
    }
    if !(1..=100).contains(&size) {
        return Err(ApiError::field("page_size", "must be between 1 and 100"));
    }
    // Issue 8 (found by schemathesis): a huge page overflowed `(page - 1) * size` (a panic in
    // debug builds, a negative OFFSET and a 500 in release).
    let offset = (page - 1)
        .checked_mul(size)
        .filter(|o| *o <= MAX_OFFSET)
        .ok_or_else(|| ApiError::field("page", "too large"))?;
    Ok((size, offset))
}

/// MyChat's paged list query: `page` (1-based), `page_size` and an optional `status` filter;
/// each may be sent as `""`, meaning "default" / "no filter" (contract a.3).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct PageQuery {
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page_size: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub status: Option<i16>,
}

/// Deserialises an optional number that MyChat's clients may send as `""` (meaning "no filter").
pub fn empty_as_none<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod issue8_tests {
    use super::*;

    #[test]
    fn a_huge_page_is_a_400_not_an_overflow() {
        // Found by schemathesis: `page=9223372036854775806` overflowed the offset.
        assert_eq!(
            paging(Some(i64::MAX), Some(100), 20).unwrap_err().status,
            400
        );
        assert_eq!(
            paging(Some(i64::MAX - 1), None, 20).unwrap_err().status,
            400
        );
        assert_eq!(
            paging(Some(100_002), Some(100), 20).unwrap_err().status,
            400
        );
        assert_eq!(paging(Some(3), Some(10), 20).unwrap(), (10, 20));
    }

    #[test]
    fn nul_escapes_are_found_and_escaped_backslashes_are_not() {
        use crate::error::has_nul_escape;
        assert!(has_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(has_nul_escape(br#"{"a":"\\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\\u0000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\u00001"}"#.split_at(9).0));
        assert!(!has_nul_escape(br#"{"a":"\u0001"}"#));
        assert!(!has_nul_escape(b"\\"));
    }

    #[test]
    fn like_patterns_match_literally() {
        use crate::admin_common::contains_pattern;
        assert_eq!(contains_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
        assert_eq!(contains_pattern("plain"), "%plain%");
    }
}
