//! The user API's OpenAPI document (placeholder replaced below).
use axum::routing::get;
use axum::{Json, Router};

use crate::AppState;

/// Where the document is served.
pub const SPEC_URL: &str = "/api-docs/openapi.json";

/// The route of the document.
pub fn router() -> Router<AppState> {
    Router::new().route(SPEC_URL, get(|| async { Json(serde_json::json!({})) }))
}
