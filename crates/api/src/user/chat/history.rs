//! Chat lists: the caller's sessions (contract b.1 #42) and billings (seed 001
//! `/api/chat/billings`, `/api/chat/counselor/billings`).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use super::sessions::yuan;
use crate::user::earnings::caller_counselor;
use crate::user::state::UserState;
use crate::{paging, ApiQuery, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(sessions))
        .routes(routes!(billings))
        .routes(routes!(counselor_billings))
}

/// `GET /api/chat/sessions` query: paging and an optional status filter.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct SessionsQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Sessions per page, 1 to 100 (default 10).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Only sessions in this status (1 active, 2 ended); empty or absent: all.
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 0, max = 3, message = "must be 0 to 3"))]
    pub status: Option<i16>,
}

/// The order of a listed session (null members when the order is gone).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionSummaryOrder {
    /// The order's id.
    pub id: i64,
    /// The order's number.
    pub order_no: Option<String>,
    /// The order's status (contract a.6).
    pub status: Option<i16>,
    /// The order's booked minutes.
    pub duration: Option<i32>,
}

/// The user of a listed session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionSummaryUser {
    /// The user's id.
    pub id: i64,
    /// The user's username.
    pub username: String,
    /// The user's avatar URL (may be empty).
    pub avatar: String,
}

/// The counselor of a listed session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionSummaryCounselor {
    /// The counselor's id.
    pub id: i64,
    /// The counselor's display name.
    pub name: String,
    /// The counselor's avatar URL (may be empty).
    pub avatar: String,
}

/// A session in the caller's list.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionSummary {
    /// The session's id (its order's id).
    pub id: i64,
    /// The order's id.
    pub order_id: i64,
    /// The user's id.
    pub user_id: i64,
    /// The counselor's id.
    pub counselor_id: i64,
    /// 1 active, 2 ended.
    pub status: i16,
    /// When it started (RFC 3339), or null.
    pub start_time: Option<DateTime<Utc>>,
    /// When it ended (RFC 3339), or null.
    pub end_time: Option<DateTime<Utc>>,
    /// How long it lasted, seconds.
    pub duration: i64,
    /// Price per minute, yuan.
    pub price: f64,
    /// What it cost, yuan.
    pub total_amount: f64,
    /// What it cost, fen.
    pub total_amount_fen: i64,
    /// When the row was created (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// When the row last changed (RFC 3339).
    pub updated_at: DateTime<Utc>,
    /// The session's order.
    pub order: SessionSummaryOrder,
    /// The session's user.
    pub user: SessionSummaryUser,
    /// The session's counselor.
    pub counselor: SessionSummaryCounselor,
}

/// A page of the caller's sessions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionList {
    /// The sessions, newest first.
    pub sessions: Vec<SessionSummary>,
    /// How many sessions match.
    pub total: i64,
}

/// `GET /api/chat/sessions` → `{sessions, total}`: sessions where the caller is the user or the
/// counselor, newest first, with `order`, `user` and `counselor`; `duration` in seconds.
#[utoipa::path(
    get,
    path = "/api/chat/sessions",
    operation_id = "chat_sessions",
    tag = "chat",
    summary = "The caller's sessions (as user or counselor)",
    params(SessionsQuery),
    responses(
        (status = 200, description = "A page of sessions", body = Envelope<SessionList>),
        (status = 400, description = "Invalid paging or status", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn sessions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<SessionsQuery>,
) -> Reply<SessionList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    let filter =
        "(s.user_id = $1 OR s.counselor_user_id = $1) AND ($2::smallint IS NULL OR s.status = $2)";
    let rows = sqlx::query(&format!(
        "SELECT s.*, u.username, u.avatar AS u_avatar, c.name AS c_name, c.avatar AS c_avatar, \
         o.order_no, o.status AS order_status, o.duration AS order_duration \
         FROM chat_sessions s JOIN users u ON u.id = s.user_id JOIN counselors c ON c.id = s.counselor_id \
         LEFT JOIN orders o ON o.id = s.order_id WHERE {filter} ORDER BY s.id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(user.user_id)
    .bind(q.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM chat_sessions s WHERE {filter}"
    ))
    .bind(user.user_id)
    .bind(q.status)
    .fetch_one(&state.db)
    .await?;
    let sessions = rows
        .iter()
        .map(|r| SessionSummary {
            id: r.get("id"),
            order_id: r.get("order_id"),
            user_id: r.get("user_id"),
            counselor_id: r.get("counselor_id"),
            status: r.get("status"),
            start_time: r.get("start_time"),
            end_time: r.get("end_time"),
            duration: r.get("duration"),
            price: yuan(r.get("price_fen")),
            total_amount: yuan(r.get("total_amount_fen")),
            total_amount_fen: r.get("total_amount_fen"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            order: SessionSummaryOrder {
                id: r.get("order_id"),
                order_no: r.get("order_no"),
                status: r.get("order_status"),
                duration: r.get("order_duration"),
            },
            user: SessionSummaryUser {
                id: r.get("user_id"),
                username: r.get("username"),
                avatar: r.get("u_avatar"),
            },
            counselor: SessionSummaryCounselor {
                id: r.get("counselor_id"),
                name: r.get("c_name"),
                avatar: r.get("c_avatar"),
            },
        })
        .collect();
    Ok(reply(SessionList { sessions, total }))
}

/// The billing lists' query: paging.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct BillingsQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Bills per page, 1 to 100 (default 10).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
}

/// A session's bill, amounts in yuan with `_fen` twins.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Billing {
    /// The session's id (a bill has no id of its own).
    pub id: i64,
    /// The session's id.
    pub session_id: i64,
    /// The order's id.
    pub order_id: i64,
    /// The user's id.
    pub user_id: i64,
    /// The counselor's id.
    pub counselor_id: i64,
    /// How long the session lasted, seconds.
    pub duration: i64,
    /// The minutes billed.
    pub duration_minutes: i32,
    /// Price per minute, yuan.
    pub price_per_minute: f64,
    /// What the session cost, yuan.
    pub total_amount: f64,
    /// What the session cost, fen.
    pub total_amount_fen: i64,
    /// The platform's share, yuan.
    pub platform_fee: f64,
    /// The platform's share, fen.
    pub platform_fee_fen: i64,
    /// The counselor's share, yuan.
    pub counselor_fee: f64,
    /// The counselor's share, fen.
    pub counselor_fee_fen: i64,
    /// What went back to the user, yuan.
    pub refund: f64,
    /// What went back to the user, fen.
    pub refund_fen: i64,
    /// The bill's status.
    pub status: i16,
    /// When the session was billed (RFC 3339).
    pub created_at: DateTime<Utc>,
}

