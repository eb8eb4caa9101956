//! Accounts and counselors: register, login, user info, the counselor list and detail.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{reply, Envelope, Reply};
use web::error::{refusal, Problem};
use web::money::yuan_f64;

use crate::auth::{hash_password, verify_password, KIND_USER};
use crate::user::account::password_rule;
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(user_info))
        .routes(routes!(counselor_list))
        .routes(routes!(counselor_detail))
}

fn register_email_rule(email: &str) -> Result<(), ValidationError> {
    if email.is_empty() || crate::user::account::check_email("email", email).is_ok() {
        return Ok(());
    }
    Err(refusal("email", "not an email address"))
}

fn register_phone_rule(phone: &str) -> Result<(), ValidationError> {
    if !phone.is_empty() && (phone.len() != 11 || !phone.bytes().all(|b| b.is_ascii_digit())) {
        return Err(refusal("phone", "must be 11 digits"));
    }
    Ok(())
}

/// `POST /api/register` body (contract b.1 #3).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct RegisterRequest {
    /// 3 to 50 characters, no surrounding spaces (Unicode White_Space); unique.
    #[schema(example = "alice")]
    #[validate(
        custom(function = "web::text::trimmed"),
        length(
            min = 3,
            max = 50,
            message = "3 to 50 characters, no surrounding spaces"
        )
    )]
    pub username: String,
    /// 6 to 128 characters.
    #[schema(min_length = 6, max_length = 128)]
    #[validate(custom(function = "password_rule"))]
    pub password: String,
    /// An email address (`local@domain.tld`, no spaces, at most 254 characters), or empty.
    #[serde(default)]
    #[schema(
        max_length = 254,
        pattern = r"^(?:|[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*)$"
    )]
    #[validate(custom(function = "register_email_rule"))]
    pub email: String,
    /// 11 digits, or empty.
    #[serde(default)]
    #[schema(pattern = "^([0-9]{11})?$")]
    #[validate(custom(function = "register_phone_rule"))]
    pub phone: String,
}

/// The account just registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct Registered {
    /// The new user's id.
    pub user_id: i64,
    /// As registered.
    pub username: String,
}

/// `POST /api/register` → `{user_id, username}`; 400 when the username is taken.
#[utoipa::path(
    post,
    path = "/api/register",
    tag = "auth",
    summary = "Register (contract b.1 #3)",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "Registered", body = Envelope<Registered>),
        (status = 400, description = "A field is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The username is taken", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Reply<Registered> {
    req.validate()?;
    let hash = hash_password(&req.password).await?;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, email, phone) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (username) DO NOTHING RETURNING id",
    )
    .bind(&req.username)
    .bind(hash)
    .bind(&req.email)
    .bind(&req.phone)
    .fetch_optional(&state.db)
    .await?;
    let id = id.ok_or_else(|| {
        ApiError::field("username", "already taken").with_status(StatusCode::CONFLICT)
    })?;
    Ok(reply(Registered {
        user_id: id,
        username: req.username,
    }))
}

/// `POST /api/login` body.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct LoginRequest {
    /// The account's username.
    #[validate(length(min = 1, message = "required"))]
    pub username: String,
    /// Its password.
    #[validate(length(min = 1, message = "required"))]
    pub password: String,
}

/// The account that logged in.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginUser {
    /// The user's id.
    pub user_id: i64,
    /// The same id (MyChat's clients read either).
    pub id: i64,
    /// As logged in.
    pub username: String,
    /// The account's email address (may be empty).
    pub email: String,
    /// Whether the account has a counselor profile.
    pub is_counselor: bool,
    /// That profile's id, `null` for a plain user.
    pub counselor_id: Option<i64>,
}

/// A successful login: an access token, a refresh token and the account.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginData {
    /// The access token (JWT, `Authorization: Bearer …`).
    pub token: String,
    /// The refresh token for `POST /api/token/refresh` (rotated on use).
    pub refresh_token: String,
    /// The access token's lifetime, seconds.
    pub expires_in: i64,
    /// The account.
    pub user: LoginUser,
}

