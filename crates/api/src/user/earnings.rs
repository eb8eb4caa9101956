//! The counselor's money (seed 001): the account, withdrawal requests and their list.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use domain::{AccountCommand, CounselorAccount};
use eventstore::Actor;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::money::positive_fen;
use crate::user::orders::placement::request_meta;
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiQuery, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(account))
        .routes(routes!(withdraw))
        .routes(routes!(withdraws))
}

/// Fen as the yuan number MyChat's clients read (`1234` → `12.34`).
fn yuan(fen: i64) -> f64 {
    fen as f64 / 100.0
}

/// The counselor id of the calling user; 403 when the caller is not a counselor.
pub async fn caller_counselor(state: &AppState, user: &AuthUser) -> Result<i64, ApiError> {
    sqlx::query_scalar("SELECT id FROM counselors WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::forbidden("not a counselor"))
}

/// A counselor's account (contract c.9), amounts in yuan with `_fen` twins, read from the ledger.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CounselorAccountView {
    /// The counselor's id (an account has no id of its own).
    pub id: i64,
    /// The counselor's id.
    pub counselor_id: i64,
    /// Everything ever credited, yuan.
    pub total_income: f64,
    /// Everything ever credited, fen.
    pub total_income_fen: i64,
    /// Withdrawable now, yuan.
    pub balance: f64,
    /// Withdrawable now, fen.
    pub balance_fen: i64,
    /// Requested or approved withdrawals not transferred yet, yuan.
    pub frozen_amount: f64,
    /// Requested or approved withdrawals not transferred yet, fen.
    pub frozen_amount_fen: i64,
    /// Transferred withdrawals, yuan.
    pub withdrawn: f64,
    /// Transferred withdrawals, fen.
    pub withdrawn_fen: i64,
    /// The account's first posting (RFC 3339), or null when there is none yet.
    pub created_at: Option<DateTime<Utc>>,
    /// The account's last posting (RFC 3339), or null.
    pub updated_at: Option<DateTime<Utc>>,
}

/// The account of counselor `counselor_id`, read from the ledger
/// ([`crate::app::ledger_reads::counselor_account`]).
pub async fn counselor_account(
    state: &AppState,
    counselor_id: i64,
) -> Result<CounselorAccountView, ApiError> {
    let a = crate::app::ledger_reads::counselor_account(&state.db, counselor_id).await?;
    Ok(CounselorAccountView {
        id: counselor_id,
        counselor_id,
        total_income: yuan(a.total_income),
        total_income_fen: a.total_income,
        balance: yuan(a.balance),
        balance_fen: a.balance,
        frozen_amount: yuan(a.frozen),
        frozen_amount_fen: a.frozen,
        withdrawn: yuan(a.withdrawn),
        withdrawn_fen: a.withdrawn,
        created_at: a.created_at,
        updated_at: a.updated_at,
    })
}

/// `GET /api/chat/counselor/account` → the caller's counselor account.
#[utoipa::path(
    get,
    path = "/api/chat/counselor/account",
    operation_id = "earnings_account",
    tag = "billing",
    summary = "The calling counselor's account",
    responses(
        (status = 200, description = "The account", body = Envelope<CounselorAccountView>),
        (status = 403, description = "Not a counselor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn account(State(state): State<AppState>, user: AuthUser) -> Reply<CounselorAccountView> {
    let counselor_id = caller_counselor(&state, &user).await?;
    Ok(reply(counselor_account(&state, counselor_id).await?))
}

/// A withdrawal record (contract c.9 WithdrawRecord).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Withdrawal {
    /// The withdrawal's id.
    pub id: i64,
    /// The counselor's id.
    pub counselor_id: i64,
    /// The amount, yuan.
    pub amount: f64,
    /// The amount, fen.
    pub amount_fen: i64,
    /// 0 requested, 1 approved, 2 rejected, 3 transferred.
    pub status: i16,
    /// The bank's name.
    pub bank_name: String,
    /// The account number.
    pub bank_account: String,
    /// The account holder's name.
    pub account_name: String,
    /// Why it was rejected (empty unless rejected).
    pub rejected_reason: String,
    /// When it was approved or rejected (RFC 3339), or null.
    pub audited_at: Option<DateTime<Utc>>,
    /// When the money was transferred (RFC 3339), or null.
    pub transferred_at: Option<DateTime<Utc>>,
    /// When it was requested (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// When it last changed (RFC 3339).
    pub updated_at: DateTime<Utc>,
}

