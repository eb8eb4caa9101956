//! A group's messages over HTTP: history with sequence cursors, the fallback for sending when
//! the socket is down, recall, the read cursor, search and the caller's mentions. Writes are group
//! records appended to the group's chat stream after the group accepted them; the answer comes
//! once the `group_messages` read model of that stream shows them.

use axum::extract::State;
use chrono::{DateTime, Utc};
use eventstore::group_chat::{GroupMessage, GroupRead, GroupRecall, GroupRecord};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use super::access::{load_group, member_group, member_of_read_model};
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(history, send))
        .routes(routes!(recall))
        .routes(routes!(read))
        .routes(routes!(search))
        .routes(routes!(mentions))
}

/// One group message as history, search and mentions show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupMessageView {
    /// Its id across the chat streams (stream sequence × 64 + shard).
    pub id: i64,
    /// Its stream sequence: the cursor of paging, resumes and read marks.
    pub seq: i64,
    /// The group's id.
    pub group_id: i64,
    /// The sender's users-table id.
    pub sender_id: i64,
    /// The sender's username (empty when the account is gone).
    pub sender_name: String,
    /// `text`, `image` or `file`.
    pub content_type: String,
    /// The text (empty once recalled or redacted).
    pub content: String,
    /// The attachment's URL (empty once recalled or redacted).
    pub file_url: String,
    /// The client's id for the message.
    pub client_msg_id: String,
    /// Members mentioned.
    pub mentions: Vec<i64>,
    /// Whether the sender recalled it.
    pub recalled: bool,
    /// Whether an administrator redacted it.
    pub redacted: bool,
    /// When it was sent (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// The columns [`view`] reads (`group_messages` as `m`, `users` as `u`).
pub const VIEW_COLUMNS: &str = "m.id, m.seq, m.group_id, m.sender_id, \
    COALESCE(u.username, '') AS sender_name, m.content_type, m.content, m.file_url, \
    m.client_msg_id, m.mentions, m.recalled_at, m.redacted_at, m.created_at";

/// A row of [`VIEW_COLUMNS`] as a message; a recalled message shows no text.
pub fn view(r: &sqlx::postgres::PgRow) -> GroupMessageView {
    let recalled = r.get::<Option<DateTime<Utc>>, _>("recalled_at").is_some();
    let hidden = |s: String| if recalled { String::new() } else { s };
    GroupMessageView {
        id: r.get("id"),
        seq: r.get("seq"),
        group_id: r.get("group_id"),
        sender_id: r.get("sender_id"),
        sender_name: r.get("sender_name"),
        content_type: r.get("content_type"),
        content: hidden(r.get("content")),
        file_url: hidden(r.get("file_url")),
        client_msg_id: r.get("client_msg_id"),
        mentions: r.get("mentions"),
        recalled,
        redacted: r.get::<Option<DateTime<Utc>>, _>("redacted_at").is_some(),
        created_at: r.get("created_at"),
    }
}

/// `GET /api/group/{id}/messages` query: at most one cursor.
#[web::limits]
#[derive(Debug, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
#[validate(schema(function = "one_cursor"))]
pub struct HistoryQuery {
    /// Messages before this sequence, newest first (the default without a cursor: the newest).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, message = "must be a positive sequence"))]
    pub before_seq: Option<i64>,
    /// Messages after this sequence, oldest first (catching up).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 0, message = "must be a sequence"))]
    pub after_seq: Option<i64>,
    /// 1 to 100 (default 50).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub limit: Option<i64>,
}

fn one_cursor(q: &HistoryQuery) -> Result<(), ValidationError> {
    if q.before_seq.is_some() && q.after_seq.is_some() {
        return Err(web::error::refusal(
            "cursor",
            "give before_seq or after_seq, not both",
        ));
    }
    Ok(())
}

/// A page of a group's messages.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryPage {
    /// Newest first (with `before_seq` or no cursor), oldest first (with `after_seq`).
    pub messages: Vec<GroupMessageView>,
    /// Whether more messages lie beyond this page in its direction.
    pub has_more: bool,
}