/// `POST /api/login` → `{token, user: {user_id, username, email, is_counselor, counselor_id}}`;
/// 401 on bad credentials, 403 for a disabled account. A counselor logs in here too.
///
/// Rate-limited per username and per client IP (governor GCRA, 429 with `Retry-After`), and
/// answers a `refresh_token` beside the access token.
#[utoipa::path(
    post,
    path = "/api/login",
    tag = "auth",
    summary = "Log in; rate-limited per account and per IP (429)",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Envelope<LoginData>),
        (status = 400, description = "A field is missing", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Wrong username or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account is disabled", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see `Retry-After`", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn login(
    State(state): State<AppState>,
    State(api): State<std::sync::Arc<crate::user::config::UserApi>>,
    client: web::auth::ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Reply<LoginData> {
    req.validate()?;
    api.logins.check(&req.username, &client.0)?;
    let row = sqlx::query(
        "SELECT u.id, u.password_hash, u.email, u.status, c.id AS counselor_id FROM users u \
         LEFT JOIN counselors c ON c.user_id = u.id WHERE u.username = $1 AND u.deleted_at IS NULL",
    )
    .bind(&req.username)
    .fetch_optional(&state.db)
    .await?;
    let Some(row) = row else {
        return Err(ApiError::unauthorized("wrong username or password"));
    };
    if !verify_password(&req.password, row.get("password_hash")).await {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    if row.get::<i16, _>("status") != 1 {
        return Err(ApiError::forbidden("account disabled"));
    }
    let id: i64 = row.get("id");
    let counselor_id: Option<i64> = row.get("counselor_id");
    let token = state.jwt.issue(id, &req.username, KIND_USER)?;
    let refresh_token =
        crate::user::account::issue_refresh(&state.db, id, None, api.config.refresh_ttl_seconds)
            .await?;
    Ok(reply(LoginData {
        token,
        refresh_token,
        expires_in: state.jwt.ttl_seconds,
        user: LoginUser {
            user_id: id,
            id,
            username: req.username,
            email: row.get("email"),
            is_counselor: counselor_id.is_some(),
            counselor_id,
        },
    }))
}

/// The caller's account; money in yuan with the exact fen beside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfo {
    /// The user's id.
    pub id: i64,
    /// The same id.
    pub user_id: i64,
    pub username: String,
    /// May be empty.
    pub email: String,
    /// May be empty.
    pub phone: String,
    /// The avatar's URL (may be empty).
    pub avatar: String,
    /// 1 enabled, 0 disabled.
    pub status: i16,
    /// The wallet's balance, yuan (from the ledger).
    pub balance: f64,
    /// The wallet's balance, fen.
    pub balance_fen: i64,
    /// Whether the account has a counselor profile.
    pub is_counselor: bool,
    /// That profile's id, `null` for a plain user.
    pub counselor_id: Option<i64>,
    /// When the account was registered (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// `GET /api/user/info` → the caller; `balance` in yuan from the ledger (`user:<id>:balance`).
#[utoipa::path(
    get,
    path = "/api/user/info",
    tag = "user",
    summary = "The caller (contract b.1 #6); balance in yuan",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Envelope<UserInfo>),
    )
)]
pub async fn user_info(State(state): State<AppState>, user: AuthUser) -> Reply<UserInfo> {
    let row = sqlx::query(
        "SELECT u.id, u.username, u.email, u.phone, u.avatar, u.status, u.created_at, \
         c.id AS counselor_id FROM users u LEFT JOIN counselors c ON c.user_id = u.id \
         WHERE u.id = $1",
    )
    .bind(user.user_id)
    .fetch_one(&state.db)
    .await?;
    let balance = crate::app::ledger_reads::user_balance(&state.db, user.user_id).await?;
    let counselor_id: Option<i64> = row.get("counselor_id");
    Ok(reply(UserInfo {
        id: user.user_id,
        user_id: user.user_id,
        username: row.get("username"),
        email: row.get("email"),
        phone: row.get("phone"),
        avatar: row.get("avatar"),
        status: row.get("status"),
        balance: yuan_f64(balance),
        balance_fen: balance,
        is_counselor: counselor_id.is_some(),
        counselor_id,
        created_at: row.get("created_at"),
    }))
}

