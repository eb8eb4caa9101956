//! Roles: the RBAC role list, a role's permissions (replaced as a whole) and the administrators
//! holding it. `super_admin` holds every permission implicitly: its code cannot change, it
//! cannot be deleted and its permissions are not edited. A role's code is what administrators
//! reference (`administrators.role`), so renaming it moves its administrators along.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::{unique_violation, Problem};
use web::extract::{Json, Path, Query};

use super::permissions::Permission;
use super::{fetch_rows, input, row, rows};
use crate::admin::common::contains_pattern;
use crate::admin::table::SUPER_ADMIN;
use crate::{empty_as_none, paging, ApiError, ApiResult, AppState};

/// A role (a `roles` row).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Role {
    /// The row's id.
    pub id: i64,
    /// Unique, `^[a-z][a-z0-9_]*$`; what administrators reference.
    pub code: String,
    /// Unique display name, 2–50 characters.
    pub name: String,
    /// Display order.
    pub sort: i32,
    /// 1 enabled, 0 disabled (a disabled role grants no permission).
    pub status: i16,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// What the role is for.
    pub description: String,
}

/// A role in the role list, with how many administrators hold it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleRow {
    /// The row's id.
    pub id: i64,
    /// Unique, `^[a-z][a-z0-9_]*$`; what administrators reference.
    pub code: String,
    /// Unique display name, 2–50 characters.
    pub name: String,
    /// Display order.
    pub sort: i32,
    /// 1 enabled, 0 disabled.
    pub status: i16,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// How many administrators hold the role.
    pub user_count: i64,
    /// What the role is for.
    pub description: String,
}

root_list!(
    /// One page of roles (`roles` and `list`), at the root and in `data`.
    RoleList,
    RolePage,
    "roles",
    RoleRow
);

/// An administrator holding a role.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoleUser {
    /// The row's id.
    pub id: i64,
    /// The administrator's email.
    pub email: String,
    /// 1 enabled, 0 disabled.
    pub status: i16,
    /// The administrator's real name.
    pub nickname: String,
    /// The administrator's login name.
    pub username: String,
    /// RFC 3339.
    pub created_at: String,
}

root_list!(
    /// One page of the administrators holding a role (`users` and `list`), at the root and in
    /// `data`.
    RoleUserList,
    RoleUserPage,
    "users",
    RoleUser
);

/// `GET /api/admin/roles` filters.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct RoleQuery {
    /// 1-based page (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 20).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Alias of `page_size` (the admin client's name).
    #[serde(default, rename = "pageSize", deserialize_with = "empty_as_none")]
    // Checked by `web::paging::check_page_size_alias`, named `pageSize` in a refusal.
    #[param(minimum = 1, maximum = 100)]
    pub page_size_alias: Option<i64>,
    /// Roles whose name contains this text (literally).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub name: Option<String>,
    /// Only roles with this status (-1: any status).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = -1, max = 1, message = "must be -1, 0 or 1"))]
    pub status: Option<i16>,
}

/// `GET /api/admin/roles/{id}/users` paging.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct RoleUsersQuery {
    /// 1-based page (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 10).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Alias of `page_size` (the admin client's name).
    #[serde(default, rename = "pageSize", deserialize_with = "empty_as_none")]
    // Checked by `web::paging::check_page_size_alias`, named `pageSize` in a refusal.
    #[param(minimum = 1, maximum = 100)]
    pub page_size_alias: Option<i64>,
}

/// `POST /api/admin/roles` body (absent fields: description `""`, sort 0, status 1).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct NewRole {
    /// Unique display name, 2–50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        required(message = "required"),
        length(min = 2, max = 50, message = "must be 2 to 50 characters")
    )]
    pub name: Option<String>,
    /// Unique, `^[a-z][a-z0-9_]*$`, at most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[schema(pattern = "^[a-z][a-z0-9_]*$", max_length = 100)]
    #[validate(required(message = "required"), custom(function = "input::role_code"))]
    pub code: Option<String>,
    /// At most 500 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 500, message = "must be 0 to 500 characters"))]
    pub description: Option<String>,
    /// Display order.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "input::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i16>,
}

/// `PUT /api/admin/roles/{id}` body: the fields to change (absent or `null` = unchanged; zero
/// values are applied).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct RoleUpdate {
    /// Unique display name, 2–50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        length(min = 2, max = 50, message = "must be 2 to 50 characters")
    )]
    pub name: Option<String>,
    /// Unique, `^[a-z][a-z0-9_]*$`, at most 100 characters; the role's administrators follow.
    /// `super_admin`'s code cannot change.
    #[serde(default, deserialize_with = "input::text")]
    #[schema(pattern = "^[a-z][a-z0-9_]*$", max_length = 100)]
    #[validate(custom(function = "input::role_code"))]
    pub code: Option<String>,
    /// At most 500 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 500, message = "must be 0 to 500 characters"))]
    pub description: Option<String>,
    /// Display order.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "input::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i16>,
}

