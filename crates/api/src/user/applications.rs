//! Counselor applications (contract b.1 #16–#19): apply, my application, and their review by a
//! user-API administrator (`users.is_admin`; the admin API has its own review of applications).
//!
//! Applications are reference data (plain Postgres). Approval creates the counselor profile
//! linked by `user_id` (price 5.00 yuan/min, rating 5.0, status 1) in the same transaction, and
//! writes the applicant's `system` notification there too (this notification is the one not
//! derived from an event, because applications are not event-sourced).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::user::account::{check_email, check_phone};
use crate::user::state::UserState;
use crate::{paging, ApiError, ApiJson, ApiPath, ApiQuery, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(apply))
        .routes(routes!(mine))
        .routes(routes!(list))
        .routes(routes!(review))
}

/// A validation error carrying `message` for the client.
fn invalid(code: &'static str, message: impl Into<String>) -> ValidationError {
    ValidationError::new(code).with_message(message.into().into())
}

/// A field refused by one of the account's checks, as a validation error with its message.
fn refused(e: ApiError) -> ValidationError {
    let message = e.errors.first().map(|f| f.message.clone()).unwrap_or(e.msg);
    invalid("format", message)
}

/// A mainland mobile number (`^1[3-9]\d{9}$`, surrounding blanks ignored).
fn mobile(phone: &str) -> Result<(), ValidationError> {
    check_phone("phone", phone.trim()).map_err(refused)
}

/// An email address, or empty.
fn optional_email(email: &str) -> Result<(), ValidationError> {
    if email.is_empty() {
        return Ok(());
    }
    check_email("email", email).map_err(refused)
}

/// `男`, `女` or empty.
fn gender(value: &str) -> Result<(), ValidationError> {
    if matches!(value, "" | "男" | "女") {
        return Ok(());
    }
    Err(invalid("one_of", "男 or 女"))
}

/// The longest certificate URL, in bytes.
const MAX_CERTIFICATE_URL: usize = 500;

/// A certificate image URL (empty, or at most [`MAX_CERTIFICATE_URL`] bytes).
fn certificate_url(url: &str) -> Result<(), ValidationError> {
    if url.len() > MAX_CERTIFICATE_URL {
        return Err(invalid("length", "at most 500 characters"));
    }
    Ok(())
}

/// `POST /api/counselor/application` body. Texts are stored trimmed.
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct ApplicationRequest {
    /// The applicant's real name (not blank, at most 50 characters).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 50, message = "at most 50 characters")
    )]
    pub name: String,
    /// `男`, `女` or empty.
    #[serde(default)]
    #[schema(pattern = "^(|男|女)$")]
    #[validate(custom(function = "gender"))]
    pub gender: String,
    /// A mainland mobile number: `1[3-9]` and 9 digits.
    #[schema(
        pattern = r"^[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*1[3-9][0-9]{9}[\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    #[validate(custom(function = "mobile"))]
    pub phone: String,
    /// An email address, or empty.
    #[serde(default)]
    #[schema(
        max_length = 254,
        pattern = r"^(?:|[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]+@[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*\.[^@\t\n\x0B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*)$"
    )]
    #[validate(custom(function = "optional_email"))]
    pub email: String,
    /// The professional title (not blank, at most 50 characters).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 50, message = "at most 50 characters")
    )]
    pub title: String,
    /// Years of experience, 0 to 70.
    #[serde(default)]
    #[validate(range(min = 0, max = 70, message = "must be 0 to 70"))]
    pub years_exp: i32,
    /// About the applicant, at most 2000 characters.
    #[serde(default)]
    #[validate(length(max = 2000, message = "at most 2000 characters"))]
    pub bio: String,
    /// Specialties, comma-separated (not blank, at most 200 characters).
    #[validate(
        custom(function = "web::text::not_blank"),
        length(max = 200, message = "at most 200 characters")
    )]
    pub specialty: String,
    /// A certificate image URL (from `/api/counselor/upload-certificate`; at most 500 bytes). At
    /// least one of the three certificates is required.
    #[serde(default)]
    #[schema(max_length = 500)]
    #[validate(custom(function = "certificate_url"))]
    pub certificate_img1: String,
    /// A second certificate image URL, or empty (at most 500 bytes).
    #[serde(default)]
    #[schema(max_length = 500)]
    #[validate(custom(function = "certificate_url"))]
    pub certificate_img2: String,
    /// A third certificate image URL, or empty (at most 500 bytes).
    #[serde(default)]
    #[schema(max_length = 500)]
    #[validate(custom(function = "certificate_url"))]
    pub certificate_img3: String,
}

/// A new application's id.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationCreated {
    /// The application's id.
    pub id: i64,
}