const COUNSELOR_COLUMNS: &str =
    "c.id, c.user_id, c.name, c.title, c.avatar, c.bio, c.specialty, c.price_fen, \
     c.years_exp, c.rating, c.status, c.created_at, c.updated_at, \
     (SELECT count(*) FROM orders o WHERE o.counselor_id = c.id AND o.status = 2) AS service_count, \
     (SELECT count(*) FROM reviews r WHERE r.counselor_id = c.id AND r.is_visible) AS review_count";

/// A counselor as the MyChat clients read it (contract b.2); `price` in yuan per minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct Counselor {
    pub id: i64,
    /// The counselor's user account, `null` when it has none.
    pub user_id: Option<i64>,
    pub name: String,
    pub title: String,
    /// The avatar's URL (may be empty).
    pub avatar: String,
    pub bio: String,
    /// Comma-separated specialties.
    pub specialty: String,
    /// Price per minute, yuan.
    pub price: f64,
    /// Price per minute, fen.
    pub price_fen: i64,
    /// Years of experience.
    pub years_exp: i32,
    /// Average review rating, 0–5.
    pub rating: f64,
    /// 1 enabled, 0 disabled.
    pub status: i16,
    /// Completed orders.
    pub service_count: i64,
    /// Visible reviews.
    pub review_count: i64,
    /// Rating at least 4.5 over at least 5 completed orders.
    pub is_recommended: bool,
    /// RFC 3339.
    pub created_at: DateTime<Utc>,
    /// RFC 3339.
    pub updated_at: DateTime<Utc>,
}

impl Counselor {
    /// From a row of `COUNSELOR_COLUMNS`.
    pub fn from_row(row: &sqlx::postgres::PgRow) -> Self {
        let service_count: i64 = row.get("service_count");
        let rating: f64 = row.get("rating");
        let price: i64 = row.get("price_fen");
        Self {
            id: row.get("id"),
            user_id: row.get("user_id"),
            name: row.get("name"),
            title: row.get("title"),
            avatar: row.get("avatar"),
            bio: row.get("bio"),
            specialty: row.get("specialty"),
            price: yuan_f64(price),
            price_fen: price,
            years_exp: row.get("years_exp"),
            rating,
            status: row.get("status"),
            service_count,
            review_count: row.try_get::<i64, _>("review_count").unwrap_or(0),
            is_recommended: rating >= 4.5 && service_count >= 5,
            created_at: row.get("created_at"),
            updated_at: row.get("updated_at"),
        }
    }
}

fn sort_by_rule(sort_by: &str) -> Result<(), ValidationError> {
    match sort_by {
        "" | "rating" | "price" | "service_count" | "created_at" => Ok(()),
        _ => Err(refusal(
            "sort_by",
            "one of rating, price, service_count, created_at",
        )),
    }
}

fn sort_order_rule(sort_order: &str) -> Result<(), ValidationError> {
    match sort_order {
        "" | "asc" | "desc" => Ok(()),
        _ => Err(refusal("sort_order", "asc or desc")),
    }
}

/// `GET /api/counselor/list` query (contract b.1 #12); every parameter may be empty.
#[web::limits]
#[derive(Debug, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct CounselorListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 10).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Matches name, specialty or title (substring, case-insensitive).
    #[serde(default)]
    pub keyword: String,
    /// `rating` (default), `price`, `service_count` or `created_at`.
    #[serde(default)]
    #[param(pattern = "^(rating|price|service_count|created_at)?$")]
    #[validate(custom(function = "sort_by_rule"))]
    pub sort_by: String,
    /// `desc` (default) or `asc`.
    #[serde(default)]
    #[param(pattern = "^(asc|desc)?$")]
    #[validate(custom(function = "sort_order_rule"))]
    pub sort_order: String,
}

