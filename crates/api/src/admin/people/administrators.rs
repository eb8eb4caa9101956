//! Administrators (contract c.1): list, create, update, delete, reset a password, enable or
//! disable. Only a `super_admin` may grant `super_admin` or change a `super_admin`; nobody may
//! do this to their own account (but reset their own password).

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::Problem;
use web::extract::{Path, Query};

use crate::admin::common::{
    lenient, listed, page_rows, typed_row, unique_violation, Caller, ListQuery, Listed,
};
use crate::admin::table::SUPER_ADMIN;
use crate::auth::hash_password;
use crate::{ApiError, ApiResult, AppState};

/// The administrator columns every answer shows (never the password hash).
pub(crate) const ADMIN_COLS: &str =
    "id, username, real_name, email, phone, avatar, role, status, last_login, \
                          created_at, updated_at";

/// An administrator (contract c.9 Administrator). Fields in the order Postgres renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Administrator {
    /// Administrator id.
    pub id: i64,
    /// Role code (`super_admin`, `admin`, or a role created in the RBAC screens).
    pub role: String,
    /// E-mail address (may be empty).
    pub email: String,
    /// Phone number (may be empty).
    pub phone: String,
    /// Avatar URL (may be empty).
    pub avatar: String,
    /// 1 enabled, 0 disabled.
    #[schema(minimum = 0, maximum = 1)]
    pub status: i16,
    /// Login name.
    pub username: String,
    /// Display name.
    pub real_name: String,
    /// Creation time, RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last successful login, RFC 3339; null before the first.
    #[schema(format = DateTime)]
    pub last_login: Option<String>,
    /// Last change, RFC 3339.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// An administrator's whole row as a change returns it: the `Administrator` and when their tokens
/// were last revoked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdministratorRecord {
    /// The administrator.
    #[serde(flatten)]
    pub administrator: Administrator,
    /// Tokens issued at or before this instant (RFC 3339) are revoked (a password change); null
    /// when never.
    #[schema(format = DateTime)]
    pub tokens_valid_after: Option<String>,
}

/// The changed row of `administrators` (`RETURNING to_jsonb(t)::text`), without its hash.
pub(crate) fn record(text: &str) -> Result<AdministratorRecord, ApiError> {
    typed_row(text, &["password_hash"])
}

/// A page of administrators.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AdministratorPage {
    /// The page's administrators.
    pub administrators: Vec<Administrator>,
    /// The same rows (the key the client reads).
    pub list: Vec<Administrator>,
    /// Administrators matching the filter.
    pub total: i64,
}

/// List administrators
///
/// Filtered by `keyword` (username, real name, e-mail, phone) and `status`, by id.
#[utoipa::path(get, path = "/api/admin2/administrators", tag = "administrators",
    params(ListQuery),
    responses(
        (status = 200, description = "one page", body = Listed<AdministratorPage>),
        (status = 400, description = "a bad paging or filter parameter", body = Problem)))]
pub async fn list_admins(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Listed<AdministratorPage>>> {
    let (limit, offset, ..) = q.paging(20)?;
    let keyword = q.keyword_pattern();
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(k) = &keyword {
            qb.push(" AND (username ILIKE ").push_bind(k.clone());
            qb.push(" OR real_name ILIKE ").push_bind(k.clone());
            qb.push(" OR email ILIKE ").push_bind(k.clone());
            qb.push(" OR phone ILIKE ").push_bind(k.clone()).push(")");
        }
        if let Some(s) = q.status {
            qb.push(" AND status = ").push_bind(s);
        }
    };
    let (list, total): (Vec<Administrator>, i64) = page_rows(
        &state,
        ADMIN_COLS,
        "administrators",
        filter,
        "id",
        limit,
        offset,
    )
    .await?;
    Ok(listed(AdministratorPage {
        administrators: list.clone(),
        list,
        total,
    }))
}

