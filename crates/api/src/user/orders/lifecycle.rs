//! Orders beyond create/get/list (issue 3): the counselor's status change, cancel (with refund of
//! a paid order), the counselor's orders, `validate` and the `timeline` read from the log.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use domain::{Order, OrderCommand, OrderStatus};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::user::chat::sessions::counselor_user_id;
use crate::user::earnings::caller_counselor;
use crate::user::orders::placement::{order_json, request_meta, ORDER_SELECT};
use crate::{ok, paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/order/{id}/status", put(set_status))
        .route("/api/order/{id}/cancel", post(cancel))
        .route("/api/order/{id}/validate", get(validate))
        .route("/api/order/{id}/timeline", get(timeline))
        .route("/api/counselor/orders", get(counselor_orders))
}

async fn load_order(state: &AppState, id: i64) -> Result<Order, ApiError> {
    let (order, version) = state.bus.load::<Order>(&id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    Ok(order)
}

/// `PUT /api/order/:id/status` body: `status` 0–4 (0 accepted as a value, contract f.6).
#[derive(Debug, Deserialize)]
pub struct StatusRequest {
    pub status: i16,
}

/// `PUT /api/order/:id/status` → none. Only the order's counselor. In an event-sourced order
/// the status follows facts, so only the transitions a counselor may cause are accepted:
/// `2` completes a paid order, `3` cancels it (refunding a paid one). `1` and `4` happen through
/// payments (a provider's confirmation, a refund) and `0` never comes back: 400 naming `status`.
pub async fn set_status(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<StatusRequest>,
) -> ApiResult<Json<Value>> {
    if !(0..=4).contains(&req.status) {
        return Err(ApiError::field("status", "must be 0 to 4"));
    }
    let order = load_order(&state, id).await?;
    if counselor_user_id(&state, order.counselor_id).await? != Some(user.user_id) {
        return Err(ApiError::forbidden(
            "only the order's counselor may change its status",
        ));
    }
    let now = Utc::now();
    let command = match req.status {
        2 => OrderCommand::Complete {
            session_id: order.session_id.unwrap_or(id),
            completed_at: now,
        },
        3 => OrderCommand::Cancel {
            cancelled_by: user.user_id,
            reason: "cancelled by the counselor".into(),
            cancelled_at: now,
        },
        1 => {
            return Err(ApiError::field(
                "status",
                "an order becomes paid only through its payment",
            ))
        }
        4 => {
            return Err(ApiError::field(
                "status",
                "an order is refunded through POST /api/payment/refund",
            ))
        }
        _ => {
            return Err(ApiError::field(
                "status",
                "an order cannot return to pending payment",
            ))
        }
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<Order>(&id.to_string(), command, &meta)
        .await?;
    state.settle("orders", committed.stream_sequence).await;
    Ok(crate::ok_msg("order status updated"))
}

/// `POST /api/order/:id/cancel` → `{order_id, status: 3, refund_amount}`. Only the order's user;
/// allowed while pending or paid before the session started. A paid order's whole amount goes
/// back to its payment (process manager: `OrderCancelled` → `Payment::Refund` →
/// `Order::MarkRefunded`, which makes the order 4).
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let order = load_order(&state, id).await?;
    if order.user_id != user.user_id {
        return Err(ApiError::forbidden("not your order"));
    }
    let command = OrderCommand::Cancel {
        cancelled_by: user.user_id,
        reason: String::new(),
        cancelled_at: Utc::now(),
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<Order>(&id.to_string(), command, &meta)
        .await?;
    state.settle("orders", committed.stream_sequence).await;
    let refund = committed.events.iter().find_map(|e| match e {
        domain::OrderEvent::OrderCancelled { refund_amount, .. } => Some(*refund_amount),
        _ => None,
    });
    Ok(ok(json!({
        "order_id": id,
        "status": 3,
        "refund_amount": crate::money::yuan(refund.unwrap_or(0)),
        "refund_amount_fen": refund.unwrap_or(0),
    })))
}

/// `GET /api/order/:id/validate` → `{order_id, valid, status, can_pay, can_chat, can_cancel,
/// can_review, reason}`: what the caller (the order's user or counselor) may do with it now.
pub async fn validate(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let order = load_order(&state, id).await?;
    let counselor_user = counselor_user_id(&state, order.counselor_id).await?;
    let is_user = order.user_id == user.user_id;
    if !is_user && counselor_user != Some(user.user_id) {
        return Err(ApiError::forbidden("not your order"));
    }
    let s = order.status;
    let can_chat = s == OrderStatus::Paid;
    let reason = match s {
        OrderStatus::Pending => "awaiting payment",
        OrderStatus::Paid if order.session_id.is_some() => "in service",
        OrderStatus::Paid => "paid; the session can start",
        OrderStatus::Completed => "completed",
        OrderStatus::Cancelled => "cancelled",
        OrderStatus::Refunded => "refunded",
        OrderStatus::Absent => "not found",
    };
    Ok(ok(json!({
        "order_id": id,
        "valid": can_chat,
        "status": s.code(),
        "can_pay": is_user && s == OrderStatus::Pending,
        "can_chat": can_chat,
        "can_cancel": is_user && (s == OrderStatus::Pending || (s == OrderStatus::Paid && order.session_id.is_none())),
        "can_review": is_user && s == OrderStatus::Completed && !order.reviewed,
        "reason": reason,
    })))
}

/// `GET /api/order/:id/timeline` → `{order_id, timeline: [{sequence, type, at, actor, data}]}`:
/// the order's events as stored in the log (`ev.order.<id>`), oldest first — not a separate table.
pub async fn timeline(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let order = load_order(&state, id).await?;
    let counselor_user = counselor_user_id(&state, order.counselor_id).await?;
    if order.user_id != user.user_id && counselor_user != Some(user.user_id) {
        return Err(ApiError::forbidden("not your order"));
    }
    let store = state.bus.store::<Order>().await?;
    let commits = store
        .load_commits(&id.to_string())
        .await
        .map_err(|e| anyhow::anyhow!("reading order {id}: {e}"))?;
    let mut timeline = Vec::new();
    for (seq, commit) in commits {
        for event in &commit.events {
            let data = event
                .payload
                .as_object()
                .and_then(|o| o.values().next())
                .cloned()
                .unwrap_or(Value::Null);
            timeline.push(json!({
                "sequence": event.sequence,
                "stream_sequence": seq,
                "type": event.event_type,
                "version": event.event_version,
                "at": commit.recorded_at,
                "actor": { "kind": commit.actor.kind, "id": commit.actor.id },
                "data": data,
            }));
        }
    }
    Ok(ok(json!({ "order_id": id, "timeline": timeline })))
}

/// `GET /api/counselor/orders` query.
pub type CounselorOrdersQuery = crate::PageQuery;

/// `GET /api/counselor/orders` → `{orders, total}`: orders of the caller's counselor profile
/// (looked up by `counselors.user_id`, the intended rule); 403 "not a counselor".
pub async fn counselor_orders(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<CounselorOrdersQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    if let Some(s) = q.status {
        if !(0..=4).contains(&s) {
            return Err(ApiError::field("status", "must be 0 to 4"));
        }
    }
    let counselor_id = caller_counselor(&state, &user).await?;
    let rows = sqlx::query(&format!(
        "{ORDER_SELECT} WHERE o.counselor_id = $1 AND ($2::smallint IS NULL OR o.status = $2) \
         ORDER BY o.id DESC LIMIT $3 OFFSET $4"
    ))
    .bind(counselor_id)
    .bind(q.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders WHERE counselor_id = $1 AND ($2::smallint IS NULL OR status = $2)",
    )
    .bind(counselor_id)
    .bind(q.status)
    .fetch_one(&state.db)
    .await?;
    let orders: Vec<Value> = rows.iter().map(order_json).collect();
    Ok(ok(json!({ "orders": orders, "total": total })))
}
