//! A group's members: the list, adding, removing, leaving, roles (and ownership transfer) and
//! member mutes. Every change is a `Group` command; the answer comes once the `groups` read
//! model shows it.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Duration, Utc};
use domain::{GroupCommand, GroupRole};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use super::access::{known_users, load_group, member_group, member_of_read_model, run, Changed};
use super::manage::ListQuery;
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(members, add_members))
        .routes(routes!(remove_member))
        .routes(routes!(leave))
        .routes(routes!(change_role))
        .routes(routes!(mute_member))
}

/// The longest member mute, in minutes (30 days).
pub const MAX_MUTE_MINUTES: i64 = 30 * 24 * 60;

/// One member of a group.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberView {
    /// The member's users-table id.
    pub user_id: i64,
    /// Their username (empty when the account is gone).
    pub username: String,
    /// Their avatar URL (may be empty).
    pub avatar: String,
    /// `owner`, `admin` or `member`.
    #[schema(value_type = String, example = "member")]
    pub role: String,
    /// Muted until (RFC 3339), or null.
    pub muted_until: Option<DateTime<Utc>>,
    /// When they joined (RFC 3339).
    pub joined_at: DateTime<Utc>,
}

/// A page of a group's members.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MemberList {
    /// Owner first, then admins, then members by joining time.
    pub members: Vec<MemberView>,
    /// How many members the group has.
    pub total: i64,
}

/// `POST /api/group/{id}/members` body.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct AddRequest {
    /// Users to add (those already in the group are skipped).
    #[validate(length(min = 1, max = 2000, message = "must name 1 to 2000 users"))]
    pub user_ids: Vec<i64>,
}

