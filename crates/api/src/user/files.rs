//! Uploads (contract b.1 #9, #20, #43–#45): avatar, certificate and general files, stored under
//! the upload directory and served back under `/uploads/...`.
//!
//! Every upload is multipart with the bytes in field `file`. The type is decided by **content
//! sniffing** (the `infer` crate reads the magic bytes), never by the client's name or
//! Content-Type; the stored name is generated (`<kind>_<uid>_<unix-nanos>.<sniffed ext>`), so a
//! client name cannot traverse directories. Limits: avatar JPEG/PNG ≤ 2 MB, certificate JPEG/PNG
//! ≤ 5 MB, general files ≤ 10 MB of an allowed type (images, PDF, audio, video, office
//! documents). URLs are absolute (`<public_url>/uploads/...`), which both clients display.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use validator::{Validate, ValidationError};
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::Problem;

use crate::user::config::UserApi;
use crate::user::state::UserState;
use crate::{ApiError, ApiPath, ApiResult, AppState, AuthUser};

/// Largest general upload, bytes.
pub const MAX_FILE: usize = 10 * 1024 * 1024;
/// Largest avatar, bytes.
pub const MAX_AVATAR: usize = 2 * 1024 * 1024;
/// Largest certificate image, bytes.
pub const MAX_CERTIFICATE: usize = 5 * 1024 * 1024;

/// The user-API routes of this module (with a 12 MB body limit for the upload routes).
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(avatar))
        .routes(routes!(certificate))
        .routes(routes!(get_one, remove))
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

/// The largest upload body, bytes: the largest file and room for the form's other parts.
const MAX_BODY: usize = MAX_FILE + 2 * 1024 * 1024;

/// A received upload: the bytes of `file`, its client name, and the other text fields.
pub(crate) struct Received {
    /// The file's bytes (never empty).
    pub(crate) bytes: Vec<u8>,
    /// The client's name for it: control characters removed, at most 200 characters, possibly
    /// empty.
    pub(crate) original_name: String,
    /// The form's other (text) parts, as `(name, text)`.
    pub(crate) fields: Vec<(String, String)>,
}

/// Reads an upload's parts (the user API's uploads and the admin API's alike): `file` and the
/// text fields named in `known` (its form's other fields); any other part is refused, as the
/// form's schema states (`additionalProperties: false`), and every part is read before the
/// caller stores anything. `max_body`: the route's body limit in bytes, named in a 413.
///
/// # Errors
/// 400 for a malformed body, an unknown part or no `file`; 413 over `max_body`; 422 for an empty
/// file.
pub(crate) async fn receive(
    mut multipart: Multipart,
    known: &[&str],
    max_body: usize,
) -> Result<Received, ApiError> {
    let mut bytes = None;
    let mut original_name = String::new();
    let mut fields = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(None, max_body, e))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            original_name = field.file_name().unwrap_or_default().to_string();
            let data = field
                .bytes()
                .await
                .map_err(|e| multipart_error(Some("file"), max_body, e))?;
            bytes = Some(data.to_vec());
        } else if !known.contains(&name.as_str()) {
            return Err(ApiError::field(&name, "is not a field of this form"));
        } else {
            let text = field
                .text()
                .await
                .map_err(|_| ApiError::field(&name, "must be text"))?;
            fields.push((name, text));
        }
    }
    let bytes =
        bytes.ok_or_else(|| ApiError::field("file", "required (multipart field `file`)"))?;
    if bytes.is_empty() {
        return Err(ApiError::unprocessable("file", "is empty"));
    }
    Ok(Received {
        bytes,
        original_name: original_name
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect(),
        fields,
    })
}

/// A multipart body that could not be read: 413 when it is over the body limit (`max_body`
/// bytes), else 400 (naming `field` when given).
fn multipart_error(
    field: Option<&str>,
    max_body: usize,
    e: axum::extract::multipart::MultipartError,
) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::too_large("file", &format!("{} MB in all", max_body / (1024 * 1024)));
    }
    match field {
        Some(f) => ApiError::field(f, format!("could not be read: {e}")),
        None => ApiError::bad_request(format!("malformed multipart body: {e}")),
    }
}

