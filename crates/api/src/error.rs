//! [`ApiError`]: every failure an HTTP handler returns, rendered as MyChat's `{code, msg}` body
//! (HTTP status = `code`, contract a.3) with the RFC 9457 problem members beside it (`type`,
//! `title`, `status`, `detail`, per-field `errors`), served as `application/problem+json`.
//!
//! Also the extractors whose rejections go through it: [`ApiJson`], [`ApiQuery`], [`ApiPath`].

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use eventstore::CommandError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    /// The field's JSON path (`amount`, `items[2].label`).
    pub field: String,
    pub message: String,
}

/// An error answered to the client. A 5xx hides its cause from the client and logs it.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub msg: String,
    pub errors: Vec<FieldError>,
    source: Option<anyhow::Error>,
    /// Seconds to send as `Retry-After` (503s of a part that is unavailable for now).
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with `status` and a message for the client.
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
            errors: Vec::new(),
            source: None,
            retry_after: None,
        }
    }
    /// 400 naming one invalid field.
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            status: StatusCode::BAD_REQUEST,
            msg: format!("{field}: {message}"),
            errors: vec![FieldError {
                field: field.to_string(),
                message,
            }],
            source: None,
            retry_after: None,
        }
    }
    /// 400.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }
    /// 401.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, msg)
    }
    /// 403.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, msg)
    }
    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    /// 409.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }
    /// 503 with `Retry-After: 1`: a part this request needs (a chat stream, say) is unavailable
    /// for now; the same request can be retried.
    pub fn unavailable(msg: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, msg);
        e.retry_after = Some(1);
        e
    }
    /// 500; `source` is logged, not shown.
    pub fn internal(source: anyhow::Error) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            msg: "internal server error".into(),
            errors: Vec::new(),
            source: Some(source),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.msg)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(source) = &self.source {
            tracing::error!(
                status = self.status.as_u16(),
                error = format!("{source:#}"),
                "request failed"
            );
        }
        let code = self.status.as_u16();
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = serde_json::json!({
            "code": code,
            "msg": self.msg,
            "type": "about:blank",
            "title": title,
            "status": code,
            "detail": self.msg,
            "errors": self.errors,
        });
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        // Issue 8: text Postgres cannot store (a NUL character, from a query parameter or a
        // multipart field) is the client's error, not a 500.
        if let sqlx::Error::Database(d) = &e {
            if matches!(d.code().as_deref(), Some("22021" | "22P05")) {
                return Self::bad_request(
                    "text contains a character that cannot be stored (NUL, U+0000)",
                );
            }
        }
        Self::internal(anyhow::Error::new(e).context("database"))
    }
}

/// Whether JSON text holds a string with a NUL character (the escape `\u0000`; a raw NUL byte is
/// not valid JSON). Postgres cannot store NUL in `text` or `jsonb`, so such a body is refused at
/// the edge (issue 8): once in an event it would stop the projections that store it.
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &b) in json.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if b == b'u' && backslashes % 2 == 1 && json.get(i + 1..i + 5) == Some(b"0000".as_slice()) {
            return true;
        }
        backslashes = 0;
    }
    false
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

/// How a domain rejection maps to HTTP.
pub trait Rejection: std::error::Error {
    /// The status for this rejection (default 400).
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
}

impl Rejection for domain::OrderError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
impl Rejection for domain::PaymentError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
impl Rejection for domain::SessionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
impl Rejection for domain::WalletError {}
impl Rejection for domain::AccountError {
    fn status(&self) -> StatusCode {
        match self {
            Self::WithdrawalNotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl<E: Rejection> From<CommandError<E>> for ApiError {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(e) => Self::new(e.status(), e.to_string()),
            CommandError::Conflict => {
                Self::conflict("the resource was changed concurrently; retry")
            }
            CommandError::Store(s) => Self::internal(anyhow::anyhow!(s).context("event store")),
        }
    }
}

/// Names the field a serde error is about: the path, or for "missing field `x`" the field `x`.
fn field_error(path: String, inner: &serde_json::Error) -> FieldError {
    let text = inner.to_string();
    let message = text.split(" at line ").next().unwrap_or(&text).to_string();
    let field = match message
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        Some(name) if path == "." || path.is_empty() => name.to_string(),
        Some(name) => format!("{path}.{name}"),
        None if path == "." => String::new(),
        None => path,
    };
    FieldError { field, message }
}

/// A JSON body. Malformed JSON, a wrong type or a missing field is a 400 that names the field.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        if bytes.is_empty() {
            return Err(ApiError::bad_request("request body must be a JSON object"));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body like [`ApiJson`] does: a 400 naming the field on any mismatch.
///
/// # Errors
/// 400 for malformed JSON, a wrong type, a missing field, or a NUL character in a string
/// ([`has_nul_escape`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if has_nul_escape(bytes) {
        return Err(ApiError::bad_request(
            "text must not contain NUL characters (\\u0000)",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad_request(format!("malformed JSON: {inner}"));
        }
        let fe = field_error(path, &inner);
        if fe.field.is_empty() {
            return ApiError::bad_request(fe.message);
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            msg: format!("invalid field `{}`: {}", fe.field, fe.message),
            errors: vec![fe],
            source: None,
            retry_after: None,
        }
    })
}

/// A multipart body; a request that is not one (no or a bad boundary) is an [`ApiError`] 400
/// rather than axum's plain-text rejection (issue 8, found by schemathesis).
pub struct ApiMultipart(pub axum::extract::Multipart);

impl<S: Send + Sync> FromRequest<S> for ApiMultipart {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::extract::Multipart::from_request(req, state)
            .await
            .map(ApiMultipart)
            .map_err(|e| {
                ApiError::new(
                    e.status(),
                    format!("a multipart/form-data body is required: {}", e.body_text()),
                )
            })
    }
}

/// Query-string parameters; a bad one is a 400.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()))
    }
}

/// Path parameters; a bad one (e.g. `/api/order/abc`) is a 400.
#[derive(Debug, Clone, Copy, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::bad_request(format!("invalid path parameter: {}", e.body_text()))
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;
