//! Admin API (issue 4): orders (list, statistics, status change as a command on the `Order`
//! aggregate), chat (sessions, messages, full-text search, statistics, redaction as a `CHAT`
//! record) and the dashboard statistics (contract c.4, c.5 #44–#47). Reads come from the read
//! models.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::Utc;
use domain::{Order, OrderCommand, OrderStatus};
use eventstore::chat::{ChatRecord, Redaction};
use eventstore::Actor;
use serde_json::{json, Value};
use sqlx::{Postgres, QueryBuilder};

use axum::response::{IntoResponse as _, Response};

use crate::admin::common::{
    count, json_rows, list_envelope, parse, with_event, Body, BusinessDays, Caller, Q,
};
use crate::user::orders::placement::request_meta;
use crate::{ok, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState};

type Params = ApiQuery<HashMap<String, String>>;

const ORDER_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT o.id, o.order_no, o.user_id, o.counselor_id, o.duration, \
     o.price_fen / 100.0 AS price, o.amount_fen / 100.0 AS amount, o.amount_fen, o.status, o.schedule_time, o.notes, \
     o.payment_id, o.session_id, o.pay_time, o.created_at, o.updated_at, \
     jsonb_build_object('id', COALESCE(u.id, 0), 'username', COALESCE(u.username, ''), 'email', COALESCE(u.email, ''), 'phone', COALESCE(u.phone, ''), 'avatar', COALESCE(u.avatar, '')) AS user, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'title', COALESCE(c.title, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor \
     FROM orders o LEFT JOIN users u ON u.id = o.user_id LEFT JOIN counselors c ON c.id = o.counselor_id";

/// `GET /api/admin/orders?page&page_size&status&keyword` → `{orders, list, total}` (the client
/// reads `data.list`, contract c.4 #36). `status=0` filters pending orders.
pub async fn list_orders(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let status = q.int("status")?;
    let keyword = q.str("keyword").map(crate::admin::common::contains_pattern);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(s) = status {
            qb.push(" AND o.status = ").push_bind(s as i16);
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
    let list = json_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM orders o");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(list_envelope("orders", list, total, json!({})))
}

/// `GET /api/admin/orders/statistics` → `{total_orders, pending_orders, paid_orders,
/// completed_orders, cancelled_orders, refunded_orders, total_amount, today_amount,
/// this_month_amount}`; amounts (yuan) sum orders that were paid (status 1 or 2).
pub async fn order_statistics(State(state): State<AppState>) -> ApiResult<Json<Value>> {
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
    Ok(ok(parse(&row)))
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

/// `PUT /api/admin/orders/:id/status` body `{status: 0–4, reason?}` → the order. The status of an
/// event-sourced order follows its money, so each status is the command that moves it, with the
/// administrator as the actor (never an override that moves nothing):
///
/// - `1` paid: only with the offline payment that paid it — `payment_method` (one of
///   [`OFFLINE_CHANNELS`]), `amount` (yuan, exactly the order's amount), `note` (required, ≤ 500
///   characters), `reference` (optional, ≤ 100): a `Payment` is recorded and captured
///   (`Payment::RecordOffline`, posted to the ledger as `provider:offline:clearing`), and the
///   order is marked paid by it. Only an order awaiting payment.
/// - `2` completed: `Order::Complete` (a paid order).
/// - `3` cancelled: `Order::Cancel`; a paid order whose session has not started is refunded.
/// - `4` refunded: `Order::RequestRefund` of the whole captured amount of a paid order whose
///   session has not started; the payment pays it back and the order becomes 4.
/// - `0` awaiting payment: only the current status (a no-op); an order never goes back.
///
/// Each refusal is a 400 naming the field (`status`, `payment_method`, `amount`, `note`) or the
/// domain's reason, and changes nothing.
pub async fn change_order_status(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Response> {
    let b = Body::new(body)?;
    let code = b
        .int("status")?
        .ok_or_else(|| ApiError::field("status", "required"))?;
    let status = OrderStatus::from_code(code)
        .ok_or_else(|| ApiError::field("status", "must be 0, 1, 2, 3 or 4"))?;
    let reason = b.str("reason")?.unwrap_or_default();
    if reason.chars().count() > 500 {
        return Err(ApiError::field("reason", "at most 500 characters"));
    }
    let offline = if status == OrderStatus::Paid {
        Some(offline_payment(&b)?)
    } else {
        None
    };
    let (order, version) = state.bus.load::<Order>(&id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    let now = Utc::now();
    let meta = request_meta(&headers, Actor::admin(caller.admin_id));
    let committed = match status {
        OrderStatus::Paid => {
            let (channel, amount, note, reference) = offline.expect("checked above");
            if order.status != OrderStatus::Pending {
                return Err(ApiError::field(
                    "status",
                    format!(
                        "only an order awaiting payment can be marked paid (status {})",
                        order.status.code()
                    ),
                ));
            }
            if amount != order.amount {
                return Err(ApiError::field(
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
                        reason: if reason.is_empty() {
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
                ApiError::field("status", "the order has no captured payment to refund")
            })?;
            state
                .bus
                .execute::<Order>(
                    &id.to_string(),
                    OrderCommand::RequestRefund {
                        payment_id,
                        refund_no: format!("admin-{id}-{}", now.timestamp_millis()),
                        amount: order.funded(),
                        reason: if reason.is_empty() {
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
                return Err(ApiError::field(
                    "status",
                    "an order never returns to awaiting payment",
                ));
            }
            let sql = format!("{ORDER_SELECT} WHERE o.id = $1) t");
            let order = crate::admin::common::one(&state, &sql, id, "order").await?;
            return Ok(ok(order).into_response());
        }
    };
    state.settle("orders", committed.stream_sequence).await;
    let sql = format!("{ORDER_SELECT} WHERE o.id = $1) t");
    let order = crate::admin::common::one(&state, &sql, id, "order").await?;
    Ok(with_event(
        ok(order),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
}

/// The offline payment of a `status: 1` change: `(channel, amount in fen, note, reference)`.
fn offline_payment(b: &Body) -> Result<(String, i64, String, String), ApiError> {
    const NEED: &str =
        "required to mark an order paid: the offline payment's channel (an order is paid only by money that arrived)";
    let channel = b
        .str("payment_method")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::field("payment_method", NEED))?;
    if !OFFLINE_CHANNELS.contains(&channel.as_str()) {
        return Err(ApiError::field(
            "payment_method",
            format!("one of {}", OFFLINE_CHANNELS.join(", ")),
        ));
    }
    let amount = b
        .num("amount")?
        .ok_or_else(|| ApiError::field("amount", "required: the amount received, in yuan"))?;
    let amount = crate::money::positive_fen("amount", amount)?;
    let note = b
        .str("note")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::field("note", "required: where the money came from"))?;
    if note.chars().count() > 500 {
        return Err(ApiError::field("note", "at most 500 characters"));
    }
    let reference = b.str("reference")?.unwrap_or_default();
    if reference.chars().count() > 100 {
        return Err(ApiError::field("reference", "at most 100 characters"));
    }
    Ok((channel, amount, note, reference))
}

// ---- chat --------------------------------------------------------------------------------------

const SESSION_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT s.id, s.order_id, s.user_id, s.counselor_id, s.status, \
     s.start_time, s.end_time, s.duration, s.total_amount_fen / 100.0 AS total_amount, s.price_fen / 100.0 AS price, \
     s.created_at, s.updated_at, \
     jsonb_build_object('id', COALESCE(u.id, 0), 'username', COALESCE(u.username, ''), 'avatar', COALESCE(u.avatar, '')) AS user, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor, \
     jsonb_build_object('id', COALESCE(o.id, 0), 'order_no', COALESCE(o.order_no, '')) AS \"order\" \
     FROM chat_sessions s LEFT JOIN users u ON u.id = s.user_id LEFT JOIN counselors c ON c.id = s.counselor_id \
     LEFT JOIN orders o ON o.id = s.order_id";

/// `GET /api/admin/chat/sessions?page&page_size&status&keyword` → `{sessions, list, total}`
/// (the client reads `data.list`, #39).
pub async fn list_sessions(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let status = q.int("status")?;
    let keyword = q.str("keyword").map(crate::admin::common::contains_pattern);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(s) = status {
            qb.push(" AND s.status = ").push_bind(s as i16);
        }
        if let Some(k) = &keyword {
            qb.push(" AND (u.username ILIKE ").push_bind(k.clone());
            qb.push(" OR c.name ILIKE ").push_bind(k.clone()).push(")");
        }
    };
    let mut qb = QueryBuilder::new(SESSION_SELECT);
    filter(&mut qb);
    qb.push(" ORDER BY s.id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new(
        "SELECT count(*) FROM chat_sessions s LEFT JOIN users u ON u.id = s.user_id LEFT JOIN counselors c ON c.id = s.counselor_id",
    );
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(list_envelope("sessions", list, total, json!({})))
}

const MESSAGE_SELECT: &str =
    "SELECT to_jsonb(t)::text FROM (SELECT m.id, m.session_id, m.sender_id, m.sender_type, \
     m.content_type, m.content, m.file_url, m.is_read, m.read_time, m.created_at, \
     m.content_type = 'redacted' AS redacted FROM chat_messages m";

/// `GET /api/admin/chat/sessions/:session_id/messages?page&page_size` → `{messages, list, total,
/// session}` in `data` and at the root (the client reads root `messages`, #40). Redacted
/// messages have empty `content` and `redacted: true`.
pub async fn session_messages(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<i64>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(50)?;
    let sql = format!("{SESSION_SELECT} WHERE s.id = $1) t");
    let session = crate::admin::common::one(&state, &sql, session_id, "chat session").await?;
    let mut qb = QueryBuilder::new(MESSAGE_SELECT);
    qb.push(" WHERE m.session_id = ").push_bind(session_id);
    qb.push(" ORDER BY m.id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(&state, qb).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_messages WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(&state.db)
        .await?;
    Ok(list_envelope(
        "messages",
        list,
        total,
        json!({ "session": session }),
    ))
}

/// `GET /api/admin/chat/statistics` → `{total_sessions, active_sessions, total_messages,
/// today_messages, total_billing (yuan), recent_messages}` (#41).
pub async fn chat_statistics(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let days = BusinessDays::of(&state);
    let row: String = sqlx::query_scalar(
        "SELECT jsonb_build_object(\
           'total_sessions', (SELECT count(*) FROM chat_sessions), \
           'active_sessions', (SELECT count(*) FROM chat_sessions WHERE status = 1), \
           'total_messages', (SELECT count(*) FROM chat_messages), \
           'today_messages', (SELECT count(*) FROM chat_messages WHERE created_at >= $1), \
           'total_billing', (SELECT COALESCE(sum(total_amount_fen), 0) FROM chat_billings) / 100.0, \
           'recent_messages', (SELECT COALESCE(jsonb_agg(to_jsonb(r)), '[]'::jsonb) FROM \
               (SELECT id, session_id, sender_type, content_type, content, created_at FROM chat_messages ORDER BY id DESC LIMIT 10) r) \
         )::text",
    )
    .bind(days.start_of(days.today()))
    .fetch_one(&state.db)
    .await?;
    Ok(ok(parse(&row)))
}

/// `GET /api/admin/chat/messages/search?keyword&page&page_size` → `{messages (+ session with
/// user and counselor), list, total}`: full-text search over message text (Postgres `simple`
/// text search, plus a substring match so that Chinese text without word breaks is found).
pub async fn search_messages(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let keyword = q
        .str("keyword")
        .ok_or_else(|| ApiError::field("keyword", "required"))?
        .to_string();
    let (limit, offset, ..) = q.paging(20)?;
    let like = crate::admin::common::contains_pattern(&keyword);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE m.content_type <> 'redacted' AND (to_tsvector('simple', m.content) @@ plainto_tsquery('simple', ");
        qb.push_bind(keyword.clone());
        qb.push(") OR m.content ILIKE ")
            .push_bind(like.clone())
            .push(")");
    };
    let mut qb = QueryBuilder::new(
        "SELECT to_jsonb(t)::text FROM (SELECT m.id, m.session_id, m.sender_id, m.sender_type, m.content_type, m.content, \
         m.created_at, jsonb_build_object('id', m.session_id, \
           'user', jsonb_build_object('id', COALESCE(u.id, 0), 'username', COALESCE(u.username, '')), \
           'counselor', jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''))) AS session \
         FROM chat_messages m LEFT JOIN chat_sessions s ON s.id = m.session_id \
         LEFT JOIN users u ON u.id = s.user_id LEFT JOIN counselors c ON c.id = s.counselor_id",
    );
    filter(&mut qb);
    qb.push(" ORDER BY m.id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM chat_messages m");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(list_envelope("messages", list, total, json!({})))
}

/// Appends a redaction of `message_ids` (message ids; empty = all) of `session_id` to the
/// session's chat stream and waits for the read model; returns `(stream, sequence)` of the
/// redaction record.
async fn redact(
    state: &AppState,
    caller: &Caller,
    session_id: i64,
    message_ids: Vec<i64>,
    reason: String,
) -> Result<(&'static str, u64), ApiError> {
    let place = state.chat.place(session_id);
    // Records name messages by their stream sequence in the session's stream.
    let mut seqs = Vec::with_capacity(message_ids.len());
    for id in message_ids {
        let (shard, seq) = eventstore::chat::split_message_id(id);
        if shard != place.shard {
            return Err(ApiError::not_found("chat message"));
        }
        seqs.push(seq as i64);
    }
    let redaction = Redaction {
        session_id,
        message_ids: seqs,
        admin_id: caller.admin_id,
        reason,
        redacted_at: Utc::now(),
    };
    let dedup = format!("redact:{session_id}:{}", uuid::Uuid::now_v7());
    let appended = state
        .chat
        .append(&ChatRecord::Redaction(redaction), &dedup)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("storing the redaction: {e}")))?;
    state
        .settle(
            projections::read_models::Messages::name_of(place.shard),
            Some(appended.seq),
        )
        .await;
    Ok((place.stream, appended.seq))
}

/// `DELETE /api/admin/chat/sessions/:id`: redacts every message of the session (a `Redaction`
/// record in the session's chat stream: the text disappears from read models and replies, the fact and the
/// administrator stay in the log) → `{session_id, redaction_seq}`.
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(session_id): ApiPath<i64>,
) -> ApiResult<Response> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM chat_sessions WHERE id = $1)")
            .bind(session_id)
            .fetch_one(&state.db)
            .await?;
    if !exists {
        return Err(ApiError::not_found("chat session"));
    }
    let (stream, seq) = redact(
        &state,
        &caller,
        session_id,
        Vec::new(),
        "admin deleted the session's messages".into(),
    )
    .await?;
    let body = ok(json!({ "session_id": session_id, "redaction_seq": seq }));
    Ok(with_event(body, stream, Some(seq)))
}

/// `DELETE /api/admin/chat/messages/:id`: redacts one message → `{message_id, redaction_seq}`.
pub async fn delete_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Response> {
    let session: Option<i64> =
        sqlx::query_scalar("SELECT session_id FROM chat_messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let session_id = session.ok_or_else(|| ApiError::not_found("chat message"))?;
    let (stream, seq) = redact(
        &state,
        &caller,
        session_id,
        vec![id],
        "admin deleted the message".into(),
    )
    .await?;
    let body = ok(json!({ "message_id": id, "redaction_seq": seq }));
    Ok(with_event(body, stream, Some(seq)))
}

// ---- dashboard ---------------------------------------------------------------------------------

/// `GET /api/admin/statistics` (also `/api/admin/dashboard/statistics`) → contract c.5 #44's
/// fields; amounts in yuan over paid orders (status 1 or 2); trends are percentages
/// (month-over-month for users/counselors, day-over-day for orders/revenue).
pub async fn statistics(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let days = BusinessDays::of(&state);
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
    let mut v = parse(&row);
    let trend = |v: &Value, now: &str, before: &str| {
        let (a, b) = (
            v[now].as_f64().unwrap_or(0.0),
            v[before].as_f64().unwrap_or(0.0),
        );
        if b == 0.0 {
            if a > 0.0 {
                100.0
            } else {
                0.0
            }
        } else {
            ((a - b) / b * 1000.0).round() / 10.0
        }
    };
    let trends = [
        (
            "user_trend",
            trend(&v, "users_this_month", "users_last_month"),
        ),
        (
            "counselor_trend",
            trend(&v, "counselors_this_month", "counselors_last_month"),
        ),
        ("order_trend", trend(&v, "orders_today", "orders_yesterday")),
        (
            "revenue_trend",
            trend(&v, "revenue_today", "revenue_yesterday"),
        ),
    ];
    if let Some(m) = v.as_object_mut() {
        for (k, t) in trends {
            m.insert(k.into(), json!(t));
        }
        for k in [
            "users_this_month",
            "users_last_month",
            "counselors_this_month",
            "counselors_last_month",
            "orders_today",
            "orders_yesterday",
            "revenue_today",
            "revenue_yesterday",
        ] {
            m.remove(k);
        }
    }
    let mut body = v.as_object().cloned().unwrap_or_default();
    body.insert("code".into(), json!(200));
    body.insert("msg".into(), json!("success"));
    body.insert("data".into(), v);
    Ok(Json(Value::Object(body)))
}

/// `GET /api/admin/stats/counselor/ranking?type=orders|income|rating&limit=10` → bare array
/// `[{id, name, title, avatar, price, rating, orderCount, revenue}]` (orders with status ≥ 1).
pub async fn counselor_ranking(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let order = match q.str("type").unwrap_or("orders") {
        "orders" => "\"orderCount\" DESC",
        "income" => "revenue DESC",
        "rating" => "rating DESC",
        _ => return Err(ApiError::field("type", "must be orders, income or rating")),
    };
    let limit = q.int("limit")?.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 100"));
    }
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
    Ok(ok(rows.iter().map(|s| parse(s)).collect::<Vec<_>>()))
}

/// `GET /api/admin/stats/order/trend?period=day|week|month|year` → `{dates, values}`: hourly for
/// a day (`HH:00`), daily for 7 / 30 days (`MM-DD`), monthly for a year (`YYYY-MM`; the old
/// backend refused `year`, which the client sends).
pub async fn order_trend(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (step, count, fmt) = match q.str("period").unwrap_or("week") {
        "day" => ("hour", 24, "HH24:00"),
        "week" => ("day", 7, "MM-DD"),
        "month" => ("day", 30, "MM-DD"),
        "year" => ("month", 12, "YYYY-MM"),
        _ => {
            return Err(ApiError::field(
                "period",
                "must be day, week, month or year",
            ))
        }
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
    Ok(ok(json!({ "dates": dates, "values": values })))
}

/// `GET /api/admin/session/stats` → `{active_sessions, total_duration (minutes), total_amount
/// (yuan)}` (#47; the old backend answered 500).
pub async fn session_stats(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let row: String = sqlx::query_scalar(
        "SELECT jsonb_build_object('active_sessions', count(*) FILTER (WHERE status = 1), \
         'total_duration', COALESCE(sum(duration), 0) / 60, \
         'total_amount', COALESCE(sum(total_amount_fen), 0) / 100.0)::text FROM chat_sessions",
    )
    .fetch_one(&state.db)
    .await?;
    Ok(ok(parse(&row)))
}
