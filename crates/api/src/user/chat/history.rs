//! Chat lists (issue 3): the caller's sessions (contract b.1 #42) and billings (seed 001
//! `/api/chat/billings`, `/api/chat/counselor/billings`).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::Row;

use crate::money::yuan;
use crate::user::earnings::caller_counselor;
use crate::{ok, paging, ApiError, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat/sessions", get(sessions))
        .route("/api/chat/billings", get(billings))
        .route("/api/chat/counselor/billings", get(counselor_billings))
}

/// Paging query of the lists here (`status` only for sessions).
pub type PageQuery = crate::PageQuery;

/// `GET /api/chat/sessions` → `{sessions, total}`: sessions where the caller is the user or the
/// counselor, newest first, with `order`, `user` and `counselor`; `duration` in seconds.
pub async fn sessions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    if let Some(s) = q.status {
        if !(0..=3).contains(&s) {
            return Err(ApiError::field("status", "must be 0 to 3"));
        }
    }
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
    let sessions: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<i64, _>("id"),
                "order_id": r.get::<i64, _>("order_id"),
                "user_id": r.get::<i64, _>("user_id"),
                "counselor_id": r.get::<i64, _>("counselor_id"),
                "status": r.get::<i16, _>("status"),
                "start_time": r.get::<Option<DateTime<Utc>>, _>("start_time"),
                "end_time": r.get::<Option<DateTime<Utc>>, _>("end_time"),
                "duration": r.get::<i64, _>("duration"),
                "price": yuan(r.get("price_fen")),
                "total_amount": yuan(r.get("total_amount_fen")),
                "total_amount_fen": r.get::<i64, _>("total_amount_fen"),
                "created_at": r.get::<DateTime<Utc>, _>("created_at"),
                "updated_at": r.get::<DateTime<Utc>, _>("updated_at"),
                "order": {
                    "id": r.get::<i64, _>("order_id"),
                    "order_no": r.get::<Option<String>, _>("order_no"),
                    "status": r.get::<Option<i16>, _>("order_status"),
                    "duration": r.get::<Option<i32>, _>("order_duration"),
                },
                "user": { "id": r.get::<i64, _>("user_id"), "username": r.get::<String, _>("username"), "avatar": r.get::<String, _>("u_avatar") },
                "counselor": { "id": r.get::<i64, _>("counselor_id"), "name": r.get::<String, _>("c_name"), "avatar": r.get::<String, _>("c_avatar") },
            })
        })
        .collect();
    Ok(ok(json!({ "sessions": sessions, "total": total })))
}

fn billing_json(r: &sqlx::postgres::PgRow) -> Value {
    json!({
        "id": r.get::<i64, _>("session_id"),
        "session_id": r.get::<i64, _>("session_id"),
        "order_id": r.get::<i64, _>("order_id"),
        "user_id": r.get::<i64, _>("user_id"),
        "counselor_id": r.get::<i64, _>("counselor_id"),
        "duration": r.get::<i64, _>("duration"),
        "duration_minutes": r.get::<i32, _>("billed_minutes"),
        "price_per_minute": yuan(r.get("price_fen")),
        "total_amount": yuan(r.get("total_amount_fen")),
        "total_amount_fen": r.get::<i64, _>("total_amount_fen"),
        "platform_fee": yuan(r.get("platform_fee_fen")),
        "platform_fee_fen": r.get::<i64, _>("platform_fee_fen"),
        "counselor_fee": yuan(r.get("counselor_fee_fen")),
        "counselor_fee_fen": r.get::<i64, _>("counselor_fee_fen"),
        "refund": yuan(r.get("refund_fen")),
        "refund_fen": r.get::<i64, _>("refund_fen"),
        "status": r.get::<i16, _>("status"),
        "created_at": r.get::<DateTime<Utc>, _>("created_at"),
    })
}

async fn billing_page(
    state: &AppState,
    column: &str,
    id: i64,
    q: &PageQuery,
) -> ApiResult<Json<Value>> {
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
    let billings: Vec<Value> = rows.iter().map(billing_json).collect();
    Ok(ok(json!({ "billings": billings, "total": total })))
}

/// `GET /api/chat/billings` → `{billings, total}`: the caller's bills as a user.
pub async fn billings(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    billing_page(&state, "user_id", user.user_id, &q).await
}

/// `GET /api/chat/counselor/billings` → `{billings, total}`: the caller's bills as a counselor;
/// 403 "not a counselor".
pub async fn counselor_billings(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Value>> {
    let counselor_id = caller_counselor(&state, &user).await?;
    billing_page(&state, "counselor_id", counselor_id, &q).await
}
