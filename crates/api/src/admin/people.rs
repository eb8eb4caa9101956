//! Admin API (issue 4): the administrator's own session (info, permissions, password, profile),
//! administrators, users, counselors, counselor applications and uploads (contract c.1–c.4).
//! Reference data: plain Postgres rows, changed in one statement each.

use axum::body::Bytes;
use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sqlx::{Postgres, QueryBuilder};

use crate::admin::common::{
    check_len, count, insert_row, json_rows, list_envelope, one, page_and_total, scrub, update_row,
    Bind, Body, Caller, Q,
};
use crate::admin::guard::{role_permissions, SUPER_ADMIN};
use crate::auth::{hash_password, verify_password};
use crate::money::positive_fen;
use crate::{ok, ok_msg, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState};

const ADMIN_COLS: &str =
    "id, username, real_name, email, phone, avatar, role, status, last_login, \
                          created_at, updated_at";

// ---- the caller's own session ------------------------------------------------------------------

/// `GET /api/admin2/info` (also `/api/admin/user/info`, `/api/admin/profile`) → the caller's
/// Administrator row (contract c.9).
pub async fn info(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let sql = format!(
        "SELECT to_jsonb(t)::text FROM (SELECT {ADMIN_COLS} FROM administrators WHERE id = $1) t"
    );
    Ok(ok(
        one(&state, &sql, caller.admin_id, "administrator").await?
    ))
}

/// `GET /api/admin2/permissions` (also `/api/admin/user/permissions`) →
/// `{permissions: [codes], roles: [role code(s)]}`. `super_admin` also carries `admin` in `roles`
/// so that the client's `roles.includes('admin')` lets it into every screen (contract f.10).
pub async fn permissions(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    let codes = role_permissions(&state, &caller.role).await?;
    let roles = if caller.role == SUPER_ADMIN {
        vec![SUPER_ADMIN.to_string(), "admin".to_string()]
    } else {
        vec![caller.role.clone()]
    };
    Ok(ok(json!({ "permissions": codes, "roles": roles })))
}

/// `POST /api/admin2/logout` (also `/api/admin/logout`): the presented token is revoked (issue
/// 8: `revoked_tokens`, checked by every admin route); the logout is recorded in the audit log.
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, to_timestamp($2)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&caller.jti)
    .bind(caller.expires_at as f64)
    .execute(&state.db)
    .await?;
    Ok(ok_msg("logged out"))
}

/// Liveness probe of the old admin backend
///
/// `{code: 200, msg}`: a probe the old admin backend had (contract c.1 #17).
#[utoipa::path(get, path = "/api/test", tag = "auth",
    responses((status = 200, description = "the admin API runs", body = web::envelope::Message)))]
pub async fn test_route() -> Json<web::envelope::Message> {
    web::envelope::message("admin API is running")
}

/// `POST /api/admin2/password` body `{old_password, new_password ≥ 6}`; 400 on a wrong old
/// password.
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let old = b.required("old_password")?;
    let new = b.required("new_password")?;
    check_len("new_password", &new, 6, 64)?;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM administrators WHERE id = $1")
        .bind(caller.admin_id)
        .fetch_one(&state.db)
        .await?;
    if !verify_password(&old, &hash).await {
        return Err(ApiError::field("old_password", "wrong password"));
    }
    let hash = hash_password(&new).await?;
    // Issue 8: every token issued at or before this second is revoked (tokens carry `iat` in
    // whole seconds); the administrator logs in again.
    sqlx::query(
        "UPDATE administrators SET password_hash = $2, updated_at = now(), \
         tokens_valid_after = to_timestamp(floor(extract(epoch FROM now()))) WHERE id = $1",
    )
    .bind(caller.admin_id)
    .bind(hash)
    .execute(&state.db)
    .await?;
    Ok(ok_msg("password changed"))
}

