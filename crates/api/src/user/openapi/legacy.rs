//! The documentation of the user API's routes whose modules do not yet register through
//! utoipa-axum (chat, billing, reviews, applications, notifications, files), as a table: method,
//! path, tag, summary, whether it needs a bearer token, its path/query parameters, its request
//! fields and the fields of its response `data` (type codes below). [`add_to`] adds each row to
//! the generated document unless the route is already documented there; once a module registers
//! through utoipa-axum its rows go (a test says which).

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    ContentBuilder, ObjectBuilder, OpenApi, Ref, Required, ResponseBuilder, Schema, Type,
};

/// How a request carries its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// `application/json`.
    Json,
    /// `multipart/form-data` (uploads: the bytes in field `file`).
    Multipart,
}

/// One documented route. Field specs are `name:type[:req]:description`, type one of
/// `i` integer, `n` number, `s` string, `b` boolean, `o` object, `a` array, `f` binary file.
#[derive(Debug, Clone, Copy)]
pub struct RouteDoc {
    pub method: &'static str,
    /// OpenAPI path (`{id}` parameters).
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub auth: bool,
    pub query: &'static [&'static str],
    pub body: Body,
    pub fields: &'static [&'static str],
    pub data: &'static [&'static str],
}

const PAGE: &[&str] = &[
    "page:i:page number, from 1 (default 1)",
    "page_size:i:1..=100",
];

macro_rules! route {
    ($m:literal $p:literal, $tag:literal, $sum:literal, auth=$auth:literal, query=$q:expr, body=$b:ident, fields=$f:expr, data=$d:expr) => {
        RouteDoc {
            method: $m,
            path: $p,
            tag: $tag,
            summary: $sum,
            auth: $auth,
            query: $q,
            body: Body::$b,
            fields: $f,
            data: $d,
        }
    };
}

