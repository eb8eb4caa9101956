//! The user API (:8080): accounts, counselors, orders, payments, chat, earnings, reviews,
//! applications, notifications and files (contract b.1, seed 001).

pub mod account;
pub mod applications;
pub mod chat;
pub mod config;
pub mod earnings;
pub mod files;
pub mod notifications;
pub mod openapi;
pub mod orders;
pub mod payments;
pub mod reviews;
pub mod users;

use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::app::{idempotency, AppState};
use web::envelope::health;
use web::error::ApiError;
use web::observe;

/// The user API (:8080) with explicit issue-3 settings: every route of contract b.1 and seed
/// 001, `Idempotency-Key` on state-changing requests, `/uploads/...`, the OpenAPI document at
/// `/api-docs/openapi.json` and Swagger UI at `/swagger`.
pub fn router(state: AppState, config: config::UserApiConfig) -> Router {
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
        .merge(axum::Router::from(chat::router()))
        .merge(axum::Router::from(earnings::router()))
        .merge(account::router())
        .merge(axum::Router::from(reviews::router()))
        .merge(axum::Router::from(applications::router()))
        .merge(axum::Router::from(notifications::router()))
        .merge(axum::Router::from(files::router()))
        .merge(openapi::router())
        .merge(crate::swagger::swagger_ui(openapi::SPEC_URL))
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
            config::UserApi::with_sandbox(
                config.clone(),
                secrecy::ExposeSecret::expose_secret(&state.settings.sandbox_secret),
            )
            .unwrap_or_else(|e| {
                tracing::error!(error = format!("{e:#}"), "sandbox providers unavailable");
                config::UserApi::new(config)
            }),
        ))
        .layer(TraceLayer::new_for_http())
        .layer(web::cors::layer(&state.settings.cors_origins))
        .with_state(state);
    // Issue 8: request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("user_api", router)
}
