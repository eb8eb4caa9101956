//! [`ApiError`]: every failure an HTTP handler returns, rendered as MyChat's `{code, msg}` body
//! (HTTP status = `code`, contract a.3) with the RFC 9457 problem members beside it (`type`,
//! `title`, `status`, `detail`, per-field `errors`), served as `application/problem+json`
//! ([`Problem`]). Old clients read `code` and `msg`; new ones read the problem members.
//!
//! Domain rejections become 4xx ([`Rejection`]), an optimistic-lock conflict 409, anything else a
//! 500 whose cause is logged and never shown.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use eventstore::CommandError;
use serde::Serialize;
use utoipa::ToSchema;

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, ToSchema)]
pub struct FieldError {
    /// The field's JSON path (`amount`, `items[2].label`) or query parameter.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The body of every refusal: MyChat's `{code, msg}` with the RFC 9457 problem members.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// The HTTP status (MyChat's clients read `code`).
    pub code: u16,
    /// What is wrong, naming the field when one is (the clients show it).
    pub msg: String,
    /// Always `about:blank`.
    pub r#type: &'static str,
    /// The status's reason phrase.
    pub title: &'static str,
    /// The HTTP status.
    pub status: u16,
    /// The same text as `msg`.
    pub detail: String,
    /// One entry per invalid field (empty when no field is concerned).
    pub errors: Vec<FieldError>,
}

impl Problem {
    /// An OpenAPI response described by `description` whose body is this refusal
    /// (`application/problem+json`, a reference to the `Problem` schema): how both documents
    /// state a refusal.
    pub fn response(description: &str) -> utoipa::openapi::Response {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(<Self as ToSchema>::name())))
                    .build(),
            )
            .build()
    }
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
    /// 400 naming one invalid field: `msg` is `"<field>: <message>"`.
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
    /// 422 naming one field: the input has the documented shape, and a rule the schema cannot
    /// state refused it (a referenced row that does not exist, a rule across fields, the
    /// current state of a row). `msg` is `"<field>: <message>"`.
    pub fn unprocessable(field: &str, message: impl Into<String>) -> Self {
        Self::field(field, message).with_status(StatusCode::UNPROCESSABLE_ENTITY)
    }
    /// The same error answered with `status` (a field refused by a rule across fields is a 422).
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }
    /// 400 naming every invalid field of a validated body or query (`validator`'s errors, in
    /// field order; nested fields as `items[2].label`), or 422 when only rules across fields
    /// (`__all__`) refused it: `msg` is `"<field>: <message>"` of the
    /// first, `errors` lists them all. A rule's `message` is what the client reads; without one,
    /// its code (`length`, `range`, …).
    pub fn validation(errors: &validator::ValidationErrors) -> Self {
        let mut fields = Vec::new();
        collect_validation("", errors, &mut fields);
        fields.sort_by(|a, b| a.field.cmp(&b.field));
        let msg = fields
            .first()
            .map(|f| format!("{}: {}", f.field, f.message))
            .unwrap_or_else(|| "invalid request".to_string());
        // Only rules across fields (`#[validate(schema(..))]`, reported as `__all__`): the
        // input has the documented shape, the combination is refused, a 422.
        let status = if !fields.is_empty() && fields.iter().all(|f| f.field.ends_with("__all__")) {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        Self {
            status,
            msg,
            errors: fields,
            source: None,
            retry_after: None,
        }
    }
    /// 400 naming one invalid field whose message came from parsing the body (`msg` is
    /// ``"invalid field `<field>`: <message>"``).
    pub fn invalid_field(error: FieldError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            msg: format!("invalid field `{}`: {}", error.field, error.message),
            errors: vec![error],
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
    /// 404 `"<what> not found"`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    /// 422 without a field: a well-formed request refused by the state it meets (a menu that
    /// still has children, a user who is not online, an order not awaiting payment).
    pub fn refused(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, msg)
    }
    /// 409.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, msg)
    }
    /// 413 naming `file` (an upload larger than `limit`; nothing is stored).
    pub fn too_large(field: &str, limit: &str) -> Self {
        let mut e = Self::field(field, format!("larger than {limit}"));
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        e
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
    /// The body this error is answered with.
    pub fn problem(&self) -> Problem {
        let code = self.status.as_u16();
        Problem {
            code,
            msg: self.msg.clone(),
            r#type: "about:blank",
            title: self.status.canonical_reason().unwrap_or("Error"),
            status: code,
            detail: self.msg.clone(),
            errors: self.errors.clone(),
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
        let body = serde_json::to_string(&self.problem()).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
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
        // Text PostgreSQL cannot store (a NUL character, from a query parameter or a multipart
        // field) is the client's error, not a 500.
        if let sqlx::Error::Database(d) = &e {
            if matches!(d.code().as_deref(), Some("22021" | "22P05")) {
                return Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "text contains a character that cannot be stored (NUL, U+0000)",
                );
            }
        }
        Self::internal(anyhow::Error::new(e).context("database"))
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        Self::internal(e)
    }
}

/// A PostgreSQL unique violation (23505) as a 409 Conflict naming the constraint (the value is
/// taken by another row: the same request succeeds once it is free); other errors as
/// [`ApiError::from`]. (MyChat's Go backend answered 400; its clients show `msg` for any
/// non-2xx but 401, contract a.4.)
pub fn unique_violation(e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(d) = &e {
        if d.code().as_deref() == Some("23505") {
            return ApiError::new(
                StatusCode::CONFLICT,
                format!("duplicate value ({})", d.constraint().unwrap_or("unique")),
            );
        }
    }
    ApiError::from(e)
}

