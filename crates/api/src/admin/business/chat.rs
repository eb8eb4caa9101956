//! Chat in the admin API (contract c.4 #39–#43): sessions, a session's messages, full-text
//! search, statistics, and redaction (a `Redaction` record in the session's chat stream: the
//! text disappears from read models and replies, the fact and the administrator stay in the
//! log).

use axum::extract::State;
use chrono::Utc;
use eventstore::chat::{ChatRecord, Redaction};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::admin::business::{CounselorBrief, UserBrief, TAG};
use crate::admin::common::{
    contains_pattern, count, listed, typed_one, typed_row, typed_rows, BusinessDays, Caller,
    Evented, Listed,
};
use crate::admin::listing::PageParams;
use crate::{empty_as_none, ApiError, ApiPath, ApiQuery, ApiResult, AppState};

const SESSION_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT s.id, s.order_id, s.user_id, s.counselor_id, s.status, \
     s.start_time, s.end_time, s.duration, s.total_amount_fen / 100.0 AS total_amount, s.price_fen / 100.0 AS price, \
     s.created_at, s.updated_at, \
     jsonb_build_object('id', COALESCE(u.id, 0), 'username', COALESCE(u.username, ''), 'avatar', COALESCE(u.avatar, '')) AS user, \
     jsonb_build_object('id', COALESCE(c.id, 0), 'name', COALESCE(c.name, ''), 'avatar', COALESCE(c.avatar, '')) AS counselor, \
     jsonb_build_object('id', COALESCE(o.id, 0), 'order_no', COALESCE(o.order_no, '')) AS \"order\" \
     FROM chat_sessions s LEFT JOIN users u ON u.id = s.user_id LEFT JOIN counselors c ON c.id = s.counselor_id \
     LEFT JOIN orders o ON o.id = s.order_id";

/// A chat session as the admin screens show it. Members in the order Postgres renders the row
/// (`jsonb`: shorter names first); timestamps are RFC 3339 as Postgres writes them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminSession {
    /// Session id.
    pub id: i64,
    /// The user.
    pub user: UserBrief,
    /// The order it serves.
    pub order: SessionOrder,
    /// Price per minute, yuan.
    pub price: f64,
    /// 0 waiting, 1 active, 2 ended.
    pub status: i16,
    /// The user's id.
    pub user_id: i64,
    /// Seconds talked.
    pub duration: i64,
    /// When it ended (RFC 3339), or null.
    pub end_time: Option<String>,
    /// The order's id.
    pub order_id: i64,
    /// The counselor.
    pub counselor: CounselorBrief,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// When it started (RFC 3339), or null.
    pub start_time: Option<String>,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// The counselor's id.
    pub counselor_id: i64,
    /// Billed so far, yuan.
    pub total_amount: f64,
}

/// The order of a session (a missing order is `{id: 0, order_no: ""}`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SessionOrder {
    /// Order id.
    pub id: i64,
    /// Order number.
    pub order_no: String,
}

/// A page of sessions: the same rows under `sessions` and `list`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionList {
    /// The page's sessions, newest first.
    pub sessions: Vec<AdminSession>,
    /// The same rows.
    pub list: Vec<AdminSession>,
    /// Sessions matching the filter.
    pub total: i64,
}

/// Filters of the session list.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct SessionListQuery {
    /// The page (documented as [`PageParams`]).
    #[serde(flatten)]
    #[param(ignore)]
    pub paging: PageParams,
    /// Only sessions with this status (0 waiting, 1 active, 2 ended); empty = all.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 0, max = 2, message = "must be 0 to 2"))]
    pub status: Option<i16>,
    /// Text found in the user's name or the counselor's name; empty = all.
    #[serde(default)]
    pub keyword: Option<String>,
}