/// A role's permissions, replaced as a whole.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct PermissionIds {
    /// Every permission the role holds from now on (absent or `null`: none); each must exist.
    #[serde(default)]
    pub permission_ids: Option<Vec<i64>>,
}

/// The permissions a role now holds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RolePermissions {
    /// The role's id.
    pub role_id: i64,
    /// Distinct, ascending.
    pub permission_ids: Vec<i64>,
}

/// List roles
///
/// Lists roles by `sort` then id, with how many administrators hold each.
#[utoipa::path(
    get,
    path = "/api/admin/roles",
    tag = "rbac",
    params(RoleQuery),
    responses(
        (status = 200, description = "One page of roles", body = RoleList),
        (status = 400, description = "A bad paging parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_roles(
    State(state): State<AppState>,
    Query(q): Query<RoleQuery>,
) -> ApiResult<axum::Json<RoleList>> {
    validator::Validate::validate(&q)?;
    web::paging::check_page_size_alias(q.page_size_alias)?;
    let (limit, offset) = paging(q.page, q.page_size.or(q.page_size_alias), 20)?;
    let name = q.name.as_deref().map(contains_pattern);
    let status = q.status.filter(|s| *s >= 0);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(n) = &name {
            qb.push(" AND r.name ILIKE ").push_bind(n.clone());
        }
        if let Some(s) = status {
            qb.push(" AND r.status = ").push_bind(s);
        }
    };
    let mut qb = QueryBuilder::new(
        "SELECT to_jsonb(t)::text FROM (SELECT r.*, (SELECT count(*) FROM administrators a WHERE a.role = r.code) AS user_count FROM roles r",
    );
    filter(&mut qb);
    qb.push(" ORDER BY r.sort, r.id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = fetch_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM roles r");
    filter(&mut cq);
    let total: i64 = cq.build_query_scalar().fetch_one(&state.db).await?;
    Ok(axum::Json(RoleList::new(list, total)))
}

