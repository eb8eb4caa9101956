//! Admin API (issue 4): finance screens (contract c.5 #48–#56). **Every finance query is in this
//! module** so that it can be repointed to the ledger (issue 6) in one place. The statistics
//! (`/finance/stats`) and the counselor accounts (list, detail, account report) read the ledger
//! ([`crate::app::ledger_reads`]); the revenue series and the income / withdraw reports group the
//! `chat_billings` and `withdrawals` read models by day. Amounts are yuan JSON numbers.
//! Approve / reject / transfer are commands on the `CounselorAccount` aggregate
//! ([`crate::admin::auth::approve`], [`crate::admin::auth::transfer`]).

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use chrono::{Duration, NaiveDate};
use serde_json::{json, Value};
use sqlx::{Postgres, QueryBuilder};

use crate::admin::common::{count, json_rows, list_envelope, parse, BusinessDays, Q};
use crate::{ok, ApiError, ApiPath, ApiQuery, ApiResult, AppState};

type Params = ApiQuery<HashMap<String, String>>;

const WITHDRAW_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT w.id, w.counselor_id, w.amount_fen / 100.0 AS amount, \
     w.amount_fen, w.status, w.bank_name, w.bank_account, w.account_name, w.rejected_reason, w.audited_at, \
     w.transferred_at, w.created_at, w.updated_at, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor \
     FROM withdrawals w LEFT JOIN counselors c ON c.id = w.counselor_id";

async fn withdraws(state: &AppState, q: &Q, only_pending: bool) -> ApiResult<Json<Value>> {
    let (limit, offset, ..) = q.paging(20)?;
    let status = if only_pending {
        Some(0)
    } else {
        q.int("status")?
    };
    let counselor = q.int("counselor_id")?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(s) = status {
            qb.push(" AND w.status = ").push_bind(s as i16);
        }
        if let Some(c) = counselor {
            qb.push(" AND w.counselor_id = ").push_bind(c);
        }
    };
    let mut qb = QueryBuilder::new(WITHDRAW_SELECT);
    filter(&mut qb);
    qb.push(" ORDER BY w.id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM withdrawals w");
    filter(&mut cq);
    let total = count(state, cq).await?;
    Ok(list_envelope("withdraws", list, total, json!({})))
}

/// `GET /api/admin/withdraws?page&page_size&status&counselor_id` → `{withdraws, list, total}`.
pub async fn list_withdraws(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    withdraws(&state, &Q(q), false).await
}

/// `GET /api/admin/withdraws/pending?page&page_size` → `{withdraws, list, total}` (status 0).
pub async fn pending_withdraws(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    withdraws(&state, &Q(q), true).await
}

/// `start_date` / `end_date` (`YYYY-MM-DD`, business days: [`BusinessDays`]) or defaults
/// (ending today); end is exclusive (+1 day).
fn range(q: &Q, days: BusinessDays, default_days: i64) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let parse_date = |name: &str| -> Result<Option<NaiveDate>, ApiError> {
        q.str(name)
            .map(|s| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d")
                    .map_err(|_| ApiError::field(name, "must be YYYY-MM-DD"))
            })
            .transpose()
    };
    let today = days.today();
    let end = parse_date("end_date")?.unwrap_or(today);
    let start = parse_date("start_date")?.unwrap_or(end - Duration::days(default_days - 1));
    if start > end {
        return Err(ApiError::field("start_date", "must not be after end_date"));
    }
    if (end - start).num_days() > 3660 {
        return Err(ApiError::field(
            "start_date",
            "range must be at most 10 years",
        ));
    }
    Ok((start, end + Duration::days(1)))
}

