//! The user API (:8080): accounts, counselors, orders, payments, chat, earnings, reviews,
//! applications, notifications and files (contract b.1, seed 001).

pub mod account;
pub mod applications;
pub mod chat;
pub mod config;
pub mod earnings;
pub mod files;
pub mod groups;
pub mod notifications;
pub mod openapi;
pub mod orders;
pub mod payments;
pub mod reviews;
pub mod routes;
pub mod state;
pub mod users;

use axum::Router;
use tower_http::trace::TraceLayer;

use crate::app::{idempotency, AppState};
use web::error::ApiError;
use web::observe;

/// The user API (:8080) with its own settings: every route of contract b.1 and seed
/// 001, `Idempotency-Key` on state-changing requests, `/uploads/...`, the OpenAPI document at
/// `/api-docs/openapi.json` and Swagger UI at `/swagger`.
pub fn router(state: AppState, config: config::UserApiConfig) -> Router {
    // A missing file is an `ApiError` 404 (not an empty body).
    let uploads = tower_http::services::ServeDir::new(&config.upload_dir).not_found_service(
        axum::handler::HandlerWithoutStateExt::into_service(|| async {
            ApiError::not_found("file")
        }),
    );
    let (routes, generated) = routes::all(config.sandbox_payments).split_for_parts();
    let api = config::UserApi::with_sandbox(
        config.clone(),
        secrecy::ExposeSecret::expose_secret(&state.settings.sandbox_secret),
    )
    .unwrap_or_else(|e| {
        tracing::error!(error = format!("{e:#}"), "sandbox providers unavailable");
        config::UserApi::new(config)
    });
    let cors = web::cors::layer(&state.settings.cors_origins);
    // The idempotency layer sits behind the routing (a route layer): an unknown path is a 404
    // and an undeclared method a 405 before a key is looked at.
    let declared = std::sync::Arc::new(idempotency::Declared::from_document(&generated));
    let routes = routes.route_layer(axum::middleware::from_fn_with_state(
        (state.clone(), declared),
        idempotency::layer,
    ));
    let router = Router::new()
        .merge(routes)
        .merge(openapi::router(openapi::complete(generated)))
        .merge(web::swagger::swagger_ui(openapi::SPEC_URL))
        .nest_service(
            "/uploads",
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn(files::uploads_guard))
                .service(uploads),
        )
        .layer(TraceLayer::new_for_http())
        .layer(cors)
        .with_state(state::UserState { app: state, api });
    // Request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("user_api", router)
}