impl Billing {
    fn from_row(r: &sqlx::postgres::PgRow) -> Self {
        Self {
            id: r.get("session_id"),
            session_id: r.get("session_id"),
            order_id: r.get("order_id"),
            user_id: r.get("user_id"),
            counselor_id: r.get("counselor_id"),
            duration: r.get("duration"),
            duration_minutes: r.get("billed_minutes"),
            price_per_minute: yuan(r.get("price_fen")),
            total_amount: yuan(r.get("total_amount_fen")),
            total_amount_fen: r.get("total_amount_fen"),
            platform_fee: yuan(r.get("platform_fee_fen")),
            platform_fee_fen: r.get("platform_fee_fen"),
            counselor_fee: yuan(r.get("counselor_fee_fen")),
            counselor_fee_fen: r.get("counselor_fee_fen"),
            refund: yuan(r.get("refund_fen")),
            refund_fen: r.get("refund_fen"),
            status: r.get("status"),
            created_at: r.get("created_at"),
        }
    }
}

/// A page of bills.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BillingList {
    /// The bills, newest session first.
    pub billings: Vec<Billing>,
    /// How many bills there are.
    pub total: i64,
}

async fn billing_page(
    state: &AppState,
    column: &str,
    id: i64,
    q: &BillingsQuery,
) -> Reply<BillingList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    let rows = sqlx::query(&format!(
        "SELECT * FROM chat_billings WHERE {column} = $1 ORDER BY session_id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM chat_billings WHERE {column} = $1"
    ))
    .bind(id)
    .fetch_one(&state.db)
    .await?;
    let billings = rows.iter().map(Billing::from_row).collect();
    Ok(reply(BillingList { billings, total }))
}

/// `GET /api/chat/billings` → `{billings, total}`: the caller's bills as a user.
#[utoipa::path(
    get,
    path = "/api/chat/billings",
    operation_id = "chat_billings",
    tag = "billing",
    summary = "The caller's bills as a user",
    params(BillingsQuery),
    responses(
        (status = 200, description = "A page of bills", body = Envelope<BillingList>),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn billings(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<BillingsQuery>,
) -> Reply<BillingList> {
    billing_page(&state, "user_id", user.user_id, &q).await
}

/// `GET /api/chat/counselor/billings` → `{billings, total}`: the caller's bills as a counselor;
/// 403 "not a counselor".
#[utoipa::path(
    get,
    path = "/api/chat/counselor/billings",
    operation_id = "chat_counselor_billings",
    tag = "billing",
    summary = "The calling counselor's bills",
    params(BillingsQuery),
    responses(
        (status = 200, description = "A page of bills", body = Envelope<BillingList>),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a counselor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn counselor_billings(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<BillingsQuery>,
) -> Reply<BillingList> {
    let counselor_id = caller_counselor(&state, &user).await?;
    billing_page(&state, "counselor_id", counselor_id, &q).await
}
