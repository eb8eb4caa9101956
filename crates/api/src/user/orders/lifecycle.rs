//! Orders beyond create/get/list: the counselor's status change, cancel (with refund of
//! a paid order), the counselor's orders, `validate` and the `timeline` read from the log.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use domain::{Order, OrderCommand, OrderStatus};
use eventstore::Actor;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::Problem;
use web::money::yuan_f64;

use crate::user::chat::sessions::counselor_user_id;
use crate::user::earnings::caller_counselor;
use crate::user::orders::placement::{
    request_meta, OrderList, OrderListQuery, OrderView, ORDER_SELECT,
};
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(set_status))
        .routes(routes!(cancel))
        .routes(routes!(validate))
        .routes(routes!(timeline))
        .routes(routes!(counselor_orders))
}

async fn load_order(state: &AppState, id: i64) -> Result<Order, ApiError> {
    let (order, version) = state.bus.load::<Order>(&id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    Ok(order)
}

/// `PUT /api/order/:id/status` body: `status` 0–4 (0 accepted as a value, contract f.6).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct StatusRequest {
    /// 0–4; only 2 (complete) and 3 (cancel) are accepted.
    #[validate(range(min = 0, max = 4, message = "must be 0 to 4"))]
    pub status: i16,
}

/// `PUT /api/order/:id/status` → none. Only the order's counselor. In an event-sourced order
/// the status follows facts, so only the transitions a counselor may cause are accepted:
/// `2` completes a paid order, `3` cancels it (refunding a paid one). `1` and `4` happen through
/// payments (a provider's confirmation, a refund) and `0` never comes back: 400 naming `status`.
#[utoipa::path(
    put,
    path = "/api/order/{id}/status",
    operation_id = "set_order_status",
    tag = "orders",
    summary = "The counselor completes (2) or cancels (3) an order",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's id")),
    request_body = StatusRequest,
    responses(
        (status = 200, description = "`{code: 200, msg: \"order status updated\"}`", body = Message),
        (status = 400, description = "A status the counselor may not set, or a refused transition", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the order's counselor", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn set_status(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<StatusRequest>,
) -> ApiResult<Json<Message>> {
    req.validate()?;
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
            return Err(ApiError::unprocessable(
                "status",
                "an order becomes paid only through its payment",
            ))
        }
        4 => {
            return Err(ApiError::unprocessable(
                "status",
                "an order is refunded through POST /api/payment/refund",
            ))
        }
        _ => {
            return Err(ApiError::unprocessable(
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
    Ok(message("order status updated"))
}

/// `POST /api/order/:id/cancel` → `{order_id, status: 3, refund_amount}`. Only the order's user;
/// allowed while pending or paid before the session started. A paid order's whole amount goes
/// back to its payment (process manager: `OrderCancelled` → `Payment::Refund` →
/// `Order::MarkRefunded`, which makes the order 4).
#[utoipa::path(
    post,
    path = "/api/order/{id}/cancel",
    operation_id = "cancel_order",
    tag = "orders",
    summary = "Cancel (a paid order is refunded in full)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's id")),
    responses(
        (status = 200, description = "Cancelled", body = Envelope<OrderCancelled>),
        (status = 400, description = "The order cannot be cancelled now", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> Reply<OrderCancelled> {
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
    Ok(reply(OrderCancelled {
        order_id: id,
        status: 3,
        refund_amount: yuan_f64(refund.unwrap_or(0)),
        refund_amount_fen: refund.unwrap_or(0),
    }))
}

/// A cancelled order and what goes back to its payer.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderCancelled {
    pub order_id: i64,
    /// Always 3 (cancelled; a refunded one becomes 4 once the refund is paid back).
    pub status: i16,
    /// What goes back to the payer, yuan (0 for an unpaid order).
    pub refund_amount: f64,
    /// The same, fen.
    pub refund_amount_fen: i64,
}

/// What the caller may do with an order now.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderValidity {
    pub order_id: i64,
    /// Whether the order is paid (its chat may run).
    pub valid: bool,
    /// 0 awaiting payment, 1 paid, 2 completed, 3 cancelled, 4 refunded.
    pub status: i16,
    pub can_pay: bool,
    pub can_chat: bool,
    pub can_cancel: bool,
    pub can_review: bool,
    /// Why, in words (`awaiting payment`, `in service`, …).
    pub reason: String,
}

/// `GET /api/order/:id/validate` → `{order_id, valid, status, can_pay, can_chat, can_cancel,
/// can_review, reason}`: what the caller (the order's user or counselor) may do with it now.
#[utoipa::path(
    get,
    path = "/api/order/{id}/validate",
    operation_id = "validate_order",
    tag = "orders",
    summary = "What the caller may do with the order now",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's id")),
    responses(
        (status = 200, description = "What the caller may do", body = Envelope<OrderValidity>),
        (status = 403, description = "Not the caller's order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn validate(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Reply<OrderValidity> {
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
    Ok(reply(OrderValidity {
        order_id: id,
        valid: can_chat,
        status: s.code(),
        can_pay: is_user && s == OrderStatus::Pending,
        can_chat,
        can_cancel: is_user
            && (s == OrderStatus::Pending
                || (s == OrderStatus::Paid && order.session_id.is_none())),
        can_review: is_user && s == OrderStatus::Completed && !order.reviewed,
        reason: reason.to_string(),
    }))
}

/// Who caused an event.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineActor {
    /// `user`, `admin` or `system`.
    pub kind: String,
    /// The user's or administrator's id; 0 for `system`.
    pub id: i64,
}

/// One event of an order, as stored in the log.
#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    /// The order's event number, from 1.
    pub sequence: usize,
    /// The commit's position in the event stream.
    pub stream_sequence: u64,
    /// The event's type (`OrderPlaced`, `OrderPaid`, …).
    pub r#type: String,
    /// The event's schema version.
    pub version: String,
    /// When it was recorded (RFC 3339).
    pub at: DateTime<Utc>,
    pub actor: TimelineActor,
    /// The event's fields as the domain stored them (they differ per `type`).
    #[schema(value_type = Object)]
    pub data: Value,
}

