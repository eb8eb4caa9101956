//! The user API's OpenAPI 3.1 document, generated: every typed route is registered through
//! utoipa-axum ([`crate::user::routes::all`]), so its `#[utoipa::path]` documentation is the document
//! and a route cannot be served without it. This module adds what is not a handler's: the
//! document's info, the `bearer` security scheme, the shared refusal body ([`web::Problem`]), the
//! routes served by other means (this document, Swagger UI, uploaded files).
//!
//! Served at [`SPEC_URL`], with Swagger UI at `/swagger`.

use crate::user::state::UserState;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use web::error::{FieldError, Problem};

/// Where the document is served.
pub const SPEC_URL: &str = "/api-docs/openapi.json";

/// The security scheme of every route that needs a user's token: `Authorization: Bearer <JWT>`.
pub const BEARER: &str = "bearer";

/// The name under which earlier versions of this document described the refusal body; kept,
/// as the same schema as [`Problem`], for clients generated from them.
pub const API_ERROR: &str = "ApiError";

struct Frame;

impl Modify for Frame {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.schemas.insert(
            API_ERROR.to_string(),
            <Problem as utoipa::PartialSchema>::schema(),
        );
    }
}

/// The document's frame: info, the bearer scheme, the refusal body, and the routes that are not
/// handlers of this crate.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "mychat user API",
        description = "MyChat's user API (contract b.1 and seed 001), served on :8080. Money is \
                       yuan (JSON numbers, two decimals) with the exact fen beside it; every \
                       success is MyChat's envelope {code: 200, msg, data}, every refusal \
                       {code, msg} with the RFC 9457 problem members (application/problem+json)."
    ),
    paths(openapi_json, swagger_page, uploaded_file),
    components(schemas(Problem, FieldError)),
    modifiers(&Frame),
    tags(
        (name = "system", description = "Liveness, this document, Swagger UI"),
        (name = "auth", description = "Registration, login, tokens"),
        (name = "user", description = "The caller's account and wallet"),
        (name = "counselors", description = "Counselors as clients browse them"),
        (name = "orders", description = "Orders: placement and lifecycle"),
        (name = "payments", description = "Payments: checkout and records"),
        (name = "providers", description = "Payment providers' notifications and the sandbox cashier (each in the provider's own format)"),
        (name = "groups", description = "Group conversations: groups, members, roles, mutes, messages, read cursors, search, mentions"),
    )
)]
pub struct UserApiDoc;

/// This document (OpenAPI 3.1 JSON).
#[utoipa::path(
    get,
    path = "/api-docs/openapi.json",
    tag = "system",
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
#[allow(dead_code)]
fn openapi_json() {}

/// Swagger UI over this document (HTML; `/swagger` redirects to `/swagger/`).
#[utoipa::path(
    get,
    path = "/swagger",
    tag = "system",
    responses(
        (status = 200, description = "Swagger UI", content_type = "text/html"),
        (status = 303, description = "Redirect to `/swagger/`")
    )
)]
#[allow(dead_code)]
fn swagger_page() {}

/// An uploaded file's bytes (served from the upload directory; avatars and certificates
/// publicly, other files to their uploader).
#[utoipa::path(
    get,
    path = "/uploads/{path}",
    tag = "files",
    params(("path" = String, Path, description = "The file's path under the upload directory")),
    responses(
        (status = 200, description = "The file's bytes", content_type = "application/octet-stream"),
        (status = 404, description = "No such file", body = Problem, content_type = "application/problem+json")
    )
)]
#[allow(dead_code)]
fn uploaded_file() {}

/// The complete document from the generated part (the routes registered through utoipa-axum):
/// the frame of [`UserApiDoc`] merged in, and on every state-changing operation the `Idempotency-Key` header that the user API's
/// idempotency layer honours; the shared refusals; optional query parameters that may be sent empty.
pub fn complete(generated: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let mut doc = UserApiDoc::openapi();
    doc.merge(generated);
    document_idempotency(&mut doc);
    document_refusals(&mut doc);
    web::paging::document_empty_query_values(&mut doc);
    doc
}

/// Adds to every operation the refusals the user API's shared layers answer, where its handler
/// did not document them itself: 401 where it needs a token (the token gate), 400 where it reads
/// parameters or a body (the extractors and validation), 413 where it reads a body (axum's 2 MB
/// limit; uploads have their own), 422 where it reads input (text PostgreSQL cannot store, a rule
/// across fields), 404 where the path names a row. Provider notifications answer
/// in their provider's format and keep their own list.
fn document_refusals(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        if crate::app::idempotency::is_provider_notification(path) {
            continue;
        }
        let names_a_row = path.contains('{');
        for (_, op) in web::swagger::operations_mut(item) {
            let needs_token = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let has_body = op.request_body.is_some();
            let reads_input = has_body || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let responses = &mut op.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| Problem::response(description).into());
            };
            if needs_token {
                add("401", "Missing, invalid, expired or revoked token");
            }
            if reads_input {
                add(
                    "400",
                    "A parameter or the body is not of the documented shape (the problem names it)",
                );
            }
            if has_body {
                add(
                    "413",
                    "The request body is larger than the API reads (2 MB)",
                );
            }
            if reads_input {
                add(
                    "422",
                    "Well-formed, but refused by a rule: in the current state, across fields, \
                     or text PostgreSQL cannot store (NUL)",
                );
            }
            if names_a_row {
                add("404", "No such row, or a path id that does not parse");
            }
        }
    }
}