/// How a domain rejection maps to HTTP.
pub trait Rejection: std::error::Error {
    /// The status for this rejection (default 400).
    fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }
    /// The request field the rejection is about and why, when it is about one: answered as a
    /// 400 naming it ([`ApiError::field`]). Default: none.
    fn field(&self) -> Option<(&'static str, &'static str)> {
        None
    }
}

// A refusal by a business rule in the aggregate's current state (the order is not paid, the
// balance does not cover a withdrawal) is a 422 (RFC 9110 §15.5.21: well-formed, not
// processable): retrying it changes nothing. 409 stays what it is everywhere in this API, a
// conflict with a concurrent change or a taken value, and 400 a request not of the documented
// shape or a value no state accepts (a bad amount, a missing reason).
impl Rejection for domain::OrderError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NotYourOrder => StatusCode::FORBIDDEN,
            Self::AlreadyPlaced
            | Self::NotPending(_)
            | Self::NotPaid(_)
            | Self::PaidByAnotherPayment
            | Self::OtherSession
            | Self::NotCancellable(_)
            | Self::ServiceStarted
            | Self::NotCompleted(_)
            | Self::AlreadyReviewed
            | Self::AmountMismatch { .. }
            | Self::InvalidStatus
            | Self::NotFunded { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
impl Rejection for domain::PaymentError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyCreated
            | Self::CapturedByAnotherTransaction
            | Self::NotCaptured
            | Self::AmountMismatch { .. }
            | Self::RechargeNotRefundable
            | Self::OfflineDetailsMissing
            | Self::RefundExceedsCaptured { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
impl Rejection for domain::SessionError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::AlreadyEnded => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}
impl Rejection for domain::WalletError {}
impl Rejection for domain::GroupError {
    fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::NotMember | Self::NotPermitted(_) | Self::OwnerUntouchable => {
                StatusCode::FORBIDDEN
            }
            Self::Dissolved | Self::OwnerMustTransfer => StatusCode::CONFLICT,
            Self::AlreadyCreated => StatusCode::CONFLICT,
            Self::CapExceeded(_) | Self::Refused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
        }
    }
    fn field(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::Invalid { field, reason } | Self::Refused { field, reason } => {
                Some((field, reason))
            }
            _ => None,
        }
    }
}
impl Rejection for domain::AccountError {
    fn status(&self) -> StatusCode {
        match self {
            Self::WithdrawalNotFound => StatusCode::NOT_FOUND,
            Self::InsufficientBalance { .. }
            | Self::DuplicateWithdrawal
            | Self::WrongWithdrawalStatus(..) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl<E: Rejection> From<CommandError<E>> for ApiError {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(e) => match e.field() {
                Some((field, reason)) => Self::field(field, reason),
                None => Self::new(e.status(), e.to_string()),
            },
            CommandError::Conflict => {
                Self::conflict("the resource was changed concurrently; retry")
            }
            CommandError::Store(s) => Self::internal(anyhow::anyhow!(s).context("event store")),
        }
    }
}

impl From<domain::GroupMessageRefusal> for ApiError {
    fn from(e: domain::GroupMessageRefusal) -> Self {
        use domain::GroupMessageRefusal as R;
        match e {
            R::NotFound => Self::not_found("group"),
            R::Invalid(refusal) => refusal.into(),
            R::MentionsNonMember => Self::unprocessable(
                "mentions",
                "every mentioned user must be a member of the group",
            ),
            R::Dissolved => Self::conflict(e.to_string()),
            R::NotMember | R::Muted { .. } | R::GroupMuted => Self::forbidden(e.to_string()),
        }
    }
}

impl From<domain::MessageRefusal> for ApiError {
    fn from(e: domain::MessageRefusal) -> Self {
        match e {
            domain::MessageRefusal::Invalid { field, reason } => Self::field(field, reason),
            domain::MessageRefusal::Empty => {
                Self::unprocessable("content", "must not be blank unless file_url is set")
            }
            other => Self::forbidden(other.to_string()),
        }
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// A validation rule's refusal (`validator`'s custom rules) with the message the client reads;
/// [`ApiError::validation`] answers it as a 400 naming the field.
pub fn refusal(code: &'static str, message: &'static str) -> validator::ValidationError {
    validator::ValidationError::new(code).with_message(message.into())
}

impl From<validator::ValidationErrors> for ApiError {
    fn from(errors: validator::ValidationErrors) -> Self {
        Self::validation(&errors)
    }
}

fn collect_validation(
    prefix: &str,
    errors: &validator::ValidationErrors,
    out: &mut Vec<FieldError>,
) {
    use validator::ValidationErrorsKind as Kind;
    for (field, kind) in errors.errors() {
        let path = if prefix.is_empty() {
            field.to_string()
        } else {
            format!("{prefix}.{field}")
        };
        match kind {
            Kind::Field(list) => {
                for e in list {
                    out.push(FieldError {
                        field: path.clone(),
                        message: e
                            .message
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| e.code.to_string()),
                    });
                }
            }
            Kind::Struct(inner) => collect_validation(&path, inner, out),
            Kind::List(items) => {
                for (i, inner) in items {
                    collect_validation(&format!("{path}[{i}]"), inner, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod validation_tests {
    use validator::Validate;

    use super::ApiError;

    #[derive(Validate)]
    struct Order {
        #[validate(range(min = 10, max = 180, message = "must be between 10 and 180 minutes"))]
        duration: i64,
        #[validate(length(max = 3))]
        notes: String,
    }

    #[test]
    fn validation_errors_name_every_field() {
        let e = ApiError::from(
            Order {
                duration: 5,
                notes: "long".into(),
            }
            .validate()
            .unwrap_err(),
        );
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(e.msg, "duration: must be between 10 and 180 minutes");
        let fields: Vec<_> = e.errors.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(fields, ["duration", "notes"]);
    }
}