/// The sniffed MIME type and extension of `bytes`, if it is one of `allowed`.
fn sniff(bytes: &[u8], allowed: &[&str]) -> Result<(String, String), ApiError> {
    // The bytes' type is beyond what a schema states (`format: binary`): a refusal is a 422.
    let kind = infer::get(bytes)
        .ok_or_else(|| ApiError::unprocessable("file", "unrecognised file type"))?;
    if !allowed.contains(&kind.mime_type()) {
        return Err(ApiError::unprocessable(
            "file",
            format!(
                "type {} is not allowed here (allowed: {})",
                kind.mime_type(),
                allowed.join(", ")
            ),
        ));
    }
    Ok((kind.mime_type().to_string(), kind.extension().to_string()))
}

const IMAGES: &[&str] = &["image/jpeg", "image/png"];
const GENERAL: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "audio/mpeg",
    "audio/x-wav",
    "audio/ogg",
    "audio/mp4",
    "video/mp4",
    "video/webm",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/msword",
];

struct Stored {
    id: i64,
    file_name: String,
    file_path: String,
    file_url: String,
    size: i64,
    mime: String,
}

#[allow(clippy::too_many_arguments)]
async fn store(
    state: &AppState,
    api: &UserApi,
    user: &AuthUser,
    dir: &str,
    stem: &str,
    file_type: &str,
    received: &Received,
    mime: String,
    ext: String,
    relation: (Option<i64>, String),
) -> Result<Stored, ApiError> {
    let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let file_name = format!("{stem}_{}_{nanos}.{ext}", user.user_id);
    let file_path = format!("{dir}/{file_name}");
    let disk = api.config.upload_dir.join(&file_path);
    if let Some(parent) = disk.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| anyhow::anyhow!("creating {}: {e}", parent.display()))?;
    }
    tokio::fs::write(&disk, &received.bytes)
        .await
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", disk.display()))?;
    let file_url = format!("{}/uploads/{file_path}", state.settings.public_url);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO files (file_name, original_name, file_path, file_url, file_size, file_type, \
         mime_type, uploader_id, relation_id, relation_type) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10) RETURNING id",
    )
    .bind(&file_name)
    .bind(&received.original_name)
    .bind(&file_path)
    .bind(&file_url)
    .bind(received.bytes.len() as i64)
    .bind(file_type)
    .bind(&mime)
    .bind(user.user_id)
    .bind(relation.0)
    .bind(&relation.1)
    .fetch_one(&state.db)
    .await?;
    Ok(Stored {
        id,
        file_name,
        file_path,
        file_url,
        size: received.bytes.len() as i64,
        mime,
    })
}

/// The kinds of general upload (the folder it is stored in and the record's `file_type`).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// An avatar.
    Avatar,
    /// A document.
    Document,
    /// An image.
    Image,
    /// A sound.
    Audio,
    /// A video.
    Video,
    /// Anything else (the default).
    Other,
}

/// `POST /api/upload`'s multipart body (documentation of the form; the fields are read from
/// the multipart stream).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadForm {
    /// The file: at most 10 MB, of an allowed type by content (JPEG, PNG, GIF, WebP, PDF, MP3,
    /// WAV, OGG, M4A, MP4, WebM, DOCX, XLSX, DOC).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// The kind (default `other`).
    #[schema(value_type = FileKind, required = false)]
    pub file_type: Option<String>,
    /// What the file belongs to: a positive id.
    #[schema(minimum = 1, nullable = false)]
    pub relation_id: Option<i64>,
    /// What kind of record `relation_id` is (`chat`, `order`, …): a name, at most 50
    /// characters ([`RELATION_TYPE_PATTERN`]).
    #[schema(
        max_length = 50,
        nullable = false,
        pattern = "^(?:|[a-z][a-z0-9_.:-]*)$"
    )]
    pub relation_type: Option<String>,
}

/// The form of an upload's `relation_type`: empty, or the name of a kind of record in lower case
/// (a letter, then letters, digits, `_`, `.`, `:` or `-`), never a bare number (that is
/// `relation_id`).
/// The upload form documents it (a test compares the two).
pub const RELATION_TYPE_PATTERN: &str = "^(?:|[a-z][a-z0-9_.:-]*)$";

static RELATION_TYPE_FORM: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(RELATION_TYPE_PATTERN).expect("RELATION_TYPE_PATTERN compiles")
});

