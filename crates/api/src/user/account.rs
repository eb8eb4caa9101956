//! The account side of the user API (issue 3): refresh tokens (rotated on use, revocable),
//! logout, profile, password change, wallet recharge through a payment, and the wallet's
//! transactions.
//!
//! Refresh tokens are random 256-bit strings; only their SHA-256 is stored (`refresh_tokens`).
//! Using one revokes it and issues a successor in the same family; presenting a revoked one
//! again (a stolen token replayed) revokes the whole family. Logout revokes the access token
//! (`revoked_tokens`, by `jti`) and every refresh token of the user; a password change revokes
//! every token issued before it (`users.tokens_valid_after`) and returns a fresh pair.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use domain::{Payment, PaymentCommand};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::sync::Arc;

use crate::auth::{hash_password, verify_password, KIND_USER};
use crate::money::{positive_fen, yuan};
use crate::user::config::UserApi;
use crate::user::orders::placement::request_meta;
use crate::{ok, paging, ApiError, ApiJson, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/token/refresh", post(refresh))
        .route("/api/logout", post(logout))
        .route("/api/user/profile", put(profile))
        .route("/api/user/password", post(password))
        .route("/api/user/recharge", post(recharge))
        .route("/api/user/transactions", get(transactions))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Issues a refresh token for `user_id` in `family` (a new family when `None`) and stores its
/// hash. Returns the token.
///
/// # Errors
/// Database errors.
pub async fn issue_refresh(
    db: &sqlx::PgPool,
    user_id: i64,
    family: Option<String>,
    ttl_seconds: i64,
) -> Result<String, ApiError> {
    let token = format!(
        "rt_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(sha256_hex(&token))
    .bind(user_id)
    .bind(family.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))
    .bind(ttl_seconds as f64)
    .execute(db)
    .await?;
    Ok(token)
}

/// `POST /api/token/refresh` body: the refresh token, as `refresh_token` or (contract b.1 #5)
/// `token`.
#[derive(Debug, Deserialize)]
pub struct RefreshRequest {
    #[serde(default)]
    pub refresh_token: String,
    #[serde(default)]
    pub token: String,
}

/// `POST /api/token/refresh` → `{token, refresh_token, expires_in}`. The presented refresh token
/// is revoked (rotation); 401 for an unknown, expired or revoked one (a revoked one also revokes
/// its family), 403 for a disabled account.
pub async fn refresh(
    State(state): State<AppState>,
    Extension(api): Extension<Arc<UserApi>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> ApiResult<Json<Value>> {
    let presented = if req.refresh_token.is_empty() {
        req.token
    } else {
        req.refresh_token
    };
    if presented.is_empty() {
        return Err(ApiError::field("refresh_token", "required"));
    }
    let hash = sha256_hex(&presented);
    let mut tx = state.db.begin().await?;
    let row = sqlx::query(
        "SELECT r.user_id, r.family, r.expires_at, r.revoked_at, u.username, u.status \
         FROM refresh_tokens r JOIN users u ON u.id = r.user_id \
         WHERE r.token_hash = $1 FOR UPDATE OF r",
    )
    .bind(&hash)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::unauthorized("invalid refresh token"))?;
    let user_id: i64 = row.get("user_id");
    let family: String = row.get("family");
    if row.get::<Option<DateTime<Utc>>, _>("revoked_at").is_some() {
        // Re-use of a rotated or revoked token: revoke the whole family.
        sqlx::query(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL",
        )
        .bind(&family)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Err(ApiError::unauthorized("refresh token revoked"));
    }
    if row.get::<DateTime<Utc>, _>("expires_at") <= Utc::now() {
        return Err(ApiError::unauthorized("refresh token expired"));
    }
    if row.get::<i16, _>("status") != 1 {
        return Err(ApiError::forbidden("account disabled"));
    }
    let username: String = row.get("username");
    let next = format!(
        "rt_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    sqlx::query(
        "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(sha256_hex(&next))
    .bind(user_id)
    .bind(&family)
    .bind(api.config.refresh_ttl_seconds as f64)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now(), replaced_by = $2 WHERE token_hash = $1",
    )
    .bind(&hash)
    .bind(sha256_hex(&next))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let token = state.jwt.issue(user_id, &username, KIND_USER)?;
    Ok(ok(json!({
        "token": token,
        "refresh_token": next,
        "expires_in": state.jwt.ttl_seconds,
    })))
}

/// `POST /api/logout` → none: revokes the presented access token and every refresh token of the
/// caller.
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, to_timestamp($2)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&user.jti)
    .bind(user.expires_at as f64)
    .execute(&state.db)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    state
        .tokens
        .revoke_everywhere(
            &state.nats,
            &crate::auth::Revoked {
                user_id: Some(user.user_id),
                jti: Some(user.jti.clone()),
            },
        )
        .await;
    Ok(crate::ok_msg("logged out"))
}

