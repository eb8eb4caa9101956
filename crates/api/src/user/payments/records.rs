//! Payment records: get, list, refund, and the providers' notification routes.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use domain::{Payment, PaymentCommand};
use eventstore::Actor;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;
use web::money::{positive_fen, yuan_f64};

use crate::user::account::yuan_rule;
use crate::user::orders::placement::request_meta;
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};
use web::error::refusal;

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(refund))
        .routes(routes!(get_one))
        .routes(routes!(crate::user::payments::notifications::wechat))
        .routes(routes!(crate::user::payments::notifications::alipay))
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

/// The order a payment pays.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentOrder {
    pub id: i64,
    /// `null` when the order is not in the read model.
    pub order_no: Option<String>,
    /// The order's status (0–4), `null` when the order is not in the read model.
    pub status: Option<i16>,
}

/// A payment as its payer reads it (contract b.1 #28); money in yuan with fen beside it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentView {
    pub id: i64,
    pub payment_no: String,
    /// The order it pays; 0 for a wallet recharge.
    pub order_id: i64,
    /// Empty for a recharge.
    pub order_no: String,
    pub user_id: i64,
    /// `order` or `recharge`.
    pub purpose: String,
    /// `sandbox`, `wechat`, `alipay` or `offline`.
    pub payment_method: String,
    /// `NATIVE`, `H5`, `JSAPI` or `APP`.
    pub trade_type: String,
    /// The provider's transaction id; empty before capture.
    pub transaction_id: String,
    /// Yuan.
    pub amount: f64,
    /// Fen.
    pub amount_fen: i64,
    /// Refunded so far, yuan.
    pub refunded_amount: f64,
    /// Refunded so far, fen.
    pub refunded_amount_fen: i64,
    /// 0 awaiting payment, 1 paid, 2 failed, 3 refunded, 4 cancelled.
    #[schema(minimum = 0, maximum = 4)]
    pub status: i16,
    /// `status` in MyChat's words (Chinese).
    pub status_text: String,
    /// When it was captured (RFC 3339), `null` before.
    pub pay_time: Option<DateTime<Utc>>,
    /// When the provider's notification arrived (RFC 3339), `null` before.
    pub notify_time: Option<DateTime<Utc>>,
    /// RFC 3339.
    pub created_at: DateTime<Utc>,
    /// RFC 3339.
    pub updated_at: DateTime<Utc>,
    /// The order it pays; `null` for a recharge.
    pub order: Option<PaymentOrder>,
}

