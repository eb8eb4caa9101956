//! The user API's OpenAPI 3.1 document (utoipa), served at [`SPEC_URL`] with Swagger UI at
//! `/swagger` (issue 3).
//!
//! Every route of the user router is one row of [`ROUTES`]: method, path, tag, summary, whether
//! it needs a bearer token, its path/query parameters, its JSON (or multipart) request fields and
//! the fields of its response `data`. The document is built from that table with utoipa's
//! builders; every success is MyChat's envelope `{code: 200, msg, data}` and every refusal the
//! `ApiError` schema (`{code, msg}` + RFC 9457 members). A test requests every row against the
//! running router, so a documented route that is not served (or the reverse, for the contract's
//! list) fails the build.

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, ObjectBuilder, OpenApi, OpenApiBuilder,
    PathsBuilder, Ref, Required, ResponseBuilder, Schema, Type,
};

use crate::AppState;

/// Where the document is served.
pub const SPEC_URL: &str = "/api-docs/openapi.json";

/// The route of the document.
pub fn router() -> Router<AppState> {
    Router::new().route(SPEC_URL, get(|| async { Json(document()) }))
}

/// How a request carries its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// `application/json`.
    Json,
    /// `multipart/form-data` (uploads: the bytes in field `file`).
    Multipart,
    /// `application/x-www-form-urlencoded` (Alipay's notification).
    Form,
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