/// An order's events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderTimeline {
    pub order_id: i64,
    pub timeline: Vec<TimelineEntry>,
}

/// `GET /api/order/:id/timeline` → `{order_id, timeline: [{sequence, type, at, actor, data}]}`:
/// the order's events as stored in the log (`ev.order.<id>`), oldest first — not a separate table.
#[utoipa::path(
    get,
    path = "/api/order/{id}/timeline",
    operation_id = "order_timeline",
    tag = "orders",
    summary = "The order's events, read from the log",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The events, oldest first", body = Envelope<OrderTimeline>),
        (status = 403, description = "Not the caller's order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such order", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn timeline(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Reply<OrderTimeline> {
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
            timeline.push(TimelineEntry {
                sequence: event.sequence,
                stream_sequence: seq,
                r#type: event.event_type.clone(),
                version: event.event_version.clone(),
                at: commit.recorded_at,
                actor: TimelineActor {
                    kind: commit.actor.kind.clone(),
                    id: commit.actor.id,
                },
                data,
            });
        }
    }
    Ok(reply(OrderTimeline {
        order_id: id,
        timeline,
    }))
}

/// `GET /api/counselor/orders` query.
pub type CounselorOrdersQuery = OrderListQuery;

/// `GET /api/counselor/orders` → `{orders, total}`: orders of the caller's counselor profile
/// (looked up by `counselors.user_id`, the intended rule); 403 "not a counselor".
#[utoipa::path(
    get,
    path = "/api/counselor/orders",
    tag = "orders",
    summary = "The calling counselor's orders",
    security(("bearer" = [])),
    params(OrderListQuery),
    responses(
        (status = 200, description = "A page of orders", body = Envelope<OrderList>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller is not a counselor", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn counselor_orders(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<CounselorOrdersQuery>,
) -> Reply<OrderList> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    q.validate()?;
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
    let orders = rows.iter().map(OrderView::from_row).collect();
    Ok(reply(OrderList { orders, total }))
}
