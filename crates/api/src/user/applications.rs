//! Counselor applications (contract b.1 #16–#19): apply, my application, and their review by a
//! user-API administrator (`users.is_admin`; the admin API's own review belongs to issue 4).
//!
//! Applications are reference data (plain Postgres). Approval creates the counselor profile
//! linked by `user_id` (price 5.00 yuan/min, rating 5.0, status 1) in the same transaction, and
//! writes the applicant's `system` notification there too (this notification is the one not
//! derived from an event, because applications are not event-sourced).

use axum::extract::State;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::user::account::{check_email, check_phone};
use crate::{ok, paging, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/counselor/application", post(apply))
        .route("/api/counselor/my-application", get(mine))
        .route("/api/counselor/applications", get(list))
        .route("/api/counselor/application/{id}/review", put(review))
}

/// `POST /api/counselor/application` body.
#[derive(Debug, Deserialize)]
pub struct ApplicationRequest {
    pub name: String,
    #[serde(default)]
    pub gender: String,
    pub phone: String,
    #[serde(default)]
    pub email: String,
    pub title: String,
    #[serde(default)]
    pub years_exp: i32,
    #[serde(default)]
    pub bio: String,
    pub specialty: String,
    #[serde(default)]
    pub certificate_img1: String,
    #[serde(default)]
    pub certificate_img2: String,
    #[serde(default)]
    pub certificate_img3: String,
}

fn required(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(ApiError::field(field, "required"));
    }
    if v.chars().count() > max {
        return Err(ApiError::field(field, format!("at most {max} characters")));
    }
    Ok(v.to_string())
}

fn validate(r: &ApplicationRequest) -> Result<(), ApiError> {
    required("name", &r.name, 50)?;
    check_phone("phone", r.phone.trim())?;
    if !r.email.is_empty() {
        check_email("email", &r.email)?;
    }
    if !matches!(r.gender.as_str(), "" | "男" | "女") {
        return Err(ApiError::field("gender", "男 or 女"));
    }
    required("title", &r.title, 50)?;
    required("specialty", &r.specialty, 200)?;
    if !(0..=70).contains(&r.years_exp) {
        return Err(ApiError::field("years_exp", "must be 0 to 70"));
    }
    if r.bio.chars().count() > 2000 {
        return Err(ApiError::field("bio", "at most 2000 characters"));
    }
    let certs = [
        ("certificate_img1", &r.certificate_img1),
        ("certificate_img2", &r.certificate_img2),
        ("certificate_img3", &r.certificate_img3),
    ];
    for (name, url) in certs {
        if url.len() > 500 {
            return Err(ApiError::field(name, "at most 500 characters"));
        }
    }
    if certs.iter().all(|(_, u)| u.trim().is_empty()) {
        return Err(ApiError::field(
            "certificate_img1",
            "at least one certificate is required",
        ));
    }
    Ok(())
}

/// `POST /api/counselor/application` → `{id}`. 403 when a pending or approved application
/// exists or the caller is already a counselor; a rejected applicant may apply again.
pub async fn apply(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(r): ApiJson<ApplicationRequest>,
) -> ApiResult<Json<Value>> {
    validate(&r)?;
    let is_counselor: Option<i64> =
        sqlx::query_scalar("SELECT id FROM counselors WHERE user_id = $1")
            .bind(user.user_id)
            .fetch_optional(&state.db)
            .await?;
    if is_counselor.is_some() {
        return Err(ApiError::forbidden("already a counselor"));
    }
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO counselor_applications (user_id, name, gender, phone, email, title, specialty, \
         years_exp, bio, certificate_img1, certificate_img2, certificate_img3) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) \
         ON CONFLICT (user_id) WHERE status IN (0, 1) DO NOTHING RETURNING id",
    )
    .bind(user.user_id)
    .bind(r.name.trim())
    .bind(&r.gender)
    .bind(r.phone.trim())
    .bind(&r.email)
    .bind(r.title.trim())
    .bind(r.specialty.trim())
    .bind(r.years_exp)
    .bind(&r.bio)
    .bind(r.certificate_img1.trim())
    .bind(r.certificate_img2.trim())
    .bind(r.certificate_img3.trim())
    .fetch_optional(&state.db)
    .await?;
    let id =
        id.ok_or_else(|| ApiError::forbidden("an application is already pending or approved"))?;
    Ok(ok(json!({ "id": id })))
}