/// `GET /api/group/{id}/messages?before_seq=&after_seq=&limit=` (members only).
#[utoipa::path(
    get,
    path = "/api/group/{id}/messages",
    operation_id = "group_messages",
    tag = "groups",
    summary = "A group's messages, by sequence cursor (members only)",
    params(("id" = i64, Path, description = "The group's id"), HistoryQuery),
    responses(
        (status = 200, description = "A page of messages", body = Envelope<HistoryPage>),
        (status = 400, description = "A malformed cursor or a limit out of range", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Reply<HistoryPage> {
    q.validate()?;
    member_of_read_model(&state, id, user.user_id).await?;
    let limit = q.limit.unwrap_or(50);
    let (filter, order, cursor) = match (q.before_seq, q.after_seq) {
        (_, Some(after)) => ("m.seq > $2", "ASC", after),
        (Some(before), None) => ("m.seq < $2", "DESC", before),
        (None, None) => ("m.seq < $2", "DESC", i64::MAX),
    };
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM group_messages m LEFT JOIN users u ON u.id = m.sender_id \
         WHERE m.group_id = $1 AND {filter} ORDER BY m.seq {order} LIMIT $3"
    );
    let mut rows = sqlx::query(&sql)
        .bind(id)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(&state.db)
        .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    Ok(reply(HistoryPage {
        messages: rows.iter().map(view).collect(),
        has_more,
    }))
}

/// `POST /api/group/{id}/messages` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SendRequest {
    /// `text` (default, also when empty), `image` or `file`.
    #[serde(default)]
    #[schema(example = "text", pattern = "^(|text|image|file)$")]
    pub content_type: String,
    /// The text: at most 5,000 characters, no NUL (may be empty when `file_url` is set).
    #[serde(default)]
    #[schema(max_length = 5000)]
    pub content: String,
    /// The attachment's URL (image, file).
    #[serde(default)]
    pub file_url: String,
    /// The client's id: a resend with the same id is stored once (at most 100 bytes).
    #[serde(default)]
    #[schema(max_length = 100)]
    pub client_msg_id: String,
    /// Members to notify (`@`); each must be a member.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub mentions: Vec<i64>,
}

/// A message stored.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Sent {
    /// Its stream sequence.
    pub seq: u64,
    /// Its id across the chat streams.
    pub message_id: i64,
    /// The client's id (assigned when the client sent none).
    pub client_msg_id: String,
    /// True when the client id was already stored (a resend): the first copy's position.
    pub duplicate: bool,
}

/// The most members one message mentions.
pub const MAX_MENTIONS: usize = 100;

/// `POST /api/group/{id}/messages` `{content_type, content, client_msg_id?, mentions?}`: the
/// HTTP fallback of a socket's `group_message`, held to the same rules
/// ([`domain::Group::accept_message`]).
#[utoipa::path(
    post,
    path = "/api/group/{id}/messages",
    operation_id = "group_send",
    tag = "groups",
    summary = "Send a message to a group (members; not while muted or dissolved)",
    params(("id" = i64, Path, description = "The group's id")),
    request_body = SendRequest,
    responses(
        (status = 200, description = "Stored", body = Envelope<Sent>),
        (status = 400, description = "An oversized or invalid message", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Neither text (not blank) nor an attachment, or a mention of a non-member", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member, muted, or the group muted", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The group's chat stream is unavailable; retry with the same client_msg_id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn send(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<SendRequest>,
) -> Reply<Sent> {
    if req.mentions.len() > MAX_MENTIONS {
        return Err(ApiError::field("mentions", "at most 100 members"));
    }
    let group = load_group(&state, id).await?;
    let draft = domain::MessageDraft {
        content: req.content,
        content_type: req.content_type,
        file_url: req.file_url,
        client_msg_id: req.client_msg_id,
    };
    let accepted = group.accept_message(user.user_id, draft, &req.mentions, Utc::now())?;
    let message = GroupMessage::accepted(id, user.user_id, accepted, Utc::now());
    let client_msg_id = message.client_msg_id.clone();
    let appended = append(&state, &GroupRecord::GroupMessage(message)).await?;
    Ok(reply(Sent {
        seq: appended.seq,
        message_id: appended.id,
        client_msg_id,
        duplicate: appended.duplicate,
    }))
}

/// Appends a group record and waits until its stream's `group_messages` read model has it.
async fn append(
    state: &AppState,
    record: &GroupRecord,
) -> Result<eventstore::chat::Appended, ApiError> {
    let appended = state.chat.append_group(record).await.map_err(|e| {
        tracing::error!(error = %e, group_id = record.group_id(), "storing a group record");
        ApiError::unavailable("the group's chat stream is unavailable; retry")
    })?;
    let shard = state.chat.layout().place_group(record.group_id()).shard;
    state
        .settle(
            projections::read_models::GroupMessages::name_of(shard),
            Some(appended.stream_sequence),
        )
        .await;
    Ok(appended)
}

/// A record stored (recall, read cursor).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stored {
    /// The record's stream sequence.
    pub seq: u64,
    /// True when it was stored before (a repeat).
    pub duplicate: bool,
}