/// A page of counselors.
#[derive(Debug, Serialize, ToSchema)]
pub struct CounselorList {
    pub counselors: Vec<Counselor>,
    /// Matching counselors in all pages.
    pub total: i64,
}

/// `GET /api/counselor/list` → `{counselors, total}`: enabled counselors, keyword over name /
/// specialty / title, sorted by `rating` (default), `price`, `service_count` or `created_at`.
#[utoipa::path(
    get,
    path = "/api/counselor/list",
    tag = "counselors",
    summary = "Enabled counselors: keyword, sort, paging",
    params(CounselorListQuery),
    responses(
        (status = 200, description = "A page of counselors", body = Envelope<CounselorList>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn counselor_list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CounselorListQuery>,
) -> Reply<CounselorList> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    q.validate()?;
    let sort = match q.sort_by.as_str() {
        "price" => "c.price_fen",
        "service_count" => "service_count",
        "created_at" => "c.created_at",
        _ => "c.rating",
    };
    let order = match q.sort_order.as_str() {
        "asc" => "ASC",
        _ => "DESC",
    };
    let pattern = format!(
        "%{}%",
        q.keyword
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let filter = "c.status = 1 AND ($1 = '%%' OR c.name ILIKE $1 OR c.specialty ILIKE $1 OR c.title ILIKE $1)";
    let rows = sqlx::query(&format!(
        "SELECT {COUNSELOR_COLUMNS} FROM counselors c WHERE {filter} ORDER BY {sort} {order}, c.id LIMIT $2 OFFSET $3"
    ))
    .bind(&pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM counselors c WHERE {filter}"))
            .bind(&pattern)
            .fetch_one(&state.db)
            .await?;
    let counselors = rows.iter().map(Counselor::from_row).collect();
    Ok(reply(CounselorList { counselors, total }))
}

/// `GET /api/counselor/:id` → the counselor; 404 when unknown.
#[utoipa::path(
    get,
    path = "/api/counselor/{id}",
    tag = "counselors",
    summary = "A counselor",
    params(("id" = i64, Path, description = "The counselor's id")),
    responses(
        (status = 200, description = "The counselor", body = Envelope<Counselor>),
        (status = 404, description = "No such counselor", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn counselor_detail(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Reply<Counselor> {
    let row = sqlx::query(&format!(
        "SELECT {COUNSELOR_COLUMNS} FROM counselors c WHERE c.id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("counselor"))?;
    Ok(reply(Counselor::from_row(&row)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal_of(req: &impl Validate) -> ApiError {
        ApiError::from(req.validate().unwrap_err())
    }

    #[test]
    fn a_rule_refuses_with_the_message_the_handler_used_to_write() {
        let req = |username: &str, password: &str, email: &str, phone: &str| RegisterRequest {
            username: username.into(),
            password: password.into(),
            email: email.into(),
            phone: phone.into(),
        };
        assert!(req("alice", "secret123", "", "").validate().is_ok());
        assert_eq!(
            refusal_of(&req("ab", "secret123", "", "")).msg,
            "username: 3 to 50 characters, no surrounding spaces"
        );
        assert_eq!(
            refusal_of(&req(" alice", "secret123", "", "")).msg,
            "username: no surrounding spaces"
        );
        assert_eq!(
            refusal_of(&req("alice", "12345", "", "")).msg,
            "password: 6 to 128 characters"
        );
        assert_eq!(
            refusal_of(&req("alice", "secret123", "nope", "")).msg,
            "email: not an email address"
        );
        assert_eq!(
            refusal_of(&req("alice", "secret123", "", "123")).msg,
            "phone: must be 11 digits"
        );
        let e = refusal_of(&req("ab", "1", "", ""));
        assert_eq!(e.errors.len(), 2, "every invalid field is named");
    }
}