/// `GET /api/group/{id}/members` → `{members, total}` (members only).
#[utoipa::path(
    get,
    path = "/api/group/{id}/members",
    operation_id = "group_members",
    tag = "groups",
    summary = "A group's members (members only)",
    params(("id" = i64, Path, description = "The group's id"), ListQuery),
    responses(
        (status = 200, description = "A page of members", body = Envelope<MemberList>),
        (status = 400, description = "Invalid paging or id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn members(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply<MemberList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 50)?;
    member_of_read_model(&state, id, user.user_id).await?;
    let rows = sqlx::query(
        "SELECT m.*, COALESCE(u.username, '') AS username, COALESCE(u.avatar, '') AS avatar \
         FROM group_members m LEFT JOIN users u ON u.id = m.user_id WHERE m.group_id = $1 \
         ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END, m.joined_at, m.user_id \
         LIMIT $2 OFFSET $3",
    )
    .bind(id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM group_members WHERE group_id = $1")
        .bind(id)
        .fetch_one(&state.db)
        .await?;
    let members = rows
        .iter()
        .map(|r| MemberView {
            user_id: r.get("user_id"),
            username: r.get("username"),
            avatar: r.get("avatar"),
            role: r.get("role"),
            muted_until: r.get("muted_until"),
            joined_at: r.get("joined_at"),
        })
        .collect();
    Ok(reply(MemberList { members, total }))
}

/// `POST /api/group/{id}/members` `{user_ids}` (owner or admins; up to the member cap).
#[utoipa::path(
    post,
    path = "/api/group/{id}/members",
    operation_id = "group_add_members",
    tag = "groups",
    summary = "Add members (owner or admins)",
    params(("id" = i64, Path, description = "The group's id")),
    request_body = AddRequest,
    responses(
        (status = 200, description = "Added", body = Envelope<Changed>),
        (status = 422, description = "An unknown user, or past the member cap", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the owner or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn add_members(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<AddRequest>,
) -> Reply<Changed> {
    req.validate()?;
    // The group's own rules first (404, 403), so a non-admin learns nothing about user ids.
    let group = load_group(&state, id).await?;
    if group.dissolved {
        return Err(ApiError::conflict("group has been dissolved"));
    }
    if !group.role_of(user.user_id).is_some_and(GroupRole::manages) {
        return Err(ApiError::forbidden(
            "only the group's owner or admins may add members",
        ));
    }
    known_users(&state, "user_ids", &req.user_ids).await?;
    let command = GroupCommand::AddMembers {
        actor_id: user.user_id,
        user_ids: req.user_ids,
        at: Utc::now(),
    };
    run(&state, &headers, &user, id, command).await
}

/// `DELETE /api/group/{id}/members/{user_id}` (the owner removes anyone else; admins remove
/// members).
#[utoipa::path(
    delete,
    path = "/api/group/{id}/members/{user_id}",
    operation_id = "group_remove_member",
    tag = "groups",
    summary = "Remove a member (owner or admins)",
    params(
        ("id" = i64, Path, description = "The group's id"),
        ("user_id" = i64, Path, description = "The member's users-table id")
    ),
    responses(
        (status = 200, description = "Removed", body = Envelope<Changed>),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not permitted (the owner cannot be removed)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath((id, member)): ApiPath<(i64, i64)>,
) -> Reply<Changed> {
    let command = GroupCommand::RemoveMember {
        actor_id: user.user_id,
        user_id: member,
        at: Utc::now(),
    };
    run(&state, &headers, &user, id, command).await
}

/// `POST /api/group/{id}/leave`: the caller leaves (the owner transfers ownership first).
#[utoipa::path(
    post,
    path = "/api/group/{id}/leave",
    operation_id = "group_leave",
    tag = "groups",
    summary = "Leave a group",
    params(("id" = i64, Path, description = "The group's id")),
    responses(
        (status = 200, description = "Left", body = Envelope<Changed>),
        (status = 400, description = "A malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The owner must transfer ownership first, or dissolved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn leave(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(id): ApiPath<i64>,
) -> Reply<Changed> {
    member_group(&state, id, user.user_id).await?;
    let command = GroupCommand::Leave {
        user_id: user.user_id,
        at: Utc::now(),
    };
    run(&state, &headers, &user, id, command).await
}

/// A role in a group (wire names of [`GroupRole`]).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Owner,
    Admin,
    Member,
}

impl From<RoleName> for GroupRole {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Owner => Self::Owner,
            RoleName::Admin => Self::Admin,
            RoleName::Member => Self::Member,
        }
    }
}

/// `PUT /api/group/{id}/members/{user_id}/role` body.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RoleRequest {
    /// `admin`, `member`, or `owner` (transfers ownership; the old owner becomes an admin).
    pub role: RoleName,
}

/// `PUT /api/group/{id}/members/{user_id}/role` `{role}` (the owner).
#[utoipa::path(
    put,
    path = "/api/group/{id}/members/{user_id}/role",
    operation_id = "group_change_role",
    tag = "groups",
    summary = "Change a member's role or transfer ownership (the owner)",
    params(
        ("id" = i64, Path, description = "The group's id"),
        ("user_id" = i64, Path, description = "The member's users-table id")
    ),
    request_body = RoleRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<Changed>),
        (status = 400, description = "An unknown role", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the owner, or not a member", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn change_role(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath((id, member)): ApiPath<(i64, i64)>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Reply<Changed> {
    let command = GroupCommand::ChangeRole {
        actor_id: user.user_id,
        user_id: member,
        role: req.role.into(),
        at: Utc::now(),
    };
    run(&state, &headers, &user, id, command).await
}

/// `PUT /api/group/{id}/members/{user_id}/mute` body.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct MuteRequest {
    /// Minutes from now, 0 (unmute) to 43,200 (30 days).
    #[validate(range(min = 0, max = 43200, message = "must be 0 to 43200 minutes"))]
    pub minutes: i64,
}

/// `PUT /api/group/{id}/members/{user_id}/mute` `{minutes}` (owner or admins; 0 unmutes).
#[utoipa::path(
    put,
    path = "/api/group/{id}/members/{user_id}/mute",
    operation_id = "group_mute_member",
    tag = "groups",
    summary = "Mute a member for some minutes (owner or admins; 0 unmutes)",
    params(
        ("id" = i64, Path, description = "The group's id"),
        ("user_id" = i64, Path, description = "The member's users-table id")
    ),
    request_body = MuteRequest,
    responses(
        (status = 200, description = "Changed", body = Envelope<Changed>),
        (status = 400, description = "Minutes out of range", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not permitted (the owner cannot be muted)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown group", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Dissolved, or changed concurrently", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn mute_member(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath((id, member)): ApiPath<(i64, i64)>,
    ApiJson(req): ApiJson<MuteRequest>,
) -> Reply<Changed> {
    req.validate()?;
    let now = Utc::now();
    let command = GroupCommand::MuteMember {
        actor_id: user.user_id,
        user_id: member,
        until: (req.minutes > 0).then(|| now + Duration::minutes(req.minutes)),
        at: now,
    };
    run(&state, &headers, &user, id, command).await
}
