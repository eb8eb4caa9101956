//! Chat sessions over HTTP: start (either participant, on a paid order), find by order, history,
//! the HTTP fallback for sending, and end (which bills).
//!
//! A session's id is its order's id (one session per order; the `ChatSession` aggregate holds it).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{
    ChatSession, EndReason, Order, OrderCommand, OrderStatus, SessionCommand, SessionEvent,
};
use eventstore::chat::ChatMessage;
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::money::yuan;
use crate::user::orders::placement::request_meta;
use crate::{ok, paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/chat/start/{order_id}", post(start))
        .route("/api/chat/session/{order_id}/start", post(start))
        .route("/api/chat/order/{order_id}/session", get(session_by_order))
        .route("/api/chat/messages/{session_id}", get(messages))
        .route("/api/chat/session/{session_id}/messages", get(messages))
        .route("/api/chat/session/{session_id}/message", post(send_message))
        .route("/api/chat/end/{session_id}", post(end))
        .route("/api/chat/session/{session_id}/end", post(end))
}

/// The users-table id of counselor `counselor_id` (the counselor's login).
pub async fn counselor_user_id(
    state: &AppState,
    counselor_id: i64,
) -> Result<Option<i64>, ApiError> {
    Ok(
        sqlx::query_scalar::<_, Option<i64>>("SELECT user_id FROM counselors WHERE id = $1")
            .bind(counselor_id)
            .fetch_optional(&state.db)
            .await?
            .flatten(),
    )
}

