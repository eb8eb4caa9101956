//! Orders: create (a command on the `Order` aggregate), get and list (from the `orders` read
//! model).

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use domain::{Order, OrderCommand};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::money::yuan;
use crate::{ok, paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/order/create", post(create))
        .route("/api/order/list", get(list))
        .route("/api/order/{id}", get(get_one))
}

pub use web::command::request_meta;

/// Parses MyChat's `schedule_time` forms (contract b.1 #21): RFC 3339
/// (`2026-01-20T15:00:00+08:00`, the web client's form), `YYYY-MM-DDTHH:mm:ss`,
/// `YYYY-MM-DD HH:mm:ss` and `YYYY-MM-DD`. Times without an offset are China time (UTC+8).
///
/// # Errors
/// 400 naming `schedule_time`.
pub fn parse_schedule_time(s: &str) -> Result<DateTime<Utc>, ApiError> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let china = FixedOffset::east_opt(8 * 3600).expect("UTC+8");
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
        .or_else(|_| NaiveDate::parse_from_str(s, "%Y-%m-%d").map(|d| d.and_hms_opt(0, 0, 0).expect("midnight")))
        .map_err(|_| {
            ApiError::field(
                "schedule_time",
                "expected YYYY-MM-DDTHH:mm:ss+08:00, YYYY-MM-DDTHH:mm:ss, YYYY-MM-DD HH:mm:ss or YYYY-MM-DD",
            )
        })?;
    china
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| ApiError::field("schedule_time", "not a valid local time"))
}

/// `POST /api/order/create` body.
#[derive(Debug, Deserialize)]
pub struct CreateOrder {
    pub counselor_id: i64,
    /// Minutes (10..=180).
    pub duration: i64,
    pub schedule_time: String,
    #[serde(default)]
    pub notes: String,
}

