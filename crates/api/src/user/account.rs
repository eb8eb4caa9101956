//! The account side of the user API: refresh tokens (rotated on use, revocable),
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
use axum::Json;
use chrono::{DateTime, Utc};
use domain::{Payment, PaymentCommand};
use eventstore::Actor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::{refusal, Problem};
use web::money::{positive_fen, yuan_f64};

use crate::auth::{hash_password, verify_password, KIND_USER};
use crate::user::config::UserApi;
use crate::user::orders::placement::request_meta;
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiQuery, ApiResult, AppState, AuthUser};

/// A password: 6 characters at least, 128 bytes at most.
pub(crate) fn password_rule(password: &str) -> Result<(), ValidationError> {
    // Characters, as the documents' `minLength`/`maxLength` count them (argon2 takes any length).
    if !(6..=128).contains(&password.chars().count()) {
        return Err(refusal("length", "6 to 128 characters"));
    }
    Ok(())
}

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(profile))
        .routes(routes!(password))
        .routes(routes!(recharge))
        .routes(routes!(transactions))
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
/// One of the two is required; `refresh_token` wins when both are sent.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RefreshRequest {
    /// The refresh token (`rt_…`).
    #[serde(default)]
    pub refresh_token: String,
    /// The same, under contract b.1 #5's name.
    #[serde(default)]
    pub token: String,
}

/// A fresh token pair.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPair {
    /// The access token (JWT).
    pub token: String,
    /// The refresh token that replaces the presented one.
    pub refresh_token: String,
    /// The access token's lifetime, seconds.
    pub expires_in: i64,
}

/// `POST /api/token/refresh` → `{token, refresh_token, expires_in}`. The presented refresh token
/// is revoked (rotation); 401 for an unknown, expired or revoked one (a revoked one also revokes
/// its family), 403 for a disabled account.
#[utoipa::path(
    post,
    path = "/api/token/refresh",
    tag = "auth",
    summary = "Rotate a refresh token: the presented one is revoked",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "A fresh pair", body = Envelope<TokenPair>),
        (status = 422, description = "No refresh token (neither `refresh_token` nor `token`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, expired or revoked refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account is disabled", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    ApiJson(req): ApiJson<RefreshRequest>,
) -> Reply<TokenPair> {
    let presented = if req.refresh_token.is_empty() {
        req.token
    } else {
        req.refresh_token
    };
    if presented.is_empty() {
        // One of two fields is required: a rule across fields.
        return Err(ApiError::unprocessable(
            "refresh_token",
            "required (or `token`)",
        ));
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
    Ok(reply(TokenPair {
        token,
        refresh_token: next,
        expires_in: state.jwt.ttl_seconds,
    }))
}

/// `POST /api/logout` → none: revokes the presented access token and every refresh token of the
/// caller.
#[utoipa::path(
    post,
    path = "/api/logout",
    tag = "auth",
    summary = "Revoke the access token and every refresh token",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "`{code: 200, msg: \"logged out\"}`", body = Message),
    )
)]
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Message>> {
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
    Ok(message("logged out"))
}

/// `PUT /api/user/profile` body (contract b.1 #7): empty strings leave a field unchanged.
/// At least one must be non-empty.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct ProfileRequest {
    /// An email address (one `@`, a dotted domain, no spaces, at most 254 characters), or empty.
    #[serde(default)]
    #[schema(
        max_length = 254,
        pattern = r"^(?:|[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*)$"
    )]
    #[validate(custom(function = "email_rule"))]
    pub email: String,
    /// A mainland mobile number (`1[3-9]` and 9 digits), or empty.
    #[serde(default)]
    #[schema(pattern = "^(1[3-9][0-9]{9})?$")]
    #[validate(custom(function = "phone_rule"))]
    pub phone: String,
    /// The avatar's URL, at most 500 bytes, or empty.
    #[serde(default)]
    #[schema(max_length = 500)]
    #[validate(custom(function = "avatar_rule"))]
    pub avatar: String,
}