/// `PUT /api/user/profile` body (contract b.1 #7): empty strings leave a field unchanged.
#[derive(Debug, Deserialize)]
pub struct ProfileRequest {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
    #[serde(default)]
    pub avatar: String,
}

/// Checks an email address's shape (one `@`, a dotted domain, ≤ 254 bytes).
///
/// # Errors
/// 400 naming `field`.
pub fn check_email(field: &str, email: &str) -> Result<(), ApiError> {
    let (local, domain) = email.split_once('@').unwrap_or(("", ""));
    if local.is_empty()
        || domain.is_empty()
        || !domain.contains('.')
        || domain.contains('@')
        || email.len() > 254
        || email.chars().any(char::is_whitespace)
    {
        return Err(ApiError::field(field, "not an email address"));
    }
    Ok(())
}

/// Checks a mainland mobile number: `^1[3-9]\d{9}$` (the web client's rule).
///
/// # Errors
/// 400 naming `field`.
pub fn check_phone(field: &str, phone: &str) -> Result<(), ApiError> {
    let b = phone.as_bytes();
    if b.len() != 11
        || b[0] != b'1'
        || !(b'3'..=b'9').contains(&b[1])
        || !b.iter().all(u8::is_ascii_digit)
    {
        return Err(ApiError::field(
            field,
            "must be a mobile number (1[3-9] and 9 digits)",
        ));
    }
    Ok(())
}

/// `PUT /api/user/profile` → none; 400 when every field is empty or one is malformed.
pub async fn profile(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<ProfileRequest>,
) -> ApiResult<Json<Value>> {
    if req.email.is_empty() && req.phone.is_empty() && req.avatar.is_empty() {
        return Err(ApiError::bad_request(
            "nothing to update: email, phone or avatar",
        ));
    }
    if !req.email.is_empty() {
        check_email("email", &req.email)?;
    }
    if !req.phone.is_empty() {
        check_phone("phone", &req.phone)?;
    }
    if req.avatar.len() > 500 {
        return Err(ApiError::field("avatar", "at most 500 characters"));
    }
    sqlx::query(
        "UPDATE users SET email = COALESCE(NULLIF($2, ''), email), phone = COALESCE(NULLIF($3, ''), phone), \
         avatar = COALESCE(NULLIF($4, ''), avatar), updated_at = now() WHERE id = $1",
    )
    .bind(user.user_id)
    .bind(&req.email)
    .bind(&req.phone)
    .bind(&req.avatar)
    .execute(&state.db)
    .await?;
    Ok(crate::ok_msg("profile updated"))
}

/// `POST /api/user/password` body (contract b.1 #8).
#[derive(Debug, Deserialize)]
pub struct PasswordRequest {
    pub old_password: String,
    pub new_password: String,
}

/// `POST /api/user/password` → `{token, refresh_token}`: every earlier token of the caller is
/// revoked, a fresh pair is returned. 400 naming `old_password` when it is wrong.
pub async fn password(
    State(state): State<AppState>,
    Extension(api): Extension<Arc<UserApi>>,
    user: AuthUser,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> ApiResult<Json<Value>> {
    if req.old_password.is_empty() {
        return Err(ApiError::field("old_password", "required"));
    }
    if req.new_password.chars().count() < 6 || req.new_password.len() > 128 {
        return Err(ApiError::field("new_password", "6 to 128 characters"));
    }
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user.user_id)
        .fetch_one(&state.db)
        .await?;
    if !verify_password(&req.old_password, &hash).await {
        return Err(ApiError::field("old_password", "wrong password"));
    }
    let new_hash = hash_password(&req.new_password).await?;
    // Tokens carry `iat` in whole seconds: every token issued at or before this second is
    // revoked, and the fresh one is issued a second later.
    let cutoff: i64 = sqlx::query_scalar(
        "UPDATE users SET password_hash = $2, updated_at = now(), \
         tokens_valid_after = to_timestamp(floor(extract(epoch FROM now()))) \
         WHERE id = $1 RETURNING extract(epoch FROM tokens_valid_after)::bigint",
    )
    .bind(user.user_id)
    .bind(new_hash)
    .fetch_one(&state.db)
    .await?;
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    state
        .tokens
        .revoke_everywhere(
            &state.nats,
            &crate::auth::Revoked {
                user_id: Some(user.user_id),
                jti: None,
            },
        )
        .await;
    let token = state
        .jwt
        .issue_at(user.user_id, &user.username, KIND_USER, cutoff + 1)?;
    let refresh = issue_refresh(
        &state.db,
        user.user_id,
        None,
        api.config.refresh_ttl_seconds,
    )
    .await?;
    Ok(ok(json!({ "token": token, "refresh_token": refresh })))
}

