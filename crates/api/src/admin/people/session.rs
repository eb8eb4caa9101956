//! The caller's own session (contract c.1): their administrator row, permission codes, logout,
//! password and profile. MyChat's client reaches several of these under more than one path; each
//! path is an operation of its own here, answered by the same code.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::Problem;

use super::administrators::{
    apply_change, Administrator, AdministratorChange, AdministratorRecord, ADMIN_COLS,
};
use crate::admin::common::{lenient, typed_one, Caller};
use crate::admin::guard::role_permissions;
use crate::admin::table::SUPER_ADMIN;
use crate::auth::{hash_password, verify_password};
use crate::{ApiError, ApiResult, AppState};

async fn own_row(state: &AppState, caller: &Caller) -> Reply<Administrator> {
    let sql = format!(
        "SELECT to_jsonb(t)::text FROM (SELECT {ADMIN_COLS} FROM administrators WHERE id = $1) t"
    );
    Ok(reply(
        typed_one(state, &sql, caller.admin_id, "administrator").await?,
    ))
}

/// The caller's administrator row
///
/// The Administrator (contract c.9).
#[utoipa::path(get, path = "/api/admin2/info", tag = "auth",
    responses((status = 200, description = "the caller", body = Envelope<Administrator>)))]
pub async fn info(State(state): State<AppState>, caller: Caller) -> Reply<Administrator> {
    own_row(&state, &caller).await
}

/// The caller's administrator row
///
/// The Administrator (contract c.9); the same as `GET /api/admin2/info`.
#[utoipa::path(get, path = "/api/admin/user/info", tag = "auth",
    responses((status = 200, description = "the caller", body = Envelope<Administrator>)))]
pub async fn user_info(State(state): State<AppState>, caller: Caller) -> Reply<Administrator> {
    own_row(&state, &caller).await
}

/// The caller's profile
///
/// The Administrator (contract c.9); the same as `GET /api/admin2/info`.
#[utoipa::path(get, path = "/api/admin/profile", tag = "auth",
    responses((status = 200, description = "the caller", body = Envelope<Administrator>)))]
pub async fn profile(State(state): State<AppState>, caller: Caller) -> Reply<Administrator> {
    own_row(&state, &caller).await
}

/// The caller's permission codes and roles.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Permissions {
    /// The role's enabled permission codes (every code for `super_admin`).
    pub permissions: Vec<String>,
    /// The role code; `super_admin` also carries `admin`, so that the client's
    /// `roles.includes('admin')` lets it into every screen (contract f.10).
    pub roles: Vec<String>,
}

async fn own_permissions(state: &AppState, caller: &Caller) -> Reply<Permissions> {
    let codes = role_permissions(state, &caller.role).await?;
    let roles = if caller.role == SUPER_ADMIN {
        vec![SUPER_ADMIN.to_string(), "admin".to_string()]
    } else {
        vec![caller.role.clone()]
    };
    Ok(reply(Permissions {
        permissions: codes,
        roles,
    }))
}

/// The caller's permission codes and roles
#[utoipa::path(get, path = "/api/admin2/permissions", tag = "auth",
    responses((status = 200, description = "codes and roles", body = Envelope<Permissions>)))]
pub async fn permissions(State(state): State<AppState>, caller: Caller) -> Reply<Permissions> {
    own_permissions(&state, &caller).await
}

/// The caller's permission codes and roles
///
/// The same as `GET /api/admin2/permissions`.
#[utoipa::path(get, path = "/api/admin/user/permissions", tag = "auth",
    responses((status = 200, description = "codes and roles", body = Envelope<Permissions>)))]
pub async fn user_permissions(State(state): State<AppState>, caller: Caller) -> Reply<Permissions> {
    own_permissions(&state, &caller).await
}

/// Revokes the presented token (`revoked_tokens`, checked by every admin route); the
/// logout is recorded in the audit log.
async fn revoke(state: &AppState, caller: &Caller) -> ApiResult<Json<Message>> {
    sqlx::query(
        "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, to_timestamp($2)) \
         ON CONFLICT DO NOTHING",
    )
    .bind(&caller.jti)
    .bind(caller.expires_at as f64)
    .execute(&state.db)
    .await?;
    Ok(message("logged out"))
}

/// Log out
///
/// The presented token stops working on every admin route.
#[utoipa::path(post, path = "/api/admin2/logout", tag = "auth",
    responses((status = 200, description = "`logged out`", body = Message)))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Message>> {
    revoke(&state, &caller).await
}

