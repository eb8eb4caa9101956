//! Admin API (issue 4): system configs, the audit log, and RBAC administration — roles, role
//! permissions (replace-all, PUT or POST), role users, the permission tree and the menu tree
//! (contract c.6 #69–#74, c.7).
//!
//! Tree rules: a node's parent must exist and may not be the node itself or one of its
//! descendants (no cycles); a permission or menu with children cannot be deleted (400).

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use sqlx::{Postgres, QueryBuilder};

use crate::admin::common::{
    check_len, count, insert_row, json_rows, list_envelope, one, page_and_total, update_row, Bind,
    Body, Q,
};
use crate::admin::guard::SUPER_ADMIN;
use crate::{ok, ok_msg, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState};

type Params = ApiQuery<HashMap<String, String>>;

// ---- configs -----------------------------------------------------------------------------------

/// `GET /api/admin/configs?page&pageSize&category` → root `{list, total}` (and in `data`).
pub async fn list_configs(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(100)?;
    let category = q.str("category").map(str::to_string);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(c) = &category {
            qb.push(" AND category = ").push_bind(c.clone());
        }
    };
    let (list, total) = page_and_total(
        &state,
        "*",
        "system_configs",
        filter,
        "sort, id",
        limit,
        offset,
    )
    .await?;
    Ok(list_envelope("configs", list, total, json!({})))
}

/// A config `value`: the client sends JSON-encoded text; any other JSON value is stored as its
/// JSON text.
fn config_value(b: &Body) -> Result<Option<String>, ApiError> {
    Ok(match b.raw("value") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(v) => Some(v.to_string()),
    })
}