/// Checks that role `code` exists and that the caller may hand it out: only a `super_admin` may
/// grant `super_admin` (no privilege escalation through `admin:add` / `admin:edit`).
async fn grantable_role(state: &AppState, caller: &Caller, code: &str) -> Result<(), ApiError> {
    if code == SUPER_ADMIN && caller.role != SUPER_ADMIN {
        return Err(ApiError::forbidden(
            "only a super_admin may grant super_admin",
        ));
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM roles WHERE code = $1")
        .bind(code)
        .fetch_optional(&state.db)
        .await?;
    found
        .map(|_| ())
        .ok_or_else(|| ApiError::unprocessable("role", "unknown role code"))
}

/// `POST /api/admin2/administrators` body. Text is trimmed.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct NewAdministrator {
    /// Login name, 3 to 50 characters, unique.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        required(message = "required"),
        length(min = 3, max = 50, message = "must be 3 to 50 characters")
    )]
    pub username: Option<String>,
    /// Password, 6 to 64 characters.
    #[serde(default)]
    #[validate(
        required(message = "required"),
        length(min = 6, max = 64, message = "must be 6 to 64 characters")
    )]
    pub password: Option<String>,
    /// Display name, 1 to 50 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        required(message = "required"),
        length(min = 1, max = 50, message = "must be 1 to 50 characters")
    )]
    pub real_name: Option<String>,
    /// Role code: an existing role; `super_admin` only by a `super_admin`.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(required(message = "required"), length(min = 1, message = "required"))]
    pub role: Option<String>,
    /// 1 enabled (default), 0 disabled.
    #[serde(default, deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i64>,
    /// E-mail address, at most 100 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub email: Option<String>,
    /// Phone number, at most 20 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 20, message = "must be 0 to 20 characters"))]
    pub phone: Option<String>,
    /// Avatar URL, at most 500 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 500, message = "must be 0 to 500 characters"))]
    pub avatar: Option<String>,
}

/// Create an administrator
///
/// 400 on a duplicate username or an unknown role; 403 when a non-super-admin grants
/// `super_admin`.
#[utoipa::path(post, path = "/api/admin2/administrators", tag = "administrators",
    request_body = NewAdministrator,
    responses(
        (status = 200, description = "the new administrator", body = Envelope<AdministratorRecord>),
        (status = 400, description = "a field is not of the documented shape", body = Problem),
        (status = 409, description = "a duplicate username", body = Problem),
        (status = 422, description = "an unknown role", body = Problem),
        (status = 403, description = "granting super_admin without being one", body = Problem)))]
pub async fn create_admin(
    State(state): State<AppState>,
    caller: Caller,
    web::extract::Json(req): web::extract::Json<NewAdministrator>,
) -> Reply<AdministratorRecord> {
    req.validate()?;
    let role = req.role.unwrap_or_default();
    grantable_role(&state, &caller, &role).await?;
    let hash = hash_password(req.password.as_deref().unwrap_or_default()).await?;
    let row: String = sqlx::query_scalar(
        "INSERT INTO administrators (username, password_hash, real_name, role, status, email, \
         phone, avatar) VALUES ($1, $2, $3, $4, $5, COALESCE($6, ''), COALESCE($7, ''), \
         COALESCE($8, '')) RETURNING to_jsonb(administrators.*)::text",
    )
    .bind(req.username)
    .bind(hash)
    .bind(req.real_name)
    .bind(role)
    .bind(req.status.unwrap_or(1) as i16)
    .bind(req.email)
    .bind(req.phone)
    .bind(req.avatar)
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    Ok(reply(record(&row)?))
}

/// The role of administrator `id`, after checking the caller may change them (404 unknown; 403 a
/// `super_admin` changed by someone else; 400 the caller's own account unless `self_ok`).
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
        return Err(ApiError::forbidden(
            "you cannot do this to your own account",
        ));
    }
    Ok(role)
}

/// `PUT /api/admin2/administrators/{id}` body: the fields to change (absent or null: unchanged;
/// `status: 0` applied). Text is trimmed; a `password` is ignored.
#[web::limits]
#[derive(Debug, Default, Deserialize, ToSchema, Validate)]
pub struct AdministratorChange {
    /// Login name, 3 to 50 characters, unique.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        length(min = 3, max = 50, message = "must be 3 to 50 characters")
    )]
    pub username: Option<String>,
    /// Display name, at most 50 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 50, message = "must be 0 to 50 characters"))]
    pub real_name: Option<String>,
    /// E-mail address, at most 100 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub email: Option<String>,
    /// Phone number, at most 20 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 20, message = "must be 0 to 20 characters"))]
    pub phone: Option<String>,
    /// Avatar URL, at most 500 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 500, message = "must be 0 to 500 characters"))]
    pub avatar: Option<String>,
    /// Role code: an existing role; `super_admin` only by a `super_admin`.
    #[serde(default, deserialize_with = "lenient::text")]
    pub role: Option<String>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i64>,
}

/// Applies `change` to administrator `id` (`updated_at` set) and returns the row, `None` when no
/// administrator has that id. Named columns only.
pub(crate) async fn apply_change(
    state: &AppState,
    id: i64,
    change: AdministratorChange,
) -> Result<Option<AdministratorRecord>, ApiError> {
    let row: Option<String> = sqlx::query_scalar(
        "UPDATE administrators t SET updated_at = now(), \
         username = COALESCE($2, username), real_name = COALESCE($3, real_name), \
         email = COALESCE($4, email), phone = COALESCE($5, phone), \
         avatar = COALESCE($6, avatar), role = COALESCE($7, role), \
         status = COALESCE($8, status) WHERE id = $1 RETURNING to_jsonb(t)::text",
    )
    .bind(id)
    .bind(change.username)
    .bind(change.real_name)
    .bind(change.email)
    .bind(change.phone)
    .bind(change.avatar)
    .bind(change.role)
    .bind(change.status.map(|s| s as i16))
    .fetch_optional(&state.db)
    .await
    .map_err(unique_violation)?;
    row.map(|r| record(&r)).transpose()
}

