//! Payments beyond create (issue 3): get, list, refund, and the providers' callbacks.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{Payment, PaymentCommand};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::money::{positive_fen, yuan};
use crate::user::orders::placement::request_meta;
use crate::{ok, paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/payment/list", get(list))
        .route("/api/payment/refund", post(refund))
        .route("/api/payment/{id}", get(get_one))
        .route(
            "/api/payment/wechat/callback",
            post(crate::user::payments::providers::wechat::callback),
        )
        .route(
            "/api/payment/alipay/callback",
            post(crate::user::payments::providers::alipay::callback),
        )
}

fn status_text(status: i16) -> &'static str {
    match status {
        0 => "待支付",
        1 => "已支付",
        2 => "支付失败",
        3 => "已退款",
        4 => "已取消",
        _ => "未知状态",
    }
}

const PAYMENT_SELECT: &str = "SELECT p.*, o.order_no, o.status AS order_status FROM payments p \
     LEFT JOIN orders o ON o.id = p.order_id AND p.order_id > 0";

fn payment_json(r: &sqlx::postgres::PgRow) -> Value {
    let status: i16 = r.get("status");
    let order_id: i64 = r.get("order_id");
    json!({
        "id": r.get::<i64, _>("id"),
        "payment_no": r.get::<String, _>("payment_no"),
        "order_id": order_id,
        "order_no": r.get::<Option<String>, _>("order_no").unwrap_or_default(),
        "user_id": r.get::<i64, _>("user_id"),
        "purpose": r.get::<String, _>("purpose"),
        "payment_method": r.get::<String, _>("payment_method"),
        "trade_type": r.get::<String, _>("trade_type"),
        "transaction_id": r.get::<Option<String>, _>("transaction_id").unwrap_or_default(),
        "amount": yuan(r.get("amount_fen")),
        "amount_fen": r.get::<i64, _>("amount_fen"),
        "refunded_amount": yuan(r.get("refunded_fen")),
        "refunded_amount_fen": r.get::<i64, _>("refunded_fen"),
        "status": status,
        "status_text": status_text(status),
        "pay_time": r.get::<Option<DateTime<Utc>>, _>("pay_time"),
        "notify_time": r.get::<Option<DateTime<Utc>>, _>("notify_time"),
        "created_at": r.get::<DateTime<Utc>, _>("created_at"),
        "updated_at": r.get::<DateTime<Utc>, _>("updated_at"),
        "order": if order_id > 0 {
            json!({ "id": order_id, "order_no": r.get::<Option<String>, _>("order_no"), "status": r.get::<Option<i16>, _>("order_status") })
        } else { Value::Null },
    })
}

/// `GET /api/payment/:id` → the payment (contract b.1 #28); only its payer (403 otherwise).
pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let row = sqlx::query(&format!("{PAYMENT_SELECT} WHERE p.id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    if row.get::<i64, _>("user_id") != user.user_id {
        return Err(ApiError::forbidden("not your payment"));
    }
    Ok(ok(payment_json(&row)))
}

/// `GET /api/payment/list` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page_size: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub status: Option<i16>,
    #[serde(default)]
    pub payment_method: String,
}

