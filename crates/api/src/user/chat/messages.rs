//! A session's messages over HTTP: the history (oldest first, with sender and session) and the
//! web client's fallback for sending when its socket is down. Both are for the session's
//! participants only.

use axum::extract::State;
use chrono::{DateTime, Utc};
use eventstore::chat::ChatMessage;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use super::sessions::{participant_session, yuan};
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(messages))
        .routes(routes!(messages_alias))
        .routes(routes!(send_message))
}

/// `GET /api/chat/messages/:session_id` query.
#[web::limits]
#[derive(Debug, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Messages per page, 1 to 100 (default 20).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
}

/// The counselor of a session, as a message carries it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageSessionCounselor {
    /// The counselor's id.
    pub id: i64,
    /// The counselor's display name (empty when the profile is gone).
    pub name: String,
}

/// The session a message belongs to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageSession {
    /// The session's id (its order's id).
    pub id: i64,
    /// The order's id.
    pub order_id: i64,
    /// 1 active, 2 ended.
    pub status: i16,
    /// The **prepaid minutes** (the web client counts down from them; contract f.7).
    pub duration: i64,
    /// When the session started (RFC 3339), or null.
    pub start_time: Option<DateTime<Utc>>,
    /// Price per minute, yuan.
    pub price: f64,
    /// The session's counselor.
    pub counselor: MessageSessionCounselor,
}

/// The sender of a message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageSender {
    /// The sender's users-table id.
    pub id: i64,
    /// The sender's username (empty when the account is gone).
    pub username: String,
    /// The sender's avatar URL (may be empty).
    pub avatar: String,
}

/// One stored chat message with its sender and session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionMessage {
    /// The message's id.
    pub id: i64,
    /// The same as `id` (the clients order by it).
    pub seq: i64,
    /// The session's id.
    pub session_id: i64,
    /// The sender's users-table id.
    pub sender_id: i64,
    /// `user` or `counselor`.
    pub sender_type: String,
    /// `text`, `image` or `file`.
    pub content_type: String,
    /// The text (may be empty when `file_url` is set).
    pub content: String,
    /// The attachment's URL, or empty.
    pub file_url: String,
    /// The client's id for the message.
    pub client_msg_id: String,
    /// Whether the other participant read it.
    pub is_read: bool,
    /// When it was read (RFC 3339), or null.
    pub read_time: Option<DateTime<Utc>>,
    /// When it was stored (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// Who sent it.
    pub sender: MessageSender,
    /// The session it belongs to.
    pub session: MessageSession,
}

/// A page of a session's messages.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessagePage {
    /// The messages, oldest first.
    pub messages: Vec<SessionMessage>,
    /// How many messages the session has.
    pub total: i64,
    /// The session.
    pub session: MessageSession,
}

