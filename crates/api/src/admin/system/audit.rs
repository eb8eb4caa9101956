//! The audit log (`admin_logs`): one row per successful admin change, written by the RBAC guard
//! ([`crate::admin::guard`]); for an event-sourced change the row points at the committed event.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use web::error::Problem;
use web::extract::Query;

use super::page_rows;
use crate::admin::common::{contains_pattern, BusinessDays};
use crate::{empty_as_none, paging, ApiError, ApiResult, AppState};

/// One audited admin change (contract c.9's SystemLog).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// The entry's id (newest first).
    pub id: i64,
    /// The route: `<METHOD> <path pattern>` (`PUT /api/admin/orders/{id}/status`).
    pub action: String,
    /// The route's area (`system`, `rbac`, `business`, …).
    pub module: String,
    /// The HTTP status answered (2xx: only successes are logged).
    pub status: i32,
    /// The request path (`/api/admin/orders/501/status`).
    pub target: String,
    /// The administrator's id (an API key: the administrator who issued it).
    pub admin_id: i64,
    /// The administrator's username (an API key: `apikey:<id>:<name>`).
    pub operator: String,
    /// Always `""` (responses are not logged).
    pub response: String,
    /// The committed event's sequence in its stream, if the change was event-sourced.
    pub event_seq: Option<i64>,
    /// The API key that acted, if a key did (its id); null for an administrator.
    pub api_key_id: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// The client's IP (`X-Forwarded-For`'s first hop, else `X-Real-IP`).
    pub ip_address: String,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The route's summary.
    pub description: String,
    /// The API key that acted, if a key did (its name); `""` for an administrator.
    pub api_key_name: String,
    /// The committed event's stream (`EVENTS` or `CHAT`), `""` when none.
    pub event_stream: String,
    /// The request body as JSON text, passwords masked, at most 4000 characters (an upload:
    /// `<N bytes>`).
    pub request_data: String,
}

root_list!(
    /// One page of the audit log (`logs` and `list`), newest first, at the root and in `data`.
    AuditLog,
    AuditPage,
    "logs",
    AuditEntry
);

/// `GET /api/admin/logs` filters. Dates are business days (the business time zone), like every
/// admin date.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// 1-based page (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 20).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Alias of `page_size` (the admin client's name).
    #[serde(default, rename = "pageSize", deserialize_with = "empty_as_none")]
    // Checked by `web::paging::check_page_size_alias`, named `pageSize` in a refusal.
    #[param(minimum = 1, maximum = 100)]
    pub page_size_alias: Option<i64>,
    /// Operators whose username contains this text (literally).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub operator: Option<String>,
    /// Entries whose action or description contains this text (literally).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub action: Option<String>,
    /// From this business day on: `YYYY-MM-DD` (a longer date-time is cut to its date).
    #[serde(default, rename = "startDate", deserialize_with = "empty_as_none")]
    #[param(format = Date)]
    pub start_date: Option<String>,
    /// Up to and including this business day: `YYYY-MM-DD`.
    #[serde(default, rename = "endDate", deserialize_with = "empty_as_none")]
    #[param(format = Date)]
    pub end_date: Option<String>,
}

/// A `YYYY-MM-DD` parameter (its first 10 characters).
fn date(name: &str, value: Option<&str>) -> Result<Option<chrono::NaiveDate>, ApiError> {
    value
        .map(|s| {
            chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
                .map_err(|_| ApiError::field(name, "must be YYYY-MM-DD"))
        })
        .transpose()
}

/// The audit log
///
/// The audit log, newest first, filtered by operator, action and business days.
#[utoipa::path(
    get,
    path = "/api/admin/logs",
    tag = "system",
    params(AuditQuery),
    responses(
        (status = 200, description = "One page of the audit log", body = AuditLog),
        (status = 400, description = "A bad paging parameter or date", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn logs(
    State(state): State<AppState>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<axum::Json<AuditLog>> {
    validator::Validate::validate(&q)?;
    web::paging::check_page_size_alias(q.page_size_alias)?;
    let (limit, offset) = paging(q.page, q.page_size.or(q.page_size_alias), 20)?;
    let operator = q.operator.as_deref().map(contains_pattern);
    let action = q.action.as_deref().map(contains_pattern);
    let days = BusinessDays::of(&state);
    let start = date("startDate", q.start_date.as_deref())?;
    let end = date("endDate", q.end_date.as_deref())?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(o) = &operator {
            qb.push(" AND operator ILIKE ").push_bind(o.clone());
        }
        if let Some(a) = &action {
            qb.push(" AND (action ILIKE ").push_bind(a.clone());
            qb.push(" OR description ILIKE ")
                .push_bind(a.clone())
                .push(")");
        }
        if let Some(s) = start {
            qb.push(" AND created_at >= ").push_bind(days.start_of(s));
        }
        if let Some(e) = end {
            qb.push(" AND created_at < ")
                .push_bind(days.start_of(e + chrono::Duration::days(1)));
        }
    };
    let (list, total) = page_rows(
        &state,
        "id, admin_id, operator, action, module, target, description, ip_address, \
         user_agent, request_data, '' AS response, status, event_stream, event_seq, created_at, \
         api_key_id, api_key_name",
        "admin_logs",
        filter,
        "id DESC",
        limit,
        offset,
    )
    .await?;
    Ok(axum::Json(AuditLog::new(list, total)))
}
