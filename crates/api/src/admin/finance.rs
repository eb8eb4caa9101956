//! Finance in the admin API (contract c.5 #48–#56). **Every finance query is in this module** so
//! that it can be repointed in one place. The statistics (`/finance/stats`) and the counselor
//! accounts (list, detail, account report) read the ledger ([`crate::app::ledger_reads`]); the
//! revenue series and the income / withdraw reports group the `chat_billings` and `withdrawals`
//! read models by day. Amounts are yuan JSON numbers. Approve / reject / transfer are commands on
//! the `CounselorAccount` aggregate ([`crate::admin::withdrawals::approve`],
//! [`crate::admin::withdrawals::transfer`]).

use axum::extract::State;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::admin::business::CounselorBrief;
use crate::admin::common::{count, listed, typed_row, typed_rows, BusinessDays, Listed};
use crate::admin::listing::{invalid, PageParams};
use crate::{empty_as_none, ApiError, ApiPath, ApiQuery, ApiResult, AppState};

/// OpenAPI tag of every finance operation.
pub const TAG: &str = "finance";

const WITHDRAW_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT w.id, w.counselor_id, w.amount_fen / 100.0 AS amount, \
     w.amount_fen, w.status, w.bank_name, w.bank_account, w.account_name, w.rejected_reason, w.audited_at, \
     w.transferred_at, w.created_at, w.updated_at, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor \
     FROM withdrawals w LEFT JOIN counselors c ON c.id = w.counselor_id";

/// A withdrawal as the finance screens show it. Members in the order Postgres renders the row
/// (`jsonb`: shorter names first); timestamps are RFC 3339 as Postgres writes them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminWithdrawal {
    /// Withdrawal id.
    pub id: i64,
    /// Amount, yuan.
    pub amount: f64,
    /// 0 requested, 1 approved, 2 rejected, 3 transferred.
    pub status: i16,
    /// The bank.
    pub bank_name: String,
    /// The counselor.
    pub counselor: CounselorBrief,
    /// Amount, fen.
    pub amount_fen: i64,
    /// When it was reviewed (RFC 3339), or null.
    pub audited_at: Option<String>,
    /// When it was requested (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// The account holder.
    pub account_name: String,
    /// The account number.
    pub bank_account: String,
    /// The counselor's id.
    pub counselor_id: i64,
    /// When it was paid out (RFC 3339), or null.
    pub transferred_at: Option<String>,
    /// Why it was rejected, or empty.
    pub rejected_reason: String,
}

/// A page of withdrawals: the same rows under `withdraws` and `list`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WithdrawalList {
    /// The page's withdrawals, newest first.
    pub withdraws: Vec<AdminWithdrawal>,
    /// The same rows.
    pub list: Vec<AdminWithdrawal>,
    /// Withdrawals matching the filter.
    pub total: i64,
}

/// Filters of the withdrawal list.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct WithdrawalListQuery {
    /// The page (documented as [`PageParams`]).
    #[serde(flatten)]
    #[param(ignore)]
    pub paging: PageParams,
    /// Only withdrawals with this status (0 requested, 1 approved, 2 rejected, 3 transferred);
    /// empty = all.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 0, max = 3, message = "must be 0 to 3"))]
    pub status: Option<i16>,
    /// Only this counselor's withdrawals; empty = all.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub counselor_id: Option<i64>,
}