/// `PUT /api/admin2/profile` (also `/api/admin/profile`) body `{real_name, email, phone, avatar}`
/// → the updated Administrator.
pub async fn update_profile(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let mut sets = Vec::new();
    text_fields(
        &b,
        &mut sets,
        &[
            ("real_name", 50),
            ("email", 100),
            ("phone", 20),
            ("avatar", 500),
        ],
    )?;
    let row = update_row(&state, "administrators", caller.admin_id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("administrator"))?;
    Ok(ok(scrub(row)))
}

fn text_fields(
    b: &Body,
    sets: &mut Vec<(&'static str, Bind)>,
    fields: &[(&'static str, usize)],
) -> Result<(), ApiError> {
    for (name, max) in fields {
        if let Some(v) = b.str(name)? {
            check_len(name, &v, 0, *max)?;
            sets.push((name, Bind::Text(v)));
        }
    }
    Ok(())
}

// ---- administrators ----------------------------------------------------------------------------

/// `GET /api/admin2/administrators?page&page_size&keyword&status` → `{administrators, list, total}`.
pub async fn list_admins(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let keyword = q.str("keyword").map(crate::admin::common::contains_pattern);
    let status = q.int("status")?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(k) = &keyword {
            qb.push(" AND (username ILIKE ").push_bind(k.clone());
            qb.push(" OR real_name ILIKE ").push_bind(k.clone());
            qb.push(" OR email ILIKE ").push_bind(k.clone());
            qb.push(" OR phone ILIKE ").push_bind(k.clone()).push(")");
        }
        if let Some(s) = status {
            qb.push(" AND status = ").push_bind(s as i16);
        }
    };
    let (list, total) = page_and_total(
        &state,
        ADMIN_COLS,
        "administrators",
        filter,
        "id",
        limit,
        offset,
    )
    .await?;
    Ok(list_envelope("administrators", list, total, json!({})))
}

/// Checks that role `code` exists and that the caller may hand it out: only a `super_admin` may
/// grant `super_admin` (no privilege escalation through `admin:add` / `admin:edit`).
async fn grantable_role(state: &AppState, caller: &Caller, code: &str) -> Result<(), ApiError> {
    if code == SUPER_ADMIN && caller.role != SUPER_ADMIN {
        return Err(ApiError::forbidden(
            "only a super_admin may grant super_admin",
        ));
    }
    role_exists(state, code).await
}

async fn role_exists(state: &AppState, code: &str) -> Result<(), ApiError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM roles WHERE code = $1")
        .bind(code)
        .fetch_optional(&state.db)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::field("role", "unknown role code"))
}

/// `POST /api/admin2/administrators` body `{username 3–50, password ≥ 6, real_name, email,
/// phone, avatar, role, status 0|1}` → the Administrator; 400 on a duplicate username or an
/// unknown role; 403 when a non-super-admin grants `super_admin`.
pub async fn create_admin(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let username = b.required("username")?;
    check_len("username", &username, 3, 50)?;
    let password = b.required("password")?;
    check_len("password", &password, 6, 64)?;
    let real_name = b.required("real_name")?;
    check_len("real_name", &real_name, 1, 50)?;
    let role = b.required("role")?;
    grantable_role(&state, &caller, &role).await?;
    let status = b.status01("status")?.unwrap_or(1);
    let mut cols = vec![
        ("username", Bind::Text(username)),
        ("password_hash", Bind::Text(hash_password(&password).await?)),
        ("real_name", Bind::Text(real_name)),
        ("role", Bind::Text(role)),
        ("status", Bind::Int(status)),
    ];
    text_fields(
        &b,
        &mut cols,
        &[("email", 100), ("phone", 20), ("avatar", 500)],
    )?;
    let row = insert_row(&state, "administrators", cols).await?;
    Ok(ok(scrub(row)))
}