fn application_json(r: &sqlx::postgres::PgRow) -> Value {
    json!({
        "id": r.get::<i64, _>("id"),
        "user_id": r.get::<i64, _>("user_id"),
        "name": r.get::<String, _>("name"),
        "gender": r.get::<String, _>("gender"),
        "phone": r.get::<String, _>("phone"),
        "email": r.get::<String, _>("email"),
        "title": r.get::<String, _>("title"),
        "specialty": r.get::<String, _>("specialty"),
        "years_exp": r.get::<i32, _>("years_exp"),
        "bio": r.get::<String, _>("bio"),
        "certificate_img1": r.get::<String, _>("certificate_img1"),
        "certificate_img2": r.get::<String, _>("certificate_img2"),
        "certificate_img3": r.get::<String, _>("certificate_img3"),
        "status": r.get::<i16, _>("status"),
        "reject_reason": r.get::<String, _>("reject_reason"),
        "reviewed_by": r.get::<Option<i64>, _>("reviewed_by"),
        "reviewed_at": r.get::<Option<DateTime<Utc>>, _>("reviewed_at"),
        "created_at": r.get::<DateTime<Utc>, _>("created_at"),
        "updated_at": r.get::<DateTime<Utc>, _>("updated_at"),
        "user": { "id": r.get::<i64, _>("user_id"), "username": r.get::<String, _>("username") },
        "reviewer": r.get::<Option<i64>, _>("reviewed_by").map(|id| json!({ "id": id, "username": r.get::<Option<String>, _>("reviewer_username") })),
    })
}

const APPLICATION_SELECT: &str = "SELECT a.*, u.username, rv.username AS reviewer_username \
     FROM counselor_applications a JOIN users u ON u.id = a.user_id \
     LEFT JOIN users rv ON rv.id = a.reviewed_by";

/// `GET /api/counselor/my-application` → the caller's latest application, or `null`.
pub async fn mine(State(state): State<AppState>, user: AuthUser) -> ApiResult<Json<Value>> {
    let row = sqlx::query(&format!(
        "{APPLICATION_SELECT} WHERE a.user_id = $1 ORDER BY a.id DESC LIMIT 1"
    ))
    .bind(user.user_id)
    .fetch_optional(&state.db)
    .await?;
    Ok(ok(row.as_ref().map(application_json)))
}

async fn require_admin(state: &AppState, user: &AuthUser) -> Result<(), ApiError> {
    let is_admin: bool = sqlx::query_scalar("SELECT is_admin FROM users WHERE id = $1")
        .bind(user.user_id)
        .fetch_one(&state.db)
        .await?;
    if !is_admin {
        return Err(ApiError::forbidden("administrators only (users.is_admin)"));
    }
    Ok(())
}

/// `GET /api/counselor/applications` query.
pub type ListQuery = crate::PageQuery;

/// `GET /api/counselor/applications` → `{list, total, page, page_size}` (this route's own
/// shape, contract a.3); `users.is_admin` only (403).
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
    if let Some(s) = q.status {
        if !(0..=2).contains(&s) {
            return Err(ApiError::field("status", "must be 0, 1 or 2"));
        }
    }
    require_admin(&state, &user).await?;
    let rows = sqlx::query(&format!(
        "{APPLICATION_SELECT} WHERE ($1::smallint IS NULL OR a.status = $1) ORDER BY a.id DESC LIMIT $2 OFFSET $3"
    ))
    .bind(q.status)
    .bind(limit)
    .bind(offset)
    .fetch_all(&state.db)
    .await?;
    let total: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM counselor_applications WHERE ($1::smallint IS NULL OR status = $1)",
    )
    .bind(q.status)
    .fetch_one(&state.db)
    .await?;
    let list: Vec<Value> = rows.iter().map(application_json).collect();
    Ok(ok(json!({
        "list": list,
        "total": total,
        "page": q.page.unwrap_or(1),
        "page_size": limit,
    })))
}

