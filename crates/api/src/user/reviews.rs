//! Reviews (contract b.1 #14, #15): one per completed order, written as `OrderReviewed` on the
//! `Order` aggregate (which holds the one-per-order rule) and read from the `reviews` read model.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use domain::{Order, OrderCommand};
use eventstore::Actor;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::user::orders::placement::request_meta;
use crate::{ok, paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/counselor/{id}/reviews", get(list))
        .route("/api/counselor/review", post(create))
}

/// `GET /api/counselor/:id/reviews` query.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page: Option<i64>,
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    pub page_size: Option<i64>,
}

/// `GET /api/counselor/:id/reviews` → `{reviews: [{id, order_id, user_id, counselor_id, rating,
/// comment, is_anonymous, created_at, user{id, username, avatar}}], total}`, visible ones,
/// newest first. An anonymous review hides the user (`username` "匿名用户", no avatar). 404 for
/// an unknown counselor.
pub async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 10)?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM counselors WHERE id = $1")
        .bind(id)
        .fetch_optional(&state.db)
        .await?;
    if exists.is_none() {
        return Err(ApiError::not_found("counselor"));
    }
    let rows = sqlx::query(
        "SELECT r.*, u.username, u.avatar FROM reviews r JOIN users u ON u.id = r.user_id \
         WHERE r.counselor_id = $1 AND r.is_visible ORDER BY r.id DESC LIMIT $2 OFFSET $3",
    )
    .bind(id)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM reviews WHERE counselor_id = $1 AND is_visible")
            .bind(id)
            .fetch_one(&state.db)
            .await?;
    let reviews: Vec<Value> = rows
        .iter()
        .map(|r| {
            let anonymous: bool = r.get("is_anonymous");
            json!({
                "id": r.get::<i64, _>("id"),
                "order_id": r.get::<i64, _>("order_id"),
                "user_id": if anonymous { 0 } else { r.get::<i64, _>("user_id") },
                "counselor_id": r.get::<i64, _>("counselor_id"),
                "rating": r.get::<i16, _>("rating"),
                "comment": r.get::<String, _>("comment"),
                "is_anonymous": anonymous,
                "is_visible": true,
                "created_at": r.get::<DateTime<Utc>, _>("created_at"),
                "updated_at": r.get::<DateTime<Utc>, _>("updated_at"),
                "user": if anonymous {
                    json!({ "id": 0, "username": "匿名用户", "avatar": "" })
                } else {
                    json!({
                        "id": r.get::<i64, _>("user_id"),
                        "username": r.get::<String, _>("username"),
                        "avatar": r.get::<String, _>("avatar"),
                    })
                },
            })
        })
        .collect();
    Ok(ok(json!({ "reviews": reviews, "total": total })))
}

/// `POST /api/counselor/review` body (contract b.1 #15).
#[derive(Debug, Deserialize)]
pub struct ReviewRequest {
    pub order_id: i64,
    #[serde(default)]
    pub counselor_id: i64,
    pub rating: i16,
    pub comment: String,
    #[serde(default)]
    pub is_anonymous: bool,
}

/// `POST /api/counselor/review` → `{order_id, rating}`. The order must be the caller's and
/// completed, and not yet reviewed (400); `counselor_id`, when sent, must be the order's.
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> ApiResult<Json<Value>> {
    if req.order_id <= 0 {
        return Err(ApiError::field("order_id", "must be a positive id"));
    }
    if !(1..=5).contains(&req.rating) {
        return Err(ApiError::field("rating", "must be 1 to 5"));
    }
    let comment = req.comment.trim().to_string();
    if comment.is_empty() {
        return Err(ApiError::field("comment", "must not be empty"));
    }
    if comment.chars().count() > 1000 {
        return Err(ApiError::field("comment", "at most 1000 characters"));
    }
    let (order, version) = state.bus.load::<Order>(&req.order_id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    if order.user_id != user.user_id {
        return Err(ApiError::forbidden("not your order"));
    }
    if req.counselor_id != 0 && req.counselor_id != order.counselor_id {
        return Err(ApiError::field(
            "counselor_id",
            "is not the order's counselor",
        ));
    }
    let command = OrderCommand::Review {
        user_id: user.user_id,
        rating: req.rating,
        comment,
        is_anonymous: req.is_anonymous,
        reviewed_at: Utc::now(),
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<Order>(&req.order_id.to_string(), command, &meta)
        .await?;
    state.settle("orders", committed.stream_sequence).await;
    Ok(ok(
        json!({ "order_id": req.order_id, "rating": req.rating }),
    ))
}
