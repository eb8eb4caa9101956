//! Users as the back office manages them (contract c.3): list, create, update, soft delete,
//! reset a password. Disabling or deleting a user revokes their tokens on every node.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::Problem;
use web::extract::{Path, Query};

use super::administrators::PasswordReset;
use crate::admin::common::{
    lenient, listed, page_rows, typed_row, unique_violation, ListQuery, Listed,
};
use crate::auth::hash_password;
use crate::{ApiError, ApiResult, AppState};

const USER_COLS: &str =
    "id, created_at, updated_at, deleted_at, username, email, phone, avatar, status";

/// A user as the back office lists them (contract c.9 admin User). Fields in the order Postgres
/// renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminUser {
    /// User id.
    pub id: i64,
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
    /// Registration time, RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Soft-deletion time, RFC 3339; null for a live account.
    #[schema(format = DateTime)]
    pub deleted_at: Option<String>,
    /// Last change, RFC 3339.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A user's whole row as a change returns it: the `AdminUser` and when their tokens were last
/// revoked.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AdminUserRecord {
    /// The user.
    #[serde(flatten)]
    pub user: AdminUser,
    /// Tokens issued at or before this instant (RFC 3339) are revoked; null when never.
    #[schema(format = DateTime)]
    pub tokens_valid_after: Option<String>,
}

/// The changed row of `users` (`RETURNING to_jsonb(t)::text`), without its hash or admin flag.
fn record(text: &str) -> Result<AdminUserRecord, ApiError> {
    typed_row(text, &["password_hash", "is_admin"])
}

/// A page of users.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserPage {
    /// The page's users.
    pub users: Vec<AdminUser>,
    /// The same rows (the key the client reads).
    pub list: Vec<AdminUser>,
    /// Live users matching the filter.
    pub total: i64,
}

/// List users
///
/// Live accounts, filtered by `keyword` (username, e-mail, phone) and `status`, newest first.
#[utoipa::path(get, path = "/api/admin/users", tag = "users",
    params(ListQuery),
    responses(
        (status = 200, description = "one page", body = Listed<UserPage>),
        (status = 400, description = "a bad paging or filter parameter", body = Problem)))]
pub async fn list_users(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Listed<UserPage>>> {
    let (limit, offset, ..) = q.paging(20)?;
    let keyword = q.keyword_pattern();
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE deleted_at IS NULL");
        if let Some(k) = &keyword {
            qb.push(" AND (username ILIKE ").push_bind(k.clone());
            qb.push(" OR email ILIKE ").push_bind(k.clone());
            qb.push(" OR phone ILIKE ").push_bind(k.clone()).push(")");
        }
        if let Some(s) = q.status {
            qb.push(" AND status = ").push_bind(s);
        }
    };
    let (list, total): (Vec<AdminUser>, i64) =
        page_rows(&state, USER_COLS, "users", filter, "id DESC", limit, offset).await?;
    Ok(listed(UserPage {
        users: list.clone(),
        list,
        total,
    }))
}

/// `POST /api/admin/users` body. Text is trimmed.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct NewUser {
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

/// Create a user
///
/// 400 on a duplicate username.
#[utoipa::path(post, path = "/api/admin/users", tag = "users",
    request_body = NewUser,
    responses(
        (status = 200, description = "the new user", body = Envelope<AdminUserRecord>),
        (status = 400, description = "an invalid field or a duplicate username", body = Problem)))]
pub async fn create_user(
    State(state): State<AppState>,
    web::extract::Json(req): web::extract::Json<NewUser>,
) -> Reply<AdminUserRecord> {
    req.validate()?;
    let hash = hash_password(req.password.as_deref().unwrap_or_default()).await?;
    let row: String = sqlx::query_scalar(
        "INSERT INTO users (username, password_hash, status, email, phone, avatar) \
         VALUES ($1, $2, $3, COALESCE($4, ''), COALESCE($5, ''), COALESCE($6, '')) \
         RETURNING to_jsonb(users.*)::text",
    )
    .bind(req.username)
    .bind(hash)
    .bind(req.status.unwrap_or(1) as i16)
    .bind(req.email)
    .bind(req.phone)
    .bind(req.avatar)
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    Ok(reply(record(&row)?))
}

/// `PUT /api/admin/users/{id}` body: the fields to change (absent or null: unchanged;
/// `status: 0` applied). Text is trimmed.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct UserChange {
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
    /// 1 enabled, 0 disabled (revokes the user's tokens).
    #[serde(default, deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i64>,
}

/// 404 unless user `id` exists and is not deleted.
async fn live_user(state: &AppState, id: i64) -> Result<(), ApiError> {
    let live: Option<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = $1 AND deleted_at IS NULL")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    live.map(|_| ()).ok_or_else(|| ApiError::not_found("user"))
}

/// Revokes every token of user `id` on every node (a disabled or deleted account).
async fn revoke_user(state: &AppState, id: i64) {
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
}

/// Update a user
///
/// Present fields only; 400 when nothing is to change.
#[utoipa::path(put, path = "/api/admin/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "user id")),
    request_body = UserChange,
    responses(
        (status = 200, description = "the changed user", body = Envelope<AdminUserRecord>),
        (status = 400, description = "an invalid field or nothing to change", body = Problem)))]
pub async fn update_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    web::extract::Json(req): web::extract::Json<UserChange>,
) -> Reply<AdminUserRecord> {
    req.validate()?;
    if req.email.is_none() && req.phone.is_none() && req.avatar.is_none() && req.status.is_none() {
        return Err(ApiError::refused("nothing to change"));
    }
    live_user(&state, id).await?;
    let row: Option<String> = sqlx::query_scalar(
        "UPDATE users t SET updated_at = now(), email = COALESCE($2, email), \
         phone = COALESCE($3, phone), avatar = COALESCE($4, avatar), \
         status = COALESCE($5, status) WHERE id = $1 RETURNING to_jsonb(t)::text",
    )
    .bind(id)
    .bind(req.email)
    .bind(req.phone)
    .bind(req.avatar)
    .bind(req.status.map(|s| s as i16))
    .fetch_optional(&state.db)
    .await
    .map_err(unique_violation)?;
    let row = record(&row.ok_or_else(|| ApiError::not_found("user"))?)?;
    // A disabled account's tokens stop working on every node.
    revoke_user(&state, id).await;
    Ok(reply(row))
}

/// Delete a user (soft)
///
/// `deleted_at` set, status 0; the user's tokens stop working.
#[utoipa::path(delete, path = "/api/admin/users/{id}", tag = "users",
    params(("id" = i64, Path, description = "user id")),
    responses((status = 200, description = "`deleted`", body = Message)))]
pub async fn delete_user(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Message>> {
    let done = sqlx::query(
        "UPDATE users SET deleted_at = now(), status = 0, updated_at = now() WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("user"));
    }
    revoke_user(&state, id).await;
    Ok(message("deleted"))
}

/// Reset a user's password
#[utoipa::path(post, path = "/api/admin/users/{id}/password", tag = "users",
    params(("id" = i64, Path, description = "user id")),
    request_body = PasswordReset,
    responses(
        (status = 200, description = "`password reset`", body = Message),
        (status = 400, description = "an invalid password", body = Problem)))]
pub async fn reset_user_password(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    web::extract::Json(req): web::extract::Json<PasswordReset>,
) -> ApiResult<Json<Message>> {
    req.validate()?;
    let hash = hash_password(req.password.as_deref().unwrap_or_default()).await?;
    live_user(&state, id).await?;
    sqlx::query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1")
        .bind(id)
        .bind(hash)
        .execute(&state.db)
        .await?;
    Ok(message("password reset"))
}
