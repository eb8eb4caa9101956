//! Notifications (contract b.1 #33–#36): the `notifications` read model that the notifications
//! projector builds from events, plus `direct_notifications` (facts that are not events, such as
//! an application's review), with each user's read / deleted marks from `notification_marks`.
//! The API never writes the projection's table, so a rebuild or an audit replay keeps every
//! notification, mark and deletion.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::Problem;

use crate::user::state::UserState;
use crate::{paging, ApiError, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(read_all))
        .routes(routes!(read))
        .routes(routes!(remove))
}

/// The kinds of notification.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    /// About an order.
    Order,
    /// About a payment.
    Payment,
    /// About a review.
    Review,
    /// From the platform (an application's review, say).
    System,
    /// About a chat session.
    Chat,
}

/// A notification kind filter: empty (all) or one of [`NotificationKind`].
fn kind_filter(kind: &str) -> Result<(), ValidationError> {
    if matches!(
        kind,
        "" | "order" | "payment" | "review" | "system" | "chat"
    ) {
        return Ok(());
    }
    Err(ValidationError::new("one_of")
        .with_message("one of order, payment, review, system, chat".into()))
}

/// `GET /api/notification/list` query: `is_read` `true` → read only; any other non-empty
/// value → unread only (contract b.1 #33).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Notifications per page, 1 to 100 (default 10).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Only notifications of this kind; empty or absent: all.
    #[serde(default)]
    #[param(value_type = Option<NotificationKind>)]
    #[validate(custom(function = "kind_filter"))]
    pub r#type: String,
    /// `true`: read ones only; any other non-empty value (`false`): unread ones only; empty or
    /// absent: all.
    #[serde(default)]
    #[param(value_type = Option<String>, example = "false")]
    pub is_read: String,
}

/// A notification with the caller's read mark.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Notification {
    /// The notification's id.
    pub id: i64,
    /// Whom it is for.
    pub user_id: i64,
    /// `order`, `payment`, `review`, `system` or `chat`.
    #[serde(rename = "type")]
    #[schema(value_type = NotificationKind)]
    pub kind: String,
    /// The severity: `info` by default, or `success`, `warning`, ….
    pub level: String,
    /// The title.
    pub title: String,
    /// The text.
    pub content: String,
    /// What it is about, as JSON text (`{"order_id": 12}`, say; may be empty).
    pub extra_data: String,
    /// Whether the caller read it.
    pub is_read: bool,
    /// When the caller read it (RFC 3339), or null.
    pub read_time: Option<DateTime<Utc>>,
    /// When it was written (RFC 3339).
    pub created_at: DateTime<Utc>,
}

/// A page of the caller's notifications.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationList {
    /// The notifications, newest first.
    pub notifications: Vec<Notification>,
    /// How many match the filters.
    pub total: i64,
    /// How many of the caller's notifications are unread (regardless of the filters).
    pub unread_count: i64,
}

/// `GET /api/notification/list` → `{notifications, total, unread_count}`, newest first.
#[utoipa::path(
    get,
    path = "/api/notification/list",
    operation_id = "notifications_list",
    tag = "notifications",
    summary = "Notifications with the unread count",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of notifications", body = Envelope<NotificationList>),
        (status = 400, description = "Invalid paging or type", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply<NotificationList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
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
    let notifications = rows
        .iter()
        .map(|r| Notification {
            id: r.get("id"),
            user_id: r.get("user_id"),
            kind: r.get("type"),
            level: r.get("level"),
            title: r.get("title"),
            content: r.get("content"),
            extra_data: r.get("extra_data"),
            is_read: r.get("is_read"),
            read_time: r.get("read_time"),
            created_at: r.get("created_at"),
        })
        .collect();
    Ok(reply(NotificationList {
        notifications,
        total,
        unread_count: unread,
    }))
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
#[utoipa::path(
    post,
    path = "/api/notification/{id}/read",
    operation_id = "notifications_read",
    tag = "notifications",
    summary = "Mark one as read (owner only)",
    params(("id" = i64, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "`msg` \"marked as read\" (also when it already was)", body = Message),
        (status = 400, description = "An invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's notification", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or deleted notification", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn read(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Message>> {
    owned(&state, &user, id).await?;
    sqlx::query(
        "INSERT INTO notification_marks (notification_id, user_id, read_time) VALUES ($1, $2, now()) \
         ON CONFLICT (notification_id) DO UPDATE SET read_time = COALESCE(notification_marks.read_time, EXCLUDED.read_time)",
    )
    .bind(id)
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    Ok(message("marked as read"))
}

/// How many notifications an operation changed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NotificationsUpdated {
    /// How many were unread and are now read.
    pub updated: u64,
}

/// `POST /api/notification/read-all` → `{updated}` (how many were unread).
#[utoipa::path(
    post,
    path = "/api/notification/read-all",
    operation_id = "notifications_read_all",
    tag = "notifications",
    summary = "Mark all as read",
    responses(
        (status = 200, description = "How many were unread", body = Envelope<NotificationsUpdated>),
    ),
    security(("bearer" = []))
)]
pub async fn read_all(
    State(state): State<AppState>,
    user: AuthUser,
) -> Reply<NotificationsUpdated> {
    let done = sqlx::query(&format!(
        "INSERT INTO notification_marks (notification_id, user_id, read_time) \
         SELECT id, user_id, now() FROM ({VISIBLE}) n WHERE NOT is_read \
         ON CONFLICT (notification_id) DO UPDATE SET read_time = EXCLUDED.read_time \
         WHERE notification_marks.read_time IS NULL"
    ))
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    Ok(reply(NotificationsUpdated {
        updated: done.rows_affected(),
    }))
}

/// `DELETE /api/notification/:id` → none; owner only. The notification disappears for the user
/// (a deletion mark: the projection's rows are the log's, and come back on a rebuild only as
/// the log has them — the mark keeps them hidden).
#[utoipa::path(
    delete,
    path = "/api/notification/{id}",
    operation_id = "notifications_remove",
    tag = "notifications",
    summary = "Delete one (owner only)",
    params(("id" = i64, Path, description = "The notification's id")),
    responses(
        (status = 200, description = "`msg` \"deleted\"", body = Message),
        (status = 400, description = "An invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's notification", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or already deleted notification", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Message>> {
    owned(&state, &user, id).await?;
    sqlx::query(
        "INSERT INTO notification_marks (notification_id, user_id, deleted_at) VALUES ($1, $2, now()) \
         ON CONFLICT (notification_id) DO UPDATE SET deleted_at = COALESCE(notification_marks.deleted_at, EXCLUDED.deleted_at)",
    )
    .bind(id)
    .bind(user.user_id)
    .execute(&state.db)
    .await?;
    Ok(message("deleted"))
}
