//! Admin uploads (contract c.2): images (≤ 2 MB) and files (≤ 10 MB), stored in Postgres so that
//! every admin node serves them at `/uploads/{id}/{name}`.

use axum::extract::{Multipart, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;
use web::extract::Path;

use crate::admin::common::Caller;
use crate::{ApiError, ApiResult, AppState};

const MAX_IMAGE: usize = 2 * 1024 * 1024;
const MAX_FILE: usize = 10 * 1024 * 1024;

/// An upload's multipart form.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the multipart form; the handler reads the stream
#[serde(deny_unknown_fields)]
pub struct UploadForm {
    /// The file: an image (jpg, jpeg, png, webp, gif; ≤ 2 MB) for the image and avatar uploads,
    /// any file ≤ 10 MB for the file upload.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// A stored file's bytes (served with the media type it was stored with).
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)] // documents the served bytes
pub struct StoredFile(Vec<u8>);

/// A stored upload.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UploadedFile {
    /// Upload id.
    pub id: i64,
    /// Where it is served (`/uploads/{id}/{file_name}`).
    pub url: String,
    /// The same as `url`.
    pub file_url: String,
    /// The stored name: the original with every character but ASCII letters, digits, `.`, `-`
    /// and `_` replaced by `_`.
    pub file_name: String,
    /// The name the client sent.
    pub original_name: String,
    /// Size in bytes.
    pub file_size: usize,
    /// Media type, from the name's extension.
    pub mime_type: String,
}

async fn store_upload(
    state: &AppState,
    admin_id: Option<i64>,
    multipart: Multipart,
    images_only: bool,
) -> Result<UploadedFile, ApiError> {
    // The form has one field, `file`; anything else is refused, as the form's schema states
    // (MyChat's Go backend also read `file_type`, `relation_id` and `relation_type` on the
    // file upload, which no client sends and the admin uploads table has no column for).
    let received =
        crate::user::files::receive(multipart, &[], crate::admin::guard::MAX_BODY).await?;
    let original = if received.original_name.is_empty() {
        "file".to_string()
    } else {
        received.original_name
    };
    let bytes = received.bytes;
    let ext = original
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let mime = match ext.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "pdf" if !images_only => "application/pdf",
        "txt" if !images_only => "text/plain",
        _ if !images_only => "application/octet-stream",
        _ => {
            return Err(ApiError::unprocessable(
                "file",
                "must be a jpg, jpeg, png, webp or gif image",
            ))
        }
    };
    let max = if images_only { MAX_IMAGE } else { MAX_FILE };
    if bytes.len() > max {
        return Err(
            ApiError::field("file", format!("must be 1 byte to {max} bytes"))
                .with_status(axum::http::StatusCode::PAYLOAD_TOO_LARGE),
        );
    }
    let safe: String = original
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO admin_uploads (admin_id, file_name, mime_type, bytes) VALUES ($1,$2,$3,$4) RETURNING id",
    )
    .bind(admin_id)
    .bind(&safe)
    .bind(mime)
    .bind(&bytes)
    .fetch_one(&state.db)
    .await?;
    let url = format!("/uploads/{id}/{safe}");
    Ok(UploadedFile {
        id,
        url: url.clone(),
        file_url: url,
        file_name: safe,
        original_name: original,
        file_size: bytes.len(),
        mime_type: mime.to_string(),
    })
}

/// The image upload's answer: the envelope with the URL also at the root (contract c.2 #20).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ImageUploaded {
    /// Always 200 on success.
    #[schema(example = 200)]
    pub code: u16,
    /// `"success"`.
    pub msg: String,
    /// The stored image's URL.
    pub file_url: String,
    /// The same URL.
    pub url: String,
    /// The stored image.
    pub data: UploadedFile,
}

/// Upload an image (≤ 2 MB)
///
/// Multipart field `file`: a jpg, jpeg, png, webp or gif image; 413 when larger than 2 MB.
#[utoipa::path(post, path = "/api/admin/upload/image", tag = "uploads",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "the stored image", body = ImageUploaded),
        (status = 400, description = "no file, or a field the form does not have", body = Problem),
        (status = 422, description = "an empty file, or not an image (by its name's extension)", body = Problem),
        (status = 413, description = "larger than 2 MB", body = Problem)))]
pub async fn upload_image(
    State(state): State<AppState>,
    caller: Caller,
    web::Multipart(multipart): web::Multipart,
) -> ApiResult<Json<ImageUploaded>> {
    let data = store_upload(&state, Some(caller.admin_id), multipart, true).await?;
    Ok(Json(ImageUploaded {
        code: 200,
        msg: "success".to_string(),
        file_url: data.file_url.clone(),
        url: data.url.clone(),
        data,
    }))
}

/// Upload a file (≤ 10 MB)
///
/// Multipart field `file`, any type; 413 when larger than 10 MB.
#[utoipa::path(post, path = "/api/admin/upload/file", tag = "uploads",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "the stored file", body = Envelope<UploadedFile>),
        (status = 400, description = "no file, or a field the form does not have", body = Problem),
        (status = 422, description = "an empty file", body = Problem),
        (status = 413, description = "larger than 10 MB", body = Problem)))]
pub async fn upload_file(
    State(state): State<AppState>,
    caller: Caller,
    web::Multipart(multipart): web::Multipart,
) -> Reply<UploadedFile> {
    Ok(reply(
        store_upload(&state, Some(caller.admin_id), multipart, false).await?,
    ))
}

/// The avatar upload's answer: the envelope with the URL also at the root.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AvatarUploaded {
    /// Always 200 on success.
    #[schema(example = 200)]
    pub code: u16,
    /// `"success"`.
    pub msg: String,
    /// The stored image's URL.
    pub url: String,
    /// The stored image.
    pub data: UploadedFile,
}

/// Profile avatar upload (the client sends no token)
///
/// MyChat's client posts the profile avatar **without** a token (contract c.2 #22, f.5): public,
/// images ≤ 2 MB only.
#[utoipa::path(post, path = "/api/admin/upload", tag = "uploads",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "the stored image", body = AvatarUploaded),
        (status = 400, description = "no file, or a field the form does not have", body = Problem),
        (status = 422, description = "an empty file, or not an image (by its name's extension)", body = Problem),
        (status = 413, description = "larger than 2 MB", body = Problem)))]
pub async fn upload_public(
    State(state): State<AppState>,
    web::Multipart(multipart): web::Multipart,
) -> ApiResult<Json<AvatarUploaded>> {
    let data = store_upload(&state, None, multipart, true).await?;
    Ok(Json(AvatarUploaded {
        code: 200,
        msg: "success".to_string(),
        url: data.url.clone(),
        data,
    }))
}

/// Serve an uploaded file
///
/// The stored bytes with their media type (public, as MyChat served `/uploads/*`).
#[utoipa::path(get, path = "/uploads/{id}/{name}", tag = "uploads",
    params(
        ("id" = i64, Path, description = "upload id"),
        ("name" = String, Path, description = "the stored name (informative: the id decides)")),
    responses((status = 200, description = "the file, served with its stored media type",
        content_type = "*/*", body = StoredFile)))]
pub async fn serve_upload(
    State(state): State<AppState>,
    Path((id, _name)): Path<(i64, String)>,
) -> ApiResult<Response> {
    let row: Option<(String, Vec<u8>)> =
        sqlx::query_as("SELECT mime_type, bytes FROM admin_uploads WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let (mime, bytes) = row.ok_or_else(|| ApiError::not_found("file"))?;
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}
