//! Orders in the admin API (contract c.4 #36–#38): the list, the statistics and a status change
//! as the command on the `Order` aggregate that moves the money.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use domain::{Order, OrderCommand, OrderStatus};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::admin::business::TAG;
use crate::admin::common::{
    count, lenient, listed, typed_one, typed_row, typed_rows, BusinessDays, Caller, Evented, Listed,
};
use crate::admin::listing::{invalid, PageParams};
use crate::user::orders::placement::request_meta;
use crate::{empty_as_none, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState};

const ORDER_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT o.id, o.order_no, o.user_id, o.counselor_id, o.duration, \
     o.price_fen / 100.0 AS price, o.amount_fen / 100.0 AS amount, o.amount_fen, o.status, o.schedule_time, o.notes, \
     o.payment_id, o.session_id, o.pay_time, o.created_at, o.updated_at, \
     jsonb_build_object('id', COALESCE(u.id, 0), 'username', COALESCE(u.username, ''), 'email', COALESCE(u.email, ''), 'phone', COALESCE(u.phone, ''), 'avatar', COALESCE(u.avatar, '')) AS user, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'title', COALESCE(c.title, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor \
     FROM orders o LEFT JOIN users u ON u.id = o.user_id LEFT JOIN counselors c ON c.id = o.counselor_id";

/// An order as the admin screens show it. Members in the order Postgres renders the row
/// (`jsonb`: shorter names first); timestamps are RFC 3339 as Postgres writes them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminOrder {
    /// Order id.
    pub id: i64,
    /// The user who placed it.
    pub user: OrderUser,
    /// The user's notes.
    pub notes: String,
    /// Price per minute, yuan.
    pub price: f64,
    /// Amount to pay, yuan.
    pub amount: f64,
    /// 0 awaiting payment, 1 paid, 2 completed, 3 cancelled, 4 refunded.
    #[schema(minimum = 0, maximum = 4)]
    pub status: i16,
    /// The user's id.
    pub user_id: i64,
    /// Booked minutes.
    pub duration: i32,
    /// Order number.
    pub order_no: String,
    /// When it was paid (RFC 3339), or null.
    pub pay_time: Option<String>,
    /// The counselor booked.
    pub counselor: OrderCounselor,
    /// Amount to pay, fen.
    pub amount_fen: i64,
    /// When it was placed (RFC 3339).
    pub created_at: String,
    /// The payment that paid it, or null.
    pub payment_id: Option<i64>,
    /// Its chat session, or null.
    pub session_id: Option<i64>,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// The counselor's id.
    pub counselor_id: i64,
    /// The booked time (RFC 3339), or null.
    pub schedule_time: Option<String>,
}

/// The user of an order (a missing user is all zero values).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderUser {
    /// User id (0 when the user is gone).
    pub id: i64,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: String,
    /// Avatar URL.
    pub avatar: String,
    /// Login name.
    pub username: String,
}

/// The counselor of an order (a missing counselor is all zero values).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderCounselor {
    /// Counselor id (0 when the counselor is gone).
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Professional title.
    pub title: String,
    /// Avatar URL.
    pub avatar: String,
}

/// A page of orders: the same rows under `orders` and `list` (the client reads `list`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderList {
    /// The page's orders, newest first.
    pub orders: Vec<AdminOrder>,
    /// The same rows.
    pub list: Vec<AdminOrder>,
    /// Orders matching the filter.
    pub total: i64,
}

/// Filters of the order list.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct OrderListQuery {
    /// The page (documented as [`PageParams`]).
    #[serde(flatten)]
    #[param(ignore)]
    pub paging: PageParams,
    /// Only orders with this status (0 awaiting payment … 4 refunded); empty = all.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 0, max = 4, message = "must be 0 to 4"))]
    pub status: Option<i16>,
    /// Text found in the order number or the notes; empty = all.
    #[serde(default)]
    pub keyword: Option<String>,
}