/// `POST /api/user/recharge` body: `amount` in yuan (> 0, two decimals at most, ≤ 50 000), and
/// the provider (`sandbox` default, `wechat`, `alipay`).
#[derive(Debug, Deserialize)]
pub struct RechargeRequest {
    pub amount: f64,
    #[serde(default)]
    pub payment_method: String,
    #[serde(default)]
    pub trade_type: String,
}

/// `POST /api/user/recharge` → `{payment_id, payment_no, amount, pay_url, balance}`: a recharge
/// goes through a payment (the intended behaviour; Go credited for free). The wallet is
/// credited once the provider confirms the payment (process manager: `RechargeCaptured` →
/// `UserWallet::Credit`); `balance` is the balance now, before that.
pub async fn recharge(
    State(state): State<AppState>,
    api: Option<axum::Extension<std::sync::Arc<crate::user::config::UserApi>>>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RechargeRequest>,
) -> ApiResult<Json<Value>> {
    let amount = positive_fen("amount", req.amount)?;
    if amount > 5_000_000 {
        return Err(ApiError::field("amount", "at most 50000 yuan per recharge"));
    }
    let method = if req.payment_method.is_empty() {
        "sandbox".to_string()
    } else {
        req.payment_method
    };
    crate::user::payments::checkout::check_method(api.as_ref().map(|e| &e.0), &method)?;
    let trade_type = if req.trade_type.is_empty() {
        "NATIVE".to_string()
    } else {
        req.trade_type
    };
    if !matches!(trade_type.as_str(), "NATIVE" | "H5" | "JSAPI" | "APP") {
        return Err(ApiError::field(
            "trade_type",
            "one of NATIVE, H5, JSAPI, APP",
        ));
    }
    let id = state
        .ids
        .next(&state.db, crate::app::ids::IdSequence::Payments)
        .await?;
    let now = Utc::now();
    let payment_no = format!("PAY{}{id}", now.timestamp_nanos_opt().unwrap_or_default());
    let command = PaymentCommand::CreateRecharge {
        payment_no: payment_no.clone(),
        user_id: user.user_id,
        amount,
        method,
        trade_type: trade_type.clone(),
        created_at: now,
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute_new::<Payment>(&id.to_string(), command, &meta)
        .await?;
    state.settle("payments", committed.stream_sequence).await;
    let id: i64 = committed.aggregate_id.parse().unwrap_or(id);
    let payment_no = match committed.events.first() {
        Some(domain::PaymentEvent::RechargePaymentCreated { payment_no, .. }) => payment_no.clone(),
        _ => payment_no,
    };
    let balance = crate::app::ledger_reads::user_balance(&state.db, user.user_id).await?;
    Ok(ok(json!({
        "payment_id": id,
        "payment_no": payment_no,
        "amount": yuan(amount),
        "amount_fen": amount,
        "pay_url": format!("{}/sandbox/cashier/{payment_no}", state.settings.public_url),
        "trade_type": trade_type,
        "balance": yuan(balance),
        "balance_fen": balance,
    })))
}

/// `GET /api/user/transactions` query.
#[derive(Debug, Deserialize)]
pub struct TransactionsQuery {
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page_size: Option<i64>,
    #[serde(default)]
    pub r#type: String,
}

/// `GET /api/user/transactions` → `{transactions: [{id, user_id, type, amount, description,
/// order_id, balance, created_at}], total}`, newest first; `type` filters (`recharge`,
/// `consume`, `refund`).
pub async fn transactions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<TransactionsQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    if !matches!(q.r#type.as_str(), "" | "recharge" | "consume" | "refund") {
        return Err(ApiError::field("type", "one of recharge, consume, refund"));
    }
    let rows = sqlx::query(
        "SELECT * FROM wallet_transactions WHERE user_id = $1 AND ($2 = '' OR type = $2) \
         ORDER BY stream_seq DESC, idx DESC LIMIT $3 OFFSET $4",
    )
    .bind(user.user_id)
    .bind(&q.r#type)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM wallet_transactions WHERE user_id = $1 AND ($2 = '' OR type = $2)",
    )
    .bind(user.user_id)
    .bind(&q.r#type)
    .fetch_one(&state.db)
    .await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            let seq: i64 = r.get("stream_seq");
            let idx: i32 = r.get("idx");
            json!({
                "id": seq * 1024 + i64::from(idx),
                "user_id": r.get::<i64, _>("user_id"),
                "type": r.get::<String, _>("type"),
                "amount": yuan(r.get("amount_fen")),
                "amount_fen": r.get::<i64, _>("amount_fen"),
                "balance": yuan(r.get("balance_fen")),
                "description": r.get::<String, _>("description"),
                "order_id": r.get::<Option<i64>, _>("order_id"),
                "created_at": r.get::<DateTime<Utc>, _>("created_at"),
            })
        })
        .collect();
    Ok(ok(json!({ "transactions": list, "total": total })))
}