/// Every route of the user API.
pub const ROUTES: &[RouteDoc] = &[
    route!("GET" "/health", "system", "Liveness: `{status: \"ok\"}` (no envelope)", auth=false, query=&[], body=None, fields=&[], data=&[]),
    route!("POST" "/api/register", "auth", "Register (contract b.1 #3)", auth=false, query=&[], body=Json,
        fields=&["username:s:req:3–50 characters", "password:s:req:6–128 characters", "email:s:email address", "phone:s:11 digits"],
        data=&["user_id:i", "username:s"]),
    route!("POST" "/api/login", "auth", "Log in; rate-limited per account and per IP (429)", auth=false, query=&[], body=Json,
        fields=&["username:s:req:", "password:s:req:"],
        data=&["token:s", "refresh_token:s", "expires_in:i", "user:o"]),
    route!("POST" "/api/token/refresh", "auth", "Rotate a refresh token: the presented one is revoked", auth=false, query=&[], body=Json,
        fields=&["refresh_token:s:req:the refresh token (alias `token`)"], data=&["token:s", "refresh_token:s", "expires_in:i"]),
    route!("POST" "/api/logout", "auth", "Revoke the access token and every refresh token", auth=true, query=&[], body=None, fields=&[], data=&[]),
    route!("GET" "/api/user/info", "user", "The caller (contract b.1 #6); balance in yuan", auth=true, query=&[], body=None, fields=&[],
        data=&["id:i", "user_id:i", "username:s", "email:s", "phone:s", "avatar:s", "balance:n", "is_counselor:b", "counselor_id:i"]),
    route!("PUT" "/api/user/profile", "user", "Update email / phone / avatar (empty = unchanged)", auth=true, query=&[], body=Json,
        fields=&["email:s:email address", "phone:s:1[3-9] + 9 digits", "avatar:s:URL"], data=&[]),
    route!("POST" "/api/user/password", "user", "Change password: earlier tokens are revoked, a fresh pair returned", auth=true, query=&[], body=Json,
        fields=&["old_password:s:req:", "new_password:s:req:6–128 characters"], data=&["token:s", "refresh_token:s"]),
    route!("POST" "/api/upload/avatar", "files", "Upload an avatar (JPEG/PNG by content, ≤ 2 MB); sets the user's avatar", auth=true, query=&[], body=Multipart,
        fields=&["file:f:req:the image"], data=&["url:s", "id:i"]),
    route!("POST" "/api/user/recharge", "user", "Recharge the wallet through a payment (credited when captured)", auth=true, query=&[], body=Json,
        fields=&["amount:n:req:yuan, > 0, two decimals", "payment_method:s:sandbox (default), wechat, alipay", "trade_type:s:NATIVE, H5, JSAPI, APP"],
        data=&["payment_id:i", "payment_no:s", "amount:n", "pay_url:s", "balance:n"]),
    route!("GET" "/api/user/transactions", "user", "Wallet transactions, newest first", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "type:s:recharge, consume, refund"], body=None, fields=&[], data=&["transactions:a", "total:i"]),
    route!("GET" "/api/counselor/list", "counselors", "Enabled counselors: keyword, sort, paging", auth=false,
        query=&["page:i:page number", "page_size:i:1..=100", "keyword:s:name / specialty / title", "sort_by:s:rating, price, service_count, created_at", "sort_order:s:asc, desc"],
        body=None, fields=&[], data=&["counselors:a", "total:i"]),
    route!("GET" "/api/counselor/{id}", "counselors", "A counselor", auth=false, query=&[], body=None, fields=&[],
        data=&["id:i", "name:s", "title:s", "avatar:s", "rating:n", "price:n", "service_count:i", "review_count:i", "is_recommended:b"]),
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
    route!("POST" "/api/order/create", "orders", "Place an order (amount = minutes × price)", auth=true, query=&[], body=Json,
        fields=&["counselor_id:i:req:", "duration:i:req:minutes, 10–180", "schedule_time:s:req:YYYY-MM-DDTHH:mm:ss+08:00, YYYY-MM-DDTHH:mm:ss, YYYY-MM-DD HH:mm:ss or YYYY-MM-DD", "notes:s:≤ 500 characters"],
        data=&["order_id:i", "order_no:s", "amount:n", "status:i", "create_at:s"]),
    route!("GET" "/api/order/list", "orders", "The caller's orders, newest first", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "status:i:0–4"], body=None, fields=&[], data=&["orders:a", "total:i"]),
    route!("GET" "/api/order/{id}", "orders", "An order (its user or counselor)", auth=true, query=&[], body=None, fields=&[],
        data=&["id:i", "order_no:s", "status:i", "amount:n", "duration:i", "has_review:b", "user:o", "counselor:o"]),
    route!("PUT" "/api/order/{id}/status", "orders", "The counselor completes (2) or cancels (3) an order", auth=true, query=&[], body=Json,
        fields=&["status:i:req:0–4; only 2 and 3 are accepted"], data=&[]),
    route!("POST" "/api/order/{id}/cancel", "orders", "Cancel (a paid order is refunded in full)", auth=true, query=&[], body=None, fields=&[],
        data=&["order_id:i", "status:i", "refund_amount:n"]),
    route!("GET" "/api/order/{id}/validate", "orders", "What the caller may do with the order now", auth=true, query=&[], body=None, fields=&[],
        data=&["valid:b", "status:i", "can_pay:b", "can_chat:b", "can_cancel:b", "can_review:b", "reason:s"]),
    route!("GET" "/api/order/{id}/timeline", "orders", "The order's events, read from the log", auth=true, query=&[], body=None, fields=&[],
        data=&["order_id:i", "timeline:a"]),
    route!("GET" "/api/counselor/orders", "orders", "The calling counselor's orders", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "status:i:0–4"], body=None, fields=&[], data=&["orders:a", "total:i"]),
    route!("POST" "/api/payment/create", "payments", "Create a payment for a pending order", auth=true, query=&[], body=Json,
        fields=&["order_id:i:req:", "payment_method:s:req:wechat, alipay, sandbox", "trade_type:s:NATIVE, H5, JSAPI, APP", "client_ip:s:", "return_url:s:"],
        data=&["payment_id:i", "payment_no:s", "amount:n", "pay_url:s", "pay_params:o", "trade_type:s", "expired_at:s"]),
    route!("GET" "/api/payment/{id}", "payments", "A payment (its payer)", auth=true, query=&[], body=None, fields=&[],
        data=&["id:i", "payment_no:s", "order_id:i", "order_no:s", "amount:n", "payment_method:s", "trade_type:s", "status:i", "status_text:s", "pay_time:s", "transaction_id:s", "created_at:s"]),
    route!("GET" "/api/payment/list", "payments", "The caller's payments", auth=true,
        query=&["page:i:page number", "page_size:i:1..=100", "status:i:0–4", "payment_method:s:wechat, alipay, sandbox"], body=None, fields=&[], data=&["payments:a", "total:i"]),
    route!("POST" "/api/payment/refund", "payments", "Refund up to the captured amount", auth=true, query=&[], body=Json,
        fields=&["payment_id:i:req:", "refund_amount:n:req:yuan, > 0", "refund_reason:s:≤ 200 characters"],
        data=&["payment_id:i", "refund_no:s", "refund_amount:n", "total_refunded:n", "status:i"]),
    route!("POST" "/api/payment/wechat/callback", "providers", "WeChat Pay v3 notification (signed, AES-256-GCM resource); replies {code, message}", auth=false, query=&[], body=Json,
        fields=&["id:s:req:", "event_type:s:req:TRANSACTION.SUCCESS", "resource:o:req:algorithm, ciphertext, associated_data, nonce"], data=&[]),
    route!("POST" "/api/payment/alipay/callback", "providers", "Alipay async notification (RSA2); replies text success / fail", auth=false, query=&[], body=Form,
        fields=&["out_trade_no:s:req:", "trade_no:s:req:", "trade_status:s:req:", "total_amount:s:req:yuan", "app_id:s:req:", "sign:s:req:", "sign_type:s:req:RSA2"], data=&[]),
    route!("POST" "/api/payment/sandbox/callback", "providers", "The sandbox provider's signed notification", auth=false, query=&[], body=Json,
        fields=&["payment_no:s:req:", "transaction_id:s:req:", "amount:i:req:fen", "trade_state:s:req:"], data=&[]),
    route!("GET" "/sandbox/cashier/{payment_no}", "providers", "The sandbox cashier page: opening it pays (HTML)", auth=false, query=&[], body=None, fields=&[], data=&[]),
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
    route!("GET" "/uploads/{path}", "files", "An uploaded file's bytes", auth=false, query=&[], body=None, fields=&[], data=&[]),
    route!("GET" "/api-docs/openapi.json", "system", "This document", auth=false, query=&[], body=None, fields=&[], data=&[]),
    route!("GET" "/swagger", "system", "Swagger UI", auth=false, query=&[], body=None, fields=&[], data=&[]),
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