async fn admin_target(
    state: &AppState,
    caller: &Caller,
    id: i64,
    self_ok: bool,
) -> Result<String, ApiError> {
    let role: Option<String> = sqlx::query_scalar("SELECT role FROM administrators WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    let role = role.ok_or_else(|| ApiError::not_found("administrator"))?;
    if role == SUPER_ADMIN && caller.role != SUPER_ADMIN {
        return Err(ApiError::forbidden(
            "only a super_admin may change a super_admin",
        ));
    }
    if !self_ok && id == caller.admin_id {
        return Err(ApiError::bad_request(
            "you cannot do this to your own account",
        ));
    }
    Ok(role)
}

/// `PUT /api/admin2/administrators/:id` body `{username, real_name, email, phone, avatar, role,
/// status}` (present keys only; `status: 0` applied; `password` ignored) → the Administrator;
/// 400 for the caller's own account.
pub async fn update_admin(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    admin_target(&state, &caller, id, false).await?;
    let b = Body::new(body)?;
    let mut sets = Vec::new();
    if let Some(u) = b.str("username")? {
        check_len("username", &u, 3, 50)?;
        sets.push(("username", Bind::Text(u)));
    }
    text_fields(
        &b,
        &mut sets,
        &[
            ("real_name", 50),
            ("email", 100),
            ("phone", 20),
            ("avatar", 500),
        ],
    )?;
    if let Some(r) = b.str("role")? {
        grantable_role(&state, &caller, &r).await?;
        sets.push(("role", Bind::Text(r)));
    }
    if let Some(s) = b.status01("status")? {
        sets.push(("status", Bind::Int(s)));
    }
    let row = update_row(&state, "administrators", id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("administrator"))?;
    Ok(ok(scrub(row)))
}

/// `DELETE /api/admin2/administrators/:id`; 400 for the caller or a `super_admin`.
pub async fn delete_admin(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let role = admin_target(&state, &caller, id, false).await?;
    if role == SUPER_ADMIN {
        return Err(ApiError::bad_request("a super_admin cannot be deleted"));
    }
    sqlx::query("DELETE FROM administrators WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(ok_msg("deleted"))
}

/// `POST /api/admin2/administrators/:id/password` body `{password ≥ 6}`; 400 for a `super_admin`
/// other than the caller.
pub async fn reset_admin_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let role = admin_target(&state, &caller, id, true).await?;
    if role == SUPER_ADMIN && id != caller.admin_id {
        return Err(ApiError::bad_request(
            "a super_admin's password cannot be reset",
        ));
    }
    let b = Body::new(body)?;
    let password = b.required("password")?;
    check_len("password", &password, 6, 64)?;
    sqlx::query("UPDATE administrators SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash_password(&password).await?)
        .execute(&state.db)
        .await?;
    Ok(ok_msg("password reset"))
}

/// `PUT /api/admin2/administrators/:id/status` body `{status: 0|1}` (`0` disables: applied);
/// 400 for the caller or a `super_admin`.
pub async fn admin_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let role = admin_target(&state, &caller, id, false).await?;
    if role == SUPER_ADMIN {
        return Err(ApiError::bad_request("a super_admin cannot be disabled"));
    }
    let b = Body::new(body)?;
    let status = b
        .status01("status")?
        .ok_or_else(|| ApiError::field("status", "required"))?;
    sqlx::query("UPDATE administrators SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(status as i16)
        .execute(&state.db)
        .await?;
    Ok(ok_msg("status changed"))
}

// ---- users -------------------------------------------------------------------------------------

const USER_COLS: &str =
    "id, created_at, updated_at, deleted_at, username, email, phone, avatar, status";

/// `GET /api/admin/users?page&page_size&keyword&status` → `{users, list, total}`.
pub async fn list_users(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let keyword = q.str("keyword").map(crate::admin::common::contains_pattern);
    let status = q.int("status")?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE deleted_at IS NULL");
        if let Some(k) = &keyword {
            qb.push(" AND (username ILIKE ").push_bind(k.clone());
            qb.push(" OR email ILIKE ").push_bind(k.clone());
            qb.push(" OR phone ILIKE ").push_bind(k.clone()).push(")");
        }
        if let Some(s) = status {
            qb.push(" AND status = ").push_bind(s as i16);
        }
    };
    let (list, total) =
        page_and_total(&state, USER_COLS, "users", filter, "id DESC", limit, offset).await?;
    Ok(list_envelope("users", list, total, json!({})))
}

/// `POST /api/admin/users` body `{username 3–50, password ≥ 6, email, phone, avatar, status}` →
/// the admin User; 400 on a duplicate username.
pub async fn create_user(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let username = b.required("username")?;
    check_len("username", &username, 3, 50)?;
    let password = b.required("password")?;
    check_len("password", &password, 6, 64)?;
    let mut cols = vec![
        ("username", Bind::Text(username)),
        ("password_hash", Bind::Text(hash_password(&password).await?)),
        ("status", Bind::Int(b.status01("status")?.unwrap_or(1))),
    ];
    text_fields(
        &b,
        &mut cols,
        &[("email", 100), ("phone", 20), ("avatar", 500)],
    )?;
    let row = insert_row(&state, "users", cols).await?;
    Ok(ok(user_shape(row)))
}

fn user_shape(v: Value) -> Value {
    let mut v = scrub(v);
    if let Some(m) = v.as_object_mut() {
        m.remove("is_admin");
    }
    v
}

/// `PUT /api/admin/users/:id` body `{email, phone, avatar, status}` (present keys; `status: 0`
/// applied) → the admin User; 400 when nothing to change.
pub async fn update_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let mut sets = Vec::new();
    text_fields(
        &b,
        &mut sets,
        &[("email", 100), ("phone", 20), ("avatar", 500)],
    )?;
    if let Some(s) = b.status01("status")? {
        sets.push(("status", Bind::Int(s)));
    }
    if sets.is_empty() {
        return Err(ApiError::bad_request("nothing to change"));
    }
    let row = update_live_user(&state, id, sets).await?;
    // A disabled account's tokens stop working on every node.
    state
        .tokens
        .revoke_everywhere(
            &state.nats,
            &crate::auth::Revoked {
                user_id: Some(id),
                jti: None,
            },
        )
        .await;
    Ok(ok(user_shape(row)))
}