/// `POST /api/group/{id}/messages/{seq}/recall`: the sender recalls their own message within
/// 2 minutes ([`domain::Group::may_recall`]).
#[utoipa::path(
    post,
    path = "/api/group/{id}/messages/{seq}/recall",
    operation_id = "group_recall",
    tag = "groups",
    summary = "Recall one's own message within 2 minutes",
    params(
        ("id" = i64, Path, description = "The group's id"),
        ("seq" = u64, Path, description = "The message's stream sequence")
    ),
    responses(
        (status = 200, description = "Recalled", body = Envelope<Stored>),
        (status = 400, description = "Past the recall window, or a malformed sequence", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member, or someone else's message", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group or message", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn recall(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath((id, seq)): ApiPath<(i64, u64)>,
) -> Reply<Stored> {
    let group = member_group(&state, id, user.user_id).await?;
    let message = eventstore::group_chat::group_message_at(
        state.bus.jetstream(),
        state.chat.layout(),
        id,
        seq,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("message"))?;
    let now = Utc::now();
    group
        .may_recall(user.user_id, message.sender_id, message.sent_at, now)
        .map_err(|e| ApiError::from(eventstore::CommandError::Rejected(e)))?;
    let record = GroupRecord::GroupRecall(GroupRecall {
        group_id: id,
        message_seq: seq,
        recalled_by: user.user_id,
        recalled_at: now,
    });
    let appended = append(&state, &record).await?;
    Ok(reply(Stored {
        seq: appended.seq,
        duplicate: appended.duplicate,
    }))
}

/// `POST /api/group/{id}/read` body.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct ReadRequest {
    /// Every message up to this stream sequence is read.
    #[validate(range(min = 1, message = "must be a positive sequence"))]
    pub seq: i64,
}

/// `POST /api/group/{id}/read` `{seq}`: moves the caller's read cursor (never backwards);
/// unread = messages after it not sent by the caller.
#[utoipa::path(
    post,
    path = "/api/group/{id}/read",
    operation_id = "group_read",
    tag = "groups",
    summary = "Move the caller's read cursor",
    params(("id" = i64, Path, description = "The group's id")),
    request_body = ReadRequest,
    responses(
        (status = 200, description = "Stored", body = Envelope<Stored>),
        (status = 422, description = "A sequence that is not a message of the group", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn read(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ReadRequest>,
) -> Reply<Stored> {
    req.validate()?;
    if member_group(&state, id, user.user_id).await?.dissolved {
        return Err(ApiError::conflict("group has been dissolved"));
    }
    let seq = req.seq as u64;
    if eventstore::group_chat::group_message_at(state.bus.jetstream(), state.chat.layout(), id, seq)
        .await?
        .is_none()
    {
        return Err(ApiError::unprocessable(
            "seq",
            "is not a message of this group",
        ));
    }
    let record = GroupRecord::GroupRead(GroupRead {
        group_id: id,
        user_id: user.user_id,
        seq,
        read_at: Utc::now(),
    });
    let appended = append(&state, &record).await?;
    Ok(reply(Stored {
        seq: appended.seq,
        duplicate: appended.duplicate,
    }))
}

/// `GET /api/group/search` query.
#[web::limits]
#[derive(Debug, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// The text to find (1 to 100 characters, not blank, case-insensitive substring).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 100, message = "must be 1 to 100 characters")
    )]
    pub q: String,
    /// Only this group (one the caller belongs to).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub group_id: Option<i64>,
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Results per page, 1 to 100 (default 20).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
}

