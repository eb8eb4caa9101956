//! The admin API's OpenAPI 3.1 document, built with utoipa from the route table
//! ([`crate::admin::table::Reg`]): every admin route appears, with its method, path parameters,
//! tag, summary, the permission it requires and its security requirement. A typed operation
//! ([`crate::admin::table::Reg::typed`]) is its handler's `#[utoipa::path]` (parameters, request
//! body and `data` schemas) plus what its rule implies: the security requirement, the permission
//! text, the 401/403 refusals, 429 where an API key may call it (its rate limit), 400 where it
//! reads parameters or a body, 422 where it reads input (NUL text, a rule across fields), 409 on
//! a change (refused by the current state), 413 where it reads a body and, where the path names
//! a row, 404.
//! Served at `/api-docs/openapi.json` on :8081, with Swagger UI at `/swagger`.

use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ComponentsBuilder, InfoBuilder, OpenApi, OpenApiBuilder, RefOr};
use utoipa::{PartialSchema, ToSchema};
use web::error::Problem;

use crate::admin::table::{Perm, Reg, Rule};

fn method(m: &axum::http::Method) -> HttpMethod {
    match *m {
        axum::http::Method::POST => HttpMethod::Post,
        axum::http::Method::PUT => HttpMethod::Put,
        axum::http::Method::DELETE => HttpMethod::Delete,
        axum::http::Method::PATCH => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

/// What rule `perm` requires, in words, and its security requirement.
fn requirement(perm: Perm) -> (Option<SecurityRequirement>, String) {
    match perm {
        Perm::Public => (None, "Public: no token.".to_string()),
        Perm::Authenticated => (
            Some(SecurityRequirement::new("bearer", Vec::<String>::new())),
            "Any enabled administrator (admin token).".to_string(),
        ),
        Perm::Code(c) => (
            Some(SecurityRequirement::new("bearer", Vec::<String>::new())),
            format!(
                "Requires permission `{c}` (super_admin holds every permission), or an API key \
                 with scope `{c}` (`X-API-Key` or `Authorization: Bearer`)."
            ),
        ),
    }
}

/// Adds to a typed operation what its rule implies (security, the permission text, the 401/403
/// refusals, 404 where the path names a row); what the handler documents itself is kept.
fn decorate(op: &mut Operation, rule: &Rule) {
    let (security, perm_text) = requirement(rule.perm);
    op.description = Some(match op.description.take() {
        Some(d) if !d.is_empty() => format!("{perm_text}\n\n{d}"),
        _ => perm_text,
    });
    if let Some(s) = security {
        // Alternatives: an administrator's token, or (for a permission code) an API key.
        let key = matches!(rule.perm, Perm::Code(_))
            .then(|| SecurityRequirement::new("apiKey", Vec::<String>::new()));
        op.security = Some(std::iter::once(s).chain(key).collect());
    }
    let reads_input =
        op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    let has_body = op.request_body.is_some();
    let responses = &mut op.responses.responses;
    // Every refusal is served as `application/problem+json` (see `web::error`).
    for (status, response) in responses.iter_mut() {
        if let (false, RefOr::T(r)) = (status.starts_with('2'), response) {
            if let Some(c) = r.content.shift_remove("application/json") {
                r.content.insert("application/problem+json".to_string(), c);
            }
        }
    }
    let mut add = |status: &str, description: &str| {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(Problem::response(description)));
    };
    if rule.perm != Perm::Public {
        add("401", "missing, invalid or revoked token");
        add(
            "403",
            "user token, disabled administrator or missing permission (nothing changes)",
        );
    }
    if rule.path.contains('{') {
        add("404", "no such row, or a path id that does not parse");
    }
    if reads_input {
        add(
            "400",
            "a parameter or the body is not of the documented shape (the problem names it)",
        );
    }
    if has_body {
        add(
            "413",
            "the request body is larger than the admin API reads (11 MB)",
        );
    }
    if reads_input {
        add(
            "422",
            "well-formed, but refused by a rule: in the current state (a row in another \
             status), across fields, or text PostgreSQL cannot store (NUL)",
        );
    }
    if rule.method != axum::http::Method::GET {
        add(
            "409",
            "a conflict: a value taken by another row, or a concurrent change (retry)",
        );
    }
    if matches!(rule.perm, Perm::Code(_)) {
        add(
            "429",
            "an API key over its rate limit (`Retry-After` says when to retry)",
        );
    }
}

/// The slot of `method`'s operation in a path item.
fn slot<'a>(item: &'a mut PathItem, m: &axum::http::Method) -> &'a mut Option<Operation> {
    match method(m) {
        HttpMethod::Post => &mut item.post,
        HttpMethod::Put => &mut item.put,
        HttpMethod::Delete => &mut item.delete,
        HttpMethod::Patch => &mut item.patch,
        _ => &mut item.get,
    }
}