async fn withdrawals(
    state: &AppState,
    paging: &PageParams,
    status: Option<i16>,
    counselor: Option<i64>,
) -> ApiResult<axum::Json<Listed<WithdrawalList>>> {
    let (limit, offset) = paging.limits(20)?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(s) = status {
            qb.push(" AND w.status = ").push_bind(s);
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
    let list: Vec<AdminWithdrawal> = typed_rows(state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM withdrawals w");
    filter(&mut cq);
    let total = count(state, cq).await?;
    Ok(listed(WithdrawalList {
        withdraws: list.clone(),
        list,
        total,
    }))
}

/// List withdrawals
///
/// `{withdraws, list, total}` in `data` and at the root, newest first; 20 per page by default.
#[utoipa::path(get, path = "/api/admin/withdraws", tag = TAG,
    params(PageParams, WithdrawalListQuery),
    responses((status = 200, body = Listed<WithdrawalList>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list_withdraws(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<WithdrawalListQuery>,
) -> ApiResult<axum::Json<Listed<WithdrawalList>>> {
    validator::Validate::validate(&q)?;
    withdrawals(&state, &q.paging, q.status, q.counselor_id).await
}

/// Pending withdrawals
///
/// The requested withdrawals (status 0): `{withdraws, list, total}` in `data` and at the root.
#[utoipa::path(get, path = "/api/admin/withdraws/pending", tag = TAG, params(PageParams),
    responses((status = 200, body = Listed<WithdrawalList>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn pending_withdraws(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<Listed<WithdrawalList>>> {
    withdrawals(&state, &q, Some(0), None).await
}

fn ymd(date: &str) -> Result<(), validator::ValidationError> {
    NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .map(|_| ())
        .map_err(|_| invalid("date", "must be YYYY-MM-DD"))
}

/// A period of business days (the business zone's calendar), both ends included.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct DateRange {
    /// First day, `YYYY-MM-DD` (default: as many days before `end_date` as the figure shows).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(value_type = Option<String>, format = Date)]
    #[validate(custom(function = "ymd"))]
    pub start_date: Option<String>,
    /// Last day, `YYYY-MM-DD` (default: today); at most 10 years after `start_date`.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(value_type = Option<String>, format = Date)]
    #[validate(custom(function = "ymd"))]
    pub end_date: Option<String>,
}

impl DateRange {
    /// `(start, end)` with `end` exclusive (+1 day); by default the `default_days` days ending
    /// today.
    ///
    /// # Errors
    /// 400 naming `start_date` or `end_date`.
    fn days(
        &self,
        calendar: BusinessDays,
        default_days: i64,
    ) -> Result<(NaiveDate, NaiveDate), ApiError> {
        self.validate()?;
        let parse = |d: &Option<String>| {
            d.as_deref()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
        };
        let end = parse(&self.end_date).unwrap_or_else(|| calendar.today());
        let start = parse(&self.start_date).unwrap_or(end - Duration::days(default_days - 1));
        if start > end {
            return Err(ApiError::unprocessable(
                "start_date",
                "must not be after end_date",
            ));
        }
        if (end - start).num_days() > 3660 {
            return Err(ApiError::unprocessable(
                "start_date",
                "range must be at most 10 years",
            ));
        }
        Ok((start, end + Duration::days(1)))
    }
}

/// The finance figures (#52). Money from the ledger, yuan; withdrawal counts and the pending
/// amount from the withdrawals read model. Members in the order Postgres renders them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FinanceStats {
    /// Orders placed today (business day).
    pub today_orders: i64,
    /// Billed today, yuan.
    pub today_revenue: f64,
    /// Billed in the period (`SessionBilled` debits of prepaid accounts), yuan.
    pub total_revenue: f64,
    /// Paid out to counselors ever (`platform:payouts`), yuan.
    pub total_withdrawn: f64,
    /// The platform's commission in the period (credits to `platform:revenue`), yuan.
    pub total_commission: f64,
    /// Withdrawals awaiting review.
    pub pending_withdraws: i64,
    /// Withdrawals approved or transferred.
    pub approved_withdraws: i64,
    /// Amount of the withdrawals awaiting review, yuan.
    pub pending_withdraw_amount: f64,
    /// What counselors can withdraw now (`counselor:<id>:payable`), yuan.
    pub total_counselor_balance: f64,
    /// Counselors' earnings in the period (credits to `counselor:<id>:pending`), yuan.
    pub total_counselor_earning: f64,
}

/// Finance statistics
///
/// In `data` and at the root (the reports view reads the root, #52). Revenue = the
/// `SessionBilled` debits of users' prepaid accounts in the period, commission = its credits to
/// `platform:revenue`, counselor earning = its credits to `counselor:<id>:pending`, withdrawn =
/// the balance of `platform:payouts`, counselor balance = the sum of `counselor:<id>:payable`;
/// the withdrawal counts and the pending amount are statuses of the withdrawals read model. The
/// period (default: ten years ending today) and "today" are business days.
#[utoipa::path(get, path = "/api/admin/finance/stats", tag = TAG, params(DateRange),
    responses((status = 200, body = Listed<FinanceStats>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn finance_stats(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DateRange>,
) -> ApiResult<axum::Json<Listed<FinanceStats>>> {
    let days = BusinessDays::of(&state);
    let (start, end) = q.days(days, 3650)?;
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
    Ok(listed(typed_row::<FinanceStats>(&row, &[])?))
}

/// How the revenue series groups.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// By business day (`YYYY-MM-DD`; default: 30 days).
    Day,
    /// By week (`YYYY-MM-DD` of its Monday; default: 12 weeks).
    Week,
    /// By month (`YYYY-MM`; default: a year).
    Month,
    /// By year (`YYYY`; default: 5 years).
    Year,
}

fn valid_group_by(by: &str) -> Result<(), validator::ValidationError> {
    match by {
        "day" | "week" | "month" | "year" => Ok(()),
        _ => Err(invalid("enum", "must be day, week, month or year")),
    }
}

/// How to group the revenue series.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct RevenueQuery {
    /// `day` (default), `week`, `month` or `year`.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(value_type = Option<GroupBy>)]
    #[validate(custom(function = "valid_group_by"))]
    pub group_by: Option<String>,
    /// The period (documented as [`DateRange`]).
    #[serde(flatten)]
    #[param(ignore)]
    #[validate(skip)]
    pub range: DateRange,
}

/// One period of the revenue series.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevenuePoint {
    /// The period's label.
    pub date: String,
    /// Sessions billed.
    pub count: i64,
    /// Billed, yuan.
    pub amount: f64,
}

/// The revenue series and its grouping.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevenueSeries {
    /// One entry per period with billing, oldest first.
    pub revenue_data: Vec<RevenuePoint>,
    /// `day`, `week`, `month` or `year`.
    pub group_by: String,
}

/// The revenue reply: `{code, msg, revenue_data, group_by, data: {revenue_data, group_by}}`
/// (the series at the root too: the client reads it there).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RevenueReply {
    /// Always 200.
    #[schema(example = 200)]
    pub code: u16,
    /// `"success"`.
    pub msg: String,
    /// One entry per period with billing, oldest first (as in `data`).
    pub revenue_data: Vec<RevenuePoint>,
    /// `day`, `week`, `month` or `year` (as in `data`).
    pub group_by: String,
    /// The series.
    pub data: RevenueSeries,
}

/// Revenue by day / week / month / year
///
/// `{revenue_data: [{date, count, amount}], group_by}` in `data` and at the root (#53), grouped
/// by business day, week, month or year. Labels: `YYYY-MM-DD` (day, week = the week's Monday),
/// `YYYY-MM`, `YYYY`. From the ledger: `amount` = the period's `SessionBilled` debits of users'
/// prepaid accounts, `count` = the billings.
#[utoipa::path(get, path = "/api/admin/finance/revenue", tag = TAG,
    params(RevenueQuery, DateRange),
    responses((status = 200, body = RevenueReply), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn revenue(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RevenueQuery>,
) -> ApiResult<axum::Json<RevenueReply>> {
    q.validate()?;
    let group_by = q.group_by.clone().unwrap_or_else(|| "day".into());
    let (unit, fmt, days) = match group_by.as_str() {
        "week" => ("week", "YYYY-MM-DD", 7 * 12),
        "month" => ("month", "YYYY-MM", 366),
        "year" => ("year", "YYYY", 365 * 5),
        _ => ("day", "YYYY-MM-DD", 30),
    };
    let calendar = BusinessDays::of(&state);
    let (start, end) = q.range.days(calendar, days)?;
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
    let series = RevenueSeries {
        revenue_data: typed_row(&data, &[])?,
        group_by,
    };
    Ok(axum::Json(RevenueReply {
        code: 200,
        msg: "success".into(),
        revenue_data: series.revenue_data.clone(),
        group_by: series.group_by.clone(),
        data: series,
    }))
}

/// The kind of finance report.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportType {
    /// Billing by business day, from the ledger.
    Income,
    /// Withdrawals requested by business day, from the withdrawals read model.
    Withdraw,
    /// The counselor accounts, from the ledger.
    Account,
}

/// Which report.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `income` (default), `withdraw` or `account`.
    #[serde(default, rename = "type", deserialize_with = "empty_as_none")]
    #[param(value_type = Option<ReportType>)]
    pub kind: Option<String>,
    /// The period (documented as [`DateRange`]; default: 30 days ending today).
    #[serde(flatten)]
    #[param(ignore)]
    pub range: DateRange,
}

/// A day of the income report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IncomeDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Billed (prepaid debits), yuan.
    pub amount: f64,
    /// The platform's commission, yuan.
    pub commission: f64,
    /// Sessions billed.
    pub order_count: i64,
    /// The counselors' earnings, yuan.
    pub counselor_earnings: f64,
}

