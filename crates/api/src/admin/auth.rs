//! The admin API (:8081): administrator login and the withdrawal review flow.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use domain::{AccountCommand, CounselorAccount};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::admin::common::Caller;
use crate::auth::{verify_password, KIND_ADMIN};
use crate::user::earnings::withdrawal_json;
use crate::user::orders::placement::request_meta;
use crate::{ok, ApiError, ApiJson, ApiPath, ApiResult, AppState};

/// The admin-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/admin/login", post(login))
        .route("/api/admin2/login", post(login))
        .route("/api/admin/withdraw/{id}/approve", post(approve))
        .route("/api/admin/withdraw/{id}/transfer", post(transfer))
}

/// `POST /api/admin/login` body.
#[derive(Debug, Deserialize)]
pub struct AdminLogin {
    pub username: String,
    pub password: String,
}

/// `POST /api/admin/login` (and `/api/admin2/login`) → `{token, user, admin}` with the
/// administrator `{id, username, real_name, email, phone, avatar, role}`; 401 / 403.
///
/// Rate-limited per username and per client IP like the user login (issue 8; the limiter is the
/// admin router's [`AdminLoginLimiter`]): 429 with the wait.
pub async fn login(
    State(state): State<AppState>,
    limiter: Option<axum::Extension<AdminLoginLimiter>>,
    client: web::auth::ClientIp,
    ApiJson(req): ApiJson<AdminLogin>,
) -> ApiResult<Json<Value>> {
    if req.username.is_empty() {
        return Err(ApiError::field("username", "required"));
    }
    if req.password.is_empty() {
        return Err(ApiError::field("password", "required"));
    }
    if let Some(axum::Extension(limiter)) = limiter {
        limiter.0.check(&req.username, &client.0)?;
    }
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
    let admin = json!({
        "id": id,
        "username": req.username,
        "real_name": row.get::<String, _>("real_name"),
        "email": row.get::<String, _>("email"),
        "phone": row.get::<String, _>("phone"),
        "avatar": row.get::<String, _>("avatar"),
        "role": row.get::<String, _>("role"),
    });
    Ok(ok(json!({ "token": token, "user": admin, "admin": admin })))
}

/// The counselor whose account holds withdrawal `id` (404 when unknown).
async fn withdrawal_owner(state: &AppState, id: i64) -> Result<i64, ApiError> {
    sqlx::query_scalar("SELECT counselor_id FROM withdrawals WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("withdrawal"))
}

async fn withdrawal_record(state: &AppState, id: i64) -> Result<Value, ApiError> {
    let row = sqlx::query("SELECT * FROM withdrawals WHERE id = $1")
        .bind(id)
        .fetch_one(&state.db)
        .await?;
    Ok(withdrawal_json(&row))
}

/// `POST /api/admin/withdraw/:id/approve` body: `{approved: true}` approves (0 → 1);
/// `{approved: false, rejected_reason}` rejects (0 → 2) and releases the funds. `approved: false`
/// is honoured (the old backend refused it).
#[derive(Debug, Deserialize)]
pub struct ApproveRequest {
    #[serde(default = "yes")]
    pub approved: bool,
    #[serde(default)]
    pub rejected_reason: String,
}

fn yes() -> bool {
    true
}

/// `POST /api/admin/withdraw/:id/approve` → the withdrawal record.
pub async fn approve(
    State(state): State<AppState>,
    admin: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    body: axum::body::Bytes,
) -> ApiResult<axum::response::Response> {
    // The body is optional: none means "approve".
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveRequest {
            approved: true,
            rejected_reason: String::new(),
        }
    } else {
        web::extract::parse_json::<ApproveRequest>(&body)?
    };
    if !req.approved && req.rejected_reason.trim().is_empty() {
        return Err(ApiError::field(
            "rejected_reason",
            "required when rejecting",
        ));
    }
    let counselor_id = withdrawal_owner(&state, id).await?;
    let command = if req.approved {
        AccountCommand::ApproveWithdrawal {
            withdrawal_id: id,
            admin_id: admin.admin_id,
            at: Utc::now(),
        }
    } else {
        AccountCommand::RejectWithdrawal {
            withdrawal_id: id,
            admin_id: admin.admin_id,
            reason: req.rejected_reason.trim().to_string(),
            at: Utc::now(),
        }
    };
    let meta = request_meta(&headers, Actor::admin(admin.admin_id));
    let committed = state
        .bus
        .execute::<CounselorAccount>(&counselor_id.to_string(), command, &meta)
        .await?;
    state.settle("withdrawals", committed.stream_sequence).await;
    // Issue 4: the audit row points at the committed event.
    Ok(crate::admin::common::with_event(
        ok(withdrawal_record(&state, id).await?),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
}

/// `POST /api/admin/withdraw/:id/transfer` → the withdrawal record; the withdrawal must be
/// approved (1 → 3).
pub async fn transfer(
    State(state): State<AppState>,
    admin: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<axum::response::Response> {
    let counselor_id = withdrawal_owner(&state, id).await?;
    let command = AccountCommand::TransferWithdrawal {
        withdrawal_id: id,
        admin_id: admin.admin_id,
        at: Utc::now(),
    };
    let meta = request_meta(&headers, Actor::admin(admin.admin_id));
    let committed = state
        .bus
        .execute::<CounselorAccount>(&counselor_id.to_string(), command, &meta)
        .await?;
    state.settle("withdrawals", committed.stream_sequence).await;
    // Issue 4: the audit row points at the committed event.
    Ok(crate::admin::common::with_event(
        ok(withdrawal_record(&state, id).await?),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
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