async fn update_live_user(
    state: &AppState,
    id: i64,
    sets: Vec<(&str, Bind)>,
) -> Result<Value, ApiError> {
    let live: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    live.ok_or_else(|| ApiError::not_found("user"))?;
    update_row(state, "users", id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))
}

/// `DELETE /api/admin/users/:id`: soft delete (`deleted_at`, status 0).
pub async fn delete_user(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let done = sqlx::query(
        "UPDATE users SET deleted_at = now(), status = 0, updated_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("user"));
    }
    state
        .tokens
        .revoke_everywhere(
            &state.nats,
            &crate::auth::Revoked {
                user_id: Some(id),
                jti: None,
            },
        )
        .await;
    Ok(ok_msg("deleted"))
}

/// `POST /api/admin/users/:id/password` body `{password ≥ 6}`.
pub async fn reset_user_password(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let password = b.required("password")?;
    check_len("password", &password, 6, 64)?;
    let hash = hash_password(&password).await?;
    update_live_user(&state, id, vec![("password_hash", Bind::Text(hash))]).await?;
    Ok(ok_msg("password reset"))
}

// ---- counselors --------------------------------------------------------------------------------

const COUNSELOR_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT id, user_id, name, title, avatar, bio, specialty, \
     price_fen / 100.0 AS price, price_fen, years_exp, rating, status, created_at, updated_at FROM counselors";