fn email_rule(email: &str) -> Result<(), ValidationError> {
    if email.is_empty() || check_email("email", email).is_ok() {
        return Ok(());
    }
    Err(refusal("email", "not an email address"))
}

fn phone_rule(phone: &str) -> Result<(), ValidationError> {
    if phone.is_empty() || check_phone("phone", phone).is_ok() {
        return Ok(());
    }
    Err(refusal(
        "phone",
        "must be a mobile number (1[3-9] and 9 digits)",
    ))
}

fn avatar_rule(avatar: &str) -> Result<(), ValidationError> {
    if avatar.len() > 500 {
        return Err(refusal("length", "at most 500 characters"));
    }
    Ok(())
}

/// An email address as the documents state it (`pattern` of every email field, checked equal by
/// a test; empty allowed there): one `@` after at least one character, a domain with a `.`, no
/// white space (Unicode White_Space, as `char::is_whitespace`). [`check_email`] is this rule.
pub const EMAIL_PATTERN: &str = r"^(?:|[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*)$";

/// Checks an email address's shape (one `@`, a dotted domain, no white space, ≤ 254
/// characters): [`EMAIL_PATTERN`] for a non-empty address.
///
/// # Errors
/// 400 naming `field`.
pub fn check_email(field: &str, email: &str) -> Result<(), ApiError> {
    let (local, domain) = email.split_once('@').unwrap_or(("", ""));
    if local.is_empty()
        || domain.is_empty()
        || !domain.contains('.')
        || domain.contains('@')
        || email.chars().count() > 254
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

/// `PUT /api/user/profile` → none; 422 when every field is empty, 400 when one is malformed.
#[utoipa::path(
    put,
    path = "/api/user/profile",
    tag = "user",
    summary = "Update email / phone / avatar (empty = unchanged)",
    security(("bearer" = [])),
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "`{code: 200, msg: \"profile updated\"}`", body = Message),
        (status = 400, description = "Nothing to update, or a field is malformed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn profile(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(req): ApiJson<ProfileRequest>,
) -> ApiResult<Json<Message>> {
    if req.email.is_empty() && req.phone.is_empty() && req.avatar.is_empty() {
        return Err(ApiError::refused(
            "nothing to update: email, phone or avatar",
        ));
    }
    req.validate()?;
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
    Ok(message("profile updated"))
}

/// `POST /api/user/password` body (contract b.1 #8).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct PasswordRequest {
    /// The current password.
    #[validate(length(min = 1, message = "required"))]
    pub old_password: String,
    /// 6 characters to 128 bytes.
    #[schema(min_length = 6, max_length = 128)]
    #[validate(custom(function = "password_rule"))]
    pub new_password: String,
}

/// The pair that replaces every earlier token of the caller.
#[derive(Debug, Serialize, ToSchema)]
pub struct PasswordChanged {
    /// A fresh access token (JWT).
    pub token: String,
    /// A fresh refresh token.
    pub refresh_token: String,
}

