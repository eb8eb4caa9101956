//! The menu tree (`menus`): the admin client's navigation, nested by `parent_id` (NULL = root).
//! A menu is a directory (type 1), a screen (2) or a button (3).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::QueryBuilder;
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::{unique_violation, Problem};
use web::extract::{Json, Path, Query};

use super::tree::{build_tree, check_parent, has_children, Tree, TreeNode};
use super::{fetch_rows, input, row, rows};
use crate::admin::common::contains_pattern;
use crate::{empty_as_none, ApiError, ApiResult, AppState};

/// A menu (a `menus` row).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Menu {
    /// The menu's id.
    pub id: i64,
    /// The icon's name.
    pub icon: String,
    /// 1–50 characters.
    pub name: String,
    /// The screen's route.
    pub path: String,
    /// Display order among siblings.
    pub sort: i32,
    /// 1 directory, 2 menu, 3 button.
    #[serde(rename = "type")]
    pub kind: i16,
    /// 1 shown, 0 hidden.
    pub status: i16,
    /// The screen's component.
    pub component: String,
    /// The parent menu's id; `null` for a root.
    pub parent_id: Option<i64>,
    /// RFC 3339.
    pub created_at: String,
    /// The permission code the menu needs (`""`: none).
    pub permission: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A menu with its children (present only when it has some).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MenuNode {
    /// The menu itself.
    #[serde(flatten)]
    pub menu: Menu,
    /// The child menus, by `sort` then id.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub children: Option<Vec<MenuNode>>,
}

impl TreeNode for MenuNode {
    fn id(&self) -> i64 {
        self.menu.id
    }
    fn parent_id(&self) -> i64 {
        self.menu.parent_id.unwrap_or(0)
    }
    fn set_children(&mut self, children: Vec<Self>) {
        self.children = Some(children);
    }
}

fn nodes(texts: &[String]) -> Result<Vec<MenuNode>, ApiError> {
    Ok(build_tree(
        rows::<Menu>(texts)?
            .into_iter()
            .map(|menu| MenuNode {
                menu,
                children: None,
            })
            .collect(),
    ))
}

root_list!(
    /// The menus as a tree (`menus` and `list`; `total` counts every menu, not the roots), at
    /// the root and in `data`.
    MenuList,
    MenuPage,
    "menus",
    MenuNode
);

/// `GET /api/admin/menus` filter.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MenuQuery {
    /// Menus whose name contains this text (literally); a match whose parent does not match is
    /// shown as a root.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub name: Option<String>,
}

/// `POST /api/admin/menus` body (absent fields: root, type 2, empty texts, sort 0, status 1).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct NewMenu {
    /// The parent menu (`null`, 0, `""` or absent: a root); it must exist.
    #[serde(default, deserialize_with = "input::parent")]
    #[schema(minimum = 0)]
    pub parent_id: Option<i64>,
    /// 1–50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        required(message = "required"),
        length(min = 1, max = 50, message = "must be 1 to 50 characters")
    )]
    pub name: Option<String>,
    /// 1 directory, 2 menu, 3 button; 0 means 2.
    #[serde(default, rename = "type", deserialize_with = "input::menu_type")]
    #[schema(minimum = 0, maximum = 3)]
    pub kind: Option<i16>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub path: Option<String>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub component: Option<String>,
    /// The permission code the menu needs, at most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub permission: Option<String>,
    /// At most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub icon: Option<String>,
    /// Display order among siblings.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// 1 shown, 0 hidden.
    #[serde(default, deserialize_with = "input::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i16>,
}

/// `PUT /api/admin/menus/{id}` body: the fields to change (absent or `null` = unchanged; zero
/// values are applied, `parent_id` 0 or `""` makes the menu a root).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct MenuUpdate {
    /// The new parent (0 or `""`: root); it must exist and be neither the menu itself nor one
    /// of its descendants.
    #[serde(default, deserialize_with = "input::parent")]
    #[schema(minimum = 0)]
    pub parent_id: Option<i64>,
    /// 1–50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        length(min = 1, max = 50, message = "must be 1 to 50 characters")
    )]
    pub name: Option<String>,
    /// 1 directory, 2 menu, 3 button; 0 means 2.
    #[serde(default, rename = "type", deserialize_with = "input::menu_type")]
    #[schema(minimum = 0, maximum = 3)]
    pub kind: Option<i16>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub path: Option<String>,
    /// At most 200 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub component: Option<String>,
    /// The permission code the menu needs, at most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub permission: Option<String>,
    /// At most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub icon: Option<String>,
    /// Display order among siblings.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// 1 shown, 0 hidden.
    #[serde(default, deserialize_with = "input::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i16>,
}

/// A parent as stored: the root is `NULL`.
fn stored_parent(parent: i64) -> Option<i64> {
    (parent != 0).then_some(parent)
}

/// Menu tree
///
/// Every menu as a tree by `parent_id`, siblings by `sort` then id.
#[utoipa::path(
    get,
    path = "/api/admin/menus/tree",
    tag = "rbac",
    responses(
        (status = 200, description = "The root menus with their descendants", body = Envelope<Vec<MenuNode>>),
    ),
    security(("bearer" = []))
)]
pub async fn menu_tree(State(state): State<AppState>) -> Reply<Vec<MenuNode>> {
    let texts: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(m)::text FROM menus m ORDER BY sort, id")
            .fetch_all(&state.db)
            .await?;
    Ok(reply(nodes(&texts)?))
}

