//! The dashboard in the admin API (contract c.5 #44–#47): headline figures with trends, the
//! counselor ranking, the order trend and the session figures. Days, months and "today" are
//! business days ([`BusinessDays`]).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::admin::business::TAG;
use crate::admin::common::BusinessDays;
use crate::admin::common::{listed, typed_row, Listed};
use crate::admin::listing::invalid;
use crate::{empty_as_none, ApiError, ApiQuery, ApiResult, AppState};

/// The dashboard's headline figures (contract c.5 #44). Amounts are yuan over paid orders
/// (status 1 or 2); trends are percentages, one decimal: month over month for users and
/// counselors, day over day for orders and revenue (100 when the earlier figure is 0 and the
/// later is not). Members in the order MyChat's admin API has always sent them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DashboardStatistics {
    /// Users not deleted.
    pub user_count: i64,
    /// All orders.
    pub order_count: i64,
    /// Orders paid, not completed.
    pub paid_orders: i64,
    /// Counselors joined this month against last month, percent.
    pub counselor_trend: f64,
    /// Paid amount of today's orders, yuan.
    pub today_amount: f64,
    /// Paid amount of all orders, yuan.
    pub total_amount: f64,
    /// Sessions in progress.
    pub active_session_count: i64,
    /// All sessions.
    pub session_count: i64,
    /// Orders awaiting payment.
    pub pending_orders: i64,
    /// Enabled counselors.
    pub counselor_count: i64,
    /// Cancelled orders.
    pub cancelled_orders: i64,
    /// Completed orders.
    pub completed_orders: i64,
    /// Users joined this month against last month, percent.
    pub user_trend: f64,
    /// Orders today against yesterday, percent.
    pub order_trend: f64,
    /// Paid amount today against yesterday, percent.
    pub revenue_trend: f64,
    /// Users not deleted and enabled.
    pub online_user_count: i64,
    /// Orders placed today.
    pub today_order_count: i64,
}

/// The counts the headline figures and their trends are computed from.
#[derive(Debug, Deserialize)]
struct DashboardCounts {
    user_count: i64,
    order_count: i64,
    paid_orders: i64,
    today_amount: f64,
    total_amount: f64,
    session_count: i64,
    pending_orders: i64,
    counselor_count: i64,
    cancelled_orders: i64,
    completed_orders: i64,
    online_user_count: i64,
    today_order_count: i64,
    active_session_count: i64,
    users_this_month: f64,
    users_last_month: f64,
    counselors_this_month: f64,
    counselors_last_month: f64,
    orders_today: f64,
    orders_yesterday: f64,
    revenue_today: f64,
    revenue_yesterday: f64,
}

/// `now` against `before`, percent with one decimal (100 from nothing to something).
fn trend(now: f64, before: f64) -> f64 {
    if before == 0.0 {
        if now > 0.0 {
            100.0
        } else {
            0.0
        }
    } else {
        ((now - before) / before * 1000.0).round() / 10.0
    }
}

