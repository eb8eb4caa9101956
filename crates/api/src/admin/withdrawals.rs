//! Withdrawal review (contract c.5): approve or reject a counselor's withdrawal, then mark it
//! paid out — `CounselorAccount` commands; the audit row points at the committed event.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use domain::{AccountCommand, CounselorAccount};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use web::envelope::{reply, Envelope};
use web::error::Problem;
use web::extract::Path;

use crate::admin::common::{Caller, Evented};
use crate::user::orders::placement::request_meta;
use crate::{ApiError, ApiResult, AppState};

/// A withdrawal record (contract c.9 WithdrawRecord).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WithdrawalRecord {
    /// Withdrawal id.
    pub id: i64,
    /// The counselor whose account pays it.
    pub counselor_id: i64,
    /// Amount in yuan.
    pub amount: f64,
    /// Amount in fen.
    pub amount_fen: i64,
    /// 0 pending, 1 approved, 2 rejected, 3 paid out.
    #[schema(minimum = 0, maximum = 3)]
    pub status: i16,
    /// Bank name.
    pub bank_name: String,
    /// Bank account number.
    pub bank_account: String,
    /// Account holder's name.
    pub account_name: String,
    /// Why it was rejected (empty unless rejected).
    pub rejected_reason: String,
    /// Approval or rejection time; null while pending.
    pub audited_at: Option<DateTime<Utc>>,
    /// Pay-out time; null until paid out.
    pub transferred_at: Option<DateTime<Utc>>,
    /// Request time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The counselor whose account holds withdrawal `id` (404 when unknown).
async fn withdrawal_owner(state: &AppState, id: i64) -> Result<i64, ApiError> {
    sqlx::query_scalar("SELECT counselor_id FROM withdrawals WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("withdrawal"))
}

async fn withdrawal_record(state: &AppState, id: i64) -> Result<WithdrawalRecord, ApiError> {
    let r = sqlx::query("SELECT * FROM withdrawals WHERE id = $1")
        .bind(id)
        .fetch_one(&state.db)
        .await?;
    let amount_fen: i64 = r.get("amount_fen");
    Ok(WithdrawalRecord {
        id: r.get("id"),
        counselor_id: r.get("counselor_id"),
        amount: amount_fen as f64 / 100.0,
        amount_fen,
        status: r.get("status"),
        bank_name: r.get("bank_name"),
        bank_account: r.get("bank_account"),
        account_name: r.get("account_name"),
        rejected_reason: r.get("rejected_reason"),
        audited_at: r.get("audited_at"),
        transferred_at: r.get("transferred_at"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

/// A withdrawal review: `{approved: true}` approves (0 → 1); `{approved: false,
/// rejected_reason}` rejects (0 → 2) and releases the funds. No body at all (or `null`) approves.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ApproveRequest {
    /// Approve (default) or reject.
    #[serde(default = "yes")]
    #[schema(default = true)]
    pub approved: bool,
    /// Why it is rejected: required (non-blank) when `approved` is false.
    #[serde(default)]
    pub rejected_reason: String,
}

fn yes() -> bool {
    true
}

/// Runs `command` on the account of withdrawal `id`'s counselor and answers the record.
async fn account_command(
    state: &AppState,
    headers: &HeaderMap,
    admin: &Caller,
    id: i64,
    counselor_id: i64,
    command: AccountCommand,
) -> ApiResult<Evented<Envelope<WithdrawalRecord>>> {
    let meta = request_meta(headers, admin.actor());
    let committed = state
        .bus
        .execute::<CounselorAccount>(&counselor_id.to_string(), command, &meta)
        .await?;
    state.settle("withdrawals", committed.stream_sequence).await;
    // The audit row points at the committed event.
    Ok(Evented::new(
        reply(withdrawal_record(state, id).await?),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
}

/// Approve or reject a withdrawal (CounselorAccount command)
///
/// The body is optional: none approves. `approved: false` is honoured (the old backend refused
/// it).
#[utoipa::path(post, path = "/api/admin/withdraw/{id}/approve", tag = "finance",
    params(("id" = i64, Path, description = "withdrawal id")),
    request_body(content = Option<ApproveRequest>, description = "optional: no body approves"),
    responses(
        (status = 200, description = "the reviewed withdrawal", body = Envelope<WithdrawalRecord>),
        (status = 422, description = "a rejection without a reason, or the withdrawal is not pending", body = Problem)))]
pub async fn approve(
    State(state): State<AppState>,
    admin: Caller,
    headers: HeaderMap,
    Path(id): Path<i64>,
    body: axum::body::Bytes,
) -> ApiResult<Evented<Envelope<WithdrawalRecord>>> {
    // The body is optional: none (or JSON `null`) means "approve".
    let approve = ApproveRequest {
        approved: true,
        rejected_reason: String::new(),
    };
    let req = if body.iter().all(u8::is_ascii_whitespace) {
        approve
    } else {
        web::extract::parse_json::<Option<ApproveRequest>>(&body)?.unwrap_or(approve)
    };
    if !req.approved && req.rejected_reason.trim().is_empty() {
        // A rule across fields: a 422 naming the field.
        return Err(ApiError::unprocessable(
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
    account_command(&state, &headers, &admin, id, counselor_id, command).await
}

/// Mark an approved withdrawal paid out (CounselorAccount command)
///
/// The withdrawal must be approved (1 → 3).
#[utoipa::path(post, path = "/api/admin/withdraw/{id}/transfer", tag = "finance",
    params(("id" = i64, Path, description = "withdrawal id")),
    responses(
        (status = 200, description = "the paid-out withdrawal", body = Envelope<WithdrawalRecord>),
        (status = 400, description = "the withdrawal is not approved", body = Problem)))]
pub async fn transfer(
    State(state): State<AppState>,
    admin: Caller,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Evented<Envelope<WithdrawalRecord>>> {
    let counselor_id = withdrawal_owner(&state, id).await?;
    let command = AccountCommand::TransferWithdrawal {
        withdrawal_id: id,
        admin_id: admin.admin_id,
        at: Utc::now(),
    };
    account_command(&state, &headers, &admin, id, counselor_id, command).await
}