/// A day of the withdrawal report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WithdrawDay {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Withdrawals requested.
    pub count: i64,
    /// Their amount, yuan.
    pub amount: f64,
    /// Of them approved or transferred.
    pub approved_count: i64,
    /// Of them rejected.
    pub rejected_count: i64,
}

/// A counselor account in the account report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountLine {
    /// Withdrawable, yuan.
    pub balance: f64,
    /// Paid out, yuan.
    pub withdrawn: f64,
    /// The counselor.
    pub counselor_id: i64,
    /// Everything credited, yuan.
    pub total_income: f64,
    /// Requested or approved, not paid out yet, yuan.
    pub frozen_amount: f64,
    /// The counselor's name (empty when gone).
    pub counselor_name: String,
}

/// One row of a report, whichever its type (the schema of [`ReportRecords`]: an array of rows,
/// so that an empty report matches one schema, not all three).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReportRow {
    Income(IncomeDay),
    Withdraw(WithdrawDay),
    Account(AccountLine),
}

/// The rows of a report, by its type.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ReportRecords {
    /// `type=income`.
    Income(Vec<IncomeDay>),
    /// `type=withdraw`.
    Withdraw(Vec<WithdrawDay>),
    /// `type=account`.
    Account(Vec<AccountLine>),
}