/// `GET /api/admin/finance/stats?start_date&end_date` → `{total_revenue, total_withdrawn,
/// total_commission, total_counselor_earning, total_counselor_balance, pending_withdraws,
/// pending_withdraw_amount, approved_withdraws, today_revenue, today_orders}` in `data` and at
/// the root (the reports view reads the root, #52). The money figures come from the ledger
/// (issue 6): revenue = the `SessionBilled` debits of users' prepaid accounts in the period,
/// commission = its credits to `platform:revenue`, counselor earning = its credits to
/// `counselor:<id>:pending`, withdrawn = the balance of `platform:payouts`, counselor balance =
/// the sum of `counselor:<id>:payable`; the withdrawal counts and the pending amount are
/// statuses of the `withdrawals` read model (the ledger holds requested and approved
/// withdrawals together in `in_transit`). The period and "today" are business days
/// ([`BusinessDays`]), as in the revenue series and the reports.
pub async fn finance_stats(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let days = BusinessDays::of(&state);
    let (start, end) = range(&q, days, 3650)?;
    let today = days.today();
    let row: String = sqlx::query_scalar(
        "SELECT jsonb_build_object(\
           'total_revenue', (SELECT COALESCE(sum(amount_fen), 0) FROM ledger_postings WHERE event_type = 'SessionBilled' AND amount_fen > 0 AND recorded_at >= $1 AND recorded_at < $2) / 100.0, \
           'total_commission', (SELECT COALESCE(-sum(amount_fen), 0) FROM ledger_postings WHERE event_type = 'SessionBilled' AND account = 'platform:revenue' AND recorded_at >= $1 AND recorded_at < $2) / 100.0, \
           'total_counselor_earning', (SELECT COALESCE(-sum(amount_fen), 0) FROM ledger_postings WHERE event_type = 'SessionBilled' AND account LIKE 'counselor:%' AND recorded_at >= $1 AND recorded_at < $2) / 100.0, \
           'total_withdrawn', (SELECT COALESCE(-sum(balance_fen), 0) FROM ledger_balances WHERE account = 'platform:payouts') / 100.0, \
           'total_counselor_balance', (SELECT COALESCE(-sum(balance_fen), 0) FROM ledger_balances WHERE account LIKE 'counselor:%:payable') / 100.0, \
           'pending_withdraws', (SELECT count(*) FROM withdrawals WHERE status = 0), \
           'pending_withdraw_amount', (SELECT COALESCE(sum(amount_fen), 0) FROM withdrawals WHERE status = 0) / 100.0, \
           'approved_withdraws', (SELECT count(*) FROM withdrawals WHERE status IN (1, 3)), \
           'today_revenue', (SELECT COALESCE(sum(amount_fen), 0) FROM ledger_postings WHERE event_type = 'SessionBilled' AND amount_fen > 0 AND recorded_at >= $3 AND recorded_at < $4) / 100.0, \
           'today_orders', (SELECT count(*) FROM orders WHERE created_at >= $3 AND created_at < $4) \
         )::text",
    )
    .bind(days.start_of(start))
    .bind(days.start_of(end))
    .bind(days.start_of(today))
    .bind(days.start_of(today + Duration::days(1)))
    .fetch_one(&state.db)
    .await?;
    let v = parse(&row);
    let mut body = v.as_object().cloned().unwrap_or_default();
    body.insert("code".into(), json!(200));
    body.insert("msg".into(), json!("success"));
    body.insert("data".into(), v);
    Ok(Json(Value::Object(body)))
}

/// `GET /api/admin/finance/revenue?group_by=day|week|month|year&start_date&end_date` →
/// `{revenue_data: [{date, amount, count}], group_by}` in `data` and at the root (#53), grouped
/// by business day, week, month or year ([`BusinessDays`]). Labels:
/// `YYYY-MM-DD` (day, week = the week's Monday), `YYYY-MM`, `YYYY`. From the ledger (issue 6):
/// `amount` = the period's `SessionBilled` debits of users' prepaid accounts (line 0 of each
/// billing's postings, [`projections::ledger::session_billed`]), `count` = the billings.
pub async fn revenue(State(state): State<AppState>, ApiQuery(q): Params) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let group_by = q.str("group_by").unwrap_or("day").to_string();
    let (unit, fmt, days) = match group_by.as_str() {
        "day" => ("day", "YYYY-MM-DD", 30),
        "week" => ("week", "YYYY-MM-DD", 7 * 12),
        "month" => ("month", "YYYY-MM", 366),
        "year" => ("year", "YYYY", 365 * 5),
        _ => {
            return Err(ApiError::field(
                "group_by",
                "must be day, week, month or year",
            ))
        }
    };
    let calendar = BusinessDays::of(&state);
    let (start, end) = range(&q, calendar, days)?;
    let sql = format!(
        "SELECT COALESCE(jsonb_agg(jsonb_build_object('date', d, 'amount', amount, 'count', n) ORDER BY d), '[]')::text FROM \
         (SELECT to_char(date_trunc('{unit}', recorded_at AT TIME ZONE $3), '{fmt}') AS d, \
          sum(amount_fen) / 100.0 AS amount, count(*) AS n FROM ledger_postings \
          WHERE event_type = 'SessionBilled' AND line = 0 \
          AND recorded_at >= $1 AND recorded_at < $2 GROUP BY 1) r"
    );
    let data: String = sqlx::query_scalar(&sql)
        .bind(calendar.start_of(start))
        .bind(calendar.start_of(end))
        .bind(calendar.zone_name())
        .fetch_one(&state.db)
        .await?;
    let data = parse(&data);
    Ok(Json(json!({
        "code": 200, "msg": "success", "revenue_data": data, "group_by": group_by,
        "data": { "revenue_data": data, "group_by": group_by },
    })))
}