impl PaymentView {
    fn from_row(r: &sqlx::postgres::PgRow) -> Self {
        let status: i16 = r.get("status");
        let order_id: i64 = r.get("order_id");
        Self {
            id: r.get("id"),
            payment_no: r.get("payment_no"),
            order_id,
            order_no: r.get::<Option<String>, _>("order_no").unwrap_or_default(),
            user_id: r.get("user_id"),
            purpose: r.get("purpose"),
            payment_method: r.get("payment_method"),
            trade_type: r.get("trade_type"),
            transaction_id: r
                .get::<Option<String>, _>("transaction_id")
                .unwrap_or_default(),
            amount: yuan_f64(r.get("amount_fen")),
            amount_fen: r.get("amount_fen"),
            refunded_amount: yuan_f64(r.get("refunded_fen")),
            refunded_amount_fen: r.get("refunded_fen"),
            status,
            status_text: status_text(status).to_string(),
            pay_time: r.get("pay_time"),
            notify_time: r.get("notify_time"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            order: (order_id > 0).then(|| PaymentOrder {
                id: order_id,
                order_no: r.get("order_no"),
                status: r.get("order_status"),
            }),
        }
    }
}

/// `GET /api/payment/:id` → the payment (contract b.1 #28); only its payer (403 otherwise).
#[utoipa::path(
    get,
    path = "/api/payment/{id}",
    tag = "payments",
    operation_id = "get_payment",
    summary = "A payment (its payer)",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The payment's id")),
    responses(
        (status = 200, description = "The payment", body = Envelope<PaymentView>),
        (status = 403, description = "Not the caller's payment", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Reply<PaymentView> {
    let row = sqlx::query(&format!("{PAYMENT_SELECT} WHERE p.id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("payment"))?;
    if row.get::<i64, _>("user_id") != user.user_id {
        return Err(ApiError::forbidden("not your payment"));
    }
    Ok(reply(PaymentView::from_row(&row)))
}

fn method_filter_rule(method: &str) -> Result<(), ValidationError> {
    if matches!(method, "" | "wechat" | "alipay" | "sandbox") {
        return Ok(());
    }
    Err(refusal("payment_method", "one of wechat, alipay, sandbox"))
}

/// `GET /api/payment/list` query; every parameter may be empty.
#[web::limits]
#[derive(Debug, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 10).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i64>)]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Only payments in this status (0–4); empty: all.
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[param(value_type = Option<i16>)]
    #[validate(range(min = 0, max = 4, message = "must be 0 to 4"))]
    pub status: Option<i16>,
    /// `wechat`, `alipay` or `sandbox`; empty: all.
    #[serde(default)]
    #[param(pattern = "^(wechat|alipay|sandbox)?$")]
    #[validate(custom(function = "method_filter_rule"))]
    pub payment_method: String,
}

/// A page of payments.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    /// Newest first.
    pub payments: Vec<PaymentView>,
    /// Matching payments in all pages.
    pub total: i64,
}

/// `GET /api/payment/list` → `{payments, total}`, the caller's, newest first.
#[utoipa::path(
    get,
    path = "/api/payment/list",
    tag = "payments",
    operation_id = "list_payments",
    summary = "The caller's payments",
    security(("bearer" = [])),
    params(ListQuery),
    responses(
        (status = 200, description = "A page of payments", body = Envelope<PaymentList>),
        (status = 400, description = "A parameter is invalid", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply<PaymentList> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    q.validate()?;
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
    let payments = rows.iter().map(PaymentView::from_row).collect();
    Ok(reply(PaymentList { payments, total }))
}

/// `POST /api/payment/refund` body (contract b.1 #30): `refund_amount` in yuan.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct RefundRequest {
    /// The caller's captured payment of an order.
    #[validate(range(min = 1, message = "must be a positive id"))]
    pub payment_id: i64,
    /// Yuan, greater than 0, two decimals at most; at most what is left to refund.
    #[schema(
        minimum = 0.01,
        maximum = 10000000000_f64,
        multiple_of = 0.01,
        example = 10.5
    )]
    #[validate(custom(function = "yuan_rule"))]
    pub refund_amount: f64,
    /// At most 200 characters.
    #[serde(default)]
    #[validate(length(max = 200, message = "at most 200 characters"))]
    pub refund_reason: String,
}

/// A refund paid back.
#[derive(Debug, Serialize, ToSchema)]
pub struct Refunded {
    pub payment_id: i64,
    pub refund_no: String,
    /// This refund, yuan.
    pub refund_amount: f64,
    /// This refund, fen.
    pub refund_amount_fen: i64,
    /// Refunded across all refunds of the payment, yuan.
    pub total_refunded: f64,
    /// The same, fen.
    pub total_refunded_fen: i64,
    /// Always 3 (refunded).
    pub status: i16,
}

/// `POST /api/payment/refund` → `{payment_id, refund_no, refund_amount, total_refunded}`. The
/// payer refunds up to the captured amount (across refunds) of an order whose service has not
/// started: the order decides first (`Order::RequestRefund`, which also stops the session from
/// starting on money that is going back), then the payment pays it back; the order becomes 4
/// through the process manager. The provider side of the refund is simulated (no provider
/// credentials). Recharges are not refundable.
#[utoipa::path(
    post,
    path = "/api/payment/refund",
    operation_id = "refund_payment",
    tag = "payments",
    summary = "Refund up to the captured amount",
    security(("bearer" = [])),
    request_body = RefundRequest,
    responses(
        (status = 200, description = "Refunded", body = Envelope<Refunded>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The amount exceeds what is left, or the payment is not refundable (a recharge, not captured)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's payment", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such payment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json")
    )
)]
pub async fn refund(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RefundRequest>,
) -> Reply<Refunded> {
    req.validate()?;
    let amount = positive_fen("refund_amount", req.refund_amount)?;
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
        return Err(ApiError::unprocessable(
            "payment_id",
            domain::PaymentError::RechargeNotRefundable.to_string(),
        ));
    }
    if payment.status == domain::PaymentStatus::Pending {
        return Err(ApiError::unprocessable(
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
    Ok(reply(Refunded {
        payment_id: req.payment_id,
        refund_no,
        refund_amount: yuan_f64(amount),
        refund_amount_fen: amount,
        total_refunded: yuan_f64(total),
        total_refunded_fen: total,
        status: 3,
    }))
}