/// `POST /api/chat/start/:order_id` → `{session_id}`. Either participant may start the session of
/// a paid order; starting again returns the same session.
///
/// The order decides first (`Order::StartService`): it must be paid by a captured payment that
/// covers its whole amount with no refund decided (400 otherwise), and from then on it can no
/// longer be cancelled or refunded. Only then is the `ChatSession` started, so a session is
/// never billed against money that was not captured or is going back.
pub async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(order_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let (order, version) = state.bus.load::<Order>(&order_id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    let counselor_user = counselor_user_id(&state, order.counselor_id).await?;
    if order.user_id != user.user_id && counselor_user != Some(user.user_id) {
        return Err(ApiError::forbidden("not a participant of this order"));
    }
    if order.status != OrderStatus::Paid {
        return Err(ApiError::bad_request(format!(
            "order is not paid (status {})",
            order.status.code()
        )));
    }
    let now = Utc::now();
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let mut order_meta = meta.clone();
    order_meta.command_id = format!("{}:order", meta.command_id);
    state
        .bus
        .execute::<Order>(
            &order_id.to_string(),
            OrderCommand::StartService {
                session_id: order_id,
                started_at: now,
            },
            &order_meta,
        )
        .await?;
    let command = SessionCommand::Start {
        order_id,
        user_id: order.user_id,
        counselor_id: order.counselor_id,
        counselor_user_id: counselor_user.unwrap_or_default(),
        price_per_minute: order.price_per_minute,
        prepaid_minutes: order.duration_minutes,
        started_at: now,
    };
    let committed = state
        .bus
        .execute::<ChatSession>(&order_id.to_string(), command, &meta)
        .await?;
    state
        .settle("chat_sessions", committed.stream_sequence)
        .await;
    Ok(ok(json!({ "session_id": order_id })))
}

/// Loads a session the caller takes part in (404 unknown, 403 not a participant).
async fn participant_session(
    state: &AppState,
    user: &AuthUser,
    session_id: i64,
) -> Result<ChatSession, ApiError> {
    let (session, version) = state
        .bus
        .load::<ChatSession>(&session_id.to_string())
        .await?;
    if version == 0 {
        return Err(ApiError::not_found("session"));
    }
    if !session.is_participant(user.user_id) {
        return Err(ApiError::forbidden("not a participant of this session"));
    }
    Ok(session)
}

/// `GET /api/chat/order/:order_id/session` → `{session_id, status}`; 404 until it exists.
pub async fn session_by_order(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(order_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let row = sqlx::query(
        "SELECT id, status, user_id, counselor_user_id FROM chat_sessions WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("session"))?;
    if row.get::<i64, _>("user_id") != user.user_id
        && row.get::<i64, _>("counselor_user_id") != user.user_id
    {
        return Err(ApiError::forbidden("not a participant of this session"));
    }
    Ok(ok(
        json!({ "session_id": row.get::<i64, _>("id"), "status": row.get::<i16, _>("status") }),
    ))
}

/// `GET /api/chat/messages/:session_id` query.
#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page_size: Option<i64>,
}

/// `GET /api/chat/messages/:session_id` → `{messages, total}`, oldest first. Each message carries
/// `sender{id, username, avatar}` and `session{id, duration, start_time, counselor{name}}`, where
/// `session.duration` is the **prepaid minutes** (the web client counts down from it; contract f.7).
pub async fn messages(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(session_id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    let session = participant_session(&state, &user, session_id).await?;
    let counselor_name: String = sqlx::query_scalar("SELECT name FROM counselors WHERE id = $1")
        .bind(session.counselor_id)
        .fetch_optional(&state.db)
        .await?
        .unwrap_or_default();
    let session_json = json!({
        "id": session_id,
        "order_id": session.order_id,
        "status": session.status.code(),
        "duration": session.prepaid_minutes,
        "start_time": session.started_at,
        "price": yuan(session.price_per_minute),
        "counselor": { "id": session.counselor_id, "name": counselor_name },
    });
    let rows = sqlx::query(
        "SELECT m.*, u.username, u.avatar FROM chat_messages m LEFT JOIN users u ON u.id = m.sender_id \
         WHERE m.session_id = $1 ORDER BY m.id LIMIT $2 OFFSET $3",
    )
    .bind(session_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_messages WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(&state.db)
        .await?;
    let messages: Vec<Value> = rows
        .iter()
        .map(|r| {
            let sender_id: i64 = r.get("sender_id");
            json!({
                "id": r.get::<i64, _>("id"),
                "seq": r.get::<i64, _>("id"),
                "session_id": session_id,
                "sender_id": sender_id,
                "sender_type": r.get::<String, _>("sender_type"),
                "content_type": r.get::<String, _>("content_type"),
                "content": r.get::<String, _>("content"),
                "file_url": r.get::<String, _>("file_url"),
                "client_msg_id": r.get::<String, _>("client_msg_id"),
                "is_read": r.get::<bool, _>("is_read"),
                "read_time": r.get::<Option<DateTime<Utc>>, _>("read_time"),
                "created_at": r.get::<DateTime<Utc>, _>("created_at"),
                "sender": {
                    "id": sender_id,
                    "username": r.get::<Option<String>, _>("username").unwrap_or_default(),
                    "avatar": r.get::<Option<String>, _>("avatar").unwrap_or_default(),
                },
                "session": session_json,
            })
        })
        .collect();
    Ok(ok(
        json!({ "messages": messages, "total": total, "session": session_json }),
    ))
}

/// `POST /api/chat/session/:session_id/message` body (the web client's fallback, contract #39).
#[derive(Debug, Deserialize)]
pub struct SendMessage {
    pub content: String,
    #[serde(default)]
    pub sender_type: String,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub file_url: String,
    /// The client's message id; a resend with the same id is stored once.
    #[serde(default)]
    pub client_msg_id: String,
}

/// `POST /api/chat/session/:session_id/message` → the stored message `{id, seq, …}`. The session
/// must be active and the caller a participant.
pub async fn send_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(session_id): ApiPath<i64>,
    ApiJson(req): ApiJson<SendMessage>,
) -> ApiResult<Json<Value>> {
    let session = participant_session(&state, &user, session_id).await?;
    let accepted = session.accept_message(
        user.user_id,
        domain::MessageDraft {
            content: req.content,
            content_type: req.content_type,
            file_url: req.file_url,
            client_msg_id: req.client_msg_id,
        },
    )?;
    let message = ChatMessage::accepted(session_id, user.user_id, accepted, Utc::now());
    // The same path as a socket's message: the session's chat stream, through its committer,
    // deduplicated by the client message id. An unavailable stream is this session's 503.
    let appended = state.chat.append_message(&message).await.map_err(|e| {
        tracing::error!(error = %e, session_id, "storing a chat message");
        ApiError::unavailable(
            "the session's chat stream is unavailable; retry with the same client_msg_id",
        )
    })?;
    let place = state.chat.place(session_id);
    state
        .settle(
            projections::read_models::Messages::name_of(place.shard),
            Some(appended.seq),
        )
        .await;
    Ok(ok(json!({
        "id": appended.id,
        "seq": appended.seq,
        "session_id": session_id,
        "sender_id": message.sender_id,
        "sender_type": message.sender_type,
        "content_type": message.content_type,
        "content": message.content,
        "file_url": message.file_url,
        "client_msg_id": message.client_msg_id,
        "created_at": message.sent_at,
    })))
}

/// `POST /api/chat/end/:session_id` → `{duration, billing}`: either participant ends the session,
/// which bills it (once). The counselor's share and the user's refund follow through the process
/// manager.
pub async fn end(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(session_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    participant_session(&state, &user, session_id).await?;
    let command = SessionCommand::End {
        ended_by: user.user_id,
        reason: EndReason::Participant,
        ended_at: Utc::now(),
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<ChatSession>(&session_id.to_string(), command, &meta)
        .await?;
    state
        .settle("chat_sessions", committed.stream_sequence)
        .await;
    let mut out = json!({ "session_id": session_id });
    for event in &committed.events {
        match event {
            SessionEvent::SessionEnded {
                duration_seconds, ..
            } => out["duration"] = json!(duration_seconds),
            SessionEvent::SessionBilled {
                billed_minutes,
                price_per_minute,
                amount,
                platform_fee,
                counselor_fee,
                refund,
                duration_seconds,
                ..
            } => {
                out["billing"] = json!({
                    "duration": duration_seconds,
                    "duration_minutes": billed_minutes,
                    "price_per_minute": yuan(*price_per_minute),
                    "total_amount": yuan(*amount),
                    "total_amount_fen": amount,
                    "platform_fee": yuan(*platform_fee),
                    "platform_fee_fen": platform_fee,
                    "counselor_fee": yuan(*counselor_fee),
                    "counselor_fee_fen": counselor_fee,
                    "refund": yuan(*refund),
                    "refund_fen": refund,
                });
            }
            SessionEvent::SessionStarted { .. } => {}
        }
    }
    Ok(ok(out))
}
