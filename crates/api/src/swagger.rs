//! Swagger UI, served from vendored assets (npm `swagger-ui-dist` 5.35.0, Apache-2.0, in
//! `crates/api/swagger-ui/`): no CDN is reachable, so nothing is fetched at build or run time.
//!
//! `swagger_ui("/api-docs/openapi.json")` gives a router serving `GET /swagger` (the page) and
//! `GET /swagger/{asset}`; the OpenAPI document itself is served by the API that owns it.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const BUNDLE: &[u8] = include_bytes!("../swagger-ui/swagger-ui-bundle.js");
const PRESET: &[u8] = include_bytes!("../swagger-ui/swagger-ui-standalone-preset.js");
const CSS: &[u8] = include_bytes!("../swagger-ui/swagger-ui.css");
const FAVICON: &[u8] = include_bytes!("../swagger-ui/favicon-32x32.png");

fn page(spec_url: &str) -> String {
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mychat API</title>
<link rel="stylesheet" href="/swagger/swagger-ui.css"><link rel="icon" href="/swagger/favicon-32x32.png"></head>
<body><div id="swagger-ui"></div>
<script src="/swagger/swagger-ui-bundle.js"></script>
<script src="/swagger/swagger-ui-standalone-preset.js"></script>
<script>window.ui = SwaggerUIBundle({{ url: "{spec_url}", dom_id: "#swagger-ui",
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout" }});</script>
</body></html>"##
    )
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, mime) = match name.as_str() {
        "swagger-ui-bundle.js" => (BUNDLE, "application/javascript"),
        "swagger-ui-standalone-preset.js" => (PRESET, "application/javascript"),
        "swagger-ui.css" => (CSS, "text/css"),
        "favicon-32x32.png" => (FAVICON, "image/png"),
        _ => return (StatusCode::NOT_FOUND, "not found").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

/// Routes for Swagger UI showing the OpenAPI document at `spec_url`.
pub fn swagger_ui<S: Clone + Send + Sync + 'static>(spec_url: &'static str) -> Router<S> {
    Router::new()
        .route("/swagger", get(move || async move { Html(page(spec_url)) }))
        .route(
            "/swagger/",
            get(move || async move { Html(page(spec_url)) }),
        )
        .route("/swagger/{asset}", get(asset))
}