/// `POST /api/user/password` → `{token, refresh_token}`: every earlier token of the caller is
/// revoked, a fresh pair is returned. 400 naming `old_password` when it is wrong.
#[utoipa::path(
    post,
    path = "/api/user/password",
    tag = "user",
    summary = "Change password: earlier tokens are revoked, a fresh pair returned",
    security(("bearer" = [])),
    request_body = PasswordRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<PasswordChanged>),
        (status = 400, description = "A field is invalid or the old password is wrong", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn password(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    user: AuthUser,
    ApiJson(req): ApiJson<PasswordRequest>,
) -> Reply<PasswordChanged> {
    req.validate()?;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user.user_id)
        .fetch_one(&state.db)
        .await?;
    if !verify_password(&req.old_password, &hash).await {
        // Of the documented shape, refused by the stored password.
        return Err(ApiError::unprocessable("old_password", "wrong password"));
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
    Ok(reply(PasswordChanged {
        token,
        refresh_token: refresh,
    }))
}

/// A trade type: `NATIVE`, `H5`, `JSAPI` or `APP` (empty: `NATIVE` where a default applies).
pub(crate) fn trade_type_rule(trade_type: &str) -> Result<(), ValidationError> {
    if matches!(trade_type, "" | "NATIVE" | "H5" | "JSAPI" | "APP") {
        return Ok(());
    }
    Err(refusal("trade_type", "one of NATIVE, H5, JSAPI, APP"))
}

/// A positive yuan amount with two decimals at most (what [`positive_fen`] accepts).
pub(crate) fn yuan_rule(amount: f64) -> Result<(), ValidationError> {
    match positive_fen("amount", amount) {
        Ok(_) => Ok(()),
        Err(e) => Err(ValidationError::new("amount").with_message(
            e.errors
                .first()
                .map(|f| f.message.clone())
                .unwrap_or(e.msg)
                .into(),
        )),
    }
}

/// The most one recharge may add, fen (50 000 yuan).
pub const MAX_RECHARGE_FEN: i64 = 5_000_000;

fn recharge_amount_rule(amount: f64) -> Result<(), ValidationError> {
    yuan_rule(amount)?;
    if positive_fen("amount", amount).is_ok_and(|fen| fen > MAX_RECHARGE_FEN) {
        return Err(refusal("range", "at most 50000 yuan per recharge"));
    }
    Ok(())
}

/// `POST /api/user/recharge` body: `amount` in yuan (> 0, two decimals at most, ≤ 50 000), and
/// the provider (`sandbox` default, `wechat`, `alipay`).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct RechargeRequest {
    /// Yuan: greater than 0, at most 50 000, two decimals at most.
    #[schema(minimum = 0.01, maximum = 50000, multiple_of = 0.01, example = 100.5)]
    #[validate(custom(function = "recharge_amount_rule"))]
    pub amount: f64,
    /// `sandbox` (default when empty), `wechat` or `alipay`, as offered by this server.
    #[serde(default)]
    #[schema(pattern = "^(sandbox|wechat|alipay)?$")]
    pub payment_method: String,
    /// `NATIVE` (default when empty), `H5`, `JSAPI` or `APP`.
    #[serde(default)]
    #[schema(pattern = "^(NATIVE|H5|JSAPI|APP)?$")]
    #[validate(custom(function = "trade_type_rule"))]
    pub trade_type: String,
}

/// A recharge payment, to be paid at `pay_url`; the wallet is credited when it is captured.
#[derive(Debug, Serialize, ToSchema)]
pub struct Recharge {
    pub payment_id: i64,
    pub payment_no: String,
    /// Yuan.
    pub amount: f64,
    /// Fen.
    pub amount_fen: i64,
    /// Where the payer pays (the provider's cashier).
    pub pay_url: String,
    pub trade_type: String,
    /// The wallet's balance now (before this recharge is paid), yuan.
    pub balance: f64,
    /// The same, fen.
    pub balance_fen: i64,
}