/// `POST /api/counselor/application` → `{id}`. 403 when a pending or approved application
/// exists or the caller is already a counselor; a rejected applicant may apply again.
#[utoipa::path(
    post,
    path = "/api/counselor/application",
    operation_id = "applications_apply",
    tag = "applications",
    summary = "Apply to become a counselor",
    description = "Refused (403) when the caller is a counselor already or has a pending or \
        approved application; a rejected applicant may apply again.",
    request_body = ApplicationRequest,
    responses(
        (status = 200, description = "The application (pending)", body = Envelope<ApplicationCreated>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "No certificate", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Already a counselor, or an application is pending or approved", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn apply(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(r): ApiJson<ApplicationRequest>,
) -> Reply<ApplicationCreated> {
    r.validate()?;
    if [
        &r.certificate_img1,
        &r.certificate_img2,
        &r.certificate_img3,
    ]
    .iter()
    .all(|u| u.trim().is_empty())
    {
        return Err(ApiError::unprocessable(
            "certificate_img1",
            "at least one certificate is required",
        ));
    }
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
    Ok(reply(ApplicationCreated { id }))
}

/// The applicant of an application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Applicant {
    /// The applicant's users-table id.
    pub id: i64,
    /// The applicant's username.
    pub username: String,
}

/// The administrator who reviewed an application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationReviewer {
    /// The reviewer's users-table id.
    pub id: i64,
    /// The reviewer's username (null when the account is gone).
    pub username: Option<String>,
}

/// A counselor application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Application {
    /// The application's id.
    pub id: i64,
    /// The applicant's users-table id.
    pub user_id: i64,
    /// The applicant's real name.
    pub name: String,
    /// `男`, `女` or empty.
    pub gender: String,
    /// The applicant's mobile number.
    pub phone: String,
    /// The applicant's email address, or empty.
    pub email: String,
    /// The professional title.
    pub title: String,
    /// Specialties, comma-separated.
    pub specialty: String,
    /// Years of experience.
    pub years_exp: i32,
    /// About the applicant.
    pub bio: String,
    /// A certificate image URL, or empty.
    pub certificate_img1: String,
    /// A certificate image URL, or empty.
    pub certificate_img2: String,
    /// A certificate image URL, or empty.
    pub certificate_img3: String,
    /// 0 pending, 1 approved, 2 rejected.
    pub status: i16,
    /// Why it was rejected (empty unless rejected).
    pub reject_reason: String,
    /// The reviewer's users-table id, or null while pending.
    pub reviewed_by: Option<i64>,
    /// When it was reviewed (RFC 3339), or null.
    pub reviewed_at: Option<DateTime<Utc>>,
    /// When it was filed (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// When it last changed (RFC 3339).
    pub updated_at: DateTime<Utc>,
    /// The applicant.
    pub user: Applicant,
    /// The reviewer, or null while pending.
    pub reviewer: Option<ApplicationReviewer>,
}

impl Application {
    fn from_row(r: &sqlx::postgres::PgRow) -> Self {
        let reviewed_by: Option<i64> = r.get("reviewed_by");
        Self {
            id: r.get("id"),
            user_id: r.get("user_id"),
            name: r.get("name"),
            gender: r.get("gender"),
            phone: r.get("phone"),
            email: r.get("email"),
            title: r.get("title"),
            specialty: r.get("specialty"),
            years_exp: r.get("years_exp"),
            bio: r.get("bio"),
            certificate_img1: r.get("certificate_img1"),
            certificate_img2: r.get("certificate_img2"),
            certificate_img3: r.get("certificate_img3"),
            status: r.get("status"),
            reject_reason: r.get("reject_reason"),
            reviewed_by,
            reviewed_at: r.get("reviewed_at"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            user: Applicant {
                id: r.get("user_id"),
                username: r.get("username"),
            },
            reviewer: reviewed_by.map(|id| ApplicationReviewer {
                id,
                username: r.get("reviewer_username"),
            }),
        }
    }
}

const APPLICATION_SELECT: &str = "SELECT a.*, u.username, rv.username AS reviewer_username \
     FROM counselor_applications a JOIN users u ON u.id = a.user_id \
     LEFT JOIN users rv ON rv.id = a.reviewed_by";

/// `GET /api/counselor/my-application` → the caller's latest application, or `null`.
#[utoipa::path(
    get,
    path = "/api/counselor/my-application",
    operation_id = "applications_mine",
    tag = "applications",
    summary = "The caller's latest application or null",
    responses(
        (status = 200, description = "The latest application; `data` null when there is none", body = Envelope<Option<Application>>),
    ),
    security(("bearer" = []))
)]
pub async fn mine(State(state): State<AppState>, user: AuthUser) -> Reply<Option<Application>> {
    let row = sqlx::query(&format!(
        "{APPLICATION_SELECT} WHERE a.user_id = $1 ORDER BY a.id DESC LIMIT 1"
    ))
    .bind(user.user_id)
    .fetch_optional(&state.db)
    .await?;
    Ok(reply(row.as_ref().map(Application::from_row)))
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

/// `GET /api/counselor/applications` query: paging and an optional status filter.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, Validate)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page number, from 1 (default 1).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Applications per page, 1 to 100 (default 20).
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Only applications in this status (0 pending, 1 approved, 2 rejected); empty or absent:
    /// all.
    #[serde(default, deserialize_with = "crate::empty_as_none")]
    #[validate(range(min = 0, max = 2, message = "must be 0, 1 or 2"))]
    pub status: Option<i16>,
}