/// List menus (as a tree)
///
/// The menus as a tree (optionally those whose name matches), with the number of menus.
#[utoipa::path(
    get,
    path = "/api/admin/menus",
    tag = "rbac",
    params(MenuQuery),
    responses(
        (status = 200, description = "The menu tree", body = MenuList),
    ),
    security(("bearer" = []))
)]
pub async fn list_menus(
    State(state): State<AppState>,
    Query(q): Query<MenuQuery>,
) -> ApiResult<axum::Json<MenuList>> {
    let mut qb = QueryBuilder::new("SELECT to_jsonb(m)::text FROM menus m");
    if let Some(n) = &q.name {
        qb.push(" WHERE name ILIKE ").push_bind(contains_pattern(n));
    }
    qb.push(" ORDER BY sort, id");
    let flat: Vec<Menu> = fetch_rows(&state, qb).await?;
    let total = flat.len() as i64;
    let tree = build_tree(
        flat.into_iter()
            .map(|menu| MenuNode {
                menu,
                children: None,
            })
            .collect(),
    );
    Ok(axum::Json(MenuList::new(tree, total)))
}

/// Create a menu
///
/// Creates a menu under an existing parent (or at the root).
#[utoipa::path(
    post,
    path = "/api/admin/menus",
    tag = "rbac",
    request_body = NewMenu,
    responses(
        (status = 200, description = "The new menu", body = Envelope<Menu>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such parent", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_menu(State(state): State<AppState>, Json(body): Json<NewMenu>) -> Reply<Menu> {
    body.validate()?;
    let parent = body.parent_id.unwrap_or(0);
    check_parent(&state, Tree::Menus, None, parent).await?;
    let text: String = sqlx::query_scalar(
        "INSERT INTO menus (parent_id, name, type, path, component, permission, icon, sort, status) \
         VALUES ($1, $2, COALESCE($3, 2), COALESCE($4, ''), COALESCE($5, ''), COALESCE($6, ''), \
         COALESCE($7, ''), COALESCE($8, 0), COALESCE($9, 1)) \
         RETURNING to_jsonb(menus.*)::text",
    )
    .bind(stored_parent(parent))
    .bind(&body.name)
    .bind(body.kind)
    .bind(&body.path)
    .bind(&body.component)
    .bind(&body.permission)
    .bind(&body.icon)
    .bind(body.sort)
    .bind(body.status)
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    Ok(reply(row(&text)?))
}

async fn exists(state: &AppState, id: i64) -> Result<(), ApiError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM menus WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    found.map(|_| ()).ok_or_else(|| ApiError::not_found("menu"))
}

/// Update a menu
///
/// Changes a menu's fields; a new parent may not be the menu itself or one of its descendants.
#[utoipa::path(
    put,
    path = "/api/admin/menus/{id}",
    tag = "rbac",
    params(("id" = i64, Path, description = "The menu's id")),
    request_body = MenuUpdate,
    responses(
        (status = 200, description = "The menu", body = Envelope<Menu>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No such parent, or one that would make a cycle", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such menu", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_menu(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<MenuUpdate>,
) -> Reply<Menu> {
    exists(&state, id).await?;
    body.validate()?;
    if let Some(parent) = body.parent_id {
        check_parent(&state, Tree::Menus, Some(id), parent).await?;
    }
    let text: Option<String> = sqlx::query_scalar(
        "UPDATE menus t SET updated_at = now(), \
         parent_id = CASE WHEN $2 THEN $3 ELSE parent_id END, name = COALESCE($4, name), \
         type = COALESCE($5, type), path = COALESCE($6, path), \
         component = COALESCE($7, component), permission = COALESCE($8, permission), \
         icon = COALESCE($9, icon), sort = COALESCE($10, sort), status = COALESCE($11, status) \
         WHERE id = $1 RETURNING to_jsonb(t)::text",
    )
    .bind(id)
    .bind(body.parent_id.is_some())
    .bind(body.parent_id.and_then(stored_parent))
    .bind(&body.name)
    .bind(body.kind)
    .bind(&body.path)
    .bind(&body.component)
    .bind(&body.permission)
    .bind(&body.icon)
    .bind(body.sort)
    .bind(body.status)
    .fetch_optional(&state.db)
    .await
    .map_err(unique_violation)?;
    let text = text.ok_or_else(|| ApiError::not_found("menu"))?;
    Ok(reply(row(&text)?))
}

/// Delete a menu
///
/// Deletes a menu without children.
#[utoipa::path(
    delete,
    path = "/api/admin/menus/{id}",
    tag = "rbac",
    params(("id" = i64, Path, description = "The menu's id")),
    responses(
        (status = 200, description = "`msg` is `deleted`", body = Message),
        (status = 422, description = "The menu has children", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such menu", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_menu(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Message>> {
    exists(&state, id).await?;
    if has_children(&state, Tree::Menus, id).await? {
        return Err(ApiError::refused("delete the menu's children first"));
    }
    sqlx::query("DELETE FROM menus WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(message("deleted"))
}