/// An image upload's multipart body (documentation of the form).
#[derive(Debug, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageForm {
    /// The image: JPEG or PNG by content (avatars at most 2 MB, certificates at most 5 MB).
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// `file_type`: empty or one of [`FileKind`].
fn file_kind(kind: &str) -> Result<(), ValidationError> {
    if matches!(
        kind,
        "" | "avatar" | "document" | "image" | "audio" | "video" | "other"
    ) {
        return Ok(());
    }
    Err(ValidationError::new("one_of")
        .with_message("one of avatar, document, image, audio, video, other".into()))
}

/// `relation_id`: empty or a positive id.
fn relation_id(id: &str) -> Result<(), ValidationError> {
    if id.is_empty() || id.parse::<i64>().is_ok_and(|n| n > 0) {
        return Ok(());
    }
    Err(ValidationError::new("range").with_message("must be a positive id".into()))
}

/// The text fields of `POST /api/upload`, trimmed (absent ones empty).
#[derive(Debug, Validate)]
struct UploadFields {
    #[validate(custom(function = "file_kind"))]
    file_type: String,
    #[validate(custom(function = "relation_id"))]
    relation_id: String,
    #[validate(
        length(max = 50, message = "at most 50 characters"),
        regex(
            path = *RELATION_TYPE_FORM,
            message = "a kind of record: a lower-case letter, then lower-case letters, digits, _ . : or -"
        )
    )]
    relation_type: String,
}

/// A stored general upload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Uploaded {
    /// The file record's id.
    pub id: i64,
    /// The generated name it is stored under.
    pub file_name: String,
    /// The client's name for it (control characters removed, at most 200 characters).
    pub original_name: String,
    /// Where it is stored, under the upload directory.
    pub file_path: String,
    /// Its absolute URL (`<public_url>/uploads/...`).
    pub file_url: String,
    /// The same as `file_url`.
    pub url: String,
    /// Its size, bytes.
    pub file_size: i64,
    /// Its kind.
    #[schema(value_type = FileKind)]
    pub file_type: String,
    /// Its MIME type, by content.
    pub mime_type: String,
}

/// `POST /api/upload` (multipart `file` ≤ 10 MB, `file_type` avatar|document|image|audio|video|
/// other (default other), `relation_id`, `relation_type`) → `{id, file_name, original_name,
/// file_path, file_url, url, file_size, file_type, mime_type}`.
#[utoipa::path(
    post,
    path = "/api/upload",
    operation_id = "files_upload",
    tag = "files",
    summary = "Upload a file (≤ 10 MB, allowed types by content)",
    description = "The type is decided by the file's content, never by its name or declared \
        type; the stored name is generated.",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored file", body = Envelope<Uploaded>),
        (status = 400, description = "No file, an invalid field, or a type not allowed", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 10 MB", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn upload(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    user: AuthUser,
    web::Multipart(multipart): web::Multipart,
) -> Reply<Uploaded> {
    let received = receive(
        multipart,
        &["file_type", "relation_id", "relation_type"],
        MAX_BODY,
    )
    .await?;
    let field = |n: &str| {
        received
            .fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let fields = UploadFields {
        file_type: field("file_type"),
        relation_id: field("relation_id"),
        relation_type: field("relation_type"),
    };
    fields.validate()?;
    let file_type = match fields.file_type.as_str() {
        "" => "other".to_string(),
        t => t.to_string(),
    };
    let relation_id = fields.relation_id.parse::<i64>().ok();
    if received.bytes.len() > MAX_FILE {
        return Err(ApiError::too_large("file", "10 MB"));
    }
    let (mime, ext) = sniff(&received.bytes, GENERAL)?;
    let dir = format!("{file_type}/{}", user.user_id);
    let stored = store(
        &state,
        &api,
        &user,
        &dir,
        "file",
        &file_type,
        &received,
        mime,
        ext,
        (relation_id, fields.relation_type),
    )
    .await?;
    Ok(reply(Uploaded {
        id: stored.id,
        file_name: stored.file_name,
        original_name: received.original_name,
        file_path: stored.file_path,
        url: stored.file_url.clone(),
        file_url: stored.file_url,
        file_size: stored.size,
        file_type,
        mime_type: stored.mime,
    }))
}

/// A stored image upload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadedImage {
    /// Its absolute URL (`<public_url>/uploads/...`).
    pub url: String,
    /// The file record's id.
    pub id: i64,
}