/// List orders
///
/// `{orders, list, total}` in `data` and at the root (the client reads `data.list`, contract c.4
/// #36), newest first; 20 per page by default.
#[utoipa::path(get, path = "/api/admin/orders", tag = TAG, params(PageParams, OrderListQuery),
    responses((status = 200, body = Listed<OrderList>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list_orders(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<OrderListQuery>,
) -> ApiResult<axum::Json<Listed<OrderList>>> {
    validator::Validate::validate(&q)?;
    let (limit, offset) = q.paging.limits(20)?;
    let status = q.status;
    let keyword = q
        .keyword
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(crate::admin::common::contains_pattern);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(s) = status {
            qb.push(" AND o.status = ").push_bind(s);
        }
        if let Some(k) = &keyword {
            qb.push(" AND (o.order_no ILIKE ").push_bind(k.clone());
            qb.push(" OR o.notes ILIKE ").push_bind(k.clone()).push(")");
        }
    };
    let mut qb = QueryBuilder::new(ORDER_SELECT);
    filter(&mut qb);
    qb.push(" ORDER BY o.id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list: Vec<AdminOrder> = typed_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM orders o");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(listed(OrderList {
        orders: list.clone(),
        list,
        total,
    }))
}

/// Order counts by status and paid amounts. Amounts are yuan over orders that were paid
/// (status 1 or 2); "today" and "this month" are business days.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderStatistics {
    /// Orders paid, not completed (status 1).
    pub paid_orders: i64,
    /// Paid amount of orders placed today, yuan.
    pub today_amount: f64,
    /// Paid amount of all orders, yuan.
    pub total_amount: f64,
    /// All orders.
    pub total_orders: i64,
    /// Orders awaiting payment (status 0).
    pub pending_orders: i64,
    /// Refunded orders (status 4).
    pub refunded_orders: i64,
    /// Cancelled orders (status 3).
    pub cancelled_orders: i64,
    /// Completed orders (status 2).
    pub completed_orders: i64,
    /// Paid amount of orders placed this month, yuan.
    pub this_month_amount: f64,
}

/// Order statistics
///
/// Counts by status and paid amounts (yuan) over orders with status 1 or 2.
#[utoipa::path(get, path = "/api/admin/orders/statistics", tag = TAG,
    responses((status = 200, body = Envelope<OrderStatistics>)))]
pub async fn order_statistics(State(state): State<AppState>) -> Reply<OrderStatistics> {
    let days = BusinessDays::of(&state);
    let today = days.today();
    let row: String = sqlx::query_scalar(
        "SELECT jsonb_build_object(\
           'total_orders', count(*), \
           'pending_orders', count(*) FILTER (WHERE status = 0), \
           'paid_orders', count(*) FILTER (WHERE status = 1), \
           'completed_orders', count(*) FILTER (WHERE status = 2), \
           'cancelled_orders', count(*) FILTER (WHERE status = 3), \
           'refunded_orders', count(*) FILTER (WHERE status = 4), \
           'total_amount', COALESCE(sum(amount_fen) FILTER (WHERE status IN (1,2)), 0) / 100.0, \
           'today_amount', COALESCE(sum(amount_fen) FILTER (WHERE status IN (1,2) AND created_at >= $1), 0) / 100.0, \
           'this_month_amount', COALESCE(sum(amount_fen) FILTER (WHERE status IN (1,2) AND created_at >= $2), 0) / 100.0 \
         )::text FROM orders",
    )
    .bind(days.start_of(today))
    .bind(days.start_of(BusinessDays::month_of(today)))
    .fetch_one(&state.db)
    .await?;
    Ok(reply(typed_row(&row, &[])?))
}

/// The channels an offline payment may have come through (`payment_method` of
/// `PUT /api/admin/orders/:id/status` with `status: 1`).
pub const OFFLINE_CHANNELS: [&str; 5] = [
    "bank_transfer",
    "cash",
    "wechat_transfer",
    "alipay_transfer",
    "other",
];

/// An offline payment channel (`payment_method` of a change to status 1).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OfflineChannel {
    BankTransfer,
    Cash,
    WechatTransfer,
    AlipayTransfer,
    Other,
}

fn offline_channel(channel: &str) -> Result<(), validator::ValidationError> {
    if channel.is_empty() || OFFLINE_CHANNELS.contains(&channel) {
        Ok(())
    } else {
        Err(invalid(
            "enum",
            "one of bank_transfer, cash, wechat_transfer, alipay_transfer, other",
        ))
    }
}