/// List chat sessions
///
/// `{sessions, list, total}` in `data` and at the root (the client reads `data.list`, #39),
/// newest first; 20 per page by default.
#[utoipa::path(get, path = "/api/admin/chat/sessions", tag = TAG,
    params(PageParams, SessionListQuery),
    responses((status = 200, body = Listed<SessionList>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list_sessions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SessionListQuery>,
) -> ApiResult<axum::Json<Listed<SessionList>>> {
    validator::Validate::validate(&q)?;
    let (limit, offset) = q.paging.limits(20)?;
    let status = q.status;
    let keyword = q
        .keyword
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(contains_pattern);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(s) = status {
            qb.push(" AND s.status = ").push_bind(s);
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
    let list: Vec<AdminSession> = typed_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new(
        "SELECT count(*) FROM chat_sessions s LEFT JOIN users u ON u.id = s.user_id LEFT JOIN counselors c ON c.id = s.counselor_id",
    );
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(listed(SessionList {
        sessions: list.clone(),
        list,
        total,
    }))
}

const MESSAGE_SELECT: &str =
    "SELECT to_jsonb(t)::text FROM (SELECT m.id, m.session_id, m.sender_id, m.sender_type, \
     m.content_type, m.content, m.file_url, m.is_read, m.read_time, m.created_at, \
     m.content_type = 'redacted' AS redacted FROM chat_messages m";

/// A message of a session. Members in the order Postgres renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminMessage {
    /// Message id.
    pub id: i64,
    /// The text (empty once redacted).
    pub content: String,
    /// Whether the recipient read it.
    pub is_read: bool,
    /// The attached file's URL, or empty.
    pub file_url: String,
    /// Whether an administrator redacted it.
    pub redacted: bool,
    /// When it was read (RFC 3339), or null.
    pub read_time: Option<String>,
    /// The sender's user id.
    pub sender_id: i64,
    /// When it was sent (RFC 3339).
    pub created_at: String,
    /// The session.
    pub session_id: i64,
    /// `user`, `counselor` or `system`.
    pub sender_type: String,
    /// `text`, `image`, `file`, … or `redacted`.
    pub content_type: String,
}

/// A page of a session's messages, with the session.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionMessages {
    /// The page's messages, oldest first.
    pub messages: Vec<AdminMessage>,
    /// The same rows.
    pub list: Vec<AdminMessage>,
    /// The session's messages.
    pub total: i64,
    /// The session.
    pub session: AdminSession,
}

/// A session's messages
///
/// `{messages, list, total, session}` in `data` and at the root (the client reads root
/// `messages`, #40), oldest first, 50 per page by default. Redacted messages have empty
/// `content` and `redacted: true`.
#[utoipa::path(get, path = "/api/admin/chat/sessions/{id}/messages", tag = TAG,
    params(("id" = i64, Path, description = "Session id"), PageParams),
    responses((status = 200, body = Listed<SessionMessages>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn session_messages(
    State(state): State<AppState>,
    ApiPath(session_id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<Listed<SessionMessages>>> {
    let (limit, offset) = q.limits(50)?;
    let sql = format!("{SESSION_SELECT} WHERE s.id = $1) t");
    let session: AdminSession = typed_one(&state, &sql, session_id, "chat session").await?;
    let mut qb = QueryBuilder::new(MESSAGE_SELECT);
    qb.push(" WHERE m.session_id = ").push_bind(session_id);
    qb.push(" ORDER BY m.id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list: Vec<AdminMessage> = typed_rows(&state, qb).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM chat_messages WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(&state.db)
        .await?;
    Ok(listed(SessionMessages {
        messages: list.clone(),
        list,
        total,
        session,
    }))
}

/// Chat figures: sessions, messages, billing (yuan) and the ten latest messages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ChatStatistics {
    /// Everything billed, yuan.
    pub total_billing: f64,
    /// Messages sent today (business day).
    pub today_messages: i64,
    /// All messages.
    pub total_messages: i64,
    /// All sessions.
    pub total_sessions: i64,
    /// Sessions in progress.
    pub active_sessions: i64,
    /// The ten latest messages, newest first.
    pub recent_messages: Vec<RecentMessage>,
}

/// One of the latest messages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecentMessage {
    /// Message id.
    pub id: i64,
    /// The text.
    pub content: String,
    /// When it was sent (RFC 3339).
    pub created_at: String,
    /// The session.
    pub session_id: i64,
    /// `user`, `counselor` or `system`.
    pub sender_type: String,
    /// `text`, `image`, …
    pub content_type: String,
}

/// Chat statistics
///
/// Sessions, messages, billing (yuan) and the ten latest messages (#41).
#[utoipa::path(get, path = "/api/admin/chat/statistics", tag = TAG,
    responses((status = 200, body = Envelope<ChatStatistics>)))]
pub async fn chat_statistics(State(state): State<AppState>) -> Reply<ChatStatistics> {
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
    Ok(reply(typed_row(&row, &[])?))
}

/// A message found by a search, with its session's user and counselor.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FoundMessage {
    /// Message id.
    pub id: i64,
    /// The text.
    pub content: String,
    /// The session with its user and counselor.
    pub session: FoundSession,
    /// The sender's user id.
    pub sender_id: i64,
    /// When it was sent (RFC 3339).
    pub created_at: String,
    /// The session's id.
    pub session_id: i64,
    /// `user`, `counselor` or `system`.
    pub sender_type: String,
    /// `text`, `image`, …
    pub content_type: String,
}

/// The session of a found message.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FoundSession {
    /// Session id.
    pub id: i64,
    /// The user (`{id: 0, username: ""}` when gone).
    pub user: FoundUser,
    /// The counselor (`{id: 0, name: ""}` when gone).
    pub counselor: FoundCounselor,
}