/// `POST /api/upload/avatar` (multipart `file`, JPEG/PNG by content, ≤ 2 MB) → `{url}`; also
/// sets the caller's `avatar`.
#[utoipa::path(
    post,
    path = "/api/upload/avatar",
    operation_id = "files_avatar",
    tag = "files",
    summary = "Upload an avatar (JPEG/PNG by content, ≤ 2 MB); sets the user's avatar",
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored avatar, now the caller's", body = Envelope<UploadedImage>),
        (status = 400, description = "No file, or not a JPEG or PNG", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 2 MB", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn avatar(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    user: AuthUser,
    web::Multipart(multipart): web::Multipart,
) -> Reply<UploadedImage> {
    let received = receive(multipart, &[], MAX_BODY).await?;
    if received.bytes.len() > MAX_AVATAR {
        return Err(ApiError::too_large("file", "2 MB"));
    }
    let (mime, ext) = sniff(&received.bytes, IMAGES)?;
    let stored = store(
        &state,
        &api,
        &user,
        "avatars",
        "avatar",
        "avatar",
        &received,
        mime,
        ext,
        (Some(user.user_id), "user".into()),
    )
    .await?;
    sqlx::query("UPDATE users SET avatar = $2, updated_at = now() WHERE id = $1")
        .bind(user.user_id)
        .bind(&stored.file_url)
        .execute(&state.db)
        .await?;
    Ok(reply(UploadedImage {
        url: stored.file_url,
        id: stored.id,
    }))
}

/// `POST /api/counselor/upload-certificate` (multipart `file`, JPEG/PNG by content, ≤ 5 MB) →
/// `{url, id}`.
#[utoipa::path(
    post,
    path = "/api/counselor/upload-certificate",
    operation_id = "files_certificate",
    tag = "files",
    summary = "Upload a certificate image (JPEG/PNG by content, ≤ 5 MB)",
    request_body(content = ImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The stored certificate", body = Envelope<UploadedImage>),
        (status = 400, description = "No file, or not a JPEG or PNG", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Larger than 5 MB", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn certificate(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    user: AuthUser,
    web::Multipart(multipart): web::Multipart,
) -> Reply<UploadedImage> {
    let received = receive(multipart, &[], MAX_BODY).await?;
    if received.bytes.len() > MAX_CERTIFICATE {
        return Err(ApiError::too_large("file", "5 MB"));
    }
    let (mime, ext) = sniff(&received.bytes, IMAGES)?;
    let stored = store(
        &state,
        &api,
        &user,
        "certificates",
        "certificate",
        "image",
        &received,
        mime,
        ext,
        (None, "certificate".into()),
    )
    .await?;
    Ok(reply(UploadedImage {
        url: stored.file_url,
        id: stored.id,
    }))
}

async fn owned_file(
    state: &AppState,
    user: &AuthUser,
    id: i64,
) -> Result<sqlx::postgres::PgRow, ApiError> {
    let row = sqlx::query(
        "SELECT f.*, u.username FROM files f JOIN users u ON u.id = f.uploader_id WHERE f.id = $1 AND f.status = 1",
    )
    .bind(id)
    .fetch_optional(&state.db)
    .await?
    .ok_or_else(|| ApiError::not_found("file"))?;
    if row.get::<i64, _>("uploader_id") != user.user_id {
        return Err(ApiError::forbidden("not your file"));
    }
    Ok(row)
}

/// The uploader of a file.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileUploader {
    /// The uploader's users-table id.
    pub id: i64,
    /// The uploader's username.
    pub username: String,
}

/// A file record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileRecord {
    /// The record's id.
    pub id: i64,
    /// The generated name it is stored under.
    pub file_name: String,
    /// The client's name for it.
    pub original_name: String,
    /// Where it is stored, under the upload directory.
    pub file_path: String,
    /// Its absolute URL (`<public_url>/uploads/...`).
    pub file_url: String,
    /// Its size, bytes.
    pub file_size: i64,
    /// Its kind (`avatar`, `document`, `image`, `audio`, `video`, `other`).
    pub file_type: String,
    /// Its MIME type, by content.
    pub mime_type: String,
    /// The uploader's users-table id.
    pub uploader_id: i64,
    /// What it belongs to, or null.
    pub relation_id: Option<i64>,
    /// What kind of thing `relation_id` is (may be empty).
    pub relation_type: String,
    /// 1 stored (deleted records are not answered).
    pub status: i16,
    /// When it was uploaded (RFC 3339).
    pub created_at: DateTime<Utc>,
    /// When the record last changed (RFC 3339).
    pub updated_at: DateTime<Utc>,
    /// The uploader.
    pub uploader: FileUploader,
}