/// A status change of an order. `payment_method`, `amount`, `note` and `reference` describe the
/// offline payment of a change to 1 (paid) and are required with it (`reference` optional).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct OrderStatusChange {
    /// 0 awaiting payment (only as a no-op), 1 paid, 2 completed, 3 cancelled, 4 refunded.
    #[serde(default, deserialize_with = "lenient::int")]
    #[schema(value_type = i64)]
    #[validate(
        required(message = "required"),
        range(min = 0, max = 4, message = "must be 0, 1, 2, 3 or 4")
    )]
    pub status: Option<i64>,
    /// Why (cancel, refund); at most 500 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 500, message = "at most 500 characters"))]
    pub reason: Option<String>,
    /// Status 1: the channel the money came through.
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(value_type = Option<OfflineChannel>)]
    #[validate(custom(function = "offline_channel"))]
    pub payment_method: Option<String>,
    /// Status 1: the amount received, yuan — exactly the order's amount, at most two decimals.
    #[serde(default, deserialize_with = "lenient::num")]
    #[schema(minimum = 0.01, maximum = 10000000000_f64, multiple_of = 0.01)]
    pub amount: Option<f64>,
    /// Status 1: where the money came from; 1–500 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(min_length = 1)]
    #[validate(length(max = 500, message = "at most 500 characters"))]
    pub note: Option<String>,
    /// Status 1: the bank's or channel's reference; at most 100 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 100, message = "at most 100 characters"))]
    pub reference: Option<String>,
}

