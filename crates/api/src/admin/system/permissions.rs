//! The permission tree (`permissions`): the codes the RBAC guard checks (`role:view`,
//! `finance:approve_withdraw`, …), nested by `parent_id` (0 = root) for the role editor.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::{unique_violation, Problem};
use web::extract::{Json, Path, Query};

use super::tree::{build_tree, check_parent, has_children, Tree, TreeNode};
use super::{input, page_rows, row, rows};
use crate::admin::common::contains_pattern;
use crate::{empty_as_none, paging, ApiError, ApiResult, AppState};

/// A permission (a `permissions` row).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Permission {
    /// The permission's id.
    pub id: i64,
    /// Unique, `^[a-z][a-z0-9:_]*$` (`role:view`).
    pub code: String,
    /// The icon's name (a `menu` permission).
    pub icon: String,
    /// Display name, 2–50 characters.
    pub name: String,
    /// The screen's route (a `menu` permission).
    pub path: String,
    /// Display order among siblings.
    pub sort: i32,
    /// `menu`, `button` or `api`.
    #[serde(rename = "type")]
    pub kind: String,
    /// 1 enabled, 0 disabled (a disabled permission is granted to no role but super_admin).
    pub status: i16,
    /// The screen's component (a `menu` permission).
    pub component: String,
    /// The parent permission's id; 0 for a root.
    pub parent_id: i64,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A permission with its children (present only when it has some).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PermissionNode {
    /// The permission itself.
    #[serde(flatten)]
    pub permission: Permission,
    /// The child permissions, by `sort` then id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub children: Option<Vec<PermissionNode>>,
}

impl TreeNode for PermissionNode {
    fn id(&self) -> i64 {
        self.permission.id
    }
    fn parent_id(&self) -> i64 {
        self.permission.parent_id
    }
    fn set_children(&mut self, children: Vec<Self>) {
        self.children = Some(children);
    }
}

root_list!(
    /// One page of permissions (`permissions` and `list`), flat, at the root and in `data`.
    PermissionList,
    PermissionPage,
    "permissions",
    Permission
);

/// `GET /api/admin/permissions` filters.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct PermissionQuery {
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
    /// Permissions whose name or code contains this text (literally).
    #[serde(default, deserialize_with = "empty_as_none")]
    pub name: Option<String>,
}

/// What a permission guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PermissionType {
    /// A screen of the admin client.
    Menu,
    /// An action on a screen.
    Button,
    /// An API route (what the RBAC guard checks).
    Api,
}

impl PermissionType {
    fn as_str(self) -> &'static str {
        match self {
            PermissionType::Menu => "menu",
            PermissionType::Button => "button",
            PermissionType::Api => "api",
        }
    }
}

/// `POST /api/admin/permissions` body (absent fields: root, type `api`, empty texts, sort 0,
/// status 1).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct NewPermission {
    /// The parent permission (0, `""` or absent: a root); it must exist.
    #[serde(default, deserialize_with = "input::parent")]
    #[schema(minimum = 0)]
    pub parent_id: Option<i64>,
    /// 2–50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        required(message = "required"),
        length(min = 2, max = 50, message = "must be 2 to 50 characters")
    )]
    pub name: Option<String>,
    /// Unique, `^[a-z][a-z0-9:_]*$`, at most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[schema(pattern = "^[a-z][a-z0-9:_]*$", max_length = 100)]
    #[validate(
        required(message = "required"),
        custom(function = "input::permission_code")
    )]
    pub code: Option<String>,
    /// What the permission guards (default `api`).
    #[serde(default, rename = "type")]
    pub kind: Option<PermissionType>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub path: Option<String>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub component: Option<String>,
    /// At most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub icon: Option<String>,
    /// Display order among siblings.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "input::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i16>,
}

/// `PUT /api/admin/permissions/{id}` body: the fields to change (absent or `null` = unchanged;
/// zero values are applied).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct PermissionUpdate {
    /// The new parent (0 or `""`: root); it must exist and be neither the permission itself
    /// nor one of its descendants.
    #[serde(default, deserialize_with = "input::parent")]
    #[schema(minimum = 0)]
    pub parent_id: Option<i64>,
    /// 2–50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        length(min = 2, max = 50, message = "must be 2 to 50 characters")
    )]
    pub name: Option<String>,
    /// Unique, `^[a-z][a-z0-9:_]*$`, at most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[schema(pattern = "^[a-z][a-z0-9:_]*$", max_length = 100)]
    #[validate(custom(function = "input::permission_code"))]
    pub code: Option<String>,
    /// What the permission guards (default `api`).
    #[serde(default, rename = "type")]
    pub kind: Option<PermissionType>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub path: Option<String>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub component: Option<String>,
    /// At most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub icon: Option<String>,
    /// Display order among siblings.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "input::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i16>,
}

/// Permission tree
///
/// Every permission as a tree by `parent_id`, siblings by `sort` then id.
#[utoipa::path(
    get,
    path = "/api/admin/permissions/tree",
    tag = "rbac",
    responses(
        (status = 200, description = "The root permissions with their descendants", body = Envelope<Vec<PermissionNode>>),
    ),
    security(("bearer" = []))
)]
pub async fn permission_tree(State(state): State<AppState>) -> Reply<Vec<PermissionNode>> {
    let texts: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(p)::text FROM permissions p ORDER BY sort, id")
            .fetch_all(&state.db)
            .await?;
    let nodes = rows::<Permission>(&texts)?
        .into_iter()
        .map(|permission| PermissionNode {
            permission,
            children: None,
        })
        .collect();
    Ok(reply(build_tree(nodes)))
}

