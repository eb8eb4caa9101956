//! Swagger UI for both APIs, from `utoipa-swagger-ui` with its `vendored` feature: the UI's
//! assets come from the crates.io package `utoipa-swagger-ui-vendored` and are embedded at build
//! time, so nothing is fetched from a CDN, neither when building nor when serving.
//!
//! [`swagger_ui`] serves the page at `/swagger` (redirecting to `/swagger/`) and its assets below
//! it; the OpenAPI document itself is served by the API that owns it, at the URL given here.
//! [`operations_mut`] walks a document's operations for the passes that complete both documents.

use axum::Router;
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Routes for Swagger UI showing the OpenAPI document served at `spec_url`.
pub fn swagger_ui<S: Clone + Send + Sync + 'static>(spec_url: &'static str) -> Router<S> {
    SwaggerUi::new("/swagger")
        .config(Config::from(spec_url))
        .into()
}

/// The operations of a path item that the APIs serve (`GET`, `POST`, `PUT`, `PATCH`, `DELETE`),
/// each with its method, for the passes that add what shared layers answer to every operation
/// of a document.
pub fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<
    Item = (
        utoipa::openapi::HttpMethod,
        &mut utoipa::openapi::path::Operation,
    ),
> {
    use utoipa::openapi::HttpMethod;
    [
        (HttpMethod::Get, &mut item.get),
        (HttpMethod::Post, &mut item.post),
        (HttpMethod::Put, &mut item.put),
        (HttpMethod::Patch, &mut item.patch),
        (HttpMethod::Delete, &mut item.delete),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
}