/// The document for the route table `reg`: its operations with what their rules imply.
pub fn document(reg: &Reg) -> OpenApi {
    let mut paths = reg.typed.paths.clone();
    for r in &reg.rules {
        let item = paths.paths.entry(r.path.to_string()).or_default();
        match slot(item, &r.method) {
            Some(op) => decorate(op, r),
            // `Reg::typed` records a rule only for an operation it documents.
            None => unreachable!("{} {} has a rule but no operation", r.method, r.path),
        }
    }
    let mut schemas: Vec<(String, RefOr<utoipa::openapi::schema::Schema>)> =
        vec![(Problem::name().into_owned(), Problem::schema())];
    Problem::schemas(&mut schemas);
    if let Some(c) = &reg.typed.components {
        schemas.extend(c.schemas.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("mychat admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "MyChat's admin back office (:8081), with RBAC enforced on every route.",
                )),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new()
                .schemas_from_iter(schemas)
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(
                        HttpBuilder::new()
                            .scheme(HttpAuthScheme::Bearer)
                            .bearer_format("JWT")
                            .build(),
                    ),
                )
                .security_scheme(
                    "apiKey",
                    SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                        "X-API-Key",
                        "A scoped API key (`mck_…`); `Authorization: Bearer <key>` works too.",
                    ))),
                )
                .build(),
        ))
        .build();
    web::paging::document_empty_query_values(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::document;
    use crate::admin::routes::register;

    /// `v`, or the component schema it references.
    fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/components/schemas/");
                resolve(doc, &doc["components"]["schemas"][name])
            }
            None => v,
        }
    }

    /// Whether `schema` says what a value is: not `{}`, not an object without properties.
    fn described(doc: &Value, schema: &Value) -> bool {
        let s = resolve(doc, schema);
        for k in ["oneOf", "anyOf", "allOf"] {
            if let Some(members) = s.get(k).and_then(Value::as_array) {
                return members
                    .iter()
                    .any(|m| resolve(doc, m)["type"] != "null" && described(doc, m));
            }
        }
        let types: Vec<&str> = match &s["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if types.contains(&"array") {
            return described(doc, &s["items"]);
        }
        if types.contains(&"object") || s.get("properties").is_some() {
            let props = s["properties"].as_object().is_some_and(|p| !p.is_empty());
            let map =
                s["additionalProperties"].is_object() && described(doc, &s["additionalProperties"]);
            return props || map;
        }
        types.iter().any(|t| *t != "null")
    }

    /// The `data` member of an envelope schema (its own or one of its `allOf` parts').
    fn data_schema<'a>(doc: &'a Value, envelope: &'a Value) -> &'a Value {
        let s = resolve(doc, envelope);
        let own = &s["properties"]["data"];
        if !own.is_null() {
            return own;
        }
        s["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|part| data_schema(doc, part))
            .find(|d| !d.is_null())
            .unwrap_or(&Value::Null)
    }

    /// What is untyped about each operation of `doc` whose `(method, path)` passes `only`.
    fn untyped(doc: &Value, only: impl Fn(&str, &str) -> bool) -> Vec<String> {
        let mut problems = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                if !only(method, path) {
                    continue;
                }
                let what = format!("{} {path}", method.to_uppercase());
                // The success answer: 200, or 202 for a job that is queued.
                let responses = &op["responses"];
                let ok = if responses["200"].is_null() {
                    &responses["202"]["content"]
                } else {
                    &responses["200"]["content"]
                };
                match ok.get("application/json").map(|c| &c["schema"]) {
                    // A `{code, msg}` acknowledgement has no `data`.
                    Some(s) if s["$ref"] == "#/components/schemas/Message" => {}
                    Some(s) => {
                        let data = data_schema(doc, s);
                        if data.is_null() || !described(doc, data) {
                            problems.push(format!("{what}: `data` is untyped"));
                        }
                    }
                    // Served bytes (a file) are described by their media type.
                    None if ok.as_object().is_some_and(|c| !c.is_empty()) => {}
                    None => problems.push(format!("{what}: no 200 body")),
                }
                if let Some(content) = op["requestBody"]["content"].as_object() {
                    for (media, c) in content {
                        if !described(doc, &c["schema"]) {
                            problems.push(format!("{what}: untyped {media} request body"));
                        }
                    }
                }
            }
        }
        problems
    }

    #[test]
    fn typed_operations_describe_their_data_and_bodies() {
        let reg = register();
        let typed: Vec<(String, String)> = reg
            .typed
            .paths
            .paths
            .iter()
            .flat_map(|(p, item)| {
                crate::admin::table::operations(item)
                    .map(|(m, _)| (m.as_str().to_ascii_lowercase(), p.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(!typed.is_empty());
        let doc = serde_json::to_value(document(&reg)).unwrap();
        let problems = untyped(&doc, |m, p| typed.iter().any(|(tm, tp)| tm == m && tp == p));
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn every_operation_describes_its_data_and_body() {
        let doc = serde_json::to_value(document(&register())).unwrap();
        let problems = untyped(&doc, |_, _| true);
        assert!(
            problems.is_empty(),
            "{} untyped: {problems:#?}",
            problems.len()
        );
    }

    #[test]
    fn typed_operations_carry_their_rule() {
        let doc = serde_json::to_value(document(&register())).unwrap();
        let probe = &doc["paths"]["/api/test"]["get"];
        assert_eq!(probe["tags"][0], "auth");
        assert!(probe["description"].as_str().unwrap().starts_with("Public"));
        assert!(probe["security"].is_null());
    }
}