/// `s` that may also be `null` (issue 8: response fields the read models leave empty, e.g. a
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

/// Routes whose answers are not MyChat's envelope: `/health` (`{status}`), the document itself,
/// Swagger UI, uploaded bytes, the sandbox cashier's HTML, and the payment providers' callbacks
/// (which answer in each provider's own format).
fn raw_answer(r: &RouteDoc) -> bool {
    r.tag == "providers"
        || matches!(
            r.path,
            "/health" | "/api-docs/openapi.json" | "/swagger" | "/uploads/{path}"
        )
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

/// The document.
pub fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    for r in ROUTES {
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
            Body::Form => Some("application/x-www-form-urlencoded"),
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
        if raw_answer(r) {
            op = op
                .response(
                    "200",
                    ResponseBuilder::new().description("Success, in the route's own format"),
                )
                .response(
                    "4XX",
                    ResponseBuilder::new().description("Refused, in the route's own format"),
                );
        } else {
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
                        .description(
                            "Refused: {code, msg} naming the problem, with RFC 9457 members",
                        )
                        .content(
                            "application/problem+json",
                            ContentBuilder::new()
                                .schema(Some(Ref::from_schema_name("ApiError")))
                                .build(),
                        ),
                );
        }
        if r.auth {
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        paths = paths.path(r.path, PathItem::new(method(r.method), op.build()));
    }
    let error = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "code",
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .description(Some("the HTTP status")),
        )
        .property(
            "msg",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some("what is wrong; names the field")),
        )
        .property("type", ObjectBuilder::new().schema_type(Type::String))
        .property("title", ObjectBuilder::new().schema_type(Type::String))
        .property("status", ObjectBuilder::new().schema_type(Type::Integer))
        .property("detail", ObjectBuilder::new().schema_type(Type::String))
        .property(
            "errors",
            utoipa::openapi::ArrayBuilder::new()
                .items(object_schema(&["field:s:req:", "message:s:req:"]))
                .description(Some("one entry per invalid field")),
        )
        .required("code")
        .required("msg")
        .build();
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("mychat user API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some("MyChat's user API (contract b.1 and seed 001), served on :8080. Money is yuan; every body is {code, msg, data}."))
                .build(),
        )
        .paths(paths.build())
        .components(Some(
            ComponentsBuilder::new()
                .schema("ApiError", error)
                .security_scheme(
                    "bearer",
                    SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
                )
                .build(),
        ))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document_once() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            let op = &doc["paths"][r.path][r.method.to_lowercase()];
            assert!(op.is_object(), "{} {} missing", r.method, r.path);
            assert!(op["responses"]["200"].is_object());
        }
    }
}