/// `GET /api/file/:id` → the file record with `uploader{id, username}`; uploader only.
#[utoipa::path(
    get,
    path = "/api/file/{id}",
    operation_id = "files_get_one",
    tag = "files",
    summary = "A file record (uploader only)",
    params(("id" = i64, Path, description = "The file record's id")),
    responses(
        (status = 200, description = "The file record", body = Envelope<FileRecord>),
        (status = 400, description = "An invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's file", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or deleted file", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> Reply<FileRecord> {
    let r = owned_file(&state, &user, id).await?;
    Ok(reply(FileRecord {
        id,
        file_name: r.get("file_name"),
        original_name: r.get("original_name"),
        file_path: r.get("file_path"),
        file_url: r.get("file_url"),
        file_size: r.get("file_size"),
        file_type: r.get("file_type"),
        mime_type: r.get("mime_type"),
        uploader_id: r.get("uploader_id"),
        relation_id: r.get("relation_id"),
        relation_type: r.get("relation_type"),
        status: r.get("status"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
        uploader: FileUploader {
            id: r.get("uploader_id"),
            username: r.get("username"),
        },
    }))
}

/// `DELETE /api/file/:id` → none: removes the stored bytes and marks the record deleted
/// (`status` 0); uploader only.
#[utoipa::path(
    delete,
    path = "/api/file/{id}",
    operation_id = "files_remove",
    tag = "files",
    summary = "Delete a file (uploader only)",
    params(("id" = i64, Path, description = "The file record's id")),
    responses(
        (status = 200, description = "`msg` \"deleted\"", body = Message),
        (status = 400, description = "An invalid id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Another user's file", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown or deleted file", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    State(api): State<Arc<UserApi>>,
    user: AuthUser,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Message>> {
    let r = owned_file(&state, &user, id).await?;
    let path: String = r.get("file_path");
    match tokio::fs::remove_file(api.config.upload_dir.join(&path)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("deleting {path}: {e}").into()),
    }
    sqlx::query("UPDATE files SET status = 0, updated_at = now() WHERE id = $1")
        .bind(id)
        .execute(&state.db)
        .await?;
    Ok(message("deleted"))
}

/// Longest `/uploads/...` path served, bytes (stored paths are `<kind>/<uid>/<name>`, < 200).
pub const MAX_UPLOAD_PATH: usize = 1024;

/// Guards `/uploads/...` (a case schemathesis found): a path over [`MAX_UPLOAD_PATH`] is a
/// 414 (a path longer than the OS's `PATH_MAX` made `ServeDir` answer 500), and any other error
/// `ServeDir` meets reading a path is logged and answered as a 404 `ApiError`.
pub async fn uploads_guard(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    if request.uri().path().len() > MAX_UPLOAD_PATH {
        return ApiError::new(
            axum::http::StatusCode::URI_TOO_LONG,
            format!("path longer than {MAX_UPLOAD_PATH} bytes"),
        )
        .into_response();
    }
    let response = next.run(request).await;
    if response.status().is_server_error() {
        tracing::error!(
            status = response.status().as_u16(),
            "serving an upload failed"
        );
        return ApiError::not_found("file").into_response();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_relation_type_pattern_is_the_one_checked() {
        assert_eq!(
            crate::user::openapi::documented_pattern("UploadForm", "relation_type"),
            RELATION_TYPE_PATTERN
        );
        let fields = |relation_type: &str| UploadFields {
            file_type: String::new(),
            relation_id: String::new(),
            relation_type: relation_type.into(),
        };
        for ok in ["", "chat", "order_item", "group.message", "x-1"] {
            assert!(fields(ok).validate().is_ok(), "{ok:?}");
        }
        for bad in ["5", "-1", "1.5", "True", "None", "chat room", "_x"] {
            assert!(fields(bad).validate().is_err(), "{bad:?}");
        }
    }
}
