//! CORS as MyChat's clients need it (contract a.1): the admin client calls the admin API
//! cross-origin in development, so every service answers preflights.

use axum::http::{header, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// The CORS layer: the usual headers and methods, from `origins` (e.g.
/// `https://chat.example.com`; empty: any origin, which MyChat's clients need by default). A
/// request from another origin gets no `Access-Control-Allow-Origin`, so the browser refuses the
/// response. An origin that is not a header value is skipped (the settings refuse it at
/// startup).
pub fn layer(origins: &[String]) -> CorsLayer {
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let origins = if list.is_empty() {
        AllowOrigin::from(Any)
    } else {
        AllowOrigin::list(list)
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