/// The routes of the modules that do not yet register through utoipa-axum, documented from
/// this table until they do.
pub const ROUTES: &[RouteDoc] = &[
    route!("POST" "/api/upload/avatar", "files", "Upload an avatar (JPEG/PNG by content, ≤ 2 MB); sets the user's avatar", auth=true, query=&[], body=Multipart,
        fields=&["file:f:req:the image"], data=&["url:s", "id:i"]),
    route!("GET" "/api/counselor/{id}/reviews", "reviews", "A counselor's visible reviews, newest first", auth=false, query=PAGE, body=None, fields=&[],
        data=&["reviews:a", "total:i"]),
    route!("POST" "/api/counselor/review", "reviews", "Review a completed order (once)", auth=true, query=&[], body=Json,
        fields=&["order_id:i:req:", "counselor_id:i:the order's counselor", "rating:i:req:1–5", "comment:s:req:non-empty", "is_anonymous:b:"],
        data=&["order_id:i", "rating:i"]),
    route!("POST" "/api/counselor/application", "applications", "Apply to become a counselor", auth=true, query=&[], body=Json,
        fields=&["name:s:req:", "gender:s:男 or 女", "phone:s:req:mobile number", "email:s:", "title:s:req:", "years_exp:i:0–70", "bio:s:", "specialty:s:req:comma-separated", "certificate_img1:s:at least one certificate", "certificate_img2:s:", "certificate_img3:s:"],
        data=&["id:i"]),
    route!("GET" "/api/counselor/my-application", "applications", "The caller's latest application or null", auth=true, query=&[], body=None, fields=&[],
        data=&["id:i", "status:i", "reject_reason:s"]),
    route!("GET" "/api/counselor/applications", "applications", "Applications (users.is_admin only)", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "status:i:0, 1, 2"], body=None, fields=&[], data=&["list:a", "total:i", "page:i", "page_size:i"]),
    route!("PUT" "/api/counselor/application/{id}/review", "applications", "Approve (creates the counselor) or reject (users.is_admin only)", auth=true, query=&[], body=Json,
        fields=&["status:i:req:1 approve, 2 reject", "reject_reason:s:required when rejecting"], data=&["id:i", "status:i", "counselor_id:i"]),
    route!("POST" "/api/counselor/upload-certificate", "files", "Upload a certificate image (JPEG/PNG by content, ≤ 5 MB)", auth=true, query=&[], body=Multipart,
        fields=&["file:f:req:the image"], data=&["url:s", "id:i"]),
    route!("POST" "/api/chat/start/{order_id}", "chat", "Start the session of a paid order (either participant)", auth=true, query=&[], body=None, fields=&[], data=&["session_id:i"]),
    route!("POST" "/api/chat/session/{order_id}/start", "chat", "Seed 001 alias of /api/chat/start/{order_id}", auth=true, query=&[], body=None, fields=&[], data=&["session_id:i"]),
    route!("GET" "/api/chat/order/{order_id}/session", "chat", "The session of an order", auth=true, query=&[], body=None, fields=&[], data=&["session_id:i", "status:i"]),
    route!("POST" "/api/chat/session/{session_id}/message", "chat", "Send a message over HTTP (socket fallback)", auth=true, query=&[], body=Json,
        fields=&["content:s:req:", "sender_type:s:user, counselor", "content_type:s:text, image, file", "file_url:s:", "client_msg_id:s:dedup id"],
        data=&["id:i", "seq:i", "session_id:i", "sender_id:i", "sender_type:s", "content:s", "created_at:s"]),
    route!("GET" "/api/chat/messages/{session_id}", "chat", "Messages, oldest first, with sender{username, avatar}", auth=true, query=PAGE, body=None, fields=&[],
        data=&["messages:a", "total:i", "session:o"]),
    route!("GET" "/api/chat/session/{session_id}/messages", "chat", "Seed 001 alias of /api/chat/messages/{session_id}", auth=true, query=PAGE, body=None, fields=&[],
        data=&["messages:a", "total:i", "session:o"]),
    route!("POST" "/api/chat/end/{session_id}", "chat", "End and bill the session (either participant)", auth=true, query=&[], body=None, fields=&[], data=&["session_id:i", "duration:i", "billing:o"]),
    route!("POST" "/api/chat/session/{session_id}/end", "chat", "Seed 001 alias of /api/chat/end/{session_id}", auth=true, query=&[], body=None, fields=&[], data=&["session_id:i", "duration:i", "billing:o"]),
    route!("GET" "/api/chat/sessions", "chat", "The caller's sessions (as user or counselor)", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "status:i:0–3"], body=None, fields=&[], data=&["sessions:a", "total:i"]),
    route!("GET" "/api/chat/billings", "billing", "The caller's bills as a user", auth=true, query=PAGE, body=None, fields=&[], data=&["billings:a", "total:i"]),
    route!("GET" "/api/chat/counselor/billings", "billing", "The calling counselor's bills", auth=true, query=PAGE, body=None, fields=&[], data=&["billings:a", "total:i"]),
    route!("GET" "/api/chat/counselor/account", "billing", "The calling counselor's account", auth=true, query=&[], body=None, fields=&[],
        data=&["counselor_id:i", "total_income:n", "balance:n", "frozen_amount:n", "withdrawn:n"]),
    route!("POST" "/api/chat/counselor/withdraw", "billing", "Request a withdrawal (reserved against the balance)", auth=true, query=&[], body=Json,
        fields=&["amount:n:req:yuan, > 0", "bank_name:s:req:", "bank_account:s:req:", "account_name:s:req:"], data=&["id:i", "amount:n", "status:i"]),
    route!("GET" "/api/chat/counselor/withdraws", "billing", "The calling counselor's withdrawals", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "status:i:0–3"], body=None, fields=&[], data=&["withdraws:a", "total:i"]),
    route!("GET" "/api/notification/list", "notifications", "Notifications with the unread count", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "type:s:order, payment, review, system, chat", "is_read:s:true → read; other non-empty → unread"],
        body=None, fields=&[], data=&["notifications:a", "total:i", "unread_count:i"]),
    route!("POST" "/api/notification/{id}/read", "notifications", "Mark one as read (owner only)", auth=true, query=&[], body=None, fields=&[], data=&[]),
    route!("POST" "/api/notification/read-all", "notifications", "Mark all as read", auth=true, query=&[], body=None, fields=&[], data=&["updated:i"]),
    route!("DELETE" "/api/notification/{id}", "notifications", "Delete one (owner only)", auth=true, query=&[], body=None, fields=&[], data=&[]),
    route!("POST" "/api/upload", "files", "Upload a file (≤ 10 MB, allowed types by content)", auth=true, query=&[], body=Multipart,
        fields=&["file:f:req:the bytes", "file_type:s:avatar, document, image, audio, video, other", "relation_id:i:", "relation_type:s:"],
        data=&["id:i", "file_name:s", "original_name:s", "file_url:s", "file_size:i", "mime_type:s"]),
    route!("GET" "/api/file/{id}", "files", "A file record (uploader only)", auth=true, query=&[], body=None, fields=&[],
        data=&["id:i", "file_name:s", "file_url:s", "file_size:i", "mime_type:s", "uploader:o"]),
    route!("DELETE" "/api/file/{id}", "files", "Delete a file (uploader only)", auth=true, query=&[], body=None, fields=&[], data=&[]),
];

fn field_type(code: &str) -> Schema {
    let b = ObjectBuilder::new();
    let b =
        match code {
            "i" => b.schema_type(Type::Integer).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64),
            )),
            "n" => b.schema_type(Type::Number),
            "b" => b.schema_type(Type::Boolean),
            "o" => b.schema_type(Type::Object),
            "a" => {
                return Schema::Array(
                    utoipa::openapi::ArrayBuilder::new()
                        .items(ObjectBuilder::new().schema_type(Type::Object))
                        .build(),
                )
            }
            "f" => b.schema_type(Type::String).format(Some(
                utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Binary),
            )),
            _ => b.schema_type(Type::String),
        };
    Schema::Object(b.build())
}

