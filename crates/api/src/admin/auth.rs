//! The admin API (:8081): administrator login (under both of MyChat's paths) and its rate
//! limits.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::auth::{verify_password, KIND_ADMIN};
use crate::{ApiError, AppState};

/// An administrator login.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct AdminLogin {
    /// Login name.
    #[validate(length(min = 1, message = "required"))]
    pub username: String,
    /// Password.
    #[validate(length(min = 1, message = "required"))]
    pub password: String,
}

/// The logged-in administrator as the login answers it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoginAdministrator {
    /// Administrator id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Display name.
    pub real_name: String,
    /// E-mail address (may be empty).
    pub email: String,
    /// Phone number (may be empty).
    pub phone: String,
    /// Avatar URL (may be empty).
    pub avatar: String,
    /// Role code.
    pub role: String,
}

/// A successful login.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LoginAnswer {
    /// The admin token (JWT, `Authorization: Bearer …`).
    pub token: String,
    /// The administrator (the key MyChat's client reads).
    pub user: LoginAdministrator,
    /// The same administrator.
    pub admin: LoginAdministrator,
}

/// Checks the credentials and issues an admin token.
async fn log_in(
    state: &AppState,
    limiter: &AdminLoginLimiter,
    client: &web::auth::ClientIp,
    req: AdminLogin,
) -> Reply<LoginAnswer> {
    req.validate()?;
    limiter.0.check(&req.username, &client.0)?;
    let row = sqlx::query("SELECT * FROM administrators WHERE username = $1")
        .bind(&req.username)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::unauthorized("wrong username or password"))?;
    if !verify_password(&req.password, row.get("password_hash")).await {
        return Err(ApiError::unauthorized("wrong username or password"));
    }
    if row.get::<i16, _>("status") != 1 {
        return Err(ApiError::forbidden("administrator disabled"));
    }
    let id: i64 = row.get("id");
    sqlx::query("UPDATE administrators SET last_login = now() WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    let token = state.jwt.issue(id, &req.username, KIND_ADMIN)?;
    let admin = LoginAdministrator {
        id,
        username: req.username,
        real_name: row.get("real_name"),
        email: row.get("email"),
        phone: row.get("phone"),
        avatar: row.get("avatar"),
        role: row.get("role"),
    };
    Ok(reply(LoginAnswer {
        token,
        user: admin.clone(),
        admin,
    }))
}

/// Administrator login
///
/// Rate-limited per username and per client IP like the user login: 429 with the wait.
#[utoipa::path(post, path = "/api/admin/login", tag = "auth",
    request_body = AdminLogin,
    responses(
        (status = 200, description = "the token and the administrator", body = Envelope<LoginAnswer>),
        (status = 400, description = "a missing username or password", body = Problem),
        (status = 401, description = "wrong username or password", body = Problem),
        (status = 403, description = "administrator disabled", body = Problem),
        (status = 429, description = "too many attempts: wait", body = Problem)))]
pub async fn login(
    State(state): State<AppState>,
    State(limiter): State<AdminLoginLimiter>,
    client: web::auth::ClientIp,
    web::extract::Json(req): web::extract::Json<AdminLogin>,
) -> Reply<LoginAnswer> {
    log_in(&state, &limiter, &client, req).await
}

/// Administrator login (admin2)
///
/// The same as `POST /api/admin/login`.
#[utoipa::path(post, path = "/api/admin2/login", tag = "auth",
    request_body = AdminLogin,
    responses(
        (status = 200, description = "the token and the administrator", body = Envelope<LoginAnswer>),
        (status = 400, description = "a missing username or password", body = Problem),
        (status = 401, description = "wrong username or password", body = Problem),
        (status = 403, description = "administrator disabled", body = Problem),
        (status = 429, description = "too many attempts: wait", body = Problem)))]
pub async fn admin2_login(
    State(state): State<AppState>,
    State(limiter): State<AdminLoginLimiter>,
    client: web::auth::ClientIp,
    web::extract::Json(req): web::extract::Json<AdminLogin>,
) -> Reply<LoginAnswer> {
    log_in(&state, &limiter, &client, req).await
}

/// The admin login's rate limits (the user login's, [`web::auth::LoginLimiter`]), one set per
/// admin router.
#[derive(Clone)]
pub struct AdminLoginLimiter(pub std::sync::Arc<web::auth::LoginLimiter>);

impl AdminLoginLimiter {
    /// Limiters with `limits`.
    pub fn new(limits: web::auth::LoginLimits) -> Self {
        Self(std::sync::Arc::new(web::auth::LoginLimiter::new(limits)))
    }
}