fn config_fields(b: &Body, cols: &mut Vec<(&'static str, Bind)>) -> Result<(), ApiError> {
    if let Some(v) = config_value(b)? {
        cols.push(("value", Bind::Text(v)));
    }
    for (name, max) in [("category", 50), ("label", 100), ("remark", 500)] {
        if let Some(v) = b.str(name)? {
            check_len(name, &v, 0, max)?;
            cols.push((name, Bind::Text(v)));
        }
    }
    if let Some(t) = b.str("type")? {
        if !matches!(t.as_str(), "switch" | "number" | "string" | "text" | "json") {
            return Err(ApiError::field(
                "type",
                "must be switch, number, string, text or json",
            ));
        }
        cols.push(("type", Bind::Text(t)));
    }
    if let Some(s) = b.int("sort")? {
        cols.push(("sort", Bind::Int(s)));
    }
    Ok(())
}

/// `POST /api/admin/configs` body `{key, value, category, label, type, is_system, sort, remark}`
/// → the config (`data.id` and root `id`); 400 on a duplicate key.
pub async fn create_config(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let key = b.required("key")?;
    check_len("key", &key, 1, 100)?;
    let mut cols = vec![("key", Bind::Text(key))];
    config_fields(&b, &mut cols)?;
    if let Some(s) = b.bool("is_system")? {
        cols.push(("is_system", Bind::Bool(s)));
    }
    let row = insert_row(&state, "system_configs", cols).await?;
    Ok(Json(
        json!({"code": 200, "msg": "success", "id": row["id"], "data": row}),
    ))
}

/// `PUT /api/admin/configs/:id` body `{key, value, category, …}` (present keys; `sort: 0`
/// applied); a system config's `key` cannot change (400) → the config.
pub async fn update_config(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let current: Option<(String, bool)> =
        sqlx::query_as("SELECT key, is_system FROM system_configs WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let (key, is_system) = current.ok_or_else(|| ApiError::not_found("config"))?;
    let mut sets = Vec::new();
    if let Some(k) = b.str("key")? {
        if k != key {
            if is_system {
                return Err(ApiError::field(
                    "key",
                    "a system config's key cannot change",
                ));
            }
            check_len("key", &k, 1, 100)?;
            sets.push(("key", Bind::Text(k)));
        }
    }
    config_fields(&b, &mut sets)?;
    let row = update_row(&state, "system_configs", id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("config"))?;
    Ok(ok(row))
}

/// `POST /api/admin/configs/batch` body `{configs: [{key, value, …}]}`: upsert by key, in one
/// transaction → `{count}`.
pub async fn batch_configs(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let items = match b.raw("configs") {
        Some(Value::Array(a)) => a.clone(),
        _ => return Err(ApiError::field("configs", "must be an array")),
    };
    let mut parsed = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let ib = Body::new(item)
            .map_err(|_| ApiError::field(&format!("configs[{i}]"), "must be an object"))?;
        let key = ib
            .str("key")?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::field(&format!("configs[{i}].key"), "required"))?;
        let value = config_value(&ib)?.unwrap_or_default();
        let category = ib.str("category")?.unwrap_or_else(|| "basic".into());
        parsed.push((key, value, category));
    }
    let mut tx = state.db.begin().await?;
    for (key, value, category) in &parsed {
        sqlx::query(
            "INSERT INTO system_configs (key, value, category) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(key)
        .bind(value)
        .bind(category)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(ok(json!({ "count": parsed.len() })))
}

/// `DELETE /api/admin/configs/:id`; 400 for a system config.
pub async fn delete_config(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let is_system: Option<bool> =
        sqlx::query_scalar("SELECT is_system FROM system_configs WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    match is_system {
        None => Err(ApiError::not_found("config")),
        Some(true) => Err(ApiError::bad_request("a system config cannot be deleted")),
        Some(false) => {
            sqlx::query("DELETE FROM system_configs WHERE id = $1")
                .bind(id)
                .execute(&state.db)
                .await?;
            Ok(ok_msg("deleted"))
        }
    }
}

// ---- audit log ---------------------------------------------------------------------------------

/// `GET /api/admin/logs?page&pageSize&operator&action&startDate&endDate` → root `{list, total}`
/// of SystemLog rows (contract c.9) from the audit log (and in `data`).
pub async fn logs(State(state): State<AppState>, ApiQuery(q): Params) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let operator = q
        .str("operator")
        .map(crate::admin::common::contains_pattern);
    let action = q.str("action").map(crate::admin::common::contains_pattern);
    let date = |name: &str| -> Result<Option<chrono::NaiveDate>, ApiError> {
        q.str(name)
            .map(|s| {
                chrono::NaiveDate::parse_from_str(s.get(..10).unwrap_or(s), "%Y-%m-%d")
                    .map_err(|_| ApiError::field(name, "must be YYYY-MM-DD"))
            })
            .transpose()
    };
    // Business days ([`crate::admin::common::BusinessDays`]), like every admin date.
    let days = crate::admin::common::BusinessDays::of(&state);
    let (start, end) = (date("startDate")?, date("endDate")?);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(o) = &operator {
            qb.push(" AND operator ILIKE ").push_bind(o.clone());
        }
        if let Some(a) = &action {
            qb.push(" AND (action ILIKE ").push_bind(a.clone());
            qb.push(" OR description ILIKE ")
                .push_bind(a.clone())
                .push(")");
        }
        if let Some(s) = start {
            qb.push(" AND created_at >= ").push_bind(days.start_of(s));
        }
        if let Some(e) = end {
            qb.push(" AND created_at < ")
                .push_bind(days.start_of(e + chrono::Duration::days(1)));
        }
    };
    let (list, total) = page_and_total(
        &state,
        "id, admin_id, operator, action, module, target, description, ip_address, \
         user_agent, request_data, '' AS response, status, event_stream, event_seq, created_at",
        "admin_logs",
        filter,
        "id DESC",
        limit,
        offset,
    )
    .await?;
    Ok(list_envelope("logs", list, total, json!({})))
}

// ---- roles -------------------------------------------------------------------------------------

/// `GET /api/admin/roles?page&page_size|pageSize&name&status` → `{list, roles, total}` with
/// `user_count` (administrators holding the role).
pub async fn list_roles(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let name = q.str("name").map(crate::admin::common::contains_pattern);
    let status = q.int("status")?.filter(|s| *s >= 0);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(n) = &name {
            qb.push(" AND r.name ILIKE ").push_bind(n.clone());
        }
        if let Some(s) = status {
            qb.push(" AND r.status = ").push_bind(s as i16);
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
    let list = json_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM roles r");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(list_envelope("roles", list, total, json!({})))
}

fn valid_code(field: &str, code: &str, perm: bool) -> Result<(), ApiError> {
    let mut chars = code.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok = code
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (perm && c == ':'));
    if !first_ok || !rest_ok || code.len() > 100 {
        return Err(ApiError::field(
            field,
            if perm {
                "must match ^[a-z:]+[a-z0-9:_]*$"
            } else {
                "must match ^[a-z][a-z0-9_]*$"
            },
        ));
    }
    Ok(())
}