/// `GET /api/admin/finance/reports?type=income|withdraw|account&start_date&end_date` →
/// `{report_type, start_date, end_date, records}` (#54), by business day ([`BusinessDays`]).
/// `income` reads the ledger's
/// `SessionBilled` postings by day (amount = the prepaid debits, commission = the credits to
/// `platform:revenue`, counselor earnings = the credits to the counselors' pending accounts);
/// `withdraw` the withdrawals read model (the ledger does not keep a withdrawal's review
/// status); `account` the ledger's counselor accounts.
pub async fn reports(State(state): State<AppState>, ApiQuery(q): Params) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let kind = q.str("type").unwrap_or("income").to_string();
    let days = BusinessDays::of(&state);
    let (start, end) = range(&q, days, 30)?;
    let sql = match kind.as_str() {
        "income" => "SELECT COALESCE(jsonb_agg(to_jsonb(r) ORDER BY r.date), '[]')::text FROM \
            (SELECT to_char(recorded_at AT TIME ZONE $3, 'YYYY-MM-DD') AS date, \
             COALESCE(sum(amount_fen) FILTER (WHERE line = 0), 0) / 100.0 AS amount, count(*) FILTER (WHERE line = 0) AS order_count, \
             COALESCE(-sum(amount_fen) FILTER (WHERE line = 1), 0) / 100.0 AS commission, \
             COALESCE(-sum(amount_fen) FILTER (WHERE line = 2), 0) / 100.0 AS counselor_earnings \
             FROM ledger_postings WHERE event_type = 'SessionBilled' \
             AND recorded_at >= $1 AND recorded_at < $2 GROUP BY 1) r",
        "withdraw" => "SELECT COALESCE(jsonb_agg(to_jsonb(r) ORDER BY r.date), '[]')::text FROM \
            (SELECT to_char(created_at AT TIME ZONE $3, 'YYYY-MM-DD') AS date, sum(amount_fen) / 100.0 AS amount, count(*) AS count, \
             count(*) FILTER (WHERE status IN (1, 3)) AS approved_count, count(*) FILTER (WHERE status = 2) AS rejected_count \
             FROM withdrawals WHERE created_at >= $1 AND created_at < $2 GROUP BY 1) r",
        "account" => "SELECT COALESCE(jsonb_agg(to_jsonb(r) ORDER BY r.counselor_id), '[]')::text FROM \
            (SELECT a.counselor_id, COALESCE(c.name, '') AS counselor_name, a.total_income_fen / 100.0 AS total_income, \
             a.balance_fen / 100.0 AS balance, a.withdrawn_fen / 100.0 AS withdrawn, a.frozen_fen / 100.0 AS frozen_amount \
             FROM counselor_accounts_ledger a LEFT JOIN counselors c ON c.id = a.counselor_id \
             WHERE $1::timestamptz IS NOT NULL AND $2::timestamptz IS NOT NULL AND $3::text IS NOT NULL) r",
        _ => return Err(ApiError::field("type", "must be income, withdraw or account")),
    };
    let sql = sql.replace(
        "counselor_accounts_ledger a",
        &format!("{} a", crate::app::ledger_reads::COUNSELOR_ACCOUNTS_SQL),
    );
    let records: String = sqlx::query_scalar(&sql)
        .bind(days.start_of(start))
        .bind(days.start_of(end))
        .bind(days.zone_name())
        .fetch_one(&state.db)
        .await?;
    Ok(ok(json!({
        "report_type": kind,
        "start_date": start.to_string(),
        "end_date": (end - Duration::days(1)).to_string(),
        "records": parse(&records),
    })))
}

const ACCOUNT_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT a.counselor_id AS id, a.counselor_id, \
     a.total_income_fen / 100.0 AS total_income, a.withdrawn_fen / 100.0 AS withdrawn, a.balance_fen / 100.0 AS balance, \
     a.frozen_fen / 100.0 AS frozen_amount, a.created_at, a.updated_at, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor \
     FROM ";

/// `GET /api/admin/finance/accounts?page&page_size&counselor_id` → `{accounts, list, total}`.
pub async fn accounts(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let counselor = q.int("counselor_id")?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(c) = counselor {
            qb.push(" AND a.counselor_id = ").push_bind(c);
        }
    };
    // The accounts as the ledger has them (issue 6), with the read model's column names.
    let from = format!(
        "{} a LEFT JOIN counselors c ON c.id = a.counselor_id",
        crate::app::ledger_reads::COUNSELOR_ACCOUNTS_SQL
    );
    let mut qb = QueryBuilder::new(format!("{ACCOUNT_SELECT}{from}"));
    filter(&mut qb);
    qb.push(" ORDER BY a.counselor_id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new(format!(
        "SELECT count(*) FROM {} a",
        crate::app::ledger_reads::COUNSELOR_ACCOUNTS_SQL
    ));
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(list_envelope("accounts", list, total, json!({})))
}

/// `GET /api/admin/finance/accounts/:id` (`:id` = counselor id) → `{account, withdraw_count,
/// withdraw_total, pending_withdraws}` (counts withdrawals with status 1 or 3).
pub async fn account(
    State(state): State<AppState>,
    ApiPath(counselor_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM counselors WHERE id = $1)")
        .bind(counselor_id)
        .fetch_one(&state.db)
        .await?;
    if !exists {
        return Err(ApiError::not_found("counselor"));
    }
    let account = crate::user::earnings::account_json(&state, counselor_id).await?;
    let (n, total, pending): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN (1, 3)), COALESCE(sum(amount_fen) FILTER (WHERE status IN (1, 3)), 0)::bigint, \
         count(*) FILTER (WHERE status = 0) FROM withdrawals WHERE counselor_id = $1",
    )
    .bind(counselor_id)
    .fetch_one(&state.db)
    .await?;
    Ok(ok(json!({
        "account": account,
        "withdraw_count": n,
        "withdraw_total": total as f64 / 100.0,
        "pending_withdraws": pending,
    })))
}
