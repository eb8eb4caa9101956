//! The admin API's OpenAPI 3.1 document (issue 4), built with utoipa from the route table
//! ([`crate::admin::guard::rules`]): every admin route appears, with its method, path parameters,
//! tag, summary, the permission it requires and its security requirement. Served at
//! `/api-docs/openapi.json` on :8081, with Swagger UI at `/swagger`.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathsBuilder, Required, ResponseBuilder, Type,
};

use crate::admin::guard::{Perm, Rule};

fn method(m: &axum::http::Method) -> HttpMethod {
    match *m {
        axum::http::Method::POST => HttpMethod::Post,
        axum::http::Method::PUT => HttpMethod::Put,
        axum::http::Method::DELETE => HttpMethod::Delete,
        axum::http::Method::PATCH => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

fn envelope() -> ContentBuilder {
    ContentBuilder::new().schema(Some(
        ObjectBuilder::new()
            .property("code", ObjectBuilder::new().schema_type(Type::Integer))
            .property("msg", ObjectBuilder::new().schema_type(Type::String))
            // An object, a bare array (trees, rankings) or null, depending on the route.
            .property(
                "data",
                ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::AnyValue),
            )
            .required("code")
            .required("msg"),
    ))
}

/// The document for `rules`.
pub fn document(rules: &[Rule]) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for r in rules {
        let (security, perm_text) = match r.perm {
            Perm::Public => (None, "Public: no token.".to_string()),
            Perm::Authenticated => (
                Some(SecurityRequirement::new("bearer", Vec::<String>::new())),
                "Any enabled administrator (admin token).".to_string(),
            ),
            Perm::Code(c) => (
                Some(SecurityRequirement::new("bearer", Vec::<String>::new())),
                format!("Requires permission `{c}` (super_admin holds every permission)."),
            ),
        };
        let op_id = format!(
            "{}_{}",
            r.method.as_str().to_ascii_lowercase(),
            r.path.trim_start_matches('/').replace(['/', '{', '}'], "_")
        );
        let mut op = OperationBuilder::new()
            .tag(r.tag)
            .summary(Some(r.summary))
            .description(Some(format!(
                "{perm_text} Answers MyChat's `{{code, msg, data}}` envelope; errors are `{{code, msg}}` with RFC 9457 members (401 no/invalid token, 403 user token or missing permission — nothing changes)."
            )))
            .operation_id(Some(op_id))
            .response("200", ResponseBuilder::new().description("success").content("application/json", envelope().build()))
            .response("400", ResponseBuilder::new().description("invalid input, naming the field"));
        if r.perm != Perm::Public {
            op = op
                .response(
                    "401",
                    ResponseBuilder::new().description("missing or invalid token"),
                )
                .response(
                    "403",
                    ResponseBuilder::new()
                        .description("user token, disabled administrator or missing permission"),
                );
        }
        if let Some(s) = security {
            op = op.security(s);
        }
        for seg in r.path.split('/') {
            if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let ty = if name == "name" {
                    Type::String
                } else {
                    Type::Integer
                };
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(Required::True)
                        .schema(Some(ObjectBuilder::new().schema_type(ty))),
                );
            }
        }
        if matches!(r.method, axum::http::Method::POST | axum::http::Method::PUT) {
            let content_type = if r.path.contains("/upload") {
                "multipart/form-data"
            } else {
                "application/json"
            };
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content(
                        content_type,
                        ContentBuilder::new()
                            .schema(Some(ObjectBuilder::new()))
                            .build(),
                    )
                    .build(),
            ));
        }
        paths = paths.path(r.path, PathItem::new(method(&r.method), op.build()));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("mychat admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "MyChat's admin back office (:8081), with RBAC enforced on every route.",
                )),
        )
        .paths(paths.build())
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .bearer_format("JWT")
                            .build(),
                    ),
                )
                .build(),
        ))
        .build()
}