async fn dashboard(state: &AppState) -> ApiResult<axum::Json<Listed<DashboardStatistics>>> {
    let days = BusinessDays::of(state);
    let today = days.today();
    let month = BusinessDays::month_of(today);
    let last_month = month
        .checked_sub_months(chrono::Months::new(1))
        .unwrap_or(month);
    let row: String = sqlx::query_scalar(
        "WITH o AS (SELECT * FROM orders), \
         pct AS (SELECT 1) \
         SELECT jsonb_build_object(\
           'user_count', (SELECT count(*) FROM users WHERE deleted_at IS NULL), \
           'online_user_count', (SELECT count(*) FROM users WHERE deleted_at IS NULL AND status = 1), \
           'counselor_count', (SELECT count(*) FROM counselors WHERE status = 1), \
           'order_count', (SELECT count(*) FROM o), \
           'today_order_count', (SELECT count(*) FROM o WHERE created_at >= $1), \
           'total_amount', (SELECT COALESCE(sum(amount_fen), 0) FROM o WHERE status IN (1,2)) / 100.0, \
           'today_amount', (SELECT COALESCE(sum(amount_fen), 0) FROM o WHERE status IN (1,2) AND created_at >= $1) / 100.0, \
           'session_count', (SELECT count(*) FROM chat_sessions), \
           'active_session_count', (SELECT count(*) FROM chat_sessions WHERE status = 1), \
           'pending_orders', (SELECT count(*) FROM o WHERE status = 0), \
           'paid_orders', (SELECT count(*) FROM o WHERE status = 1), \
           'completed_orders', (SELECT count(*) FROM o WHERE status = 2), \
           'cancelled_orders', (SELECT count(*) FROM o WHERE status = 3), \
           'users_this_month', (SELECT count(*) FROM users WHERE created_at >= $3), \
           'users_last_month', (SELECT count(*) FROM users WHERE created_at >= $4 AND created_at < $3), \
           'counselors_this_month', (SELECT count(*) FROM counselors WHERE created_at >= $3), \
           'counselors_last_month', (SELECT count(*) FROM counselors WHERE created_at >= $4 AND created_at < $3), \
           'orders_today', (SELECT count(*) FROM o WHERE created_at >= $1), \
           'orders_yesterday', (SELECT count(*) FROM o WHERE created_at >= $2 AND created_at < $1), \
           'revenue_today', (SELECT COALESCE(sum(amount_fen), 0) FROM o WHERE status IN (1,2) AND created_at >= $1), \
           'revenue_yesterday', (SELECT COALESCE(sum(amount_fen), 0) FROM o WHERE status IN (1,2) AND created_at >= $2 AND created_at < $1) \
         )::text",
    )
    .bind(days.start_of(today))
    .bind(days.start_of(today - chrono::Duration::days(1)))
    .bind(days.start_of(month))
    .bind(days.start_of(last_month))
    .fetch_one(&state.db)
    .await?;
    let counts: DashboardCounts = serde_json::from_str(&row)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("dashboard counts: {e}")))?;
    Ok(listed(figures(counts)))
}

/// The headline figures from their counts.
fn figures(c: DashboardCounts) -> DashboardStatistics {
    DashboardStatistics {
        user_count: c.user_count,
        order_count: c.order_count,
        paid_orders: c.paid_orders,
        counselor_trend: trend(c.counselors_this_month, c.counselors_last_month),
        today_amount: c.today_amount,
        total_amount: c.total_amount,
        active_session_count: c.active_session_count,
        session_count: c.session_count,
        pending_orders: c.pending_orders,
        counselor_count: c.counselor_count,
        cancelled_orders: c.cancelled_orders,
        completed_orders: c.completed_orders,
        user_trend: trend(c.users_this_month, c.users_last_month),
        order_trend: trend(c.orders_today, c.orders_yesterday),
        revenue_trend: trend(c.revenue_today, c.revenue_yesterday),
        online_user_count: c.online_user_count,
        today_order_count: c.today_order_count,
    }
}

/// Dashboard statistics
///
/// Contract c.5 #44's figures, in `data` and at the root.
#[utoipa::path(get, path = "/api/admin/statistics", tag = TAG,
    responses((status = 200, body = Listed<DashboardStatistics>)))]
pub async fn statistics(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<Listed<DashboardStatistics>>> {
    dashboard(&state).await
}

/// Dashboard statistics
///
/// The same figures as `GET /api/admin/statistics` (the dashboard's own path).
#[utoipa::path(get, path = "/api/admin/dashboard/statistics", tag = TAG,
    responses((status = 200, body = Listed<DashboardStatistics>)))]
pub async fn dashboard_statistics(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<Listed<DashboardStatistics>>> {
    dashboard(&state).await
}

/// What the counselor ranking orders by.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RankingBy {
    /// Paid orders, most first.
    Orders,
    /// Revenue, most first.
    Income,
    /// Rating, best first.
    Rating,
}