/// A page of applications, in this route's own list shape (contract a.3).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationList {
    /// The applications, newest first.
    pub list: Vec<Application>,
    /// How many match.
    pub total: i64,
    /// The page answered.
    pub page: i64,
    /// The page size used.
    pub page_size: i64,
}

/// `GET /api/counselor/applications` → `{list, total, page, page_size}` (this route's own
/// shape, contract a.3); `users.is_admin` only (403).
#[utoipa::path(
    get,
    path = "/api/counselor/applications",
    operation_id = "applications_list",
    tag = "applications",
    summary = "Applications (users.is_admin only)",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of applications", body = Envelope<ApplicationList>),
        (status = 400, description = "Invalid paging or status", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator (users.is_admin)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Reply<ApplicationList> {
    q.validate()?;
    let (limit, offset) = paging(q.page, q.page_size, 20)?;
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
    Ok(reply(ApplicationList {
        list: rows.iter().map(Application::from_row).collect(),
        total,
        page: q.page.unwrap_or(1),
        page_size: limit,
    }))
}

/// The longest rejection reason, in characters (once trimmed).
const MAX_REASON_CHARS: usize = 500;

/// A rejection reason: at most [`MAX_REASON_CHARS`] characters once trimmed.
fn reason_text(reason: &str) -> Result<(), ValidationError> {
    if reason.trim().chars().count() > MAX_REASON_CHARS {
        return Err(invalid("length", "at most 500 characters"));
    }
    Ok(())
}

/// `PUT /api/counselor/application/:id/review` body: `status` 1 (approve) or 2 (reject, with
/// `reject_reason`).
#[web::limits]
#[derive(Debug, Deserialize, ToSchema, Validate)]
pub struct ApplicationReviewRequest {
    /// 1 approve, 2 reject.
    #[validate(range(min = 1, max = 2, message = "1 (approve) or 2 (reject)"))]
    pub status: i16,
    /// Why it is rejected: required when rejecting, at most 500 characters (trimmed).
    #[serde(default)]
    #[schema(max_length = 500)]
    #[validate(custom(function = "reason_text"))]
    pub reject_reason: String,
}

/// A reviewed application.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApplicationReviewed {
    /// The application's id.
    pub id: i64,
    /// 1 approved, 2 rejected.
    pub status: i16,
    /// The counselor created by the approval, or null (rejected, or the applicant already had a
    /// profile).
    pub counselor_id: Option<i64>,
}

/// `PUT /api/counselor/application/:id/review` → `{id, status, counselor_id}`. Only a pending
/// application (400 otherwise); approval creates the counselor.
#[utoipa::path(
    put,
    path = "/api/counselor/application/{id}/review",
    operation_id = "applications_review",
    tag = "applications",
    summary = "Approve (creates the counselor) or reject (users.is_admin only)",
    description = "Only a pending application can be reviewed. Approval creates the counselor \
        profile (5.00 yuan/min, rating 5.0); either way the applicant is notified.",
    params(("id" = i64, Path, description = "The application's id")),
    request_body = ApplicationReviewRequest,
    responses(
        (status = 200, description = "The reviewed application", body = Envelope<ApplicationReviewed>),
        (status = 400, description = "An invalid field", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A rejection without a reason, or the application is not pending", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an administrator (users.is_admin)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown application", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn review(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(req): ApiJson<ApplicationReviewRequest>,
) -> Reply<ApplicationReviewed> {
    req.validate()?;
    let reason = req.reject_reason.trim().to_string();
    // Whether a reason is needed depends on the decision: a rule across two fields.
    if req.status == 2 && reason.is_empty() {
        return Err(ApiError::unprocessable(
            "reject_reason",
            "required when rejecting",
        ));
    }
    require_admin(&state, &user).await?;
    let mut tx = state.db.begin().await?;
    let app = sqlx::query("SELECT * FROM counselor_applications WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ApiError::not_found("application"))?;
    if app.get::<i16, _>("status") != 0 {
        return Err(ApiError::refused("application is not pending"));
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
    Ok(reply(ApplicationReviewed {
        id,
        status: req.status,
        counselor_id,
    }))
}