/// Update an administrator
///
/// Present fields only; 400 for the caller's own account.
#[utoipa::path(put, path = "/api/admin2/administrators/{id}", tag = "administrators",
    params(("id" = i64, Path, description = "administrator id")),
    request_body = AdministratorChange,
    responses(
        (status = 200, description = "the changed administrator", body = Envelope<AdministratorRecord>),
        (status = 400, description = "a field is not of the documented shape", body = Problem),
        (status = 403, description = "the caller's own account, a super_admin changed by another, or super_admin granted by one who is not", body = Problem),
        (status = 409, description = "a duplicate username", body = Problem),
        (status = 422, description = "an unknown role", body = Problem)))]
pub async fn update_admin(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    web::extract::Json(req): web::extract::Json<AdministratorChange>,
) -> Reply<AdministratorRecord> {
    admin_target(&state, &caller, id, false).await?;
    req.validate()?;
    if let Some(r) = &req.role {
        grantable_role(&state, &caller, r).await?;
    }
    let row = apply_change(&state, id, req)
        .await?
        .ok_or_else(|| ApiError::not_found("administrator"))?;
    Ok(reply(row))
}

/// Delete an administrator
///
/// 400 for the caller or a `super_admin`.
#[utoipa::path(delete, path = "/api/admin2/administrators/{id}", tag = "administrators",
    params(("id" = i64, Path, description = "administrator id")),
    responses(
        (status = 200, description = "`deleted`", body = Message),
        (status = 403, description = "the caller's own account or a super_admin", body = Problem)))]
pub async fn delete_admin(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> ApiResult<Json<Message>> {
    let role = admin_target(&state, &caller, id, false).await?;
    if role == SUPER_ADMIN {
        return Err(ApiError::forbidden("a super_admin cannot be deleted"));
    }
    sqlx::query("DELETE FROM administrators WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(message("deleted"))
}

/// A new password set by an administrator.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct PasswordReset {
    /// The new password, 6 to 64 characters.
    #[serde(default)]
    #[validate(
        required(message = "required"),
        length(min = 6, max = 64, message = "must be 6 to 64 characters")
    )]
    pub password: Option<String>,
}

/// Reset an administrator's password
///
/// 403 for a `super_admin` other than the caller.
#[utoipa::path(post, path = "/api/admin2/administrators/{id}/password", tag = "administrators",
    params(("id" = i64, Path, description = "administrator id")),
    request_body = PasswordReset,
    responses(
        (status = 200, description = "`password reset`", body = Message),
        (status = 400, description = "an invalid password", body = Problem),
        (status = 403, description = "another super_admin", body = Problem)))]
pub async fn reset_admin_password(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    web::extract::Json(req): web::extract::Json<PasswordReset>,
) -> ApiResult<Json<Message>> {
    let role = admin_target(&state, &caller, id, true).await?;
    if role == SUPER_ADMIN && id != caller.admin_id {
        return Err(ApiError::forbidden(
            "a super_admin's password cannot be reset",
        ));
    }
    req.validate()?;
    sqlx::query("UPDATE administrators SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash_password(req.password.as_deref().unwrap_or_default()).await?)
        .execute(&state.db)
        .await?;
    Ok(message("password reset"))
}

/// An account's new status.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct StatusChange {
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "lenient::int")]
    #[validate(
        required(message = "required"),
        range(min = 0, max = 1, message = "must be 0 or 1")
    )]
    pub status: Option<i64>,
}

/// Enable or disable an administrator
///
/// `status: 0` disables; 400 for the caller or a `super_admin`.
#[utoipa::path(put, path = "/api/admin2/administrators/{id}/status", tag = "administrators",
    params(("id" = i64, Path, description = "administrator id")),
    request_body = StatusChange,
    responses(
        (status = 200, description = "`status changed`", body = Message),
        (status = 400, description = "an invalid status", body = Problem),
        (status = 403, description = "the caller's own account or a super_admin", body = Problem)))]
pub async fn admin_status(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    web::extract::Json(req): web::extract::Json<StatusChange>,
) -> ApiResult<Json<Message>> {
    let role = admin_target(&state, &caller, id, false).await?;
    if role == SUPER_ADMIN {
        return Err(ApiError::forbidden("a super_admin cannot be disabled"));
    }
    req.validate()?;
    sqlx::query("UPDATE administrators SET status = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(req.status.unwrap_or_default() as i16)
        .execute(&state.db)
        .await?;
    Ok(message("status changed"))
}
