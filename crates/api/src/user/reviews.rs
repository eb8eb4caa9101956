//! Reviews (contract b.1 #14, #15): one per completed order, written as `OrderReviewed` on the
//! `Order` aggregate (which holds the one-per-order rule) and read from the `reviews` read model.

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use domain::{Order, OrderCommand};
use eventstore::Actor;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::user::orders::placement::request_meta;
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(create))
}

/// `GET /api/counselor/:id/reviews` query.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Reviews per page, 1 to 100 (default 10).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
}

/// The author of a review as shown: the user, or for an anonymous review id 0, username
/// "匿名用户" and no avatar.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewAuthor {
    /// The user's id (0 when anonymous).
    pub id: i64,
    /// The user's username ("匿名用户" when anonymous).
    pub username: String,
    /// The user's avatar URL (empty when anonymous).
    pub avatar: String,
}

/// A visible review.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Review {
    /// The review's id.
    pub id: i64,
    /// The reviewed order's id.
    pub order_id: i64,
    /// The author's id (0 when anonymous).
    pub user_id: i64,
    /// The counselor's id.
    pub counselor_id: i64,
    /// 1 to 5.
    #[schema(minimum = 1, maximum = 5)]
    pub rating: i16,
    /// The text.
    pub comment: String,
    /// Whether the author is hidden.
    pub is_anonymous: bool,
    /// Always true (only visible reviews are listed).
    pub is_visible: bool,
    /// When it was written (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// When it last changed (RFC 3339).
    pub updated_at: DateTime<Utc>,
    /// The author as shown.
    pub user: ReviewAuthor,
}

/// A page of a counselor's reviews.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewList {
    /// The reviews, newest first.
    pub reviews: Vec<Review>,
    /// How many visible reviews the counselor has.
    pub total: i64,
}

/// `GET /api/counselor/:id/reviews` → `{reviews: [{id, order_id, user_id, counselor_id, rating,
/// comment, is_anonymous, created_at, user{id, username, avatar}}], total}`, visible ones,
/// newest first. An anonymous review hides the user (`username` "匿名用户", no avatar). 404 for
/// an unknown counselor.
#[utoipa::path(
    get,
    path = "/api/counselor/{id}/reviews",
    operation_id = "reviews_list",
    tag = "reviews",
    summary = "A counselor's visible reviews, newest first",
    description = "An anonymous review hides its author (`user_id` 0, `username` \"匿名用户\", no avatar).",
    params(
        ("id" = i64, Path, description = "The counselor's id"),
        ListQuery
    ),
    responses(
        (status = 200, description = "A page of reviews", body = Envelope<ReviewList>),
        (status = 400, description = "Invalid paging or id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown counselor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply<ReviewList> {
    q.validate()?;
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
    let reviews = rows
        .iter()
        .map(|r| {
            let anonymous: bool = r.get("is_anonymous");
            Review {
                id: r.get("id"),
                order_id: r.get("order_id"),
                user_id: if anonymous { 0 } else { r.get("user_id") },
                counselor_id: r.get("counselor_id"),
                rating: r.get("rating"),
                comment: r.get("comment"),
                is_anonymous: anonymous,
                is_visible: true,
                created_at: r.get("created_at"),
                updated_at: r.get("updated_at"),
                user: if anonymous {
                    ReviewAuthor {
                        id: 0,
                        username: "匿名用户".to_string(),
                        avatar: String::new(),
                    }
                } else {
                    ReviewAuthor {
                        id: r.get("user_id"),
                        username: r.get("username"),
                        avatar: r.get("avatar"),
                    }
                },
            }
        })
        .collect();
    Ok(reply(ReviewList { reviews, total }))
}

/// `POST /api/counselor/review` body (contract b.1 #15).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct ReviewRequest {
    /// The completed order to review (the caller's).
    #[validate(range(min = 1, message = "must be a positive id"))]
    pub order_id: i64,
    /// The order's counselor; 0 or absent: not checked.
    #[serde(default)]
    #[schema(minimum = 0)]
    pub counselor_id: i64,
    /// 1 to 5.
    #[validate(range(min = 1, max = 5, message = "must be 1 to 5"))]
    pub rating: i16,
    /// The text: not blank, at most 1000 characters (trimmed).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 1000, message = "at most 1000 characters")
    )]
    pub comment: String,
    /// Hide the author from the counselor's public list.
    #[serde(default)]
    pub is_anonymous: bool,
}

/// A review just written.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Reviewed {
    /// The reviewed order's id.
    pub order_id: i64,
    /// The rating given.
    pub rating: i16,
}

/// `POST /api/counselor/review` → `{order_id, rating}`. The order must be the caller's and
/// completed, and not yet reviewed (400); `counselor_id`, when sent, must be the order's.
#[utoipa::path(
    post,
    path = "/api/counselor/review",
    operation_id = "reviews_create",
    tag = "reviews",
    summary = "Review a completed order (once)",
    description = "The order must be the caller's and completed, and not yet reviewed; \
        `counselor_id`, when sent, must be the order's.",
    request_body = ReviewRequest,
    responses(
        (status = 200, description = "The review was recorded", body = Envelope<Reviewed>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not the order's counselor, an order not completed, or already reviewed", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the caller's order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> Reply<Reviewed> {
    req.validate()?;
    let (order, version) = state.bus.load::<Order>(&req.order_id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    if order.user_id != user.user_id {
        return Err(ApiError::forbidden("not your order"));
    }
    if req.counselor_id != 0 && req.counselor_id != order.counselor_id {
        return Err(ApiError::unprocessable(
            "counselor_id",
            "is not the order's counselor",
        ));
    }
    let command = OrderCommand::Review {
        user_id: user.user_id,
        rating: req.rating,
        comment: req.comment.trim().to_string(),
        is_anonymous: req.is_anonymous,
        reviewed_at: Utc::now(),
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<Order>(&req.order_id.to_string(), command, &meta)
        .await?;
    state.settle("orders", committed.stream_sequence).await;
    Ok(reply(Reviewed {
        order_id: req.order_id,
        rating: req.rating,
    }))
}