fn role_fields(b: &Body, cols: &mut Vec<(&'static str, Bind)>) -> Result<(), ApiError> {
    if let Some(n) = b.str("name")? {
        check_len("name", &n, 2, 50)?;
        cols.push(("name", Bind::Text(n)));
    }
    if let Some(d) = b.str("description")? {
        check_len("description", &d, 0, 500)?;
        cols.push(("description", Bind::Text(d)));
    }
    if let Some(s) = b.int("sort")? {
        cols.push(("sort", Bind::Int(s)));
    }
    if let Some(s) = b.status01("status")? {
        cols.push(("status", Bind::Int(s)));
    }
    Ok(())
}

/// `POST /api/admin/roles` body `{name 2–50, code ^[a-z][a-z0-9_]*$, description, sort, status}`
/// → the Role; 400 on a duplicate name or code.
pub async fn create_role(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    b.required("name")?;
    let code = b.required("code")?;
    valid_code("code", &code, false)?;
    let mut cols = vec![("code", Bind::Text(code))];
    role_fields(&b, &mut cols)?;
    Ok(ok(insert_row(&state, "roles", cols).await?))
}

async fn role_code(state: &AppState, id: i64) -> Result<String, ApiError> {
    sqlx::query_scalar("SELECT code FROM roles WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))
}

/// `PUT /api/admin/roles/:id` (present keys; `status: 0`, `sort: 0` applied) → the Role. The
/// `super_admin` role's code cannot change.
pub async fn update_role(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let current = role_code(&state, id).await?;
    let b = Body::new(body)?;
    let mut sets = Vec::new();
    if let Some(code) = b.str("code")? {
        if code != current {
            if current == SUPER_ADMIN {
                return Err(ApiError::field(
                    "code",
                    "the super_admin role's code cannot change",
                ));
            }
            valid_code("code", &code, false)?;
            let mut tx = state.db.begin().await?;
            sqlx::query("UPDATE administrators SET role = $2 WHERE role = $1")
                .bind(&current)
                .bind(&code)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE roles SET code = $2 WHERE id = $1")
                .bind(id)
                .bind(&code)
                .execute(&mut *tx)
                .await
                .map_err(web::error::unique_violation)?;
            tx.commit().await?;
        }
    }
    role_fields(&b, &mut sets)?;
    let row = update_row(&state, "roles", id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("role"))?;
    Ok(ok(row))
}

/// `DELETE /api/admin/roles/:id`; 400 for `super_admin` or while administrators hold the role.
pub async fn delete_role(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let code = role_code(&state, id).await?;
    if code == SUPER_ADMIN {
        return Err(ApiError::bad_request(
            "the super_admin role cannot be deleted",
        ));
    }
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM administrators WHERE role = $1")
        .bind(&code)
        .fetch_one(&state.db)
        .await?;
    if users > 0 {
        return Err(ApiError::bad_request(
            "the role is assigned to administrators",
        ));
    }
    sqlx::query("DELETE FROM roles WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(ok_msg("deleted"))
}

/// `GET /api/admin/roles/:id/permissions` → bare array of the role's Permissions (flat).
pub async fn role_permissions(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    role_code(&state, id).await?;
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT to_jsonb(p)::text FROM permissions p JOIN role_permissions rp ON rp.permission_id = p.id \
         WHERE rp.role_id = $1 ORDER BY p.sort, p.id",
    )
    .bind(id)
    .fetch_all(&state.db)
    .await?;
    Ok(ok(rows
        .iter()
        .map(|s| crate::admin::common::parse(s))
        .collect::<Vec<_>>()))
}

/// `PUT` or `POST /api/admin/roles/:id/permissions` body `{permission_ids: [int]}`: replaces the
/// role's permissions in one transaction; 400 naming `permission_ids` for an unknown id.
pub async fn set_role_permissions(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let code = role_code(&state, id).await?;
    if code == SUPER_ADMIN {
        return Err(ApiError::bad_request("super_admin holds every permission"));
    }
    let b = Body::new(body)?;
    let ids: Vec<i64> = match b.raw("permission_ids") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_i64()
                    .ok_or_else(|| ApiError::field("permission_ids", "must be integers"))
            })
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
        Some(_) => return Err(ApiError::field("permission_ids", "must be an array")),
    };
    let known: i64 = sqlx::query_scalar("SELECT count(*) FROM permissions WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&state.db)
        .await?;
    let mut distinct = ids.clone();
    distinct.sort_unstable();
    distinct.dedup();
    if known != distinct.len() as i64 {
        return Err(ApiError::field(
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
    Ok(ok(json!({ "role_id": id, "permission_ids": distinct })))
}

/// `GET /api/admin/roles/:id/users?page&pageSize` → `{list: [{id, username, nickname, email,
/// status, created_at}], total}`: the administrators holding the role (`nickname` = real name).
pub async fn role_users(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let code = role_code(&state, id).await?;
    let q = Q(q);
    let (limit, offset, ..) = q.paging(10)?;
    let mut qb = QueryBuilder::new(
        "SELECT to_jsonb(t)::text FROM (SELECT id, username, real_name AS nickname, email, status, created_at FROM administrators WHERE role = ",
    );
    qb.push_bind(code.clone());
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(&state, qb).await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM administrators WHERE role = $1")
        .bind(&code)
        .fetch_one(&state.db)
        .await?;
    Ok(list_envelope("users", list, total, json!({})))
}

// ---- trees (permissions, menus) ----------------------------------------------------------------

/// Nests flat rows by `parent_id` (0 or null = root), keeping their order; `children` only on
/// nodes that have some.
pub fn build_tree(rows: Vec<Value>) -> Vec<Value> {
    let parent = |v: &Value| v["parent_id"].as_i64().unwrap_or(0);
    let ids: std::collections::HashSet<i64> =
        rows.iter().filter_map(|v| v["id"].as_i64()).collect();
    let mut children: HashMap<i64, Vec<Value>> = HashMap::new();
    let mut roots = Vec::new();
    for r in rows {
        let p = parent(&r);
        if p == 0 || !ids.contains(&p) {
            roots.push(r);
        } else {
            children.entry(p).or_default().push(r);
        }
    }
    fn attach(node: &mut Value, children: &mut HashMap<i64, Vec<Value>>, depth: usize) {
        let id = node["id"].as_i64().unwrap_or(0);
        if let Some(mut kids) = children.remove(&id) {
            if depth < 64 {
                for k in &mut kids {
                    attach(k, children, depth + 1);
                }
            }
            if let Some(m) = node.as_object_mut() {
                m.insert("children".into(), Value::Array(kids));
            }
        }
    }
    for r in &mut roots {
        attach(r, &mut children, 0);
    }
    roots
}

/// Checks that `parent` exists in `table` and that making it the parent of `id` creates no
/// cycle (`parent` is neither `id` nor a descendant of `id`).
async fn check_parent(
    state: &AppState,
    table: &str,
    id: Option<i64>,
    parent: i64,
) -> Result<(), ApiError> {
    if parent == 0 {
        return Ok(());
    }
    if Some(parent) == id {
        return Err(ApiError::field(
            "parent_id",
            "a node cannot be its own parent",
        ));
    }
    // Walk up from the new parent: reaching `id` means a cycle.
    let mut cursor = parent;
    for _ in 0..256 {
        let sql = format!("SELECT COALESCE(parent_id, 0) FROM {table} WHERE id = $1");
        let up: Option<i64> = sqlx::query_scalar(&sql)
            .bind(cursor)
            .fetch_optional(&state.db)
            .await?;
        match up {
            None if cursor == parent => return Err(ApiError::field("parent_id", "no such parent")),
            None | Some(0) => return Ok(()),
            Some(p) if Some(p) == id => {
                return Err(ApiError::field(
                    "parent_id",
                    "would make a node its own ancestor",
                ))
            }
            Some(p) => cursor = p,
        }
    }
    Err(ApiError::field("parent_id", "tree too deep"))
}

async fn has_children(state: &AppState, table: &str, id: i64) -> Result<bool, ApiError> {
    let sql = format!("SELECT EXISTS (SELECT 1 FROM {table} WHERE parent_id = $1)");
    Ok(sqlx::query_scalar(&sql)
        .bind(id)
        .fetch_one(&state.db)
        .await?)
}

/// `GET /api/admin/permissions/tree` → bare array, tree by `parent_id`, ordered by `sort`.
pub async fn permission_tree(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(p)::text FROM permissions p ORDER BY sort, id")
            .fetch_all(&state.db)
            .await?;
    Ok(ok(build_tree(
        rows.iter()
            .map(|s| crate::admin::common::parse(s))
            .collect(),
    )))
}

/// `GET /api/admin/permissions?page&page_size&name` → `{list, permissions, total}`.
pub async fn list_permissions(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let name = q.str("name").map(crate::admin::common::contains_pattern);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(n) = &name {
            qb.push(" AND (name ILIKE ").push_bind(n.clone());
            qb.push(" OR code ILIKE ").push_bind(n.clone()).push(")");
        }
    };
    let (list, total) = page_and_total(
        &state,
        "*",
        "permissions",
        filter,
        "sort, id",
        limit,
        offset,
    )
    .await?;
    Ok(list_envelope("permissions", list, total, json!({})))
}

async fn permission_fields(
    state: &AppState,
    id: Option<i64>,
    b: &Body,
    cols: &mut Vec<(&'static str, Bind)>,
) -> Result<(), ApiError> {
    if b.raw("parent_id").is_some() || id.is_none() {
        let parent = b.int("parent_id")?.unwrap_or(0);
        check_parent(state, "permissions", id, parent).await?;
        cols.push(("parent_id", Bind::Int(parent)));
    }
    if let Some(n) = b.str("name")? {
        check_len("name", &n, 2, 50)?;
        cols.push(("name", Bind::Text(n)));
    }
    if let Some(c) = b.str("code")? {
        valid_code("code", &c, true)?;
        cols.push(("code", Bind::Text(c)));
    }
    if let Some(t) = b.str("type")? {
        if !matches!(t.as_str(), "menu" | "button" | "api") {
            return Err(ApiError::field("type", "must be menu, button or api"));
        }
        cols.push(("type", Bind::Text(t)));
    }
    for (name, max) in [("path", 200), ("component", 200), ("icon", 100)] {
        if let Some(v) = b.str(name)? {
            check_len(name, &v, 0, max)?;
            cols.push((name, Bind::Text(v)));
        }
    }
    if let Some(s) = b.int("sort")? {
        cols.push(("sort", Bind::Int(s)));
    }
    if let Some(s) = b.status01("status")? {
        cols.push(("status", Bind::Int(s)));
    }
    Ok(())
}

/// `POST /api/admin/permissions` body `{parent_id, name 2–50, code, type, path, component, icon,
/// sort, status}` → the Permission; 400 on a duplicate code or a bad parent.
pub async fn create_permission(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    b.required("name")?;
    b.required("code")?;
    let mut cols = Vec::new();
    permission_fields(&state, None, &b, &mut cols).await?;
    Ok(ok(insert_row(&state, "permissions", cols).await?))
}

/// `PUT /api/admin/permissions/:id` (present keys; zero values applied); 400 when `parent_id`
/// is the permission itself or one of its descendants.
pub async fn update_permission(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    one(
        &state,
        "SELECT to_jsonb(p)::text FROM permissions p WHERE id = $1",
        id,
        "permission",
    )
    .await?;
    let b = Body::new(body)?;
    let mut sets = Vec::new();
    permission_fields(&state, Some(id), &b, &mut sets).await?;
    let row = update_row(&state, "permissions", id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("permission"))?;
    Ok(ok(row))
}

/// `DELETE /api/admin/permissions/:id`; 400 while it has children.
pub async fn delete_permission(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    one(
        &state,
        "SELECT to_jsonb(p)::text FROM permissions p WHERE id = $1",
        id,
        "permission",
    )
    .await?;
    if has_children(&state, "permissions", id).await? {
        return Err(ApiError::bad_request(
            "delete the permission's children first",
        ));
    }
    sqlx::query("DELETE FROM permissions WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(ok_msg("deleted"))
}

/// `GET /api/admin/menus/tree` → bare array of MenuNode trees.
pub async fn menu_tree(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT to_jsonb(m)::text FROM menus m ORDER BY sort, id")
            .fetch_all(&state.db)
            .await?;
    Ok(ok(build_tree(
        rows.iter()
            .map(|s| crate::admin::common::parse(s))
            .collect(),
    )))
}

/// `GET /api/admin/menus?name` → `{list: [MenuNode tree], menus, total (rows)}`.
pub async fn list_menus(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let mut qb = QueryBuilder::new("SELECT to_jsonb(m)::text FROM menus m");
    if let Some(n) = q.str("name") {
        qb.push(" WHERE name ILIKE ")
            .push_bind(crate::admin::common::contains_pattern(n));
    }
    qb.push(" ORDER BY sort, id");
    let rows = json_rows(&state, qb).await?;
    let total = rows.len() as i64;
    Ok(list_envelope("menus", build_tree(rows), total, json!({})))
}

async fn menu_fields(
    state: &AppState,
    id: Option<i64>,
    b: &Body,
    cols: &mut Vec<(&'static str, Bind)>,
) -> Result<(), ApiError> {
    if b.raw("parent_id").is_some() || id.is_none() {
        let parent = b.int("parent_id")?.unwrap_or(0);
        check_parent(state, "menus", id, parent).await?;
        cols.push((
            "parent_id",
            if parent == 0 {
                Bind::NullInt
            } else {
                Bind::Int(parent)
            },
        ));
    }
    if let Some(n) = b.str("name")? {
        check_len("name", &n, 1, 50)?;
        cols.push(("name", Bind::Text(n)));
    }
    if let Some(t) = b.int("type")? {
        let t = if t == 0 { 2 } else { t };
        if !(1..=3).contains(&t) {
            return Err(ApiError::field(
                "type",
                "must be 1 (directory), 2 (menu) or 3 (button)",
            ));
        }
        cols.push(("type", Bind::Int(t)));
    }
    for (name, max) in [
        ("path", 200),
        ("component", 200),
        ("permission", 100),
        ("icon", 100),
    ] {
        if let Some(v) = b.str(name)? {
            check_len(name, &v, 0, max)?;
            cols.push((name, Bind::Text(v)));
        }
    }
    if let Some(s) = b.int("sort")? {
        cols.push(("sort", Bind::Int(s)));
    }
    if let Some(s) = b.status01("status")? {
        cols.push(("status", Bind::Int(s)));
    }
    Ok(())
}

/// `POST /api/admin/menus` body `{parent_id (null/0 = root), name, type 1|2|3 (0 → 2), path,
/// component, permission, icon, sort, status}` → the Menu.
pub async fn create_menu(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    b.required("name")?;
    let mut cols = Vec::new();
    menu_fields(&state, None, &b, &mut cols).await?;
    Ok(ok(insert_row(&state, "menus", cols).await?))
}

/// `PUT /api/admin/menus/:id` → the Menu; `parent_id` = own id or a descendant → 400.
pub async fn update_menu(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    one(
        &state,
        "SELECT to_jsonb(m)::text FROM menus m WHERE id = $1",
        id,
        "menu",
    )
    .await?;
    let b = Body::new(body)?;
    let mut sets = Vec::new();
    menu_fields(&state, Some(id), &b, &mut sets).await?;
    let row = update_row(&state, "menus", id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("menu"))?;
    Ok(ok(row))
}

/// `DELETE /api/admin/menus/:id`; 400 while it has children.
pub async fn delete_menu(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    one(
        &state,
        "SELECT to_jsonb(m)::text FROM menus m WHERE id = $1",
        id,
        "menu",
    )
    .await?;
    if has_children(&state, "menus", id).await? {
        return Err(ApiError::bad_request("delete the menu's children first"));
    }
    sqlx::query("DELETE FROM menus WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(ok_msg("deleted"))
}