/// `GET /api/payment/list` → `{payments, total}`, the caller's, newest first.
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
    if !matches!(
        q.payment_method.as_str(),
        "" | "wechat" | "alipay" | "sandbox"
    ) {
        return Err(ApiError::field(
            "payment_method",
            "one of wechat, alipay, sandbox",
        ));
    }
    let filter = "p.user_id = $1 AND ($2::smallint IS NULL OR p.status = $2) AND ($3 = '' OR p.payment_method = $3)";
    let rows = sqlx::query(&format!(
        "{PAYMENT_SELECT} WHERE {filter} ORDER BY p.id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(user.user_id)
    .bind(q.status)
    .bind(&q.payment_method)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM payments p WHERE {filter}"))
        .bind(user.user_id)
        .bind(q.status)
        .bind(&q.payment_method)
        .fetch_one(&state.db)
        .await?;
    let payments: Vec<Value> = rows.iter().map(payment_json).collect();
    Ok(ok(json!({ "payments": payments, "total": total })))
}

/// `POST /api/payment/refund` body (contract b.1 #30): `refund_amount` in yuan.
#[derive(Debug, Deserialize)]
pub struct RefundRequest {
    pub payment_id: i64,
    pub refund_amount: f64,
    #[serde(default)]
    pub refund_reason: String,
}

/// `POST /api/payment/refund` → `{payment_id, refund_no, refund_amount, total_refunded}`. The
/// payer refunds up to the captured amount (across refunds) of an order whose service has not
/// started: the order decides first (`Order::RequestRefund`, which also stops the session from
/// starting on money that is going back), then the payment pays it back; the order becomes 4
/// through the process manager. The provider side of the refund is simulated (no provider
/// credentials). Recharges are not refundable.
pub async fn refund(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RefundRequest>,
) -> ApiResult<Json<Value>> {
    if req.payment_id <= 0 {
        return Err(ApiError::field("payment_id", "must be a positive id"));
    }
    let amount = positive_fen("refund_amount", req.refund_amount)?;
    if req.refund_reason.chars().count() > 200 {
        return Err(ApiError::field("refund_reason", "at most 200 characters"));
    }
    let (payment, version) = state
        .bus
        .load::<Payment>(&req.payment_id.to_string())
        .await?;
    if version == 0 {
        return Err(ApiError::not_found("payment"));
    }
    if payment.user_id != user.user_id {
        return Err(ApiError::forbidden("not your payment"));
    }
    let now = Utc::now();
    let refund_no = format!(
        "RF{}{}",
        now.timestamp_nanos_opt().unwrap_or_default(),
        req.payment_id
    );
    let meta = request_meta(&headers, Actor::user(user.user_id));
    if payment.recharge {
        return Err(ApiError::field(
            "payment_id",
            domain::PaymentError::RechargeNotRefundable.to_string(),
        ));
    }
    if payment.status == domain::PaymentStatus::Pending {
        return Err(ApiError::field(
            "payment_id",
            domain::PaymentError::NotCaptured.to_string(),
        ));
    }
    let mut order_meta = meta.clone();
    order_meta.command_id = format!("{}:order", meta.command_id);
    let decided = state
        .bus
        .execute::<domain::Order>(
            &payment.order_id.to_string(),
            domain::OrderCommand::RequestRefund {
                payment_id: req.payment_id,
                refund_no: refund_no.clone(),
                amount,
                reason: req.refund_reason.clone(),
                requested_by: user.user_id,
                requested_at: now,
            },
            &order_meta,
        )
        .await?;
    // A repeated request (same `Idempotency-Key`) finds its refund number in the order's event.
    let refund_no = decided
        .events
        .iter()
        .find_map(|e| match e {
            domain::OrderEvent::OrderRefundRequested { refund_no, .. } => Some(refund_no.clone()),
            _ => None,
        })
        .unwrap_or(refund_no);
    let command = PaymentCommand::Refund {
        refund_no: refund_no.clone(),
        amount,
        reason: req.refund_reason,
        refunded_at: now,
    };
    let committed = state
        .bus
        .execute::<Payment>(&req.payment_id.to_string(), command, &meta)
        .await?;
    state.settle("payments", committed.stream_sequence).await;
    let (refund_no, amount, total) = committed
        .events
        .iter()
        .find_map(|e| match e {
            domain::PaymentEvent::PaymentRefunded {
                refund_no,
                amount,
                total_refunded,
                ..
            } => Some((refund_no.clone(), *amount, *total_refunded)),
            _ => None,
        })
        .unwrap_or((refund_no, amount, payment.refunded + amount));
    Ok(ok(json!({
        "payment_id": req.payment_id,
        "refund_no": refund_no,
        "refund_amount": yuan(amount),
        "refund_amount_fen": amount,
        "total_refunded": yuan(total),
        "total_refunded_fen": total,
        "status": 3,
    })))
}
