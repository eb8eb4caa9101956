//! Notifications (contract b.1 #33–#36): the `notifications` read model that the notifications
//! projector builds from events, plus `direct_notifications` (facts that are not events, such as
//! an application's review), with each user's read / deleted marks from `notification_marks`.
//! The API never writes the projection's table, so a rebuild or an audit replay keeps every
//! notification, mark and deletion.

use axum::extract::State;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::{ok, paging, ApiError, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notification/list", get(list))
        .route("/api/notification/read-all", post(read_all))
        .route("/api/notification/{id}/read", post(read))
        .route("/api/notification/{id}", delete(remove))
}

/// `GET /api/notification/list` query: `is_read` `true` → read only; any other non-empty
/// value → unread only (contract b.1 #33).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page_size: Option<i64>,
    #[serde(default)]
    pub r#type: String,
    #[serde(default)]
    pub is_read: String,
}

/// `GET /api/notification/list` → `{notifications, total, unread_count}`, newest first.
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    if !matches!(
        q.r#type.as_str(),
        "" | "order" | "payment" | "review" | "system" | "chat"
    ) {
        return Err(ApiError::field(
            "type",
            "one of order, payment, review, system, chat",
        ));
    }
    let is_read: Option<bool> = match q.is_read.as_str() {
        "" => None,
        "true" => Some(true),
        _ => Some(false),
    };
    let filter = "($2 = '' OR type = $2) AND ($3::boolean IS NULL OR is_read = $3)";
    let rows = sqlx::query(&format!(
        "SELECT * FROM ({VISIBLE}) n WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
    ))
    .bind(user.user_id)
    .bind(&q.r#type)
    .bind(is_read)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM ({VISIBLE}) n WHERE {filter}"
    ))
    .bind(user.user_id)
    .bind(&q.r#type)
    .bind(is_read)
    .fetch_one(&state.db)
    .await?;
    let unread: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM ({VISIBLE}) n WHERE NOT is_read"
    ))
    .bind(user.user_id)
    .fetch_one(&state.db)
    .await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<i64, _>("id"),
                "user_id": r.get::<i64, _>("user_id"),
                "type": r.get::<String, _>("type"),
                "level": r.get::<String, _>("level"),
                "title": r.get::<String, _>("title"),
                "content": r.get::<String, _>("content"),
                "extra_data": r.get::<String, _>("extra_data"),
                "is_read": r.get::<bool, _>("is_read"),
                "read_time": r.get::<Option<DateTime<Utc>>, _>("read_time"),
                "created_at": r.get::<DateTime<Utc>, _>("created_at"),
            })
        })
        .collect();
    Ok(ok(
        json!({ "notifications": list, "total": total, "unread_count": unread }),
    ))
}

/// The notifications user `$1` sees: the projection's and the direct ones, without those they
/// deleted, with their read marks (`is_read`, `read_time`).
const VISIBLE: &str = "SELECT n.id, n.user_id, n.type, n.level, n.title, n.content, n.extra_data, \
     n.created_at, m.read_time IS NOT NULL AS is_read, m.read_time FROM \
     (SELECT id, user_id, type, level, title, content, extra_data, created_at FROM notifications WHERE user_id = $1 \
      UNION ALL \
      SELECT id, user_id, type, level, title, content, extra_data, created_at FROM direct_notifications WHERE user_id = $1) n \
     LEFT JOIN notification_marks m ON m.notification_id = n.id WHERE m.deleted_at IS NULL";

/// The owner of notification `id` when it is visible: 404 unknown or deleted, 403 another
/// user's.
async fn owned(state: &AppState, user: &AuthUser, id: i64) -> Result<(), ApiError> {
    let owner: Option<i64> = sqlx::query_scalar(
        "SELECT n.user_id FROM (SELECT id, user_id FROM notifications WHERE id = $1 \
         UNION ALL SELECT id, user_id FROM direct_notifications WHERE id = $1) n \
         LEFT JOIN notification_marks m ON m.notification_id = n.id WHERE m.deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(&state.db)
    .await?;
    match owner {
        None => Err(ApiError::not_found("notification")),
        Some(o) if o != user.user_id => Err(ApiError::forbidden("not your notification")),
        Some(_) => Ok(()),
    }
}

/// `POST /api/notification/:id/read` → none; owner only. The mark is the user's, kept in
/// `notification_marks`.
pub async fn read(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    owned(&state, &user, id).await?;
    sqlx::query(
        "INSERT INTO notification_marks (notification_id, user_id, read_time) VALUES ($1, $2, now()) \
         ON CONFLICT (notification_id) DO UPDATE SET read_time = COALESCE(notification_marks.read_time, EXCLUDED.read_time)",
    )
    .bind(id)
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    Ok(crate::ok_msg("marked as read"))
}

/// `POST /api/notification/read-all` → `{updated}` (how many were unread).
pub async fn read_all(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let done = sqlx::query(&format!(
        "INSERT INTO notification_marks (notification_id, user_id, read_time) \
         SELECT id, user_id, now() FROM ({VISIBLE}) n WHERE NOT is_read \
         ON CONFLICT (notification_id) DO UPDATE SET read_time = EXCLUDED.read_time \
         WHERE notification_marks.read_time IS NULL"
    ))
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    Ok(ok(json!({ "updated": done.rows_affected() })))
}

/// `DELETE /api/notification/:id` → none; owner only. The notification disappears for the user
/// (a deletion mark: the projection's rows are the log's, and come back on a rebuild only as
/// the log has them — the mark keeps them hidden).
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    owned(&state, &user, id).await?;
    sqlx::query(
        "INSERT INTO notification_marks (notification_id, user_id, deleted_at) VALUES ($1, $2, now()) \
         ON CONFLICT (notification_id) DO UPDATE SET deleted_at = COALESCE(notification_marks.deleted_at, EXCLUDED.deleted_at)",
    )
    .bind(id)
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    Ok(crate::ok_msg("deleted"))
}
