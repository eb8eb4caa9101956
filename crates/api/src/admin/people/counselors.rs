//! Counselors as the back office manages them (contract c.3): list, get, create, update, delete
//! (or disable). MyChat's client also reads the list and a counselor under legacy paths; each
//! path is an operation of its own here, answered by the same code.

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
    count, lenient, listed, typed_one, typed_rows, unique_violation, ListQuery, Listed,
};
use crate::money::positive_fen;
use crate::{ApiError, ApiResult, AppState};

const COUNSELOR_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT id, user_id, name, title, avatar, bio, specialty, \
     price_fen / 100.0 AS price, price_fen, years_exp, rating, status, created_at, updated_at FROM counselors";

/// A counselor (contract c.9 admin Counselor). Fields in the order Postgres renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Counselor {
    /// Counselor id.
    pub id: i64,
    /// Biography.
    pub bio: String,
    /// Display name.
    pub name: String,
    /// Price per minute in yuan (`price_fen / 100`).
    #[schema(value_type = f64)]
    pub price: serde_json::Number,
    /// Professional title.
    pub title: String,
    /// Avatar URL (may be empty).
    pub avatar: String,
    /// Rating, 0 to 5.
    #[schema(value_type = f64, minimum = 0, maximum = 5)]
    pub rating: serde_json::Number,
    /// 1 enabled, 0 disabled.
    #[schema(minimum = 0, maximum = 1)]
    pub status: i16,
    /// The counselor's user account; null for a counselor without one.
    pub user_id: Option<i64>,
    /// Price per minute in fen.
    pub price_fen: i64,
    /// Specialty.
    pub specialty: String,
    /// Years of experience.
    pub years_exp: i32,
    /// Creation time, RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last change, RFC 3339.
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// A page of counselors.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CounselorPage {
    /// The page's counselors.
    pub counselors: Vec<Counselor>,
    /// The same rows (the key the client reads, contract c.3 #28).
    pub list: Vec<Counselor>,
    /// Counselors matching the filter.
    pub total: i64,
}

async fn counselor_page(state: &AppState, q: ListQuery) -> ApiResult<Json<Listed<CounselorPage>>> {
    let (limit, offset, ..) = q.paging(20)?;
    let keyword = q.keyword_pattern();
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(k) = &keyword {
            qb.push(" AND (name ILIKE ").push_bind(k.clone());
            qb.push(" OR title ILIKE ").push_bind(k.clone());
            qb.push(" OR specialty ILIKE ")
                .push_bind(k.clone())
                .push(")");
        }
        if let Some(s) = q.status {
            qb.push(" AND status = ").push_bind(s);
        }
    };
    let mut qb = QueryBuilder::new(COUNSELOR_SELECT);
    filter(&mut qb);
    qb.push(" ORDER BY id LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list: Vec<Counselor> = typed_rows(state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM counselors");
    filter(&mut cq);
    let total = count(state, cq).await?;
    Ok(listed(CounselorPage {
        counselors: list.clone(),
        list,
        total,
    }))
}

/// List counselors
///
/// Filtered by `keyword` (name, title, specialty) and `status`, by id.
#[utoipa::path(get, path = "/api/admin/counselors", tag = "counselors",
    params(ListQuery),
    responses(
        (status = 200, description = "one page", body = Listed<CounselorPage>),
        (status = 400, description = "a bad paging or filter parameter", body = Problem)))]
pub async fn list_counselors(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Listed<CounselorPage>>> {
    counselor_page(&state, q).await
}

/// List counselors (legacy path)
///
/// The same as `GET /api/admin/counselors`.
#[utoipa::path(get, path = "/api/counselor/list", tag = "counselors",
    params(ListQuery),
    responses(
        (status = 200, description = "one page", body = Listed<CounselorPage>),
        (status = 400, description = "a bad paging or filter parameter", body = Problem)))]
pub async fn legacy_list_counselors(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Listed<CounselorPage>>> {
    counselor_page(&state, q).await
}

async fn counselor(state: &AppState, id: i64) -> Reply<Counselor> {
    let sql = format!("{COUNSELOR_SELECT} WHERE id = $1) t");
    Ok(reply(typed_one(state, &sql, id, "counselor").await?))
}

/// Get a counselor
#[utoipa::path(get, path = "/api/admin/counselors/{id}", tag = "counselors",
    params(("id" = i64, Path, description = "counselor id")),
    responses((status = 200, description = "the counselor", body = Envelope<Counselor>)))]
pub async fn get_counselor(State(state): State<AppState>, Path(id): Path<i64>) -> Reply<Counselor> {
    counselor(&state, id).await
}

/// Get a counselor (legacy path)
///
/// The same as `GET /api/admin/counselors/{id}`.
#[utoipa::path(get, path = "/api/counselor/{id}", tag = "counselors",
    params(("id" = i64, Path, description = "counselor id")),
    responses((status = 200, description = "the counselor", body = Envelope<Counselor>)))]
