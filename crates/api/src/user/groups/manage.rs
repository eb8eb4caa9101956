//! Groups and their members: create, list, show, update, dissolve; add, remove, leave, roles,
//! mutes. Every change is a `Group` command; the answer comes once the `groups` read model shows
//! it.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use domain::{Dissolver, GroupCommand};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use super::access::{known_users, run, Changed};
use crate::app::ids::IdSequence;
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(show, update))
        .routes(routes!(dissolve))
        .routes(routes!(mute_all))
}

/// The most users one request adds (a group holds at most 2,000 by default).
pub const MAX_ADD: usize = 2_000;

/// `POST /api/group/create` body.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct CreateRequest {
    /// 1 to 50 characters, not blank.
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 50, message = "must be 1 to 50 characters")
    )]
    pub name: String,
    /// At most 1,000 characters.
    #[serde(default)]
    #[validate(length(max = 1000, message = "at most 1000 characters"))]
    pub notice: String,
    /// An image URL, at most 500 bytes.
    #[serde(default)]
    #[validate(length(max = 500, message = "at most 500 characters"))]
    pub avatar: String,
    /// Users to add besides the creator (who becomes the owner).
    #[serde(default)]
    #[validate(length(max = 2000, message = "at most 2000 users at once"))]
    pub member_ids: Vec<i64>,
}

/// A group just created.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Created {
    /// The new group's id.
    pub group_id: i64,
}

/// `POST /api/group/create` → `{group_id}`: the caller owns the new group; `member_ids` join as
/// members (each must be a user; the owner and repeats are skipped).
#[utoipa::path(
    post,
    path = "/api/group/create",
    operation_id = "group_create",
    tag = "groups",
    summary = "Create a group (the caller is its owner)",
    request_body = CreateRequest,
    responses(
        (status = 200, description = "The group was created", body = Envelope<Created>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown user, or more members than the cap", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CreateRequest>,
) -> Reply<Created> {
    req.validate()?;
    known_users(&state, "member_ids", &req.member_ids).await?;
    let group_id = state.ids.next(&state.db, IdSequence::Groups).await?;
    let command = GroupCommand::Create {
        group_id,
        name: req.name.trim().to_string(),
        notice: req.notice,
        avatar: req.avatar,
        owner_id: user.user_id,
        member_ids: req.member_ids,
        member_cap: domain::group::DEFAULT_MEMBER_CAP,
        at: Utc::now(),
    };
    let _changed = run(&state, &headers, &user, group_id, command).await?;
    Ok(reply(Created { group_id }))
}

/// The last message of a group, as its list shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LastMessage {
    /// Its stream sequence.
    pub seq: i64,
    /// The sender's users-table id.
    pub sender_id: i64,
    /// `text`, `image`, `file`.
    pub content_type: String,
    /// Its text (empty once recalled or redacted).
    pub content: String,
    /// Whether the sender recalled it.
    pub recalled: bool,
    /// When it was sent (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// One of the caller's groups.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupSummary {
    /// The group's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its avatar URL (may be empty).
    pub avatar: String,
    /// Its members, owner included.
    pub member_count: i32,
    /// The caller's role.
    #[schema(value_type = String, example = "member")]
    pub role: String,
    /// Messages after the caller's read cursor and since they joined, not sent by the caller,
    /// not recalled or redacted.
    pub unread: i64,
    /// Messages mentioning the caller after their read cursor (not recalled or redacted).
    pub unread_mentions: i64,
    /// The newest message, if any.
    pub last_message: Option<LastMessage>,
}

/// The caller's groups.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupList {
    /// Newest activity first.
    pub groups: Vec<GroupSummary>,
    /// How many groups the caller belongs to.
    pub total: i64,
}

/// `GET /api/group/list` query.
#[web::limits]
#[derive(Debug, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Groups per page, 1 to 100 (default 50).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
}

