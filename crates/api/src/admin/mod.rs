//! The admin API (:8081), by area: login ([`auth`]), RBAC ([`guard`], every route's rule in
//! [`routes`]), people (the caller's session, administrators, users, counselors, applications,
//! uploads), business, finance and withdrawal review ([`withdrawals`]), system, low-code pages and
//! the online view of the gateway; its OpenAPI document ([`openapi`]).

pub mod api_keys;
pub mod auth;
pub mod business;
pub mod common;
pub mod finance;
pub mod guard;
pub mod job_routes;
pub mod jobs;
pub mod keys;
pub mod listing;
pub mod lowcode;
pub mod online;
pub mod openapi;
pub mod people;
pub mod routes;
pub mod state;
pub mod system;
pub mod table;
pub mod withdrawals;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::Method;
use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use web::envelope::health;
use web::observe;

/// The admin API (:8081) with the default [`AdminOptions`].
pub fn router(state: AppState) -> Router {
    router_with(state, AdminOptions::default())
}

/// What the admin API is configured with beyond [`AppState`].
#[derive(Debug, Clone, Default)]
pub struct AdminOptions {
    /// How reconciliation and replay jobs run.
    pub jobs: jobs::JobSettings,
}

/// The admin API (:8081).
pub fn router_with(state: AppState, options: AdminOptions) -> Router {
    // This process's API keys, fed from the log (see `keys`).
    let keys = keys::KeyCache::start(state.bus.jetstream().clone(), state.db.clone());
    // Reconciliation and replay jobs (see `jobs`).
    let jobs = jobs::Jobs::start(
        state.db.clone(),
        state.nats.clone(),
        *state.chat.layout(),
        options.jobs,
    );
    let router = Router::new()
        .route("/health", get(health))
        // Every admin route behind the RBAC guard.
        .merge(guarded(&state, keys.clone()))
        .layer(TraceLayer::new_for_http())
        .layer(web::cors::layer(&state.settings.cors_origins))
        .with_state(state::AdminState {
            app: state,
            // The admin login is rate-limited like the user login.
            logins: auth::AdminLoginLimiter::new(web::auth::LoginLimits::default()),
            keys,
            jobs,
        });
    // Request id, HTTP metrics, `/metrics`, security headers.
    observe::wrap("admin_api", router)
}

/// Every admin route with its rule (the router is built and dropped).
pub fn rules() -> Vec<table::Rule> {
    routes::register().rules
}

/// Every admin route behind the RBAC guard (API keys checked against `keys`), plus
/// `/api-docs/openapi.json` and `/swagger` (public).
pub fn guarded(state: &AppState, keys: keys::KeyCache) -> Router<state::AdminState> {
    let reg = routes::register();
    let table: Arc<HashMap<(Method, &'static str), table::Rule>> = Arc::new(
        reg.rules
            .iter()
            .map(|r| ((r.method.clone(), r.path), r.clone()))
            .collect(),
    );
    let openapi = Arc::new(openapi::document(&reg));
    // Gateways starting later ask for the persisted mute list (see `admin_bus`).
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(online::serve_mutes(state.clone()));
    }
    reg.router
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), table, keys),
            guard::guard,
        ))
        .route(
            "/api-docs/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(web::swagger::swagger_ui("/api-docs/openapi.json"))
        // `POST /api/admin/upload/file` accepts 10 MB files (axum's default limit is 2 MB).
        .layer(axum::extract::DefaultBodyLimit::max(guard::MAX_BODY))
}