/// `POST /api/order/create` → `{order_id, order_no, amount, amount_fen, status: 0, create_at}`.
/// The amount is `duration × the counselor's current price`, fixed in the order.
#[tracing::instrument(level = "debug", name = "order_create", skip_all)]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<CreateOrder>,
) -> ApiResult<Json<Value>> {
    if req.counselor_id <= 0 {
        return Err(ApiError::field("counselor_id", "must be a positive id"));
    }
    if !(domain::order::MIN_DURATION_MINUTES..=domain::order::MAX_DURATION_MINUTES)
        .contains(&req.duration)
    {
        return Err(ApiError::field(
            "duration",
            "must be between 10 and 180 minutes",
        ));
    }
    if req.notes.chars().count() > 500 {
        return Err(ApiError::field("notes", "at most 500 characters"));
    }
    let schedule_time = parse_schedule_time(&req.schedule_time)?;
    let counselor = state
        .counselors
        .get(&state.db, req.counselor_id)
        .await?
        .ok_or_else(|| ApiError::not_found("counselor"))?;
    if counselor.status != 1 {
        return Err(ApiError::bad_request("counselor is not available"));
    }
    if counselor.user_id == Some(user.user_id) {
        return Err(ApiError::bad_request(
            "a counselor cannot order a session with themself",
        ));
    }
    let id = state
        .ids
        .next(&state.db, crate::app::ids::IdSequence::Orders)
        .await?;
    let now = Utc::now();
    let order_no = format!("ORD{}{}{id}", now.timestamp(), user.user_id);
    let command = OrderCommand::Place {
        order_no: order_no.clone(),
        user_id: user.user_id,
        counselor_id: req.counselor_id,
        duration_minutes: req.duration,
        price_per_minute: counselor.price_fen,
        schedule_time: Some(schedule_time),
        notes: req.notes,
        placed_at: now,
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute_new::<Order>(&id.to_string(), command, &meta)
        .await?;
    state.settle("orders", committed.stream_sequence).await;
    // A retried Idempotency-Key answers with the order its first attempt placed.
    let id: i64 = committed
        .aggregate_id
        .parse()
        .map_err(|_| anyhow::anyhow!("order id {}", committed.aggregate_id))?;
    let (order_no, amount) = match committed.events.first() {
        Some(domain::OrderEvent::OrderPlaced {
            order_no, amount, ..
        }) => (order_no.clone(), *amount),
        _ => {
            return Err(ApiError::internal(anyhow::anyhow!(
                "order {id}: no OrderPlaced"
            )))
        }
    };
    Ok(ok(json!({
        "order_id": id,
        "order_no": order_no,
        "amount": yuan(amount),
        "amount_fen": amount,
        "status": 0,
        "create_at": now,
        "created_at": now,
    })))
}

pub(crate) const ORDER_SELECT: &str = "SELECT o.*, u.username AS u_username, u.avatar AS u_avatar, \
     u.email AS u_email, u.phone AS u_phone, c.name AS c_name, c.avatar AS c_avatar, c.title AS c_title, \
     c.specialty AS c_specialty, c.price_fen AS c_price_fen, c.user_id AS c_user_id \
     FROM orders o JOIN users u ON u.id = o.user_id JOIN counselors c ON c.id = o.counselor_id";

/// An order as the MyChat clients read it (contract b.2), with nested `user` and `counselor`.
pub fn order_json(row: &sqlx::postgres::PgRow) -> Value {
    let amount: i64 = row.get("amount_fen");
    json!({
        "id": row.get::<i64, _>("id"),
        "order_no": row.get::<String, _>("order_no"),
        "user_id": row.get::<i64, _>("user_id"),
        "counselor_id": row.get::<i64, _>("counselor_id"),
        "duration": row.get::<i32, _>("duration"),
        "amount": yuan(amount),
        "amount_fen": amount,
        "price": yuan(row.get("price_fen")),
        "status": row.get::<i16, _>("status"),
        "schedule_time": row.get::<Option<DateTime<Utc>>, _>("schedule_time"),
        "notes": row.get::<String, _>("notes"),
        "pay_time": row.get::<Option<DateTime<Utc>>, _>("pay_time"),
        "payment_id": row.get::<Option<i64>, _>("payment_id"),
        "session_id": row.get::<Option<i64>, _>("session_id"),
        "has_review": row.try_get::<bool, _>("has_review").unwrap_or(false),
        "created_at": row.get::<DateTime<Utc>, _>("created_at"),
        "updated_at": row.get::<DateTime<Utc>, _>("updated_at"),
        "user": {
            "id": row.get::<i64, _>("user_id"),
            "username": row.get::<String, _>("u_username"),
            "avatar": row.get::<String, _>("u_avatar"),
            "email": row.get::<String, _>("u_email"),
            "phone": row.get::<String, _>("u_phone"),
        },
        "counselor": {
            "id": row.get::<i64, _>("counselor_id"),
            "name": row.get::<String, _>("c_name"),
            "avatar": row.get::<String, _>("c_avatar"),
            "title": row.get::<String, _>("c_title"),
            "specialty": row.get::<String, _>("c_specialty"),
            "price": yuan(row.get("c_price_fen")),
        },
    })
}

/// `GET /api/order/:id` → the order; only its user or its counselor may read it (403 otherwise).
pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let row = sqlx::query(&format!("{ORDER_SELECT} WHERE o.id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("order"))?;
    let counselor_user: Option<i64> = row.get("c_user_id");
    if row.get::<i64, _>("user_id") != user.user_id && counselor_user != Some(user.user_id) {
        return Err(ApiError::forbidden("not your order"));
    }
    Ok(ok(order_json(&row)))
}

/// `GET /api/order/list` query.
pub type ListQuery = crate::PageQuery;

/// `GET /api/order/list` → `{orders, total}`: the caller's orders, newest first, optionally by
/// `status` (0–4).
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    if let Some(s) = q.status {
        if !(0..=4).contains(&s) {
            return Err(ApiError::field("status", "must be 0 to 4"));
        }
    }
    let rows = sqlx::query(&format!(
        "{ORDER_SELECT} WHERE o.user_id = $1 AND ($2::smallint IS NULL OR o.status = $2) \
         ORDER BY o.id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(user.user_id)
    .bind(q.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE user_id = $1 AND ($2::smallint IS NULL OR status = $2)",
    )
    .bind(user.user_id)
    .bind(q.status)
    .fetch_one(&state.db)
    .await?;
    let orders: Vec<Value> = rows.iter().map(order_json).collect();
    Ok(ok(json!({ "orders": orders, "total": total })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schedule_time_form_of_the_contract_parses_to_the_same_instant() {
        let expected = parse_schedule_time("2026-01-20T15:00:00+08:00").unwrap();
        assert_eq!(
            parse_schedule_time("2026-01-20T15:00:00").unwrap(),
            expected
        );
        assert_eq!(
            parse_schedule_time("2026-01-20 15:00:00").unwrap(),
            expected
        );
        assert_eq!(
            parse_schedule_time("2026-01-20").unwrap(),
            parse_schedule_time("2026-01-20T00:00:00+08:00").unwrap()
        );
        assert!(parse_schedule_time("\"2026-01-20\"").is_err());
        assert!(parse_schedule_time("tomorrow").is_err());
    }
}