/// The ranking's order and length.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct RankingQuery {
    /// `orders` (default), `income` or `rating`.
    #[serde(default, rename = "type", deserialize_with = "empty_as_none")]
    #[param(value_type = Option<RankingBy>)]
    pub by: Option<String>,
    /// How many counselors, 1–100 (default 10).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub limit: Option<i64>,
}

/// A counselor in the ranking. Members in the order Postgres renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RankedCounselor {
    /// Counselor id.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Price per minute, yuan.
    pub price: f64,
    /// Professional title.
    pub title: String,
    /// Avatar URL.
    pub avatar: String,
    /// Average rating, 0–5 (as stored: `5` or `4.5`).
    #[schema(value_type = f64)]
    pub rating: serde_json::Number,
    /// Revenue of their orders with status ≥ 1, yuan.
    pub revenue: f64,
    /// Their orders with status ≥ 1.
    #[serde(rename = "orderCount")]
    pub order_count: i64,
}

/// Counselor ranking
///
/// A bare array of counselors by paid orders, revenue or rating (orders with status ≥ 1).
#[utoipa::path(get, path = "/api/admin/stats/counselor/ranking", tag = TAG,
    params(RankingQuery),
    responses((status = 200, body = Envelope<Vec<RankedCounselor>>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn counselor_ranking(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<RankingQuery>,
) -> Reply<Vec<RankedCounselor>> {
    // `type` is a Rust keyword: the field is `by`, and its refusal names `type` here.
    let order = match q.by.as_deref().unwrap_or("orders") {
        "orders" => "\"orderCount\" DESC",
        "income" => "revenue DESC",
        "rating" => "rating DESC",
        _ => return Err(ApiError::field("type", "must be orders, income or rating")),
    };
    q.validate()?;
    let limit = q.limit.unwrap_or(10);
    let sql = format!(
        "SELECT to_jsonb(t)::text FROM (SELECT c.id, c.name, c.title, c.avatar, c.price_fen / 100.0 AS price, c.rating, \
         count(o.id) AS \"orderCount\", COALESCE(sum(o.amount_fen), 0) / 100.0 AS revenue \
         FROM counselors c LEFT JOIN orders o ON o.counselor_id = c.id AND o.status >= 1 \
         GROUP BY c.id ORDER BY {order}, c.id LIMIT $1) t"
    );
    let rows: Vec<String> = sqlx::query_scalar(&sql)
        .bind(limit)
        .fetch_all(&state.db)
        .await?;
    let ranked = rows
        .iter()
        .map(|s| typed_row(s, &[]))
        .collect::<Result<_, _>>()?;
    Ok(reply(ranked))
}

/// The period of the order trend.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrendPeriod {
    /// Today by hour (`HH:00`).
    Day,
    /// The last 7 days (`MM-DD`).
    Week,
    /// The last 30 days (`MM-DD`).
    Month,
    /// The last 12 months (`YYYY-MM`).
    Year,
}

fn trend_period(period: &str) -> Result<(), validator::ValidationError> {
    match period {
        "day" | "week" | "month" | "year" => Ok(()),
        _ => Err(invalid("enum", "must be day, week, month or year")),
    }
}

/// The order trend's period.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct TrendQuery {
    /// `day`, `week` (default), `month` or `year`.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(value_type = Option<TrendPeriod>)]
    #[validate(custom(function = "trend_period"))]
    pub period: Option<String>,
}

/// Orders placed per hour, day or month.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderTrend {
    /// The labels, oldest first.
    pub dates: Vec<String>,
    /// Orders placed in each.
    pub values: Vec<i64>,
}