/// `GET /api/admin/counselors?page&page_size&keyword&status` (also `/api/counselor/list`) →
/// `{counselors, list, total}` (the client reads `data.list`, contract c.3 #28).
pub async fn list_counselors(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, ..) = q.paging(20)?;
    let keyword = q.str("keyword").map(crate::admin::common::contains_pattern);
    let status = q.int("status")?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(k) = &keyword {
            qb.push(" AND (name ILIKE ").push_bind(k.clone());
            qb.push(" OR title ILIKE ").push_bind(k.clone());
            qb.push(" OR specialty ILIKE ")
                .push_bind(k.clone())
                .push(")");
        }
        if let Some(s) = status {
            qb.push(" AND status = ").push_bind(s as i16);
        }
    };
    let mut qb = QueryBuilder::new(COUNSELOR_SELECT);
    filter(&mut qb);
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM counselors");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(list_envelope("counselors", list, total, json!({})))
}

/// `GET /api/admin/counselors/:id` (also `/api/counselor/:id`) → the admin Counselor.
pub async fn get_counselor(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let sql = format!("{COUNSELOR_SELECT} WHERE id = $1) t");
    Ok(ok(one(&state, &sql, id, "counselor").await?))
}

fn counselor_fields(b: &Body, sets: &mut Vec<(&'static str, Bind)>) -> Result<(), ApiError> {
    if let Some(n) = b.str("name")? {
        check_len("name", &n, 2, 50)?;
        sets.push(("name", Bind::Text(n)));
    }
    text_fields(
        b,
        sets,
        &[
            ("title", 100),
            ("avatar", 500),
            ("bio", 2000),
            ("specialty", 200),
        ],
    )?;
    if let Some(p) = b.num("price")? {
        sets.push(("price_fen", Bind::Int(positive_fen("price", p)?)));
    }
    if let Some(y) = b.int("years_exp")? {
        if !(0..=80).contains(&y) {
            return Err(ApiError::field("years_exp", "must be between 0 and 80"));
        }
        sets.push(("years_exp", Bind::Int(y)));
    }
    if let Some(r) = b.num("rating")? {
        if !(0.0..=5.0).contains(&r) {
            return Err(ApiError::field("rating", "must be between 0 and 5"));
        }
        sets.push(("rating", Bind::Float(r)));
    }
    if let Some(s) = b.status01("status")? {
        sets.push(("status", Bind::Int(s)));
    }
    Ok(())
}

/// `POST /api/admin/counselors` body `{name 2–50, price (yuan/minute, > 0), title, avatar, bio,
/// specialty, years_exp, rating, status}` → the Counselor.
pub async fn create_counselor(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    b.required("name")?;
    if b.num("price")?.is_none() {
        return Err(ApiError::field("price", "required"));
    }
    let mut cols = Vec::new();
    counselor_fields(&b, &mut cols)?;
    let row = insert_row(&state, "counselors", cols).await?;
    let id = row["id"].as_i64().unwrap_or_default();
    get_counselor(State(state), ApiPath(id)).await
}

/// `PUT /api/admin/counselors/:id` (present keys; `status: 0` applied) → the Counselor.
pub async fn update_counselor(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let mut sets = Vec::new();
    counselor_fields(&b, &mut sets)?;
    update_row(&state, "counselors", id, sets, true)
        .await?
        .ok_or_else(|| ApiError::not_found("counselor"))?;
    state.counselors.forget_everywhere(&state.nats, id).await;
    get_counselor(State(state), ApiPath(id)).await
}

/// `DELETE /api/admin/counselors/:id`: a counselor with orders is disabled (status 0) instead,
/// so that their orders, sessions and account keep their counselor; otherwise the row is deleted.
pub async fn delete_counselor(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let has_orders: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM orders WHERE counselor_id = $1)")
            .bind(id)
            .fetch_one(&state.db)
            .await?;
    let done = if has_orders {
        sqlx::query("UPDATE counselors SET status = 0, updated_at = now() WHERE id = $1")
    } else {
        sqlx::query("DELETE FROM counselors WHERE id = $1")
    }
    .bind(id)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("counselor"));
    }
    state.counselors.forget_everywhere(&state.nats, id).await;
    Ok(ok_msg(if has_orders {
        "disabled (the counselor has orders)"
    } else {
        "deleted"
    }))
}

// ---- counselor applications --------------------------------------------------------------------