/// `GET /api/group/list` → `{groups: [{id, name, avatar, member_count, role, unread,
/// unread_mentions, last_message}], total}`: the caller's groups that are not dissolved, newest
/// activity first.
#[utoipa::path(
    get,
    path = "/api/group/list",
    operation_id = "group_list",
    tag = "groups",
    summary = "The caller's groups with unread counts and last messages",
    params(ListQuery),
    responses(
        (status = 200, description = "The caller's groups", body = Envelope<GroupList>),
        (status = 400, description = "Invalid paging", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply<GroupList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 50)?;
    let rows = sqlx::query(
        "SELECT g.id, g.name, g.avatar, g.member_count, m.role, \
           COALESCE(r.seq, 0) AS read_seq, \
           (SELECT count(*) FROM group_messages x WHERE x.group_id = g.id \
              AND x.seq > COALESCE(r.seq, 0) AND x.created_at >= m.joined_at \
              AND x.sender_id <> $1 AND x.recalled_at IS NULL AND x.redacted_at IS NULL) AS unread, \
           (SELECT count(*) FROM group_mentions x JOIN group_messages y ON y.id = x.message_id \
              WHERE x.group_id = g.id AND x.user_id = $1 AND x.seq > COALESCE(r.seq, 0) \
              AND y.recalled_at IS NULL AND y.redacted_at IS NULL) AS unread_mentions, \
           l.seq AS l_seq, l.sender_id AS l_sender, l.content_type AS l_type, l.content AS l_content, \
           l.recalled_at IS NOT NULL AS l_recalled, l.created_at AS l_at \
         FROM group_members m JOIN groups g ON g.id = m.group_id \
         LEFT JOIN group_reads r ON r.group_id = g.id AND r.user_id = $1 \
         LEFT JOIN LATERAL (SELECT * FROM group_messages y WHERE y.group_id = g.id \
              ORDER BY y.seq DESC LIMIT 1) l ON TRUE \
         WHERE m.user_id = $1 AND g.dissolved_at IS NULL \
         ORDER BY COALESCE(l.created_at, g.created_at) DESC, g.id DESC LIMIT $2 OFFSET $3",
    )
    .bind(user.user_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM group_members m JOIN groups g ON g.id = m.group_id \
         WHERE m.user_id = $1 AND g.dissolved_at IS NULL",
    )
    .bind(user.user_id)
    .fetch_one(&state.db)
    .await?;
    let groups = rows
        .iter()
        .map(|r| {
            let last_seq: Option<i64> = r.get("l_seq");
            GroupSummary {
                id: r.get("id"),
                name: r.get("name"),
                avatar: r.get("avatar"),
                member_count: r.get("member_count"),
                role: r.get("role"),
                unread: r.get("unread"),
                unread_mentions: r.get("unread_mentions"),
                last_message: last_seq.map(|seq| {
                    let recalled: bool = r.get("l_recalled");
                    LastMessage {
                        seq,
                        sender_id: r.get("l_sender"),
                        content_type: r.get("l_type"),
                        content: if recalled {
                            String::new()
                        } else {
                            r.get("l_content")
                        },
                        recalled,
                        created_at: r.get("l_at"),
                    }
                }),
            }
        })
        .collect();
    Ok(reply(GroupList { groups, total }))
}

/// A group as its members see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupDetail {
    /// The group's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// Its notice (may be empty).
    pub notice: String,
    /// Its avatar URL (may be empty).
    pub avatar: String,
    /// The owner's users-table id.
    pub owner_id: i64,
    /// Members, owner included.
    pub member_count: i32,
    /// The most members it holds.
    pub member_cap: i32,
    /// Whole group muted: only the owner and admins speak.
    pub all_muted: bool,
    /// When it was dissolved (RFC 3339), or null.
    pub dissolved_at: Option<DateTime<Utc>>,
    /// When it was created (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// The caller's role: `owner`, `admin` or `member`.
    #[schema(value_type = String, example = "member")]
    pub role: String,
    /// Until when the caller is muted (RFC 3339), or null.
    pub muted_until: Option<DateTime<Utc>>,
}

