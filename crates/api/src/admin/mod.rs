//! The admin API (:8081), by area: login ([`auth`]), RBAC ([`guard`], every route's rule in
//! [`routes`]), people (the caller's session, administrators, users, counselors, applications,
//! uploads), business, finance and withdrawal review ([`withdrawals`]), system, low-code pages and
//! the online view of the gateway; its OpenAPI document ([`openapi`]).

pub mod auth;
pub mod business;
pub mod common;
pub mod finance;
pub mod guard;
pub mod listing;
pub mod lowcode;
pub mod online;
pub mod openapi;
pub mod people;
pub mod routes;
pub mod system;
pub mod withdrawals;

use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use web::envelope::health;
use web::observe;

/// The admin API (:8081).
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/health", get(health))
        // Issue 4: every admin route behind the RBAC guard (admin::router's routes included).
        .merge(guard::router(&state))
        // Issue 8: the admin login is rate-limited like the user login.
        .layer(axum::Extension(auth::AdminLoginLimiter::new(
            web::auth::LoginLimits::default(),
        )))
        .layer(TraceLayer::new_for_http())
        .layer(web::cors::layer(&state.settings.cors_origins))
        .with_state(state);
    // Issue 8: request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("admin_api", router)
}