/// `PUT /api/counselor/application/:id/review` body: `status` 1 (approve) or 2 (reject, with
/// `reject_reason`).
#[derive(Debug, Deserialize)]
pub struct ReviewRequest {
    pub status: i16,
    #[serde(default)]
    pub reject_reason: String,
}

/// `PUT /api/counselor/application/:id/review` → `{id, status, counselor_id}`. Only a pending
/// application (400 otherwise); approval creates the counselor.
pub async fn review(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ReviewRequest>,
) -> ApiResult<Json<Value>> {
    if !matches!(req.status, 1 | 2) {
        return Err(ApiError::field("status", "1 (approve) or 2 (reject)"));
    }
    let reason = req.reject_reason.trim().to_string();
    if req.status == 2 && reason.is_empty() {
        return Err(ApiError::field("reject_reason", "required when rejecting"));
    }
    if reason.chars().count() > 500 {
        return Err(ApiError::field("reject_reason", "at most 500 characters"));
    }
    require_admin(&state, &user).await?;
    let mut tx = state.db.begin().await?;
    let app = sqlx::query("SELECT * FROM counselor_applications WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("application"))?;
    if app.get::<i16, _>("status") != 0 {
        return Err(ApiError::bad_request("application is not pending"));
    }
    let applicant: i64 = app.get("user_id");
    let mut counselor_id: Option<i64> = None;
    if req.status == 1 {
        let avatar: String = sqlx::query_scalar("SELECT avatar FROM users WHERE id = $1")
            .bind(applicant)
            .fetch_one(&mut *tx)
            .await?;
        counselor_id = sqlx::query_scalar(
            "INSERT INTO counselors (user_id, name, title, avatar, bio, specialty, price_fen, years_exp, rating, status) \
             VALUES ($1,$2,$3,$4,$5,$6,500,$7,5.0,1) ON CONFLICT (user_id) DO NOTHING RETURNING id",
        )
        .bind(applicant)
        .bind(app.get::<String, _>("name"))
        .bind(app.get::<String, _>("title"))
        .bind(avatar)
        .bind(app.get::<String, _>("bio"))
        .bind(app.get::<String, _>("specialty"))
        .bind(app.get::<i32, _>("years_exp"))
        .fetch_optional(&mut *tx)
        .await?;
    }
    sqlx::query(
        "UPDATE counselor_applications SET status = $2, reject_reason = $3, reviewed_by = $4, \
         reviewed_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(req.status)
    .bind(&reason)
    .bind(user.user_id)
    .execute(&mut *tx)
    .await?;
    let (title, content, level) = if req.status == 1 {
        (
            "咨询师申请已通过",
            "您的咨询师申请已通过审核".to_string(),
            "success",
        )
    } else {
        (
            "咨询师申请未通过",
            format!("您的咨询师申请未通过：{reason}"),
            "warning",
        )
    };
    sqlx::query(
        // Not an event: a direct notification, in a table no projection owns (a rebuild of
        // `notifications` keeps it).
        "INSERT INTO direct_notifications (user_id, type, level, title, content, extra_data, source, created_at) \
         VALUES ($1, 'system', $2, $3, $4, $5, $6, now()) ON CONFLICT (source) DO NOTHING",
    )
    .bind(applicant)
    .bind(level)
    .bind(title)
    .bind(content)
    .bind(json!({ "application_id": id }).to_string())
    .bind(format!("application:{id}:{}", req.status))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ok(
        json!({ "id": id, "status": req.status, "counselor_id": counselor_id }),
    ))
}