pub async fn legacy_get_counselor(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Reply<Counselor> {
    counselor(&state, id).await
}

/// A counselor's fields (`POST`: `name` and `price` required; `PUT`: absent or null fields
/// unchanged, `status: 0` applied). Text is trimmed; numbers may come as numeric strings.
#[web::limits]
#[derive(Debug, Default, Deserialize, ToSchema, Validate)]
pub struct CounselorFields {
    /// Display name, 2 to 50 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        length(min = 2, max = 50, message = "must be 2 to 50 characters")
    )]
    pub name: Option<String>,
    /// Professional title, at most 100 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub title: Option<String>,
    /// Avatar URL, at most 500 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 500, message = "must be 0 to 500 characters"))]
    pub avatar: Option<String>,
    /// Biography, at most 2000 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 2000, message = "must be 0 to 2000 characters"))]
    pub bio: Option<String>,
    /// Specialty, at most 200 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub specialty: Option<String>,
    /// Price per minute in yuan: greater than 0, at most two decimals (fen).
    #[serde(default, deserialize_with = "lenient::num")]
    #[schema(minimum = 0.01, maximum = 10000000000_f64, multiple_of = 0.01)]
    pub price: Option<f64>,
    /// Years of experience, 0 to 80.
    #[serde(default, deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = 80, message = "must be between 0 and 80"))]
    pub years_exp: Option<i64>,
    /// Rating, 0 to 5.
    #[serde(default, deserialize_with = "lenient::num")]
    #[validate(range(min = 0.0, max = 5.0, message = "must be between 0 and 5"))]
    pub rating: Option<f64>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "lenient::int")]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i64>,
}

impl CounselorFields {
    /// The price in fen, when one was sent.
    fn price_fen(&self) -> Result<Option<i64>, ApiError> {
        self.price.map(|p| positive_fen("price", p)).transpose()
    }
}

/// The documented body of `POST /api/admin/counselors`: [`CounselorFields`] with `name` and
/// `price` required (the handler reads `CounselorFields` and checks both).
#[derive(ToSchema)]
#[allow(dead_code)]
struct NewCounselor {
    /// Display name, 2 to 50 characters.
    #[schema(min_length = 2, max_length = 50)]
    name: String,
    /// Price per minute in yuan: greater than 0, at most two decimals (fen).
    #[schema(minimum = 0.01, maximum = 10000000000_f64, multiple_of = 0.01)]
    price: f64,
    #[serde(flatten)]
    fields: CounselorFields,
}

/// Create a counselor
///
/// `name` and `price` are required.
#[utoipa::path(post, path = "/api/admin/counselors", tag = "counselors",
    request_body = NewCounselor,
    responses(
        (status = 200, description = "the new counselor", body = Envelope<Counselor>),
        (status = 400, description = "an invalid or missing field", body = Problem)))]
pub async fn create_counselor(
    State(state): State<AppState>,
    web::extract::Json(req): web::extract::Json<CounselorFields>,
) -> Reply<Counselor> {
    if req.name.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::field("name", "required"));
    }
    if req.price.is_none() {
        return Err(ApiError::field("price", "required"));
    }
    req.validate()?;
    let price_fen = req.price_fen()?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO counselors (name, title, avatar, bio, specialty, price_fen, years_exp, \
         rating, status) VALUES ($1, COALESCE($2, ''), COALESCE($3, ''), COALESCE($4, ''), \
         COALESCE($5, ''), $6, COALESCE($7, 0), COALESCE($8, 5.0), COALESCE($9, 1)) RETURNING id",
    )
    .bind(req.name)
    .bind(req.title)
    .bind(req.avatar)
    .bind(req.bio)
    .bind(req.specialty)
    .bind(price_fen)
    .bind(req.years_exp.map(|y| y as i32))
    .bind(req.rating)
    .bind(req.status.map(|s| s as i16))
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    counselor(&state, id).await
}

/// Update a counselor
///
/// Present fields only; the counselor caches of every node forget the old row.
#[utoipa::path(put, path = "/api/admin/counselors/{id}", tag = "counselors",
    params(("id" = i64, Path, description = "counselor id")),
    request_body = CounselorFields,
    responses(
        (status = 200, description = "the changed counselor", body = Envelope<Counselor>),
        (status = 400, description = "an invalid field", body = Problem)))]
pub async fn update_counselor(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    web::extract::Json(req): web::extract::Json<CounselorFields>,
) -> Reply<Counselor> {
    req.validate()?;
    let price_fen = req.price_fen()?;
    let found: Option<i64> = sqlx::query_scalar(
        "UPDATE counselors SET updated_at = now(), name = COALESCE($2, name), \
         title = COALESCE($3, title), avatar = COALESCE($4, avatar), bio = COALESCE($5, bio), \
         specialty = COALESCE($6, specialty), price_fen = COALESCE($7, price_fen), \
         years_exp = COALESCE($8, years_exp), rating = COALESCE($9, rating), \
         status = COALESCE($10, status) WHERE id = $1 RETURNING id",
    )
    .bind(id)
    .bind(req.name)
    .bind(req.title)
    .bind(req.avatar)
    .bind(req.bio)
    .bind(req.specialty)
    .bind(price_fen)
    .bind(req.years_exp.map(|y| y as i32))
    .bind(req.rating)
    .bind(req.status.map(|s| s as i16))
    .fetch_optional(&state.db)
    .await
    .map_err(unique_violation)?;
    found.ok_or_else(|| ApiError::not_found("counselor"))?;
    state.counselors.forget_everywhere(&state.nats, id).await;
    counselor(&state, id).await
}

/// Delete (or disable) a counselor
///
/// A counselor with orders is disabled (status 0) instead, so that their orders, sessions and
/// account keep their counselor; otherwise the row is deleted.
#[utoipa::path(delete, path = "/api/admin/counselors/{id}", tag = "counselors",
    params(("id" = i64, Path, description = "counselor id")),
    responses((status = 200, description = "`deleted`, or `disabled (the counselor has orders)`", body = Message)))]
pub async fn delete_counselor(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Message>> {
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
    Ok(message(if has_orders {
        "disabled (the counselor has orders)"
    } else {
        "deleted"
    }))
}
