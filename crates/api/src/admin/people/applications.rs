//! Counselor applications (contract c.4): list, get, approve or reject. Approving creates the
//! counselor, linked to the applicant's user.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;
use web::extract::{Path, Query};

use crate::admin::common::{
    count, lenient, listed, typed_one, typed_rows, Caller, ListQuery, Listed,
};
use crate::{ApiError, ApiResult, AppState};

const APP_SELECT: &str = "SELECT to_jsonb(t)::text FROM (SELECT a.*, a.reviewed_by AS reviewer_id, \
     CASE WHEN r.id IS NULL THEN NULL ELSE jsonb_build_object('id', r.id, 'username', r.username, 'real_name', r.real_name) END AS reviewer \
     FROM counselor_applications a LEFT JOIN administrators r ON r.id = a.reviewed_by";

/// The administrator who reviewed an application.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Reviewer {
    /// Administrator id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Display name.
    pub real_name: String,
}

/// A counselor application (contract c.9 Application). Fields in the order Postgres renders the
/// row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Application {
    /// Application id.
    pub id: i64,
    /// Biography.
    pub bio: String,
    /// Applicant's name.
    pub name: String,
    /// E-mail address (may be empty).
    pub email: String,
    /// Phone number.
    pub phone: String,
    /// Professional title.
    pub title: String,
    /// Gender as the applicant gave it (may be empty).
    pub gender: String,
    /// 0 pending, 1 approved, 2 rejected.
    #[schema(minimum = 0, maximum = 2)]
    pub status: i16,
    /// The applicant's user account.
    pub user_id: i64,
    /// Who reviewed it; null while pending.
    pub reviewer: Option<Reviewer>,
    /// Specialty.
    pub specialty: String,
    /// Years of experience.
    pub years_exp: i32,
    /// Submission time, RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Last change, RFC 3339.
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// Review time, RFC 3339; null while pending.
    #[schema(format = DateTime)]
    pub reviewed_at: Option<String>,
    /// Reviewing administrator's id; null while pending.
    pub reviewed_by: Option<i64>,
    /// The same as `reviewed_by`.
    pub reviewer_id: Option<i64>,
    /// Why it was rejected (empty unless rejected).
    pub reject_reason: String,
    /// First certificate image URL (may be empty).
    pub certificate_img1: String,
    /// Second certificate image URL (may be empty).
    pub certificate_img2: String,
    /// Third certificate image URL (may be empty).
    pub certificate_img3: String,
}

/// A page of applications.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationPage {
    /// The page's applications.
    pub applications: Vec<Application>,
    /// The same rows (the key the client reads).
    pub list: Vec<Application>,
    /// Applications matching the filter.
    pub total: i64,
    /// The page (1-based).
    pub page: i64,
    /// Rows per page.
    pub page_size: i64,
}

/// List counselor applications
///
/// Filtered by `keyword` (name, phone, e-mail) and `status`, newest first.
#[utoipa::path(get, path = "/api/admin/counselor/applications", tag = "applications",
    params(ListQuery),
    responses(
        (status = 200, description = "one page", body = Listed<ApplicationPage>),
        (status = 400, description = "a bad paging or filter parameter", body = Problem)))]
pub async fn list_applications(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Listed<ApplicationPage>>> {
    let (limit, offset, page, size) = q.paging(20)?;
    let keyword = q.keyword_pattern();
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(k) = &keyword {
            qb.push(" AND (a.name ILIKE ").push_bind(k.clone());
            qb.push(" OR a.phone ILIKE ").push_bind(k.clone());
            qb.push(" OR a.email ILIKE ").push_bind(k.clone()).push(")");
        }
        if let Some(s) = q.status {
            qb.push(" AND a.status = ").push_bind(s);
        }
    };
    let mut qb = QueryBuilder::new(APP_SELECT);
    filter(&mut qb);
    qb.push(" ORDER BY a.id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list: Vec<Application> = typed_rows(&state, qb).await?;
    let mut cq = QueryBuilder::new("SELECT count(*) FROM counselor_applications a");
    filter(&mut cq);
    let total = count(&state, cq).await?;
    Ok(listed(ApplicationPage {
        applications: list.clone(),
        list,
        total,
        page,
        page_size: size,
    }))
}

async fn application(state: &AppState, id: i64) -> Reply<Application> {
    let sql = format!("{APP_SELECT} WHERE a.id = $1) t");
    Ok(reply(typed_one(state, &sql, id, "application").await?))
}

/// Get an application
#[utoipa::path(get, path = "/api/admin/counselor/applications/{id}", tag = "applications",
    params(("id" = i64, Path, description = "application id")),
    responses((status = 200, description = "the application", body = Envelope<Application>)))]
pub async fn get_application(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Reply<Application> {
    application(&state, id).await
}

/// A review: approve (1) or reject (2, with a reason).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct Review {
    /// 1 approves, 2 rejects.
    #[serde(default, deserialize_with = "lenient::int")]
    #[validate(
        required(message = "required"),
        range(min = 1, max = 2, message = "must be 1 (approve) or 2 (reject)")
    )]
    pub status: Option<i64>,
    /// Why it is rejected: required when `status` is 2.
    #[serde(default, deserialize_with = "lenient::text")]
    pub reject_reason: Option<String>,
}

/// Approve or reject an application
///
/// Approving creates the counselor, **linked** to the applicant's user (price 1.00 yuan/minute,
/// rating 5, status 1, as MyChat did). 400 if not pending. The reviewer is recorded. One
/// transaction.
#[utoipa::path(put, path = "/api/admin/counselor/applications/{id}/review", tag = "applications",
    params(("id" = i64, Path, description = "application id")),
    request_body = Review,
    responses(
        (status = 200, description = "the reviewed application", body = Envelope<Application>),
        (status = 400, description = "an invalid status", body = Problem),
        (status = 422, description = "a rejection without a reason, or the application is not pending", body = Problem)))]
pub async fn review_application(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    web::extract::Json(req): web::extract::Json<Review>,
) -> Reply<Application> {
    req.validate()?;
    let status = req.status.unwrap_or_default();
    let reason = req.reject_reason.unwrap_or_default();
    if status == 2 && reason.trim().is_empty() {
        return Err(ApiError::unprocessable(
            "reject_reason",
            "required when rejecting",
        ));
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
        return Err(ApiError::refused("application is not pending"));
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
    application(&state, id).await
}
