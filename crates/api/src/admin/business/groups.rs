//! Group conversations in the admin API: every group (with its owner and state), a group's
//! messages, dissolving a group (a `GroupDissolved` by the platform on the `Group` aggregate) and
//! redacting a group message (a `group_redaction` record in the group's chat stream: the text
//! disappears from read models and sockets, the fact and the administrator stay in the log).

use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::{Dissolver, Group, GroupCommand};
use eventstore::group_chat::{group_message_at, GroupRecord, GroupRedaction};
use eventstore::{Actor, CommandMeta};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::admin::common::{contains_pattern, Caller, Evented};
use crate::user::groups::messages::{view, GroupMessageView, VIEW_COLUMNS};
use crate::{empty_as_none, paging, ApiError, ApiPath, ApiQuery, ApiResult, AppState};

/// OpenAPI tag of the group operations.
pub const TAG: &str = "groups";

/// `GET /api/admin/groups` query.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct GroupsQuery {
    /// The page, from 1 (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1 to 100 (default 20).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// A part of the group's name.
    #[serde(default)]
    #[validate(length(max = 50, message = "at most 50 characters"))]
    pub keyword: String,
    /// `active` or `dissolved` (default: both).
    #[serde(default)]
    #[param(pattern = "^(active|dissolved)?$")]
    pub status: String,
}

/// A group as the admin screens show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminGroup {
    /// The group's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its notice.
    pub notice: String,
    /// Its avatar URL.
    pub avatar: String,
    /// The owner's users-table id.
    pub owner_id: i64,
    /// The owner's username (empty when the account is gone).
    pub owner_name: String,
    /// Members, owner included.
    pub member_count: i32,
    /// Whole group muted.
    pub all_muted: bool,
    /// Messages stored.
    pub message_count: i64,
    /// When it was dissolved (RFC 3339), or null.
    pub dissolved_at: Option<DateTime<Utc>>,
    /// When it was created (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// A page of groups.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminGroupList {
    /// Newest first.
    pub groups: Vec<AdminGroup>,
    /// How many match.
    pub total: i64,
}

/// List groups
///
/// Every group, newest first; `keyword` matches a part of the name, `status` filters active
/// or dissolved groups.
#[utoipa::path(get, path = "/api/admin/groups", tag = TAG, params(GroupsQuery),
    responses((status = 200, body = Envelope<AdminGroupList>),
        (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list_groups(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<GroupsQuery>,
) -> Reply<AdminGroupList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    let dissolved = match q.status.as_str() {
        "" => None,
        "active" => Some(false),
        "dissolved" => Some(true),
        _ => return Err(ApiError::field("status", "one of active, dissolved")),
    };
    let pattern = contains_pattern(&q.keyword);
    let filter = "FROM groups g WHERE g.name ILIKE $1 \
         AND ($2::boolean IS NULL OR (g.dissolved_at IS NOT NULL) = $2)";
    let rows = sqlx::query(&format!(
        "SELECT g.*, COALESCE(u.username, '') AS owner_name, \
         (SELECT count(*) FROM group_messages m WHERE m.group_id = g.id) AS message_count \
         {filter_joined} ORDER BY g.id DESC LIMIT $3 OFFSET $4",
        filter_joined = filter.replace(
            "FROM groups g",
            "FROM groups g LEFT JOIN users u ON u.id = g.owner_id"
        )
    ))
    .bind(&pattern)
    .bind(dissolved)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) {filter}"))
        .bind(&pattern)
        .bind(dissolved)
        .fetch_one(&state.db)
        .await?;
    let groups = rows
        .iter()
        .map(|r| AdminGroup {
            id: r.get("id"),
            name: r.get("name"),
            notice: r.get("notice"),
            avatar: r.get("avatar"),
            owner_id: r.get("owner_id"),
            owner_name: r.get("owner_name"),
            member_count: r.get("member_count"),
            all_muted: r.get("all_muted"),
            message_count: r.get("message_count"),
            dissolved_at: r.get("dissolved_at"),
            created_at: r.get("created_at"),
        })
        .collect();
    Ok(reply(AdminGroupList { groups, total }))
}

/// `GET /api/admin/groups/{id}/messages` query.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct GroupMessagesQuery {
    /// Messages before this sequence (default: the newest).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, message = "must be a positive sequence"))]
    pub before_seq: Option<i64>,
    /// 1 to 100 (default 50).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub limit: Option<i64>,
}

/// A page of a group's messages.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdminGroupMessages {
    /// Newest first; recalled and redacted ones included (flagged).
    pub messages: Vec<GroupMessageView>,
    /// Whether older messages remain.
    pub has_more: bool,
}