/// Order trend
///
/// `{dates, values}`: hourly for a day (`HH:00`), daily for 7 / 30 days (`MM-DD`), monthly for
/// a year (`YYYY-MM`), in the business zone.
#[utoipa::path(get, path = "/api/admin/stats/order/trend", tag = TAG, params(TrendQuery),
    responses((status = 200, body = Envelope<OrderTrend>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn order_trend(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TrendQuery>,
) -> Reply<OrderTrend> {
    q.validate()?;
    let (step, count, fmt) = match q.period.as_deref().unwrap_or("week") {
        "day" => ("hour", 24, "HH24:00"),
        "month" => ("day", 30, "MM-DD"),
        "year" => ("month", 12, "YYYY-MM"),
        _ => ("day", 7, "MM-DD"),
    };
    // `b` runs over the business zone's local hours / days / months; `b AT TIME ZONE $1` is the
    // instant each starts.
    let sql = format!(
        "SELECT to_char(b, '{fmt}'), (SELECT count(*) FROM orders WHERE created_at >= (b AT TIME ZONE $1) \
         AND created_at < ((b + interval '1 {step}') AT TIME ZONE $1)) \
         FROM generate_series(date_trunc('{step}', now() AT TIME ZONE $1) - interval '{n} {step}', \
         date_trunc('{step}', now() AT TIME ZONE $1), interval '1 {step}') b ORDER BY b",
        n = count - 1
    );
    let rows: Vec<(String, i64)> = sqlx::query_as(&sql)
        .bind(BusinessDays::of(&state).zone_name())
        .fetch_all(&state.db)
        .await?;
    let (dates, values): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
    Ok(reply(OrderTrend { dates, values }))
}

/// Session figures (#47).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionStats {
    /// Billed over all sessions, yuan.
    pub total_amount: f64,
    /// Minutes talked over all sessions.
    pub total_duration: f64,
    /// Sessions in progress.
    pub active_sessions: i64,
}

/// Session statistics
///
/// Sessions in progress, minutes talked and the amount billed (yuan) over all sessions.
#[utoipa::path(get, path = "/api/admin/session/stats", tag = TAG,
    responses((status = 200, body = Envelope<SessionStats>)))]
pub async fn session_stats(State(state): State<AppState>) -> Reply<SessionStats> {
    let row: String = sqlx::query_scalar(
        "SELECT jsonb_build_object('active_sessions', count(*) FILTER (WHERE status = 1), \
         'total_duration', COALESCE(sum(duration), 0) / 60, \
         'total_amount', COALESCE(sum(total_amount_fen), 0) / 100.0)::text FROM chat_sessions",
    )
    .fetch_one(&state.db)
    .await?;
    Ok(reply(typed_row(&row, &[])?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts row as Postgres renders it (`jsonb`: shorter keys first).
    const ROW: &str = r#"{"user_count": 2, "order_count": 3, "paid_orders": 1, "orders_today": 2, "today_amount": 160.0000000000000000, "total_amount": 160.0000000000000000, "revenue_today": 16000, "session_count": 2, "pending_orders": 1, "counselor_count": 2, "cancelled_orders": 0, "completed_orders": 1, "orders_yesterday": 0, "users_last_month": 4, "users_this_month": 1, "online_user_count": 2, "revenue_yesterday": 0, "today_order_count": 2, "active_session_count": 1, "counselors_last_month": 0, "counselors_this_month": 2}"#;

    /// MyChat's admin API built this reply by inserting the trends into the row and removing the
    /// counts they come from (a swap-remove: the last member takes the removed one's place); the
    /// typed figures keep the member order that produced.
    #[test]
    fn the_figures_keep_the_member_order_clients_have_seen() {
        let typed = serde_json::to_string(&figures(serde_json::from_str(ROW).unwrap())).unwrap();
        assert_eq!(
            typed,
            r#"{"user_count":2,"order_count":3,"paid_orders":1,"counselor_trend":100.0,"today_amount":160.0,"total_amount":160.0,"active_session_count":1,"session_count":2,"pending_orders":1,"counselor_count":2,"cancelled_orders":0,"completed_orders":1,"user_trend":-75.0,"order_trend":100.0,"revenue_trend":100.0,"online_user_count":2,"today_order_count":2}"#
        );
    }
}