/// A finance report.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FinanceReport {
    /// `income`, `withdraw` or `account`.
    pub report_type: String,
    /// First day, `YYYY-MM-DD`.
    pub start_date: String,
    /// Last day, `YYYY-MM-DD`.
    pub end_date: String,
    /// The rows.
    #[schema(value_type = Vec<ReportRow>)]
    pub records: ReportRecords,
}

/// Finance reports
///
/// `{report_type, start_date, end_date, records}` (#54), by business day. `income` reads the
/// ledger's `SessionBilled` postings by day (amount = the prepaid debits, commission = the
/// credits to `platform:revenue`, counselor earnings = the credits to the counselors' pending
/// accounts); `withdraw` the withdrawals read model; `account` the ledger's counselor accounts.
#[utoipa::path(get, path = "/api/admin/finance/reports", tag = TAG,
    params(ReportQuery, DateRange),
    responses((status = 200, body = Envelope<FinanceReport>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn reports(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Reply<FinanceReport> {
    let kind = q.kind.clone().unwrap_or_else(|| "income".into());
    // `type` is a Rust keyword: the field is `kind`, and its refusal names `type` in the
    // `match` below.
    let days = BusinessDays::of(&state);
    let (start, end) = q.range.days(days, 30)?;
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
    let records = match kind.as_str() {
        "withdraw" => ReportRecords::Withdraw(typed_row(&records, &[])?),
        "account" => ReportRecords::Account(typed_row(&records, &[])?),
        _ => ReportRecords::Income(typed_row(&records, &[])?),
    };
    Ok(reply(FinanceReport {
        report_type: kind,
        start_date: start.to_string(),
        end_date: (end - Duration::days(1)).to_string(),
        records,
    }))
}

const ACCOUNT_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT a.counselor_id AS id, a.counselor_id, \
     a.total_income_fen / 100.0 AS total_income, a.withdrawn_fen / 100.0 AS withdrawn, a.balance_fen / 100.0 AS balance, \
     a.frozen_fen / 100.0 AS frozen_amount, a.created_at, a.updated_at, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor \
     FROM ";

/// A counselor account as the ledger has it. Members in the order Postgres renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccountRow {
    /// The counselor's id.
    pub id: i64,
    /// Withdrawable, yuan.
    pub balance: f64,
    /// The counselor.
    pub counselor: CounselorBrief,
    /// Paid out, yuan.
    pub withdrawn: f64,
    /// The first posting (RFC 3339), or null.
    pub created_at: Option<String>,
    /// The last posting (RFC 3339), or null.
    pub updated_at: Option<String>,
    /// The counselor's id.
    pub counselor_id: i64,
    /// Everything credited, yuan.
    pub total_income: f64,
    /// Requested or approved, not paid out yet, yuan.
    pub frozen_amount: f64,
}

/// A page of counselor accounts: the same rows under `accounts` and `list`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountList {
    /// The page's accounts, by counselor id.
    pub accounts: Vec<AccountRow>,
    /// The same rows.
    pub list: Vec<AccountRow>,
    /// Accounts matching the filter.
    pub total: i64,
}

/// Filters of the account list.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountListQuery {
    /// The page (documented as [`PageParams`]).
    #[serde(flatten)]
    #[param(ignore)]
    pub paging: PageParams,
    /// Only this counselor's account; empty = all.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub counselor_id: Option<i64>,
}