const APP_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT a.*, a.reviewed_by AS reviewer_id, \
     CASE WHEN r.id IS NULL THEN NULL ELSE jsonb_build_object('id', r.id, 'username', r.username, 'real_name', r.real_name) END AS reviewer \
     FROM counselor_applications a LEFT JOIN administrators r ON r.id = a.reviewed_by";

/// `GET /api/admin/counselor/applications?page&page_size&status&keyword` → `{list, total}`.
pub async fn list_applications(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<std::collections::HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let q = Q(q);
    let (limit, offset, page, size) = q.paging(20)?;
    let keyword = q.str("keyword").map(crate::admin::common::contains_pattern);
    let status = q.int("status")?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(k) = &keyword {
            qb.push(" AND (a.name ILIKE ").push_bind(k.clone());
            qb.push(" OR a.phone ILIKE ").push_bind(k.clone());
            qb.push(" OR a.email ILIKE ").push_bind(k.clone()).push(")");
        }
        if let Some(s) = status {
            qb.push(" AND a.status = ").push_bind(s as i16);
        }
    };
    let mut qb = QueryBuilder::new(APP_SELECT);
    filter(&mut qb);
    qb.push(" ORDER BY a.id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = json_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM counselor_applications a");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(list_envelope(
        "applications",
        list,
        total,
        json!({"page": page, "page_size": size}),
    ))
}

/// `GET /api/admin/counselor/applications/:id` → the Application.
pub async fn get_application(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let sql = format!("{APP_SELECT} WHERE a.id = $1) t");
    Ok(ok(one(&state, &sql, id, "application").await?))
}