impl Withdrawal {
    /// The record of a `withdrawals` row.
    pub fn from_row(r: &sqlx::postgres::PgRow) -> Self {
        Self {
            id: r.get("id"),
            counselor_id: r.get("counselor_id"),
            amount: yuan(r.get("amount_fen")),
            amount_fen: r.get("amount_fen"),
            status: r.get("status"),
            bank_name: r.get("bank_name"),
            bank_account: r.get("bank_account"),
            account_name: r.get("account_name"),
            rejected_reason: r.get("rejected_reason"),
            audited_at: r.get("audited_at"),
            transferred_at: r.get("transferred_at"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }
    }
}

/// A yuan amount a counselor may ask for: positive, two decimals at most, below 10^10.
fn withdrawal_amount(yuan: f64) -> Result<(), ValidationError> {
    positive_fen("amount", yuan).map(drop).map_err(|e| {
        let message = e.errors.first().map(|f| f.message.clone()).unwrap_or(e.msg);
        ValidationError::new("amount").with_message(message.into())
    })
}

/// `POST /api/chat/counselor/withdraw` body.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct WithdrawRequest {
    /// The amount, yuan: greater than 0, two decimals at most (whole fen), at most 10^10.
    #[schema(minimum = 0.01, maximum = 10000000000_f64, multiple_of = 0.01)]
    #[validate(custom(function = "withdrawal_amount"))]
    pub amount: f64,
    /// The bank's name (not blank, at most 100 characters; trimmed).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 100, message = "at most 100 characters")
    )]
    pub bank_name: String,
    /// The account number (not blank, at most 100 characters; trimmed).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 100, message = "at most 100 characters")
    )]
    pub bank_account: String,
    /// The account holder's name (not blank, at most 100 characters; trimmed).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 100, message = "at most 100 characters")
    )]
    pub account_name: String,
}

/// A withdrawal just requested whose record the read model does not show yet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PendingWithdrawal {
    /// The withdrawal's id.
    pub id: i64,
    /// The counselor's id.
    pub counselor_id: i64,
    /// The amount, yuan.
    pub amount: f64,
    /// 0 requested.
    pub status: i16,
}

/// The answer to a withdrawal request: its record, or (when the read model trails) what is known.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum RequestedWithdrawal {
    /// The stored record.
    Recorded(Withdrawal),
    /// The request as committed, before the read model shows it.
    Pending(PendingWithdrawal),
}

/// `POST /api/chat/counselor/withdraw` → the withdrawal record (status 0). The amount is checked
/// against the available balance and reserved in the `CounselorAccount` aggregate: a request
/// above the balance is a 400 and changes nothing.
#[utoipa::path(
    post,
    path = "/api/chat/counselor/withdraw",
    operation_id = "earnings_withdraw",
    tag = "billing",
    summary = "Request a withdrawal (reserved against the balance)",
    description = "Reserves `amount` against the calling counselor's available balance; a request \
        above the balance is refused and changes nothing.",
    request_body = WithdrawRequest,
    responses(
        (status = 200, description = "The withdrawal, status 0", body = Envelope<RequestedWithdrawal>),
        (status = 400, description = "An invalid field, or more than the balance", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a counselor", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn withdraw(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<WithdrawRequest>,
) -> Reply<RequestedWithdrawal> {
    req.validate()?;
    let amount = positive_fen("amount", req.amount)?;
    let counselor_id = caller_counselor(&state, &user).await?;
    let withdrawal_id = state
        .ids
        .next(&state.db, crate::app::ids::IdSequence::Withdrawals)
        .await?;
    let command = AccountCommand::RequestWithdrawal {
        counselor_id,
        withdrawal_id,
        amount,
        bank_name: req.bank_name.trim().to_string(),
        bank_account: req.bank_account.trim().to_string(),
        account_name: req.account_name.trim().to_string(),
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
    Ok(reply(match row {
        Some(r) => RequestedWithdrawal::Recorded(Withdrawal::from_row(&r)),
        None => RequestedWithdrawal::Pending(PendingWithdrawal {
            id: withdrawal_id,
            counselor_id,
            amount: yuan(amount),
            status: 0,
        }),
    }))
}

/// `GET /api/chat/counselor/withdraws` query: paging and an optional status filter.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct WithdrawsQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Withdrawals per page, 1 to 100 (default 20).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Only withdrawals in this status (0 requested, 1 approved, 2 rejected, 3 transferred);
    /// empty or absent: all.
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 0, max = 3, message = "must be 0 to 3"))]
    pub status: Option<i16>,
}

/// A page of the calling counselor's withdrawals.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WithdrawalList {
    /// The withdrawals, newest first.
    pub withdraws: Vec<Withdrawal>,
    /// How many match.
    pub total: i64,
}

/// `GET /api/chat/counselor/withdraws` → `{withdraws, total}`, newest first.
#[utoipa::path(
    get,
    path = "/api/chat/counselor/withdraws",
    operation_id = "earnings_withdraws",
    tag = "billing",
    summary = "The calling counselor's withdrawals",
    params(WithdrawsQuery),
    responses(
        (status = 200, description = "A page of withdrawals", body = Envelope<WithdrawalList>),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a counselor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn withdraws(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<WithdrawsQuery>,
) -> Reply<WithdrawalList> {
    q.validate()?;
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
    let withdraws = rows.iter().map(Withdrawal::from_row).collect();
    Ok(reply(WithdrawalList { withdraws, total }))
}