/// Counselor accounts
///
/// `{accounts, list, total}` in `data` and at the root, from the ledger; 20 per page by default.
#[utoipa::path(get, path = "/api/admin/finance/accounts", tag = TAG,
    params(PageParams, AccountListQuery),
    responses((status = 200, body = Listed<AccountList>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn accounts(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<AccountListQuery>,
) -> ApiResult<axum::Json<Listed<AccountList>>> {
    let (limit, offset) = q.paging.limits(20)?;
    let counselor = q.counselor_id;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(c) = counselor {
            qb.push(" AND a.counselor_id = ").push_bind(c);
        }
    };
    // The accounts as the ledger has them, with the read model's column names.
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
    let list: Vec<AccountRow> = typed_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new(format!(
        "SELECT count(*) FROM {} a",
        crate::app::ledger_reads::COUNSELOR_ACCOUNTS_SQL
    ));
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(listed(AccountList {
        accounts: list.clone(),
        list,
        total,
    }))
}

/// One counselor's account, from the ledger: yuan and fen side by side.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CounselorAccountView {
    /// The counselor's id.
    pub id: i64,
    /// The counselor's id.
    pub counselor_id: i64,
    /// Everything credited, yuan.
    pub total_income: f64,
    /// Everything credited, fen.
    pub total_income_fen: i64,
    /// Withdrawable, yuan.
    pub balance: f64,
    /// Withdrawable, fen.
    pub balance_fen: i64,
    /// Requested or approved, not paid out yet, yuan.
    pub frozen_amount: f64,
    /// Requested or approved, not paid out yet, fen.
    pub frozen_amount_fen: i64,
    /// Paid out, yuan.
    pub withdrawn: f64,
    /// Paid out, fen.
    pub withdrawn_fen: i64,
    /// The first posting (RFC 3339), or null.
    pub created_at: Option<DateTime<Utc>>,
    /// The last posting (RFC 3339), or null.
    pub updated_at: Option<DateTime<Utc>>,
}

/// A counselor's account and withdrawal figures.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountDetail {
    /// The account.
    pub account: CounselorAccountView,
    /// Withdrawals approved or transferred.
    pub withdraw_count: i64,
    /// Their amount, yuan.
    pub withdraw_total: f64,
    /// Withdrawals awaiting review.
    pub pending_withdraws: i64,
}

fn yuan(fen: i64) -> f64 {
    fen as f64 / 100.0
}

/// One counselor's account
///
/// The account as the ledger has it, and the counselor's withdrawals approved or transferred
/// (count, yuan) and awaiting review. `id` is the counselor's id.
#[utoipa::path(get, path = "/api/admin/finance/accounts/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Counselor id")),
    responses((status = 200, body = Envelope<AccountDetail>), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn account(
    State(state): State<AppState>,
    ApiPath(counselor_id): ApiPath<i64>,
) -> Reply<AccountDetail> {
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM counselors WHERE id = $1)")
        .bind(counselor_id)
        .fetch_one(&state.db)
        .await?;
    if !exists {
        return Err(ApiError::not_found("counselor"));
    }
    let a = crate::app::ledger_reads::counselor_account(&state.db, counselor_id).await?;
    let (n, total, pending): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE status IN (1, 3)), COALESCE(sum(amount_fen) FILTER (WHERE status IN (1, 3)), 0)::bigint, \
         count(*) FILTER (WHERE status = 0) FROM withdrawals WHERE counselor_id = $1",
    )
    .bind(counselor_id)
    .fetch_one(&state.db)
    .await?;
    Ok(reply(AccountDetail {
        account: CounselorAccountView {
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
        },
        withdraw_count: n,
        withdraw_total: total as f64 / 100.0,
        pending_withdraws: pending,
    }))
}