/// The user of a found message's session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FoundUser {
    /// User id.
    pub id: i64,
    /// Login name.
    pub username: String,
}

/// The counselor of a found message's session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FoundCounselor {
    /// Counselor id.
    pub id: i64,
    /// Display name.
    pub name: String,
}

/// A page of found messages: the same rows under `messages` and `list`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FoundMessages {
    /// The page's messages, newest first.
    pub messages: Vec<FoundMessage>,
    /// The same rows.
    pub list: Vec<FoundMessage>,
    /// Messages found.
    pub total: i64,
}

/// What to search for.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct MessageSearchQuery {
    /// The page (documented as [`PageParams`]).
    #[serde(flatten)]
    #[param(ignore)]
    #[validate(skip)]
    pub paging: PageParams,
    /// The text to find (words, or any substring); required, not blank.
    #[validate(
        required(message = "required"),
        custom(function = "web::text::not_blank")
    )]
    pub keyword: Option<String>,
}

/// Full-text search over messages
///
/// `{messages (+ session with user and counselor), list, total}` in `data` and at the root:
/// Postgres `simple` text search over message text plus a substring match, so that Chinese text
/// without word breaks is found. Redacted messages are not found.
#[utoipa::path(get, path = "/api/admin/chat/messages/search", tag = TAG,
    params(MessageSearchQuery, PageParams),
    responses((status = 200, body = Listed<FoundMessages>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn search_messages(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<MessageSearchQuery>,
) -> ApiResult<axum::Json<Listed<FoundMessages>>> {
    q.validate()?;
    let keyword = q.keyword.as_deref().unwrap_or_default().trim().to_string();
    let (limit, offset) = q.paging.limits(20)?;
    let like = contains_pattern(&keyword);
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
    let list: Vec<FoundMessage> = typed_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM chat_messages m");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(listed(FoundMessages {
        messages: list.clone(),
        list,
        total,
    }))
}

/// Appends a redaction of `message_ids` (message ids; empty = all) of `session_id` to the
/// session's chat stream and waits for the read model; returns the stream and where the
/// redaction record landed.
async fn redact(
    state: &AppState,
    caller: &Caller,
    session_id: i64,
    message_ids: Vec<i64>,
    reason: String,
) -> Result<(&'static str, eventstore::chat::Appended), ApiError> {
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
            Some(appended.stream_sequence),
        )
        .await;
    Ok((place.stream, appended))
}

/// A session's messages redacted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionRedacted {
    /// The session.
    pub session_id: i64,
    /// The redaction record's position in the session's chat stream.
    pub redaction_seq: u64,
}

/// Redact a session's messages
///
/// Every message of the session: a `Redaction` record in the session's chat stream (the text
/// disappears from read models and replies, the fact and the administrator stay in the log).
#[utoipa::path(delete, path = "/api/admin/chat/sessions/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Session id")),
    responses((status = 200, body = Envelope<SessionRedacted>), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_session(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(session_id): ApiPath<i64>,
) -> ApiResult<Evented<Envelope<SessionRedacted>>> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM chat_sessions WHERE id = $1)")
            .bind(session_id)
            .fetch_one(&state.db)
            .await?;
    if !exists {
        return Err(ApiError::not_found("chat session"));
    }
    let (stream, appended) = redact(
        &state,
        &caller,
        session_id,
        Vec::new(),
        "admin deleted the session's messages".into(),
    )
    .await?;
    Ok(Evented::new(
        reply(SessionRedacted {
            session_id,
            redaction_seq: appended.seq,
        }),
        stream,
        Some(appended.seq),
    ))
}

/// One message redacted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MessageRedacted {
    /// The message.
    pub message_id: i64,
    /// The redaction record's position in the session's chat stream.
    pub redaction_seq: u64,
}

/// Redact one message
///
/// A `Redaction` record naming the message in its session's chat stream.
#[utoipa::path(delete, path = "/api/admin/chat/messages/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Message id")),
    responses((status = 200, body = Envelope<MessageRedacted>), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Evented<Envelope<MessageRedacted>>> {
    let session: Option<i64> =
        sqlx::query_scalar("SELECT session_id FROM chat_messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let session_id = session.ok_or_else(|| ApiError::not_found("chat message"))?;
    let (stream, appended) = redact(
        &state,
        &caller,
        session_id,
        vec![id],
        "admin deleted the message".into(),
    )
    .await?;
    Ok(Evented::new(
        reply(MessageRedacted {
            message_id: id,
            redaction_seq: appended.seq,
        }),
        stream,
        Some(appended.seq),
    ))
}