/// A group's messages
///
/// Newest first, by sequence cursor (`before_seq`).
#[utoipa::path(get, path = "/api/admin/groups/{id}/messages", tag = TAG,
    params(("id" = i64, Path, description = "Group id"), GroupMessagesQuery),
    responses((status = 200, body = Envelope<AdminGroupMessages>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn group_messages(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<GroupMessagesQuery>,
) -> Reply<AdminGroupMessages> {
    q.validate()?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM groups WHERE id = $1)")
        .bind(id)
        .fetch_one(&state.db)
        .await?;
    if !exists {
        return Err(ApiError::not_found("group"));
    }
    let limit = q.limit.unwrap_or(50);
    let mut rows = sqlx::query(&format!(
        "SELECT {VIEW_COLUMNS} FROM group_messages m LEFT JOIN users u ON u.id = m.sender_id \
         WHERE m.group_id = $1 AND m.seq < $2 ORDER BY m.seq DESC LIMIT $3"
    ))
    .bind(id)
    .bind(q.before_seq.unwrap_or(i64::MAX))
    .bind(limit + 1)
    .fetch_all(&state.db)
    .await?;
    let has_more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    // An administrator sees what was redacted or recalled only as flagged, not the text.
    Ok(reply(AdminGroupMessages {
        messages: rows.iter().map(view).collect(),
        has_more,
    }))
}

/// A group dissolved.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupDissolved {
    /// The group's id.
    pub group_id: i64,
}

/// Dissolve a group
///
/// `GroupDissolved` by the platform: nobody speaks in it again; members' sockets are told.
#[utoipa::path(post, path = "/api/admin/groups/{id}/dissolve", tag = TAG,
    params(("id" = i64, Path, description = "Group id")),
    responses((status = 200, body = Envelope<GroupDissolved>),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn dissolve_group(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Evented<Envelope<GroupDissolved>>> {
    let command = GroupCommand::Dissolve {
        by: Dissolver::Platform {
            admin_id: caller.admin_id,
        },
        at: Utc::now(),
    };
    let meta = CommandMeta::new(Actor::admin(caller.admin_id));
    let committed = state
        .bus
        .execute::<Group>(&id.to_string(), command, &meta)
        .await?;
    state.settle("groups", committed.stream_sequence).await;
    Ok(Evented::new(
        reply(GroupDissolved { group_id: id }),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
}

/// A group message redacted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupMessageRedacted {
    /// The group's id.
    pub group_id: i64,
    /// The redacted message's stream sequence.
    pub seq: u64,
    /// The redaction record's stream sequence.
    pub redaction_seq: u64,
}

/// `DELETE /api/admin/groups/{id}/messages/{seq}` query.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct RedactQuery {
    /// Why (kept with the redaction in the log; default "admin redacted the message").
    #[serde(default)]
    #[validate(length(max = 200, message = "at most 200 characters"))]
    pub reason: String,
}

/// Redact a group message
///
/// A `group_redaction` record naming the message in the group's chat stream.
#[utoipa::path(delete, path = "/api/admin/groups/{id}/messages/{seq}", tag = TAG,
    params(("id" = i64, Path, description = "Group id"), ("seq" = u64, Path, description = "The message's stream sequence"), RedactQuery),
    responses((status = 200, body = Envelope<GroupMessageRedacted>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn redact_group_message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((id, seq)): ApiPath<(i64, u64)>,
    ApiQuery(q): ApiQuery<RedactQuery>,
) -> ApiResult<Evented<Envelope<GroupMessageRedacted>>> {
    q.validate()?;
    let layout = state.chat.layout();
    if group_message_at(state.bus.jetstream(), layout, id, seq)
        .await?
        .is_none()
    {
        return Err(ApiError::not_found("group message"));
    }
    let record = GroupRecord::GroupRedaction(GroupRedaction {
        group_id: id,
        message_seqs: vec![seq],
        admin_id: caller.admin_id,
        reason: if q.reason.trim().is_empty() {
            "admin redacted the message".into()
        } else {
            q.reason.trim().to_string()
        },
        redacted_at: Utc::now(),
    });
    let appended = state
        .chat
        .append_group(&record)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("storing the redaction: {e}")))?;
    let place = layout.place_group(id);
    state
        .settle(
            projections::read_models::GroupMessages::name_of(place.shard),
            Some(appended.stream_sequence),
        )
        .await;
    Ok(Evented::new(
        reply(GroupMessageRedacted {
            group_id: id,
            seq,
            redaction_seq: appended.seq,
        }),
        place.stream,
        Some(appended.seq),
    ))
}
