//! Accounts and counselors: register, login, user info, the counselor list and detail.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::auth::{hash_password, verify_password, KIND_USER};
use crate::money::yuan;
use crate::{ok, paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/register", post(register))
        .route("/api/login", post(login))
        .route("/api/user/info", get(user_info))
        .route("/api/counselor/list", get(counselor_list))
        .route("/api/counselor/{id}", get(counselor_detail))
}

/// `POST /api/register` body (contract b.1 #3).
#[derive(Debug, Deserialize)]
pub struct RegisterRequest {
    pub username: String,
    pub password: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
}

fn validate_register(r: &RegisterRequest) -> Result<(), ApiError> {
    let len = r.username.chars().count();
    if !(3..=50).contains(&len) || r.username.trim() != r.username {
        return Err(ApiError::field(
            "username",
            "3 to 50 characters, no surrounding spaces",
        ));
    }
    if r.password.chars().count() < 6 || r.password.len() > 128 {
        return Err(ApiError::field("password", "6 to 128 characters"));
    }
    if !r.email.is_empty() {
        let (local, domain) = r.email.split_once('@').unwrap_or(("", ""));
        if local.is_empty() || !domain.contains('.') || r.email.len() > 254 {
            return Err(ApiError::field("email", "not an email address"));
        }
    }
    if !r.phone.is_empty() && (r.phone.len() != 11 || !r.phone.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(ApiError::field("phone", "must be 11 digits"));
    }
    Ok(())
}

/// `POST /api/register` → `{user_id, username}`; 400 when the username is taken.
pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Json<Value>> {
    validate_register(&req)?;
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
    let id = id.ok_or_else(|| ApiError::field("username", "already taken"))?;
    Ok(ok(json!({ "user_id": id, "username": req.username })))
}

/// `POST /api/login` body.
#[derive(Debug, Deserialize)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// `POST /api/login` → `{token, user: {user_id, username, email, is_counselor, counselor_id}}`;
/// 401 on bad credentials, 403 for a disabled account. A counselor logs in here too.
///
/// Rate-limited per username and per client IP (issue 3; governor GCRA, 429 with
/// `Retry-After`), and answers a `refresh_token` beside the access token.
pub async fn login(
    State(state): State<AppState>,
    axum::Extension(api): axum::Extension<std::sync::Arc<crate::user::config::UserApi>>,
    client: web::auth::ClientIp,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<Value>> {
    if req.username.is_empty() {
        return Err(ApiError::field("username", "required"));
    }
    if req.password.is_empty() {
        return Err(ApiError::field("password", "required"));
    }
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
    Ok(ok(json!({
        "token": token,
        "refresh_token": refresh_token,
        "expires_in": state.jwt.ttl_seconds,
        "user": {
            "user_id": id,
            "id": id,
            "username": req.username,
            "email": row.get::<String, _>("email"),
            "is_counselor": counselor_id.is_some(),
            "counselor_id": counselor_id,
        }
    })))
}

/// `GET /api/user/info` → `{id, user_id, username, email, phone, avatar, balance, balance_fen,
/// status, is_counselor, counselor_id}`; `balance` in yuan from the ledger (`user:<id>:balance`).
pub async fn user_info(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
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
    Ok(ok(json!({
        "id": user.user_id,
        "user_id": user.user_id,
        "username": row.get::<String, _>("username"),
        "email": row.get::<String, _>("email"),
        "phone": row.get::<String, _>("phone"),
        "avatar": row.get::<String, _>("avatar"),
        "status": row.get::<i16, _>("status"),
        "balance": yuan(balance),
        "balance_fen": balance,
        "is_counselor": counselor_id.is_some(),
        "counselor_id": counselor_id,
        "created_at": row.get::<chrono::DateTime<chrono::Utc>, _>("created_at"),
    })))
}

const COUNSELOR_COLUMNS: &str =
    "c.id, c.user_id, c.name, c.title, c.avatar, c.bio, c.specialty, c.price_fen, \
     c.years_exp, c.rating, c.status, c.created_at, c.updated_at, \
     (SELECT count(*) FROM orders o WHERE o.counselor_id = c.id AND o.status = 2) AS service_count, \
     (SELECT count(*) FROM reviews r WHERE r.counselor_id = c.id AND r.is_visible) AS review_count";

/// A counselor as the MyChat clients read it (contract b.2), `price` in yuan per minute.
pub fn counselor_json(row: &sqlx::postgres::PgRow) -> Value {
    let service_count: i64 = row.get("service_count");
    let rating: f64 = row.get("rating");
    let price: i64 = row.get("price_fen");
    json!({
        "id": row.get::<i64, _>("id"),
        "user_id": row.get::<Option<i64>, _>("user_id"),
        "name": row.get::<String, _>("name"),
        "title": row.get::<String, _>("title"),
        "avatar": row.get::<String, _>("avatar"),
        "bio": row.get::<String, _>("bio"),
        "specialty": row.get::<String, _>("specialty"),
        "price": yuan(price),
        "price_fen": price,
        "years_exp": row.get::<i32, _>("years_exp"),
        "rating": rating,
        "status": row.get::<i16, _>("status"),
        "service_count": service_count,
        "review_count": row.try_get::<i64, _>("review_count").unwrap_or(0),
        "is_recommended": rating >= 4.5 && service_count >= 5,
        "created_at": row.get::<chrono::DateTime<chrono::Utc>, _>("created_at"),
        "updated_at": row.get::<chrono::DateTime<chrono::Utc>, _>("updated_at"),
    })
}

/// `GET /api/counselor/list` query (contract b.1 #12).
#[derive(Debug, Deserialize)]
pub struct CounselorListQuery {
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page_size: Option<i64>,
    #[serde(default)]
    pub keyword: String,
    #[serde(default)]
    pub sort_by: String,
    #[serde(default)]
    pub sort_order: String,
}

/// `GET /api/counselor/list` → `{counselors, total}`: enabled counselors, keyword over name /
/// specialty / title, sorted by `rating` (default), `price`, `service_count` or `created_at`.
pub async fn counselor_list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<CounselorListQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    let sort = match q.sort_by.as_str() {
        "" | "rating" => "c.rating",
        "price" => "c.price_fen",
        "service_count" => "service_count",
        "created_at" => "c.created_at",
        _ => {
            return Err(ApiError::field(
                "sort_by",
                "one of rating, price, service_count, created_at",
            ))
        }
    };
    let order = match q.sort_order.as_str() {
        "" | "desc" => "DESC",
        "asc" => "ASC",
        _ => return Err(ApiError::field("sort_order", "asc or desc")),
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
    let counselors: Vec<Value> = rows.iter().map(counselor_json).collect();
    Ok(ok(json!({ "counselors": counselors, "total": total })))
}

/// `GET /api/counselor/:id` → the counselor; 404 when unknown.
pub async fn counselor_detail(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let row = sqlx::query(&format!(
        "SELECT {COUNSELOR_COLUMNS} FROM counselors c WHERE c.id = $1"
    ))
    .bind(id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("counselor"))?;
    Ok(ok(counselor_json(&row)))
}