/// Log out
///
/// The same as `POST /api/admin2/logout`.
#[utoipa::path(post, path = "/api/admin/logout", tag = "auth",
    responses((status = 200, description = "`logged out`", body = Message)))]
pub async fn admin_logout(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Message>> {
    revoke(&state, &caller).await
}

/// The caller's password change.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct PasswordChange {
    /// The current password.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(required(message = "required"), length(min = 1, message = "required"))]
    pub old_password: Option<String>,
    /// The new password, 6 to 64 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(
        required(message = "required"),
        length(min = 6, max = 64, message = "must be 6 to 64 characters")
    )]
    pub new_password: Option<String>,
}

async fn change_own_password(
    state: &AppState,
    caller: &Caller,
    req: PasswordChange,
) -> ApiResult<Json<Message>> {
    req.validate()?;
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM administrators WHERE id = $1")
        .bind(caller.admin_id)
        .fetch_one(&state.db)
        .await?;
    if !verify_password(req.old_password.as_deref().unwrap_or_default(), &hash).await {
        // Of the documented shape, refused by the stored password.
        return Err(ApiError::unprocessable("old_password", "wrong password"));
    }
    let hash = hash_password(req.new_password.as_deref().unwrap_or_default()).await?;
    // Every token issued at or before this second is revoked (tokens carry `iat` in
    // whole seconds); the administrator logs in again.
    sqlx::query(
        "UPDATE administrators SET password_hash = $2, updated_at = now(), \
         tokens_valid_after = to_timestamp(floor(extract(epoch FROM now()))) WHERE id = $1",
    )
    .bind(caller.admin_id)
    .bind(hash)
    .execute(&state.db)
    .await?;
    Ok(message("password changed"))
}

/// Change the caller's password
///
/// 400 on a wrong old password. Every token of the caller stops working; they log in again.
#[utoipa::path(post, path = "/api/admin2/password", tag = "auth",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "`password changed`", body = Message),
        (status = 400, description = "a wrong old password or an invalid new one", body = Problem)))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    web::extract::Json(req): web::extract::Json<PasswordChange>,
) -> ApiResult<Json<Message>> {
    change_own_password(&state, &caller, req).await
}

/// Change the caller's password
///
/// The same as `POST /api/admin2/password`.
#[utoipa::path(post, path = "/api/admin/user/password", tag = "auth",
    request_body = PasswordChange,
    responses(
        (status = 200, description = "`password changed`", body = Message),
        (status = 400, description = "a wrong old password or an invalid new one", body = Problem)))]
pub async fn user_password(
    State(state): State<AppState>,
    caller: Caller,
    web::extract::Json(req): web::extract::Json<PasswordChange>,
) -> ApiResult<Json<Message>> {
    change_own_password(&state, &caller, req).await
}

/// The caller's profile change (absent or null fields unchanged; text trimmed).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct ProfileChange {
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
}

async fn change_profile(
    state: &AppState,
    caller: &Caller,
    req: ProfileChange,
) -> Reply<AdministratorRecord> {
    req.validate()?;
    let change = AdministratorChange {
        real_name: req.real_name,
        email: req.email,
        phone: req.phone,
        avatar: req.avatar,
        ..AdministratorChange::default()
    };
    let row = apply_change(state, caller.admin_id, change)
        .await?
        .ok_or_else(|| ApiError::not_found("administrator"))?;
    Ok(reply(row))
}

/// Update the caller's profile
#[utoipa::path(put, path = "/api/admin2/profile", tag = "auth",
    request_body = ProfileChange,
    responses(
        (status = 200, description = "the changed administrator", body = Envelope<AdministratorRecord>),
        (status = 400, description = "an invalid field", body = Problem)))]
pub async fn update_profile(
    State(state): State<AppState>,
    caller: Caller,
    web::extract::Json(req): web::extract::Json<ProfileChange>,
) -> Reply<AdministratorRecord> {
    change_profile(&state, &caller, req).await
}

/// Update the caller's profile
///
/// The same as `PUT /api/admin2/profile`.
#[utoipa::path(put, path = "/api/admin/profile", tag = "auth",
    request_body = ProfileChange,
    responses(
        (status = 200, description = "the changed administrator", body = Envelope<AdministratorRecord>),
        (status = 400, description = "an invalid field", body = Problem)))]
pub async fn update_admin_profile(
    State(state): State<AppState>,
    caller: Caller,
    web::extract::Json(req): web::extract::Json<ProfileChange>,
) -> Reply<AdministratorRecord> {
    change_profile(&state, &caller, req).await
}