/// Create a role
#[utoipa::path(
    post,
    path = "/api/admin/roles",
    tag = "rbac",
    request_body = NewRole,
    responses(
        (status = 200, description = "The new role", body = Envelope<Role>),
        (status = 400, description = "An invalid field, or a duplicate name or code", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_role(State(state): State<AppState>, Json(body): Json<NewRole>) -> Reply<Role> {
    body.validate()?;
    let text: String = sqlx::query_scalar(
        "INSERT INTO roles (code, name, description, sort, status) \
         VALUES ($1, $2, COALESCE($3, ''), COALESCE($4, 0), COALESCE($5, 1)) \
         RETURNING to_jsonb(roles.*)::text",
    )
    .bind(&body.code)
    .bind(&body.name)
    .bind(&body.description)
    .bind(body.sort)
    .bind(body.status)
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    Ok(reply(row(&text)?))
}

async fn role_code(state: &AppState, id: i64) -> Result<String, ApiError> {
    sqlx::query_scalar("SELECT code FROM roles WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))
}

/// Update a role
///
/// Changes a role's fields; a new code moves the role's administrators along (one
/// transaction). `super_admin`'s code cannot change.
#[utoipa::path(
    put,
    path = "/api/admin/roles/{id}",
    tag = "rbac",
    params(("id" = i64, Path, description = "The role's id")),
    request_body = RoleUpdate,
    responses(
        (status = 200, description = "The role", body = Envelope<Role>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "super_admin's code cannot change", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A duplicate name or code", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_role(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<RoleUpdate>,
) -> Reply<Role> {
    body.validate()?;
    let current = role_code(&state, id).await?;
    let new_code = body.code.filter(|c| *c != current);
    if new_code.is_some() && current == SUPER_ADMIN {
        return Err(
            ApiError::field("code", "the super_admin role's code cannot change")
                .with_status(axum::http::StatusCode::FORBIDDEN),
        );
    }
    let mut tx = state.db.begin().await?;
    if let Some(code) = &new_code {
        sqlx::query("UPDATE administrators SET role = $2 WHERE role = $1")
            .bind(&current)
            .bind(code)
            .execute(&mut *tx)
            .await?;
    }
    let text: Option<String> = sqlx::query_scalar(
        "UPDATE roles t SET updated_at = now(), code = COALESCE($2, code), \
         name = COALESCE($3, name), description = COALESCE($4, description), \
         sort = COALESCE($5, sort), status = COALESCE($6, status) \
         WHERE id = $1 RETURNING to_jsonb(t)::text",
    )
    .bind(id)
    .bind(&new_code)
    .bind(&body.name)
    .bind(&body.description)
    .bind(body.sort)
    .bind(body.status)
    .fetch_optional(&mut *tx)
    .await
    .map_err(unique_violation)?;
    let text = text.ok_or_else(|| ApiError::not_found("role"))?;
    tx.commit().await?;
    Ok(reply(row(&text)?))
}

/// Delete a role
///
/// Deletes a role no administrator holds; `super_admin` cannot be deleted.
#[utoipa::path(
    delete,
    path = "/api/admin/roles/{id}",
    tag = "rbac",
    params(("id" = i64, Path, description = "The role's id")),
    responses(
        (status = 200, description = "`msg` is `deleted`", body = Message),
        (status = 403, description = "The super_admin role", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A role administrators hold", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_role(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Message>> {
    let code = role_code(&state, id).await?;
    if code == SUPER_ADMIN {
        return Err(ApiError::forbidden(
            "the super_admin role cannot be deleted",
        ));
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM administrators WHERE role = $1")
        .bind(&code)
        .fetch_one(&state.db)
        .await?;
    if users > 0 {
        return Err(ApiError::refused("the role is assigned to administrators"));
    }
    sqlx::query("DELETE FROM roles WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(message("deleted"))
}

/// A role's permissions
///
/// A role's permissions, flat, by `sort` then id.
#[utoipa::path(
    get,
    path = "/api/admin/roles/{id}/permissions",
    tag = "rbac",
    params(("id" = i64, Path, description = "The role's id")),
    responses(
        (status = 200, description = "The role's permissions", body = Envelope<Vec<Permission>>),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn role_permissions(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Reply<Vec<Permission>> {
    role_code(&state, id).await?;
    let texts: Vec<String> = sqlx::query_scalar(
        "SELECT to_jsonb(p)::text FROM permissions p JOIN role_permissions rp ON rp.permission_id = p.id \
         WHERE rp.role_id = $1 ORDER BY p.sort, p.id",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(reply(rows(&texts)?))
}

/// Replace a role's permissions
///
/// Replaces a role's permissions in one transaction (`PUT`).
#[utoipa::path(
    put,
    path = "/api/admin/roles/{id}/permissions",
    tag = "rbac",
    params(("id" = i64, Path, description = "The role's id")),
    request_body = PermissionIds,
    responses(
        (status = 200, description = "The permissions the role now holds", body = Envelope<RolePermissions>),
        (status = 403, description = "The super_admin role (it holds every permission)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown permission id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn set_role_permissions(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<PermissionIds>,
) -> Reply<RolePermissions> {
    replace_permissions(&state, id, body).await
}

/// Replace a role's permissions (client verb)
///
/// Replaces a role's permissions in one transaction (`POST`, the verb the admin client uses).
#[utoipa::path(
    post,
    path = "/api/admin/roles/{id}/permissions",
    tag = "rbac",
    params(("id" = i64, Path, description = "The role's id")),
    request_body = PermissionIds,
    responses(
        (status = 200, description = "The permissions the role now holds", body = Envelope<RolePermissions>),
        (status = 403, description = "The super_admin role (it holds every permission)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown permission id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn post_role_permissions(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<PermissionIds>,
) -> Reply<RolePermissions> {
    replace_permissions(&state, id, body).await
}

async fn replace_permissions(
    state: &AppState,
    id: i64,
    body: PermissionIds,
) -> Reply<RolePermissions> {
    let code = role_code(state, id).await?;
    if code == SUPER_ADMIN {
        return Err(ApiError::forbidden("super_admin holds every permission"));
    }
    let ids = body.permission_ids.unwrap_or_default();
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM permissions WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&state.db)
        .await?;
    let mut distinct = ids;
    distinct.sort_unstable();
    distinct.dedup();
    if known != distinct.len() as i64 {
        return Err(ApiError::unprocessable(
            "permission_ids",
            "contains an unknown permission id",
        ));
    }
    let mut tx = state.db.begin().await?;
    sqlx::query("DELETE FROM role_permissions WHERE role_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO role_permissions (role_id, permission_id) SELECT $1, unnest($2::bigint[])",
    )
    .bind(id)
    .bind(&distinct)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(reply(RolePermissions {
        role_id: id,
        permission_ids: distinct,
    }))
}

/// Administrators holding a role
///
/// The administrators holding a role, by id (`nickname` is their real name).
#[utoipa::path(
    get,
    path = "/api/admin/roles/{id}/users",
    tag = "rbac",
    params(("id" = i64, Path, description = "The role's id"), RoleUsersQuery),
    responses(
        (status = 200, description = "One page of administrators", body = RoleUserList),
        (status = 400, description = "A bad paging parameter", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn role_users(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Query(q): Query<RoleUsersQuery>,
) -> ApiResult<axum::Json<RoleUserList>> {
    let code = role_code(&state, id).await?;
    validator::Validate::validate(&q)?;
    web::paging::check_page_size_alias(q.page_size_alias)?;
    let (limit, offset) = paging(q.page, q.page_size.or(q.page_size_alias), 10)?;
    let mut qb = QueryBuilder::new(
        "SELECT to_jsonb(t)::text FROM (SELECT id, username, real_name AS nickname, email, status, created_at FROM administrators WHERE role = ",
    );
    qb.push_bind(code.clone());
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = fetch_rows(&state, qb).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM administrators WHERE role = $1")
        .bind(&code)
        .fetch_one(&state.db)
        .await?;
    Ok(axum::Json(RoleUserList::new(list, total)))
}