/// `GET /api/chat/messages/:session_id` → `{messages, total, session}`, oldest first. Each
/// message carries `sender{id, username, avatar}` and `session{id, duration, start_time,
/// counselor{name}}`, where `session.duration` is the **prepaid minutes** (the web client counts
/// down from it; contract f.7).
#[utoipa::path(
    get,
    path = "/api/chat/messages/{session_id}",
    operation_id = "chat_messages",
    tag = "chat",
    summary = "Messages, oldest first, with sender{username, avatar}",
    params(
        ("session_id" = i64, Path, description = "The session's id (its order's id)"),
        MessagesQuery
    ),
    responses(
        (status = 200, description = "A page of messages", body = Envelope<MessagePage>),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant of this session", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown session", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn messages(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(session_id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<MessagesQuery>,
) -> Reply<MessagePage> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    let session = participant_session(&state, &user, session_id).await?;
    let counselor_name: String = sqlx::query_scalar("SELECT name FROM counselors WHERE id = $1")
        .bind(session.counselor_id)
        .fetch_optional(&state.db)
        .await?
        .unwrap_or_default();
    let session_view = MessageSession {
        id: session_id,
        order_id: session.order_id,
        status: session.status.code(),
        duration: session.prepaid_minutes,
        start_time: session.started_at,
        price: yuan(session.price_per_minute),
        counselor: MessageSessionCounselor {
            id: session.counselor_id,
            name: counselor_name,
        },
    };
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
    let messages = rows
        .iter()
        .map(|r| {
            let sender_id: i64 = r.get("sender_id");
            SessionMessage {
                id: r.get("id"),
                seq: r.get("id"),
                session_id,
                sender_id,
                sender_type: r.get("sender_type"),
                content_type: r.get("content_type"),
                content: r.get("content"),
                file_url: r.get("file_url"),
                client_msg_id: r.get("client_msg_id"),
                is_read: r.get("is_read"),
                read_time: r.get("read_time"),
                created_at: r.get("created_at"),
                sender: MessageSender {
                    id: sender_id,
                    username: r.get::<Option<String>, _>("username").unwrap_or_default(),
                    avatar: r.get::<Option<String>, _>("avatar").unwrap_or_default(),
                },
                session: session_view.clone(),
            }
        })
        .collect();
    Ok(reply(MessagePage {
        messages,
        total,
        session: session_view,
    }))
}

/// `GET /api/chat/session/:session_id/messages`: seed 001's alias of [`messages`].
#[utoipa::path(
    get,
    path = "/api/chat/session/{session_id}/messages",
    operation_id = "chat_messages_alias",
    tag = "chat",
    summary = "Seed 001 alias of /api/chat/messages/{session_id}",
    params(
        ("session_id" = i64, Path, description = "The session's id (its order's id)"),
        MessagesQuery
    ),
    responses(
        (status = 200, description = "A page of messages", body = Envelope<MessagePage>),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant of this session", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown session", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn messages_alias(
    state: State<AppState>,
    user: AuthUser,
    session_id: ApiPath<i64>,
    q: ApiQuery<MessagesQuery>,
) -> Reply<MessagePage> {
    messages(state, user, session_id, q).await
}

/// `POST /api/chat/session/:session_id/message` body (the web client's fallback, contract #39).
///
/// The message rules (content type, length, an empty message, the client id's length) are the
/// session's (`ChatSession::accept_message` in `domain`), shared with the gateway's socket; the
/// limits here state them for clients.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendMessage {
    /// The text, at most 5000 characters; may be empty only when `file_url` is set.
    #[schema(max_length = 5000)]
    pub content: String,
    /// Ignored: the server decides from the caller (`user` or `counselor`).
    #[serde(default)]
    pub sender_type: String,
    /// `text` (default when empty), `image` or `file`.
    #[serde(default)]
    #[schema(pattern = "^(|text|image|file)$")]
    pub content_type: String,
    /// The attachment's URL, or empty.
    #[serde(default)]
    pub file_url: String,
    /// The client's message id (at most 100 bytes); a resend with the same id is stored once.
    #[serde(default)]
    #[schema(max_length = 100)]
    pub client_msg_id: String,
}

/// A message as stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SentMessage {
    /// The message's id across the chat streams.
    pub id: i64,
    /// Its sequence in the session's stream (the resume position).
    pub seq: u64,
    /// The session's id.
    pub session_id: i64,
    /// The sender's users-table id.
    pub sender_id: i64,
    /// `user` or `counselor`.
    pub sender_type: String,
    /// `text`, `image` or `file`.
    pub content_type: String,
    /// The text.
    pub content: String,
    /// The attachment's URL, or empty.
    pub file_url: String,
    /// The client's message id (a generated UUID when none was sent).
    pub client_msg_id: String,
    /// When it was sent (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// `POST /api/chat/session/:session_id/message` → the stored message `{id, seq, …}`. The session
/// must be active and the caller a participant.
#[utoipa::path(
    post,
    path = "/api/chat/session/{session_id}/message",
    operation_id = "chat_send_message",
    tag = "chat",
    summary = "Send a message over HTTP (socket fallback)",
    description = "Stores a message in an active session the caller takes part in, by the same \
        rules as a socket's message; a resend with the same `client_msg_id` is stored once.",
    params(("session_id" = i64, Path, description = "The session's id (its order's id)")),
    request_body = SendMessage,
    responses(
        (status = 200, description = "The stored message", body = Envelope<SentMessage>),
        (status = 400, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither text (not blank) nor an attachment", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant, or the session has ended", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown session", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The session's chat stream is unavailable; retry with the same client_msg_id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn send_message(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(session_id): ApiPath<i64>,
    ApiJson(req): ApiJson<SendMessage>,
) -> Reply<SentMessage> {
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
            Some(appended.stream_sequence),
        )
        .await;
    Ok(reply(SentMessage {
        id: appended.id,
        seq: appended.seq,
        session_id,
        sender_id: message.sender_id,
        sender_type: message.sender_type,
        content_type: message.content_type,
        content: message.content,
        file_url: message.file_url,
        client_msg_id: message.client_msg_id,
        created_at: message.sent_at,
    }))
}