/// Adds the optional `Idempotency-Key` header, and the refusals it may bring (409 while the
/// first request with the key runs, 422 when the key was used for another request), to every
/// `POST`, `PUT`, `PATCH` and `DELETE` operation (see [`crate::app::idempotency`]).
fn document_idempotency(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::{ObjectBuilder, Required, Type};
    let header = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes a retry safe: the same key with the same request replays the first \
             response (`Idempotent-Replayed: true`) for 24 hours.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(200))
                .pattern(Some("^[\\x21-\\x7E]+$")),
        ))
        .build();
    for (path, item) in doc.paths.paths.iter_mut() {
        if crate::app::idempotency::is_provider_notification(path) {
            continue;
        }
        let changing = web::swagger::operations_mut(item)
            .filter(|(method, _)| *method != utoipa::openapi::HttpMethod::Get);
        for (_, op) in changing {
            op.parameters
                .get_or_insert_with(Vec::new)
                .push(header.clone());
            let responses = &mut op.responses.responses;
            responses.entry("409".into()).or_insert_with(|| {
                Problem::response("The first request with this Idempotency-Key is still running, or a concurrent change; retry").into()
            });
            responses.entry("422".into()).or_insert_with(|| {
                Problem::response("This Idempotency-Key was used for another request").into()
            });
        }
    }
}

/// The `pattern` the served document states for property `property` of component schema
/// `schema` (`null` when none): tests compare it with the rule that checks the field.
#[cfg(test)]
pub(crate) fn documented_pattern(schema: &str, property: &str) -> serde_json::Value {
    let doc = serde_json::to_value(document(true)).expect("the document serializes");
    doc["components"]["schemas"][schema]["properties"][property]["pattern"].clone()
}

/// The document of the user API as [`crate::user::router`] serves it (`sandbox`: whether the
/// sandbox provider's routes are mounted).
pub fn document(sandbox: bool) -> utoipa::openapi::OpenApi {
    complete(crate::user::routes::all(sandbox).into_openapi())
}

/// The route serving `doc` at [`SPEC_URL`].
pub fn router(doc: utoipa::openapi::OpenApi) -> Router<UserState> {
    let doc = Arc::new(doc);
    Router::new().route(
        SPEC_URL,
        get(move || {
            let doc = doc.clone();
            async move { axum::Json((*doc).clone()) }
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_operation_has_typed_bodies() {
        let doc = serde_json::to_value(document(true)).unwrap();
        let generated = crate::user::routes::all(true).into_openapi();
        for (path, item) in generated.paths.paths {
            for (method, op) in serde_json::to_value(item)
                .unwrap()
                .as_object()
                .unwrap()
                .iter()
                .filter(|(m, _)| ["get", "post", "put", "delete", "patch"].contains(&m.as_str()))
            {
                let ok = &op["responses"]["200"];
                assert!(ok.is_object(), "{method} {path}: no 200 response");
                assert!(
                    ok["content"].is_object(),
                    "{method} {path}: the 200 response has no content"
                );
                assert!(
                    doc["paths"][&path][method].is_object(),
                    "{method} {path} is not in the complete document"
                );
            }
        }
    }

    #[test]
    fn operation_ids_are_unique_and_every_data_is_typed() {
        let doc = serde_json::to_value(document(true)).unwrap();
        let schemas = &doc["components"]["schemas"];
        let mut ids = std::collections::HashSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if let Some(id) = op["operationId"].as_str() {
                    assert!(ids.insert(id.to_string()), "operationId {id} twice");
                }
                let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
                let Some(name) = schema["$ref"].as_str() else {
                    continue;
                };
                let name = name.trim_start_matches("#/components/schemas/");
                let data = &schemas[name]["properties"]["data"];
                if schemas[name]["properties"]["code"].is_object() && !data.is_null() {
                    assert!(
                        data["$ref"].is_string()
                            || data["type"].is_string()
                            || data["oneOf"].is_array(),
                        "{method} {path}: untyped data {data}"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn swagger_ui_is_served_from_embedded_assets_and_points_at_the_document() {
        use tower::ServiceExt;
        let get = |uri: &str| {
            web::swagger::swagger_ui::<()>(SPEC_URL).oneshot(
                axum::http::Request::get(uri)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
        };
        let page = get("/swagger/").await.unwrap();
        assert_eq!(page.status(), 200);
        let init = get("/swagger/swagger-initializer.js").await.unwrap();
        assert_eq!(init.status(), 200);
        let body = axum::body::to_bytes(init.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&body).contains(SPEC_URL));
        let bundle = get("/swagger/swagger-ui-bundle.js").await.unwrap();
        assert_eq!(bundle.status(), 200);
    }

    #[test]
    fn every_operation_documents_the_shared_refusals() {
        let doc = serde_json::to_value(document(true)).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            if crate::app::idempotency::is_provider_notification(path) {
                continue;
            }
            for (method, op) in item.as_object().unwrap() {
                let responses = &op["responses"];
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                if secured {
                    assert!(responses["401"].is_object(), "{method} {path}: no 401");
                    checked += 1;
                }
                if op["requestBody"].is_object() {
                    for status in ["400", "413"] {
                        assert!(
                            responses[status].is_object(),
                            "{method} {path}: no {status}"
                        );
                    }
                }
                if path.contains('{') {
                    assert!(responses["404"].is_object(), "{method} {path}: no 404");
                }
            }
        }
        assert!(checked > 50, "{checked} secured operations");
    }

    #[test]
    fn the_document_has_its_frame() {
        let doc = serde_json::to_value(document(false)).unwrap();
        assert_eq!(doc["info"]["title"], "mychat user API");
        assert!(doc["components"]["securitySchemes"][BEARER].is_object());
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        assert_eq!(
            doc["components"]["schemas"][API_ERROR],
            doc["components"]["schemas"]["Problem"]
        );
        for path in [
            "/health",
            "/api-docs/openapi.json",
            "/swagger",
            "/uploads/{path}",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
        }
    }
}