/// List permissions
///
/// Lists permissions flat, by `sort` then id.
#[utoipa::path(
    get,
    path = "/api/admin/permissions",
    tag = "rbac",
    params(PermissionQuery),
    responses(
        (status = 200, description = "One page of permissions", body = PermissionList),
        (status = 400, description = "A bad paging parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_permissions(
    State(state): State<AppState>,
    Query(q): Query<PermissionQuery>,
) -> ApiResult<axum::Json<PermissionList>> {
    validator::Validate::validate(&q)?;
    web::paging::check_page_size_alias(q.page_size_alias)?;
    let (limit, offset) = paging(q.page, q.page_size.or(q.page_size_alias), 20)?;
    let name = q.name.as_deref().map(contains_pattern);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(n) = &name {
            qb.push(" AND (name ILIKE ").push_bind(n.clone());
            qb.push(" OR code ILIKE ").push_bind(n.clone()).push(")");
        }
    };
    let (list, total) = page_rows(
        &state,
        "*",
        "permissions",
        filter,
        "sort, id",
        limit,
        offset,
    )
    .await?;
    Ok(axum::Json(PermissionList::new(list, total)))
}

/// Create a permission
///
/// Creates a permission under an existing parent (or at the root).
#[utoipa::path(
    post,
    path = "/api/admin/permissions",
    tag = "rbac",
    request_body = NewPermission,
    responses(
        (status = 200, description = "The new permission", body = Envelope<Permission>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A duplicate code", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such parent", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_permission(
    State(state): State<AppState>,
    Json(body): Json<NewPermission>,
) -> Reply<Permission> {
    body.validate()?;
    let parent = body.parent_id.unwrap_or(0);
    check_parent(&state, Tree::Permissions, None, parent).await?;
    let text: String = sqlx::query_scalar(
        "INSERT INTO permissions (parent_id, name, code, type, path, component, icon, sort, status) \
         VALUES ($1, $2, $3, COALESCE($4, 'api'), COALESCE($5, ''), COALESCE($6, ''), \
         COALESCE($7, ''), COALESCE($8, 0), COALESCE($9, 1)) \
         RETURNING to_jsonb(permissions.*)::text",
    )
    .bind(parent)
    .bind(&body.name)
    .bind(&body.code)
    .bind(body.kind.map(PermissionType::as_str))
    .bind(&body.path)
    .bind(&body.component)
    .bind(&body.icon)
    .bind(body.sort)
    .bind(body.status)
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    Ok(reply(row(&text)?))
}

async fn exists(state: &AppState, id: i64) -> Result<(), ApiError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM permissions WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("permission"))
}

/// Update a permission
///
/// Changes a permission's fields; a new parent may not be the permission itself or one of its
/// descendants.
#[utoipa::path(
    put,
    path = "/api/admin/permissions/{id}",
    tag = "rbac",
    params(("id" = i64, Path, description = "The permission's id")),
    request_body = PermissionUpdate,
    responses(
        (status = 200, description = "The permission", body = Envelope<Permission>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A duplicate code", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such parent, or one that would make a cycle", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such permission", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_permission(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<PermissionUpdate>,
) -> Reply<Permission> {
    exists(&state, id).await?;
    body.validate()?;
    if let Some(parent) = body.parent_id {
        check_parent(&state, Tree::Permissions, Some(id), parent).await?;
    }
    let text: Option<String> = sqlx::query_scalar(
        "UPDATE permissions t SET updated_at = now(), parent_id = COALESCE($2, parent_id), \
         name = COALESCE($3, name), code = COALESCE($4, code), type = COALESCE($5, type), \
         path = COALESCE($6, path), component = COALESCE($7, component), \
         icon = COALESCE($8, icon), sort = COALESCE($9, sort), status = COALESCE($10, status) \
         WHERE id = $1 RETURNING to_jsonb(t)::text",
    )
    .bind(id)
    .bind(body.parent_id)
    .bind(&body.name)
    .bind(&body.code)
    .bind(body.kind.map(PermissionType::as_str))
    .bind(&body.path)
    .bind(&body.component)
    .bind(&body.icon)
    .bind(body.sort)
    .bind(body.status)
    .fetch_optional(&state.db)
    .await
    .map_err(unique_violation)?;
    let text = text.ok_or_else(|| ApiError::not_found("permission"))?;
    Ok(reply(row(&text)?))
}

/// Delete a permission
///
/// Deletes a permission without children.
#[utoipa::path(
    delete,
    path = "/api/admin/permissions/{id}",
    tag = "rbac",
    params(("id" = i64, Path, description = "The permission's id")),
    responses(
        (status = 200, description = "`msg` is `deleted`", body = Message),
        (status = 422, description = "The permission has children", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such permission", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_permission(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Message>> {
    exists(&state, id).await?;
    if has_children(&state, Tree::Permissions, id).await? {
        return Err(ApiError::refused("delete the permission's children first"));
    }
    sqlx::query("DELETE FROM permissions WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(message("deleted"))
}
