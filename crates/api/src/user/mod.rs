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

use axum::Router;
use serde::Serialize;
use tower_http::trace::TraceLayer;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{idempotency, AppState};
use web::error::ApiError;
use web::observe;

/// `GET /health`'s answer (no envelope, as MyChat's).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    responses((status = 200, description = "The API is up", body = Health))
)]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Every route of the user API with its documentation: the typed modules register through
/// utoipa-axum; the modules not yet typed are plain axum routers, documented by
/// [`openapi::legacy`] until they are. The sandbox cashier and callback only with `sandbox`.
pub fn routes(sandbox: bool) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .merge(users::router())
        .merge(account::router())
        .merge(orders::router())
        .merge(payments::router(sandbox))
        .merge(chat::router())
        .merge(earnings::router())
        .merge(reviews::router())
        .merge(applications::router())
        .merge(notifications::router())
        .merge(files::router())
}

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
    let (routes, generated) = routes(config.sandbox_payments).split_for_parts();
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
    // Request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("user_api", router)
}