/// `PUT /api/admin/counselor/applications/:id/review` body `{status: 1|2, reject_reason}`
/// (reason required for 2). Approving creates the counselor, **linked** to the applicant's user
/// (price 1.00 yuan/minute, rating 5, status 1, as MyChat did). 400 if not pending. The reviewer
/// is recorded. One transaction.
pub async fn review_application(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let status = b
        .int("status")?
        .ok_or_else(|| ApiError::field("status", "required"))?;
    if !(status == 1 || status == 2) {
        return Err(ApiError::field(
            "status",
            "must be 1 (approve) or 2 (reject)",
        ));
    }
    let reason = b.str("reject_reason")?.unwrap_or_default();
    if status == 2 && reason.is_empty() {
        return Err(ApiError::field("reject_reason", "required when rejecting"));
    }
    let mut tx = state.db.begin().await?;
    let row: Option<(i16, i64, String, String, String, String, i32)> = sqlx::query_as(
        "SELECT status, user_id, name, title, specialty, bio, years_exp FROM counselor_applications WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (current, user_id, name, title, specialty, bio, years) =
        row.ok_or_else(|| ApiError::not_found("application"))?;
    if current != 0 {
        return Err(ApiError::bad_request("application is not pending"));
    }
    sqlx::query(
        "UPDATE counselor_applications SET status = $2, reject_reason = $3, reviewed_by = $4, \
         reviewed_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(status as i16)
    .bind(&reason)
    .bind(caller.admin_id)
    .execute(&mut *tx)
    .await?;
    if status == 1 {
        let user = (user_id > 0).then_some(user_id);
        sqlx::query(
            "INSERT INTO counselors (user_id, name, title, specialty, bio, years_exp, price_fen, rating, status) \
             VALUES ($1,$2,$3,$4,$5,$6,100,5,1) ON CONFLICT (user_id) DO UPDATE SET status = 1, updated_at = now()",
        )
        .bind(user)
        .bind(name)
        .bind(title)
        .bind(specialty)
        .bind(bio)
        .bind(years)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    get_application(State(state), ApiPath(id)).await
}

// ---- uploads -----------------------------------------------------------------------------------

const MAX_IMAGE: usize = 2 * 1024 * 1024;
const MAX_FILE: usize = 10 * 1024 * 1024;

async fn store_upload(
    state: &AppState,
    admin_id: Option<i64>,
    mut multipart: Multipart,
    images_only: bool,
) -> Result<Value, ApiError> {
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let original = field.file_name().unwrap_or("file").to_string();
        let ext = original
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let mime = match ext.as_str() {
            "jpg" | "jpeg" => "image/jpeg",
            "png" => "image/png",
            "webp" => "image/webp",
            "gif" => "image/gif",
            "pdf" if !images_only => "application/pdf",
            "txt" if !images_only => "text/plain",
            _ if !images_only => "application/octet-stream",
            _ => {
                return Err(ApiError::field(
                    "file",
                    "must be a jpg, jpeg, png, webp or gif image",
                ))
            }
        };
        let bytes: Bytes = field
            .bytes()
            .await
            .map_err(|e| ApiError::bad_request(format!("multipart: {e}")))?;
        let max = if images_only { MAX_IMAGE } else { MAX_FILE };
        if bytes.is_empty() || bytes.len() > max {
            let mut e = ApiError::field("file", format!("must be 1 byte to {max} bytes"));
            if !bytes.is_empty() {
                // Issue 8: oversize is 413 Payload Too Large.
                e.status = axum::http::StatusCode::PAYLOAD_TOO_LARGE;
            }
            return Err(e);
        }
        let safe: String = original
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO admin_uploads (admin_id, file_name, mime_type, bytes) VALUES ($1,$2,$3,$4) RETURNING id",
        )
        .bind(admin_id)
        .bind(&safe)
        .bind(mime)
        .bind(bytes.to_vec())
        .fetch_one(&state.db)
        .await?;
        let url = format!("/uploads/{id}/{safe}");
        return Ok(json!({
            "id": id, "url": url, "file_url": url, "file_name": safe, "original_name": original,
            "file_size": bytes.len(), "mime_type": mime,
        }));
    }
    Err(ApiError::field("file", "required (multipart field `file`)"))
}

/// `POST /api/admin/upload/image` (multipart `file`, image ≤ 2 MB) → `{url, file_url, …}`
/// (also at the root, contract c.2 #20).
pub async fn upload_image(
    State(state): State<AppState>,
    caller: Caller,
    web::Multipart(multipart): web::Multipart,
) -> ApiResult<Json<Value>> {
    let data = store_upload(&state, Some(caller.admin_id), multipart, true).await?;
    Ok(Json(
        json!({"code": 200, "msg": "success", "file_url": data["file_url"], "url": data["url"], "data": data}),
    ))
}

/// `POST /api/admin/upload/file` (multipart `file` ≤ 10 MB) → `{id, file_name, original_name,
/// file_url, file_size, mime_type}`.
pub async fn upload_file(
    State(state): State<AppState>,
    caller: Caller,
    web::Multipart(multipart): web::Multipart,
) -> ApiResult<Json<Value>> {
    Ok(ok(store_upload(
        &state,
        Some(caller.admin_id),
        multipart,
        false,
    )
    .await?))
}

/// `POST /api/admin/upload`: the profile avatar upload, which MyChat's client posts **without** a
/// token (contract c.2 #22, f.5): public, images ≤ 2 MB only.
pub async fn upload_public(
    State(state): State<AppState>,
    web::Multipart(multipart): web::Multipart,
) -> ApiResult<Json<Value>> {
    let data = store_upload(&state, None, multipart, true).await?;
    Ok(Json(
        json!({"code": 200, "msg": "success", "url": data["url"], "data": data}),
    ))
}

/// `GET /uploads/:id/:name` → the stored file (public, as MyChat served `/uploads/*`).
pub async fn serve_upload(
    State(state): State<AppState>,
    ApiPath((id, _name)): ApiPath<(i64, String)>,
) -> ApiResult<Response> {
    let row: Option<(String, Vec<u8>)> =
        sqlx::query_as("SELECT mime_type, bytes FROM admin_uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let (mime, bytes) = row.ok_or_else(|| ApiError::not_found("file"))?;
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}