/// `POST /api/user/recharge` → `{payment_id, payment_no, amount, pay_url, balance}`: a recharge
/// goes through a payment (the intended behaviour; Go credited for free). The wallet is
/// credited once the provider confirms the payment (process manager: `RechargeCaptured` →
/// `UserWallet::Credit`); `balance` is the balance now, before that.
#[utoipa::path(
    post,
    path = "/api/user/recharge",
    tag = "user",
    summary = "Recharge the wallet through a payment (credited when captured)",
    security(("bearer" = [])),
    request_body = RechargeRequest,
    responses(
        (status = 200, description = "The recharge payment", body = Envelope<Recharge>),
        (status = 400, description = "A field is invalid, or the method is not offered", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn recharge(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RechargeRequest>,
) -> Reply<Recharge> {
    req.validate()?;
    let amount = positive_fen("amount", req.amount)?;
    let method = if req.payment_method.is_empty() {
        "sandbox".to_string()
    } else {
        req.payment_method
    };
    crate::user::payments::checkout::check_method(Some(&api), &method)?;
    let trade_type = if req.trade_type.is_empty() {
        "NATIVE".to_string()
    } else {
        req.trade_type
    };
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
    Ok(reply(Recharge {
        payment_id: id,
        pay_url: format!("{}/sandbox/cashier/{payment_no}", state.settings.public_url),
        payment_no,
        amount: yuan_f64(amount),
        amount_fen: amount,
        trade_type,
        balance: yuan_f64(balance),
        balance_fen: balance,
    }))
}

/// The `type` filter: empty or one of `recharge`, `consume`, `refund`. (A rule of the derive
/// would name the field `r#type`, its Rust spelling, so this one is checked by hand.)
fn check_transaction_type(kind: &str) -> ApiResult<()> {
    if matches!(kind, "" | "recharge" | "consume" | "refund") {
        return Ok(());
    }
    Err(ApiError::field("type", "one of recharge, consume, refund"))
}

/// `GET /api/user/transactions` query; every parameter may be empty.
#[web::limits]
#[derive(Debug, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 20).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// `recharge`, `consume` or `refund`; empty: all.
    #[serde(default)]
    #[param(pattern = "^(recharge|consume|refund)?$")]
    pub r#type: String,
}

/// One movement of the caller's wallet.
#[derive(Debug, Serialize, ToSchema)]
pub struct WalletTransaction {
    /// Stable id: the movement's log position × 1024 + its index in the commit.
    pub id: i64,
    pub user_id: i64,
    /// `recharge`, `consume` or `refund`.
    pub r#type: String,
    /// Yuan (signed: negative for money going out).
    pub amount: f64,
    /// Fen.
    pub amount_fen: i64,
    /// The balance after this movement, yuan.
    pub balance: f64,
    pub description: String,
    /// The order it concerns, `null` for none.
    pub order_id: Option<i64>,
    /// RFC 3339.
    pub created_at: DateTime<Utc>,
}

/// A page of wallet movements.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransactionList {
    /// Newest first.
    pub transactions: Vec<WalletTransaction>,
    /// Matching movements in all pages.
    pub total: i64,
}

/// `GET /api/user/transactions` → `{transactions: [{id, user_id, type, amount, description,
/// order_id, balance, created_at}], total}`, newest first; `type` filters (`recharge`,
/// `consume`, `refund`).
#[utoipa::path(
    get,
    path = "/api/user/transactions",
    tag = "user",
    summary = "Wallet transactions, newest first",
    security(("bearer" = [])),
    params(TransactionsQuery),
    responses(
        (status = 200, description = "A page of movements", body = Envelope<TransactionList>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn transactions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<TransactionsQuery>,
) -> Reply<TransactionList> {
    validator::Validate::validate(&q)?;
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    check_transaction_type(&q.r#type)?;
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
    let transactions = rows
        .iter()
        .map(|r| {
            let seq: i64 = r.get("stream_seq");
            let idx: i32 = r.get("idx");
            WalletTransaction {
                id: seq * 1024 + i64::from(idx),
                user_id: r.get("user_id"),
                r#type: r.get("type"),
                amount: yuan_f64(r.get("amount_fen")),
                amount_fen: r.get("amount_fen"),
                balance: yuan_f64(r.get("balance_fen")),
                description: r.get("description"),
                order_id: r.get("order_id"),
                created_at: r.get("created_at"),
            }
        })
        .collect();
    Ok(reply(TransactionList {
        transactions,
        total,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_email_pattern_is_the_rule_checked() {
        let re = regex::Regex::new(EMAIL_PATTERN).unwrap();
        for email in [
            "a@b.c",
            "陈@例子.中国",
            "a@b@c.d",
            "@b.c",
            "a@bc",
            "a@.",
            "a b@c.d",
            "a@c.d\u{3000}",
            "a\u{1c}@c.d",
            "a@c.d\n",
        ] {
            assert_eq!(
                re.is_match(email),
                check_email("email", email).is_ok(),
                "{email:?}"
            );
        }
        let doc = serde_json::to_value(crate::user::openapi::document(true)).unwrap();
        let mut documented = 0;
        for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
            if let Some(pattern) = schema["properties"]["email"]["pattern"].as_str() {
                assert_eq!(pattern, EMAIL_PATTERN, "{name}.email");
                documented += 1;
            }
        }
        assert!(
            documented >= 3,
            "{documented} email fields state the pattern"
        );
    }
}