/// Search results.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchResults {
    /// Matching messages, newest first.
    pub messages: Vec<GroupMessageView>,
    /// How many messages match.
    pub total: i64,
}

/// `LIKE` pattern of a literal substring (`%`, `_` and `\` escaped).
fn like_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

/// `GET /api/group/search?q=&group_id=`: messages containing `q` (any script, Chinese included;
/// case-insensitive) in the groups the caller belongs to, not recalled or redacted, newest
/// first. Substring matching (`ILIKE`) served by a trigram index (`pg_trgm`).
#[utoipa::path(
    get,
    path = "/api/group/search",
    operation_id = "group_search",
    tag = "groups",
    summary = "Search the messages of the caller's groups",
    params(SearchQuery),
    responses(
        (status = 200, description = "Matching messages", body = Envelope<SearchResults>),
        (status = 400, description = "An empty or too long query, or invalid paging", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member of group_id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group_id", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<SearchQuery>,
) -> Reply<SearchResults> {
    q.validate()?;
    if q.q.trim().is_empty() {
        return Err(ApiError::field("q", "must not be blank"));
    }
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    if let Some(g) = q.group_id {
        member_of_read_model(&state, g, user.user_id).await?;
    }
    let pattern = like_pattern(q.q.trim());
    let scope = "FROM group_messages m LEFT JOIN users u ON u.id = m.sender_id \
         WHERE m.group_id IN (SELECT group_id FROM group_members WHERE user_id = $1) \
         AND ($2::bigint IS NULL OR m.group_id = $2) AND m.content ILIKE $3 \
         AND m.recalled_at IS NULL AND m.redacted_at IS NULL";
    let rows = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS} {scope} ORDER BY m.created_at DESC, m.id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(user.user_id)
    .bind(q.group_id)
    .bind(&pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) {scope}"))
        .bind(user.user_id)
        .bind(q.group_id)
        .bind(&pattern)
        .fetch_one(&state.db)
        .await?;
    Ok(reply(SearchResults {
        messages: rows.iter().map(view).collect(),
        total,
    }))
}

/// `GET /api/group/mentions` query.
#[web::limits]
#[derive(Debug, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct MentionsQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Per page, 1 to 100 (default 20).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
}

/// The caller's mentions.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MentionList {
    /// Messages mentioning the caller in groups they still belong to, newest first.
    pub messages: Vec<GroupMessageView>,
    /// How many there are.
    pub total: i64,
}

/// `GET /api/group/mentions`: the messages that mention the caller (their notifications of
/// `@` mentions), newest first.
#[utoipa::path(
    get,
    path = "/api/group/mentions",
    operation_id = "group_mentions",
    tag = "groups",
    summary = "Messages that mention the caller",
    params(MentionsQuery),
    responses(
        (status = 200, description = "Mentions", body = Envelope<MentionList>),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn mentions(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<MentionsQuery>,
) -> Reply<MentionList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    let scope = "FROM group_mentions x JOIN group_messages m ON m.id = x.message_id \
         LEFT JOIN users u ON u.id = m.sender_id WHERE x.user_id = $1 \
         AND x.group_id IN (SELECT group_id FROM group_members WHERE user_id = $1)";
    let rows = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS} {scope} ORDER BY m.created_at DESC, m.id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(user.user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) {scope}"))
        .bind(user.user_id)
        .fetch_one(&state.db)
        .await?;
    Ok(reply(MentionList {
        messages: rows.iter().map(view).collect(),
        total,
    }))
}