/// Change an order's status (Order command)
///
/// The status of an event-sourced order follows its money, so each status is the command that
/// moves it, with the administrator as the actor (never an override that moves nothing):
///
/// - `1` paid: only with the offline payment that paid it — `payment_method`, `amount` (yuan,
///   exactly the order's amount), `note` (required), `reference` (optional): a `Payment` is
///   recorded and captured (`Payment::RecordOffline`, posted to the ledger as
///   `provider:offline:clearing`), and the order is marked paid by it. Only an order awaiting
///   payment.
/// - `2` completed: `Order::Complete` (a paid order).
/// - `3` cancelled: `Order::Cancel`; a paid order whose session has not started is refunded.
/// - `4` refunded: `Order::RequestRefund` of the whole captured amount of a paid order whose
///   session has not started; the payment pays it back and the order becomes 4.
/// - `0` awaiting payment: only the current status (a no-op); an order never goes back.
///
/// Each refusal is a 400 naming the field (`status`, `payment_method`, `amount`, `note`) or the
/// domain's reason, and changes nothing. Answers the order.
#[utoipa::path(put, path = "/api/admin/orders/{id}/status", tag = TAG,
    params(("id" = i64, Path, description = "Order id")),
    request_body = OrderStatusChange,
    responses((status = 200, body = Envelope<AdminOrder>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn change_order_status(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<OrderStatusChange>,
) -> ApiResult<Evented<Envelope<AdminOrder>>> {
    body.validate()?;
    let code = body.status.unwrap_or_default();
    let status = OrderStatus::from_code(code)
        .ok_or_else(|| ApiError::field("status", "must be 0, 1, 2, 3 or 4"))?;
    let reason = body.reason.clone().unwrap_or_default();
    let offline = if status == OrderStatus::Paid {
        Some(offline_payment(&body)?)
    } else {
        None
    };
    let (order, version) = state.bus.load::<Order>(&id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    let now = Utc::now();
    let meta = request_meta(&headers, caller.actor());
    let done = match status {
        OrderStatus::Paid => {
            let (channel, amount, note, reference) = offline.expect("checked above");
            if order.status != OrderStatus::Pending {
                return Err(ApiError::unprocessable(
                    "status",
                    format!(
                        "only an order awaiting payment can be marked paid (status {})",
                        order.status.code()
                    ),
                ));
            }
            if amount != order.amount {
                return Err(ApiError::unprocessable(
                    "amount",
                    format!(
                        "must be the order's amount, {}",
                        crate::money::yuan(order.amount)
                    ),
                ));
            }
            let payment_id = state
                .ids
                .next(&state.db, crate::app::ids::IdSequence::Payments)
                .await?;
            let payment_no = format!(
                "OFF{}{payment_id}",
                now.timestamp_nanos_opt().unwrap_or_default()
            );
            let mut pay_meta = meta.clone();
            pay_meta.command_id = format!("{}:offline-payment", meta.command_id);
            let recorded = state
                .bus
                .execute_new::<domain::Payment>(
                    &payment_id.to_string(),
                    domain::PaymentCommand::RecordOffline {
                        payment_no,
                        order_id: id,
                        user_id: order.user_id,
                        amount,
                        channel,
                        reference,
                        note,
                        operator_id: caller.admin_id,
                        recorded_at: now,
                    },
                    &pay_meta,
                )
                .await?;
            let payment_id: i64 = recorded.aggregate_id.parse().map_err(|_| {
                ApiError::internal(anyhow::anyhow!(
                    "payment id {} is not a number",
                    recorded.aggregate_id
                ))
            })?;
            // The process manager would mark the order paid too (`PaymentCaptured`); doing it
            // here answers with the paid order. The same payment again is a no-op there.
            state
                .bus
                .execute::<Order>(
                    &id.to_string(),
                    OrderCommand::MarkPaid {
                        payment_id,
                        amount,
                        paid_at: now,
                    },
                    &meta,
                )
                .await?
        }
        OrderStatus::Completed => {
            state
                .bus
                .execute::<Order>(
                    &id.to_string(),
                    OrderCommand::Complete {
                        session_id: order.session_id.unwrap_or(id),
                        completed_at: now,
                    },
                    &meta,
                )
                .await?
        }
        OrderStatus::Cancelled => {
            state
                .bus
                .execute::<Order>(
                    &id.to_string(),
                    OrderCommand::Cancel {
                        cancelled_by: 0,
                        reason: if reason.trim().is_empty() {
                            format!("cancelled by administrator {}", caller.username)
                        } else {
                            reason
                        },
                        cancelled_at: now,
                    },
                    &meta,
                )
                .await?
        }
        OrderStatus::Refunded => {
            let payment_id = order.payment_id.ok_or_else(|| {
                ApiError::unprocessable("status", "the order has no captured payment to refund")
            })?;
            state
                .bus
                .execute::<Order>(
                    &id.to_string(),
                    OrderCommand::RequestRefund {
                        payment_id,
                        refund_no: format!("admin-{id}-{}", now.timestamp_millis()),
                        amount: order.funded(),
                        reason: if reason.trim().is_empty() {
                            format!("refunded by administrator {}", caller.username)
                        } else {
                            reason
                        },
                        requested_by: 0,
                        requested_at: now,
                    },
                    &meta,
                )
                .await?
        }
        OrderStatus::Pending | OrderStatus::Absent => {
            if order.status != OrderStatus::Pending {
                return Err(ApiError::unprocessable(
                    "status",
                    "an order never returns to awaiting payment",
                ));
            }
            return Ok(Evented::new(
                reply(order_row(&state, id).await?),
                eventstore::EVENTS_STREAM,
                None,
            ));
        }
    };
    state.settle("orders", done.stream_sequence).await;
    let order = order_row(&state, id).await?;
    Ok(Evented::new(
        reply(order),
        eventstore::EVENTS_STREAM,
        done.stream_sequence,
    ))
}

/// The order `id` as the admin screens show it, or 404.
async fn order_row(state: &AppState, id: i64) -> Result<AdminOrder, ApiError> {
    let sql = format!("{ORDER_SELECT} WHERE o.id = $1) t");
    typed_one(state, &sql, id, "order").await
}

/// The offline payment of a `status: 1` change: `(channel, amount in fen, note, reference)`,
/// each missing part refused in this order.
fn offline_payment(b: &OrderStatusChange) -> Result<(String, i64, String, String), ApiError> {
    const NEED: &str =
        "required to mark an order paid: the offline payment's channel (an order is paid only by money that arrived)";
    let channel = b
        .payment_method
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::unprocessable("payment_method", NEED))?;
    let amount = b.amount.ok_or_else(|| {
        ApiError::unprocessable("amount", "required: the amount received, in yuan")
    })?;
    let amount = crate::money::positive_fen("amount", amount)?;
    let note = b
        .note
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::unprocessable("note", "required: where the money came from"))?;
    let reference = b.reference.clone().unwrap_or_default();
    Ok((channel, amount, note, reference))
}
