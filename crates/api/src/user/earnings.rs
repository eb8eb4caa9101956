//! The counselor's money (seed 001): the account, withdrawal requests and their list.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{AccountCommand, CounselorAccount};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::money::{positive_fen, yuan};
use crate::user::orders::placement::request_meta;
use crate::{ok, paging, ApiError, ApiJson, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat/counselor/account", get(account))
        .route("/api/chat/counselor/withdraw", post(withdraw))
        .route("/api/chat/counselor/withdraws", get(withdraws))
}

/// The counselor id of the calling user; 403 when the caller is not a counselor.
pub async fn caller_counselor(state: &AppState, user: &AuthUser) -> Result<i64, ApiError> {
    sqlx::query_scalar("SELECT id FROM counselors WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::forbidden("not a counselor"))
}

/// A counselor account (contract c.9), amounts in yuan with `_fen` twins, read from the ledger
/// ([`crate::app::ledger_reads::counselor_account`]).
pub async fn account_json(state: &AppState, counselor_id: i64) -> Result<Value, ApiError> {
    let a = crate::app::ledger_reads::counselor_account(&state.db, counselor_id).await?;
    Ok(json!({
        "id": counselor_id,
        "counselor_id": counselor_id,
        "total_income": yuan(a.total_income),
        "total_income_fen": a.total_income,
        "balance": yuan(a.balance),
        "balance_fen": a.balance,
        "frozen_amount": yuan(a.frozen),
        "frozen_amount_fen": a.frozen,
        "withdrawn": yuan(a.withdrawn),
        "withdrawn_fen": a.withdrawn,
        "created_at": a.created_at,
        "updated_at": a.updated_at,
    }))
}

/// `GET /api/chat/counselor/account` → the caller's counselor account.
pub async fn account(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let counselor_id = caller_counselor(&state, &user).await?;
    Ok(ok(account_json(&state, counselor_id).await?))
}

/// A withdrawal record (contract c.9 WithdrawRecord).
pub fn withdrawal_json(r: &sqlx::postgres::PgRow) -> Value {
    json!({
        "id": r.get::<i64, _>("id"),
        "counselor_id": r.get::<i64, _>("counselor_id"),
        "amount": yuan(r.get("amount_fen")),
        "amount_fen": r.get::<i64, _>("amount_fen"),
        "status": r.get::<i16, _>("status"),
        "bank_name": r.get::<String, _>("bank_name"),
        "bank_account": r.get::<String, _>("bank_account"),
        "account_name": r.get::<String, _>("account_name"),
        "rejected_reason": r.get::<String, _>("rejected_reason"),
        "audited_at": r.get::<Option<DateTime<Utc>>, _>("audited_at"),
        "transferred_at": r.get::<Option<DateTime<Utc>>, _>("transferred_at"),
        "created_at": r.get::<DateTime<Utc>, _>("created_at"),
        "updated_at": r.get::<DateTime<Utc>, _>("updated_at"),
    })
}

/// `POST /api/chat/counselor/withdraw` body: `amount` in yuan (> 0, two decimals at most).
#[derive(Debug, Deserialize)]
pub struct WithdrawRequest {
    pub amount: f64,
    pub bank_name: String,
    pub bank_account: String,
    pub account_name: String,
}

fn bank_field(name: &str, value: &str) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::field(name, "required"));
    }
    if v.chars().count() > 100 {
        return Err(ApiError::field(name, "at most 100 characters"));
    }
    Ok(v.to_string())
}

/// `POST /api/chat/counselor/withdraw` → the withdrawal record (status 0). The amount is checked
/// against the available balance and reserved in the `CounselorAccount` aggregate: a request
/// above the balance is a 400 and changes nothing.
pub async fn withdraw(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<WithdrawRequest>,
) -> ApiResult<Json<Value>> {
    let amount = positive_fen("amount", req.amount)?;
    let bank_name = bank_field("bank_name", &req.bank_name)?;
    let bank_account = bank_field("bank_account", &req.bank_account)?;
    let account_name = bank_field("account_name", &req.account_name)?;
    let counselor_id = caller_counselor(&state, &user).await?;
    let withdrawal_id = state
        .ids
        .next(&state.db, crate::app::ids::IdSequence::Withdrawals)
        .await?;
    let command = AccountCommand::RequestWithdrawal {
        counselor_id,
        withdrawal_id,
        amount,
        bank_name,
        bank_account,
        account_name,
        at: Utc::now(),
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<CounselorAccount>(&counselor_id.to_string(), command, &meta)
        .await?;
    state.settle("withdrawals", committed.stream_sequence).await;
    let withdrawal_id = match committed.events.first() {
        Some(domain::AccountEvent::WithdrawalRequested { withdrawal_id, .. }) => *withdrawal_id,
        _ => withdrawal_id,
    };
    let row = sqlx::query("SELECT * FROM withdrawals WHERE id = $1")
        .bind(withdrawal_id)
        .fetch_optional(&state.db)
        .await?;
    Ok(ok(match row {
        Some(r) => withdrawal_json(&r),
        None => {
            json!({ "id": withdrawal_id, "counselor_id": counselor_id, "amount": yuan(amount), "status": 0 })
        }
    }))
}

/// `GET /api/chat/counselor/withdraws` query.
pub type WithdrawsQuery = crate::PageQuery;

/// `GET /api/chat/counselor/withdraws` → `{withdraws, total}`, newest first.
pub async fn withdraws(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<WithdrawsQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    let counselor_id = caller_counselor(&state, &user).await?;
    let rows = sqlx::query(
        "SELECT * FROM withdrawals WHERE counselor_id = $1 AND ($2::smallint IS NULL OR status = $2) \
         ORDER BY id DESC LIMIT $3 OFFSET $4",
    )
    .bind(counselor_id)
    .bind(q.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM withdrawals WHERE counselor_id = $1 AND ($2::smallint IS NULL OR status = $2)",
    )
    .bind(counselor_id)
    .bind(q.status)
    .fetch_one(&state.db)
    .await?;
    let withdraws: Vec<Value> = rows.iter().map(withdrawal_json).collect();
    Ok(ok(json!({ "withdraws": withdraws, "total": total })))
}