/// Splits a field spec into (name, type code, required, description).
fn spec(s: &str) -> (&str, &str, bool, &str) {
    let mut parts = s.splitn(4, ':');
    let name = parts.next().unwrap_or_default();
    let ty = parts.next().unwrap_or("s");
    let rest: Vec<&str> = parts.collect();
    match rest.as_slice() {
        ["req", d] => (name, ty, true, d),
        ["req"] => (name, ty, true, ""),
        [a, b] => (name, ty, false, if b.is_empty() { a } else { b }),
        [d] => (name, ty, false, d),
        _ => (name, ty, false, ""),
    }
}

fn object(fields: &[&str]) -> Schema {
    Schema::Object(object_schema(fields))
}

fn object_schema(fields: &[&str]) -> utoipa::openapi::Object {
    let mut b = ObjectBuilder::new().schema_type(Type::Object);
    for f in fields {
        let (name, ty, required, description) = spec(f);
        let mut s = field_type(ty);
        if let Schema::Object(o) = &mut s {
            if !description.is_empty() {
                o.description = Some(description.to_string());
            }
        }
        b = b.property(name, s);
        if required {
            b = b.required(name);
        }
    }
    b.build()
}

/// `s` that may also be `null` (response fields the read models leave empty, e.g. a
/// user's `counselor_id`, are answered as `null`).
fn or_null(mut s: Schema) -> Schema {
    use utoipa::openapi::schema::SchemaType;
    match &mut s {
        Schema::Object(o) => {
            if let SchemaType::Type(t) = o.schema_type.clone() {
                o.schema_type = SchemaType::Array(vec![t, Type::Null]);
            }
        }
        Schema::Array(a) => a.schema_type = SchemaType::Array(vec![Type::Array, Type::Null]),
        _ => {}
    }
    s
}

/// The schema of a response's `data`: the fields, each nullable, and `data` itself nullable
/// (e.g. `my-application` without an application).
fn data_object(fields: &[&str]) -> Schema {
    let mut b = ObjectBuilder::new().schema_type(Type::Object);
    for f in fields {
        let (name, ty, _, description) = spec(f);
        let mut s = field_type(ty);
        if let Schema::Object(o) = &mut s {
            if !description.is_empty() {
                o.description = Some(description.to_string());
            }
        }
        b = b.property(name, or_null(s));
    }
    or_null(Schema::Object(b.build()))
}

fn envelope(data: &[&str]) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "code",
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .description(Some("200")),
            )
            .property("msg", ObjectBuilder::new().schema_type(Type::String))
            .property("data", data_object(data))
            .required("code")
            .required("msg")
            .build(),
    )
}

fn method(m: &str) -> HttpMethod {
    match m {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        "PATCH" => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

/// Whether `doc` documents `method` on `path`.
pub fn documents(doc: &OpenApi, method: &str, path: &str) -> bool {
    let Some(item) = doc.paths.paths.get(path) else {
        return false;
    };
    match method {
        "GET" => item.get.is_some(),
        "POST" => item.post.is_some(),
        "PUT" => item.put.is_some(),
        "DELETE" => item.delete.is_some(),
        "PATCH" => item.patch.is_some(),
        _ => false,
    }
}

/// The operation a row describes.
fn operation(r: &RouteDoc) -> utoipa::openapi::path::Operation {
    let mut op = OperationBuilder::new()
        .summary(Some(r.summary))
        .tag(r.tag)
        .operation_id(Some(format!("{} {}", r.method, r.path)));
    for segment in r.path.split('/') {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let ty = if name.ends_with("id") { "i" } else { "s" };
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(field_type(ty))),
            );
        }
    }
    for q in r.query {
        let (name, ty, required, description) = spec(q);
        op = op.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Query)
                .required(if required {
                    Required::True
                } else {
                    Required::False
                })
                .description(Some(description))
                .schema(Some(field_type(ty))),
        );
    }
    let content_type = match r.body {
        Body::None => None,
        Body::Json => Some("application/json"),
        Body::Multipart => Some("multipart/form-data"),
    };
    if let Some(ct) = content_type {
        op = op.request_body(Some(
            RequestBodyBuilder::new()
                .required(Some(Required::True))
                .content(
                    ct,
                    ContentBuilder::new().schema(Some(object(r.fields))).build(),
                )
                .build(),
        ));
    }
    op = op
        .response(
            "200",
            ResponseBuilder::new()
                .description("Success: MyChat's envelope {code: 200, msg, data}")
                .content(
                    "application/json",
                    ContentBuilder::new().schema(Some(envelope(r.data))).build(),
                ),
        )
        .response(
            "4XX",
            ResponseBuilder::new()
                .description("Refused: {code, msg} naming the problem, with RFC 9457 members")
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                ),
        );
    if r.auth {
        op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
    }
    op.build()
}

/// Adds every row of [`ROUTES`] that `doc` does not document yet.
pub fn add_to(doc: &mut OpenApi) {
    for r in ROUTES {
        if documents(doc, r.method, r.path) {
            continue;
        }
        let item = PathItem::new(method(r.method), operation(r));
        match doc.paths.paths.get_mut(r.path) {
            Some(existing) => existing.merge_operations(item),
            None => {
                doc.paths.paths.insert(r.path.to_string(), item);
            }
        }
    }
}