/// `PUT /api/group/{id}` body: the fields to change (absent: unchanged).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct UpdateRequest {
    /// 1 to 50 characters.
    #[validate(length(min = 1, max = 50, message = "must be 1 to 50 characters"))]
    pub name: Option<String>,
    /// At most 1,000 characters.
    #[validate(length(max = 1000, message = "at most 1000 characters"))]
    pub notice: Option<String>,
    /// An image URL, at most 500 bytes.
    #[validate(length(max = 500, message = "at most 500 characters"))]
    pub avatar: Option<String>,
}

/// `GET /api/group/{id}` → the group (members only).
#[utoipa::path(
    get,
    path = "/api/group/{id}",
    operation_id = "group_show",
    tag = "groups",
    summary = "A group the caller belongs to",
    params(("id" = i64, Path, description = "The group's id")),
    responses(
        (status = 200, description = "The group", body = Envelope<GroupDetail>),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Reply<GroupDetail> {
    let row = sqlx::query(
        "SELECT g.*, m.role, m.muted_until FROM groups g \
         LEFT JOIN group_members m ON m.group_id = g.id AND m.user_id = $2 WHERE g.id = $1",
    )
    .bind(id)
    .bind(user.user_id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("group"))?;
    let role: Option<String> = row.get("role");
    let Some(role) = role else {
        return Err(ApiError::forbidden("not a member of this group"));
    };
    Ok(reply(GroupDetail {
        id,
        name: row.get("name"),
        notice: row.get("notice"),
        avatar: row.get("avatar"),
        owner_id: row.get("owner_id"),
        member_count: row.get("member_count"),
        member_cap: row.get("member_cap"),
        all_muted: row.get("all_muted"),
        dissolved_at: row.get("dissolved_at"),
        created_at: row.get("created_at"),
        role,
        muted_until: row.get("muted_until"),
    }))
}

/// `PUT /api/group/{id}` `{name?, notice?, avatar?}` (owner or admins).
#[utoipa::path(
    put,
    path = "/api/group/{id}",
    operation_id = "group_update",
    tag = "groups",
    summary = "Rename a group or change its notice or avatar (owner or admins)",
    params(("id" = i64, Path, description = "The group's id")),
    request_body = UpdateRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<Changed>),
        (status = 400, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the owner or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Reply<Changed> {
    req.validate()?;
    let command = GroupCommand::Update {
        actor_id: user.user_id,
        name: req.name.map(|n| n.trim().to_string()),
        notice: req.notice,
        avatar: req.avatar,
        at: Utc::now(),
    };
    run(&state, &headers, &user, id, command).await
}

/// `POST /api/group/{id}/dissolve` (the owner): nobody speaks in it again.
#[utoipa::path(
    post,
    path = "/api/group/{id}/dissolve",
    operation_id = "group_dissolve",
    tag = "groups",
    summary = "Dissolve a group (its owner)",
    params(("id" = i64, Path, description = "The group's id")),
    responses(
        (status = 200, description = "Dissolved", body = Envelope<Changed>),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the owner", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already dissolved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn dissolve(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> Reply<Changed> {
    let command = GroupCommand::Dissolve {
        by: Dissolver::Owner {
            user_id: user.user_id,
        },
        at: Utc::now(),
    };
    run(&state, &headers, &user, id, command).await
}

/// `PUT /api/group/{id}/mute` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct MuteAllRequest {
    /// Mute (true) or unmute (false) the whole group.
    pub muted: bool,
}

/// `PUT /api/group/{id}/mute` `{muted}` (owner or admins; admins may still speak).
#[utoipa::path(
    put,
    path = "/api/group/{id}/mute",
    operation_id = "group_mute_all",
    tag = "groups",
    summary = "Mute or unmute the whole group (owner or admins)",
    params(("id" = i64, Path, description = "The group's id")),
    request_body = MuteAllRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<Changed>),
        (status = 400, description = "A malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the owner or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn mute_all(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<MuteAllRequest>,
) -> Reply<Changed> {
    let command = GroupCommand::MuteAll {
        actor_id: user.user_id,
        muted: req.muted,
        at: Utc::now(),
    };
    run(&state, &headers, &user, id, command).await
}
