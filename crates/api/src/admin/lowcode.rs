//! The low-code platform in the admin API (contract c.8): forms whose `items` is an **array** of
//! form items (stored as `form_json` text), form data submit / list / delete, pages with `items`
//! arrays (no `path` needed) and preview. The items are the client designer's free-form
//! configuration: stored and answered as the client sent them, checked only for what the server
//! relies on (each item's `type`, and a form item's `field`).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::Problem;

use crate::admin::common::{
    count, lenient, listed, typed_one, typed_row, typed_rows, unique_violation, Caller, Listed,
};
use crate::admin::listing::PageParams;
use crate::{ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState};

mod items;
pub use items::{FormItem, PageItem};

/// OpenAPI tag of every low-code operation.
pub const TAG: &str = "lowcode";

/// A form. Members in the order Postgres renders the row (`jsonb`: shorter names first);
/// timestamps are RFC 3339 as Postgres writes them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LowcodeForm {
    /// Form id.
    pub id: i64,
    /// Title, 1–100 characters.
    pub title: String,
    /// 1 enabled, 0 disabled.
    pub status: i16,
    /// The form items as JSON text (an array).
    pub form_json: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Description, at most 1000 characters.
    pub description: String,
}

/// A page. Members in the order Postgres renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LowcodePage {
    /// Page id.
    pub id: i64,
    /// The route the client shows it at (optional, may be empty).
    pub path: String,
    /// Title, 1–100 characters.
    pub title: String,
    /// 1 enabled, 0 disabled.
    pub status: i16,
    /// The page items as JSON text (an array).
    pub page_json: String,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// Description, at most 1000 characters.
    pub description: String,
}

/// A record submitted through a form. Members in the order Postgres renders the row.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FormRecord {
    /// Record id.
    pub id: i64,
    /// The form.
    pub form_id: i64,
    /// The submitted fields as JSON text (an object: field → value).
    pub form_data: String,
    /// When it was submitted (RFC 3339).
    pub created_at: String,
    /// The administrator who submitted it.
    pub created_by: i64,
}

/// A page of forms: the same rows under `forms` and `list` (the form picker reads the root
/// `list`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FormList {
    /// The page's forms, newest first.
    pub forms: Vec<LowcodeForm>,
    /// The same rows.
    pub list: Vec<LowcodeForm>,
    /// Forms matching the filter.
    pub total: i64,
}

/// A page of pages: the same rows under `pages` and `list`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PageList {
    /// The page's pages, newest first.
    pub pages: Vec<LowcodePage>,
    /// The same rows.
    pub list: Vec<LowcodePage>,
    /// Pages matching the filter.
    pub total: i64,
}

/// A page of a form's records: the same rows under `data` and `list`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FormRecordList {
    /// The page's records, newest first.
    pub data: Vec<FormRecord>,
    /// The same rows.
    pub list: Vec<FormRecord>,
    /// The form's records.
    pub total: i64,
}

/// `GET /api/admin/lowcode/forms/{id}/data`'s answer, as MyChat's admin client has always read
/// it: the page under `data`, and the page's rows and total at the root beside `code` and `msg`
/// (the root's own `data` is the page, so it carries no second `data` array).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FormRecordReply {
    /// The page.
    pub data: FormRecordList,
    /// The page's records, newest first.
    pub list: Vec<FormRecord>,
    /// The form's records.
    pub total: i64,
    /// Always 200.
    #[schema(example = 200)]
    pub code: u16,
    /// `"success"`.
    pub msg: String,
}

/// A title filter and a page.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TitleQuery {
    /// The page (documented as [`PageParams`]).
    #[serde(flatten)]
    #[param(ignore)]
    pub paging: PageParams,
    /// Text found in the title; empty = all.
    #[serde(default)]
    pub title: Option<String>,
}

/// Which low-code table.
#[derive(Clone, Copy)]
enum Kind {
    Form,
    Page,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Self::Form => "lowcode_forms",
            Self::Page => "lowcode_pages",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Self::Form => "form",
            Self::Page => "page",
        }
    }
}

async fn list<T: serde::de::DeserializeOwned + Serialize>(
    state: &AppState,
    kind: Kind,
    q: &TitleQuery,
) -> Result<(Vec<T>, i64), ApiError> {
    let (limit, offset) = q.paging.limits(20)?;
    let title = q
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(crate::admin::common::contains_pattern);
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(t) = &title {
            qb.push(" AND title ILIKE ").push_bind(t.clone());
        }
    };
    let mut qb = QueryBuilder::new(format!(
        "SELECT to_jsonb(t)::text FROM (SELECT * FROM {}",
        kind.table()
    ));
    filter(&mut qb);
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset)
        .push(") t");
    let list = typed_rows(state, qb).await?;
    let mut cq = QueryBuilder::new(format!("SELECT count(*) FROM {}", kind.table()));
    filter(&mut cq);
    let total = count(state, cq).await?;
    Ok((list, total))
}

/// A form to create (no `id`, or `id` ≤ 0: `title` and `items` required) or to update (the
/// fields sent; absent ones unchanged).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct FormSave {
    /// With `POST`: the form to update when > 0.
    #[serde(default, deserialize_with = "lenient::int")]
    #[schema(value_type = Option<i64>)]
    pub id: Option<i64>,
    /// Title, 1–100 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(value_type = Option<String>)]
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    pub title: Option<String>,
    /// Description, at most 1000 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(value_type = Option<String>)]
    #[validate(length(max = 1000, message = "must be 0 to 1000 characters"))]
    pub description: Option<String>,
    /// The form items (an array), stored as `form_json`.
    #[serde(default)]
    #[validate(nested)]
    pub items: Option<Vec<FormItem>>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "lenient::int")]
    #[schema(value_type = Option<i64>)]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i64>,
}

/// A page to create (no `id`, or `id` ≤ 0: `title` and `items` required) or to update (the
/// fields sent; absent ones unchanged).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct PageSave {
    /// With `POST`: the page to update when > 0.
    #[serde(default, deserialize_with = "lenient::int")]
    #[schema(value_type = Option<i64>)]
    pub id: Option<i64>,
    /// Title, 1–100 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(value_type = Option<String>)]
    #[validate(length(min = 1, max = 100, message = "must be 1 to 100 characters"))]
    pub title: Option<String>,
    /// Description, at most 1000 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(value_type = Option<String>)]
    #[validate(length(max = 1000, message = "must be 0 to 1000 characters"))]
    pub description: Option<String>,
    /// The route the client shows the page at (optional), at most 200 characters.
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(value_type = Option<String>)]
    #[validate(length(max = 200, message = "must be 0 to 200 characters"))]
    pub path: Option<String>,
    /// The page items (an array), stored as `page_json`.
    #[serde(default)]
    #[validate(nested)]
    pub items: Option<Vec<PageItem>>,
    /// 1 enabled, 0 disabled.
    #[serde(default, deserialize_with = "lenient::int")]
    #[schema(value_type = Option<i64>)]
    #[validate(range(min = 0, max = 1, message = "must be 0 or 1"))]
    pub status: Option<i64>,
}

/// What creating a form or a page needs beyond the rules of its fields: whether `title` and
/// `items` are required depends on `id` (a rule across fields), so their absence is a 422.
fn creation_needs(title: &Option<String>, has_items: bool) -> Result<(), ApiError> {
    if title.is_none() {
        return Err(ApiError::unprocessable("title", "required when creating"));
    }
    if !has_items {
        return Err(ApiError::unprocessable(
            "items",
            "required when creating (an array)",
        ));
    }
    Ok(())
}

fn items_text<T: Serialize>(items: &Option<Vec<T>>) -> Result<Option<String>, ApiError> {
    items
        .as_ref()
        .map(|i| serde_json::to_string(i).map_err(|e| ApiError::internal(e.into())))
        .transpose()
}

async fn save_form_row(state: &AppState, id: Option<i64>, b: FormSave) -> Reply<LowcodeForm> {
    b.validate()?;
    let items = items_text(&b.items)?;
    let status = b.status.map(|s| s as i16);
    let row: Option<String> = match id {
        None => {
            creation_needs(&b.title, items.is_some())?;
            sqlx::query_scalar(
                "INSERT INTO lowcode_forms (title, description, form_json, status) \
                 VALUES ($1, COALESCE($2, ''), $3, COALESCE($4, 1::smallint)) \
                 RETURNING to_jsonb(lowcode_forms.*)::text",
            )
            .bind(&b.title)
            .bind(&b.description)
            .bind(&items)
            .bind(status)
            .fetch_optional(&state.db)
            .await
        }
        Some(id) => {
            sqlx::query_scalar(
                "UPDATE lowcode_forms t SET updated_at = now(), title = COALESCE($2, title), \
                 description = COALESCE($3, description), form_json = COALESCE($4, form_json), \
                 status = COALESCE($5, status) WHERE id = $1 RETURNING to_jsonb(t)::text",
            )
            .bind(id)
            .bind(&b.title)
            .bind(&b.description)
            .bind(&items)
            .bind(status)
            .fetch_optional(&state.db)
            .await
        }
    }
    .map_err(unique_violation)?;
    let row = row.ok_or_else(|| ApiError::not_found("form"))?;
    Ok(reply(typed_row(&row, &[])?))
}

async fn save_page_row(state: &AppState, id: Option<i64>, b: PageSave) -> Reply<LowcodePage> {
    b.validate()?;
    let items = items_text(&b.items)?;
    let status = b.status.map(|s| s as i16);
    let row: Option<String> = match id {
        None => {
            creation_needs(&b.title, items.is_some())?;
            sqlx::query_scalar(
                "INSERT INTO lowcode_pages (title, description, path, page_json, status) \
                 VALUES ($1, COALESCE($2, ''), COALESCE($3, ''), $4, COALESCE($5, 1::smallint)) \
                 RETURNING to_jsonb(lowcode_pages.*)::text",
            )
            .bind(&b.title)
            .bind(&b.description)
            .bind(&b.path)
            .bind(&items)
            .bind(status)
            .fetch_optional(&state.db)
            .await
        }
        Some(id) => {
            sqlx::query_scalar(
                "UPDATE lowcode_pages t SET updated_at = now(), title = COALESCE($2, title), \
                 description = COALESCE($3, description), path = COALESCE($4, path), \
                 page_json = COALESCE($5, page_json), status = COALESCE($6, status) \
                 WHERE id = $1 RETURNING to_jsonb(t)::text",
            )
            .bind(id)
            .bind(&b.title)
            .bind(&b.description)
            .bind(&b.path)
            .bind(&items)
            .bind(status)
            .fetch_optional(&state.db)
            .await
        }
    }
    .map_err(unique_violation)?;
    let row = row.ok_or_else(|| ApiError::not_found("page"))?;
    Ok(reply(typed_row(&row, &[])?))
}

/// List forms
///
/// `{forms, list, total}` in `data` and at the root (the form picker reads the root `list`),
/// newest first; 20 per page by default.
#[utoipa::path(get, path = "/api/admin/lowcode/forms", tag = TAG, params(PageParams, TitleQuery),
    responses((status = 200, body = Listed<FormList>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list_forms(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TitleQuery>,
) -> ApiResult<axum::Json<Listed<FormList>>> {
    let (list, total) = list::<LowcodeForm>(&state, Kind::Form, &q).await?;
    Ok(listed(FormList {
        forms: list.clone(),
        list,
        total,
    }))
}

/// Save a form
///
/// Creates a form, or updates form `id` when the body's `id` > 0. `form_json` is the items
/// array as text.
#[utoipa::path(post, path = "/api/admin/lowcode/forms", tag = TAG, request_body = FormSave,
    responses((status = 200, body = Envelope<LowcodeForm>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn save_form(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<FormSave>,
) -> Reply<LowcodeForm> {
    let id = body.id.filter(|id| *id > 0);
    save_form_row(&state, id, body).await
}

/// Update a form
///
/// The fields sent; absent ones unchanged. Answers the form.
#[utoipa::path(put, path = "/api/admin/lowcode/forms/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Form id")), request_body = FormSave,
    responses((status = 200, body = Envelope<LowcodeForm>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn update_form(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<FormSave>,
) -> Reply<LowcodeForm> {
    save_form_row(&state, Some(id), body).await
}

/// Get a form
#[utoipa::path(get, path = "/api/admin/lowcode/forms/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Form id")),
    responses((status = 200, body = Envelope<LowcodeForm>), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_form(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Reply<LowcodeForm> {
    Ok(reply(
        typed_one(
            &state,
            "SELECT to_jsonb(f)::text FROM lowcode_forms f WHERE id = $1",
            id,
            "form",
        )
        .await?,
    ))
}

/// Delete a form
///
/// Its records go with it.
#[utoipa::path(delete, path = "/api/admin/lowcode/forms/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Form id")),
    responses((status = 200, body = Message), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_form(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<axum::Json<Message>> {
    delete(&state, Kind::Form, id).await
}

async fn delete(state: &AppState, kind: Kind, id: i64) -> ApiResult<axum::Json<Message>> {
    let sql = format!("DELETE FROM {} WHERE id = $1", kind.table());
    let done = sqlx::query(&sql).bind(id).execute(&state.db).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(kind.what()));
    }
    Ok(message("deleted"))
}

/// List a form's data
///
/// `{data, list, total}` in `data` and at the root: the form's records, newest first, each with
/// `form_data` as JSON text; 20 per page by default.
#[utoipa::path(get, path = "/api/admin/lowcode/forms/{id}/data", tag = TAG,
    params(("id" = i64, Path, description = "Form id"), PageParams),
    responses((status = 200, body = FormRecordReply), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn list_form_data(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<PageParams>,
) -> ApiResult<axum::Json<FormRecordReply>> {
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM lowcode_forms WHERE id = $1)")
            .bind(id)
            .fetch_one(&state.db)
            .await?;
    if !exists {
        return Err(ApiError::not_found("form"));
    }
    let (limit, offset) = q.limits(20)?;
    let mut qb =
        QueryBuilder::new("SELECT to_jsonb(d)::text FROM lowcode_form_data d WHERE form_id = ");
    qb.push_bind(id);
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let list: Vec<FormRecord> = typed_rows(&state, qb).await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lowcode_form_data WHERE form_id = $1")
            .bind(id)
            .fetch_one(&state.db)
            .await?;
    Ok(axum::Json(FormRecordReply {
        data: FormRecordList {
            data: list.clone(),
            list: list.clone(),
            total,
        },
        list,
        total,
        code: 200,
        msg: "success".to_string(),
    }))
}

/// A submission: the form's fields, field → value (a [`FieldValue`] or `null`; the fields are
/// the form's own). Stored as sent, as JSON text.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = HashMap<String, FieldValue>)]
pub struct FormSubmission(pub Map<String, Value>);

/// The value of a form field as the designer's inputs produce it (documentation of
/// `FormSubmission`; the server stores each value as sent).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FieldValue {
    /// Text inputs, selects, dates.
    Text(String),
    /// Number inputs.
    Number(f64),
    /// Switches.
    Flag(bool),
    /// Checkbox groups, multi-selects, uploads.
    Choices(Vec<String>),
    /// An empty field (`null`).
    Empty,
}

/// Stores a submission after checking that every value is a [`FieldValue`] or `null` (a 400
/// naming the field) and that every `required` item of the form is present and non-empty (a 422:
/// a rule of the stored form).
async fn submit(
    state: &AppState,
    caller: &Caller,
    id: i64,
    fields: Map<String, Value>,
) -> Reply<FormRecord> {
    for (name, value) in &fields {
        if serde_json::from_value::<FieldValue>(value.clone()).is_err() {
            return Err(ApiError::field(
                name,
                "must be text, a number, true/false, a list of text or null",
            ));
        }
    }
    let form: Option<String> =
        sqlx::query_scalar("SELECT form_json FROM lowcode_forms WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let form = form.ok_or_else(|| ApiError::not_found("form"))?;
    let items: Vec<Value> = serde_json::from_str(&form).unwrap_or_default();
    for item in &items {
        let field = item["field"].as_str().unwrap_or_default();
        if item["required"] == true {
            let missing = match fields.get(field).filter(|v| !v.is_null()) {
                None => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            };
            if missing {
                return Err(ApiError::unprocessable(field, "required"));
            }
        }
    }
    let row: String = sqlx::query_scalar(
        "INSERT INTO lowcode_form_data (form_id, form_data, created_by) VALUES ($1, $2, $3) \
         RETURNING to_jsonb(lowcode_form_data.*)::text",
    )
    .bind(id)
    .bind(Value::Object(fields).to_string())
    .bind(caller.admin_id)
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    Ok(reply(typed_row(&row, &[])?))
}

/// Submit form data
///
/// Every `required` item of the form must be present and non-empty. Answers the stored record.
#[utoipa::path(post, path = "/api/admin/lowcode/forms/{id}/submit", tag = TAG,
    params(("id" = i64, Path, description = "Form id")), request_body = FormSubmission,
    responses((status = 200, body = Envelope<FormRecord>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn submit_form_data(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<FormSubmission>,
) -> Reply<FormRecord> {
    submit(&state, &caller, id, body.0).await
}

/// Submit form data (client path)
///
/// The same as `POST /api/admin/lowcode/forms/{id}/submit`.
#[utoipa::path(post, path = "/api/admin/lowcode/forms/{id}/data", tag = TAG,
    params(("id" = i64, Path, description = "Form id")), request_body = FormSubmission,
    responses((status = 200, body = Envelope<FormRecord>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn submit_form_data_client(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<FormSubmission>,
) -> Reply<FormRecord> {
    submit(&state, &caller, id, body.0).await
}

/// Delete a form data record
///
/// 404 when the form has no such record.
#[utoipa::path(delete, path = "/api/admin/lowcode/forms/{id}/data/{data_id}", tag = TAG,
    params(("id" = i64, Path, description = "Form id"),
        ("data_id" = i64, Path, description = "Record id")),
    responses((status = 200, body = Message), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_form_data(
    State(state): State<AppState>,
    ApiPath((id, data_id)): ApiPath<(i64, i64)>,
) -> ApiResult<axum::Json<Message>> {
    let done = sqlx::query("DELETE FROM lowcode_form_data WHERE id = $1 AND form_id = $2")
        .bind(data_id)
        .bind(id)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("form data"));
    }
    Ok(message("deleted"))
}

/// List pages
///
/// `{pages, list, total}` in `data` and at the root, newest first; 20 per page by default.
#[utoipa::path(get, path = "/api/admin/lowcode/pages", tag = TAG, params(PageParams, TitleQuery),
    responses((status = 200, body = Listed<PageList>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn list_pages(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TitleQuery>,
) -> ApiResult<axum::Json<Listed<PageList>>> {
    let (list, total) = list::<LowcodePage>(&state, Kind::Page, &q).await?;
    Ok(listed(PageList {
        pages: list.clone(),
        list,
        total,
    }))
}

/// Save a page
///
/// Creates a page, or updates page `id` when the body's `id` > 0. `page_json` is the items
/// array as text.
#[utoipa::path(post, path = "/api/admin/lowcode/pages", tag = TAG, request_body = PageSave,
    responses((status = 200, body = Envelope<LowcodePage>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn save_page(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<PageSave>,
) -> Reply<LowcodePage> {
    let id = body.id.filter(|id| *id > 0);
    save_page_row(&state, id, body).await
}

/// Update a page
///
/// The fields sent; absent ones unchanged. Answers the page.
#[utoipa::path(put, path = "/api/admin/lowcode/pages/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Page id")), request_body = PageSave,
    responses((status = 200, body = Envelope<LowcodePage>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn update_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<PageSave>,
) -> Reply<LowcodePage> {
    save_page_row(&state, Some(id), body).await
}

const PAGE_SQL: &str = "SELECT to_jsonb(p)::text FROM lowcode_pages p WHERE id = $1";

/// Get a page
#[utoipa::path(get, path = "/api/admin/lowcode/pages/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Page id")),
    responses((status = 200, body = Envelope<LowcodePage>), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Reply<LowcodePage> {
    Ok(reply(typed_one(&state, PAGE_SQL, id, "page").await?))
}

/// Delete a page
#[utoipa::path(delete, path = "/api/admin/lowcode/pages/{id}", tag = TAG,
    params(("id" = i64, Path, description = "Page id")),
    responses((status = 200, body = Message), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn delete_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<axum::Json<Message>> {
    delete(&state, Kind::Page, id).await
}

/// A page as the client renders it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PagePreview {
    /// The page's title.
    pub title: String,
    /// The items as stored (JSON text).
    pub page_json: String,
    /// The items parsed (the designer's free-form objects; `[]` when the text is not JSON).
    #[schema(value_type = Vec<Object>)]
    pub items: Value,
}

/// Preview a page
///
/// `{title, page_json, items}`: the stored items and the same parsed.
#[utoipa::path(get, path = "/api/admin/lowcode/pages/{id}/preview", tag = TAG,
    params(("id" = i64, Path, description = "Page id")),
    responses((status = 200, body = Envelope<PagePreview>), (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn preview_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Reply<PagePreview> {
    let page: LowcodePage = typed_one(&state, PAGE_SQL, id, "page").await?;
    let items: Value = serde_json::from_str(&page.page_json).unwrap_or(Value::Array(Vec::new()));
    Ok(reply(PagePreview {
        title: page.title,
        page_json: page.page_json,
        items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_stored_as_sent_and_refusals_name_the_item() {
        let b: FormSave = serde_json::from_str(
            r#"{"title": " 回访 ", "items": [{"id": 1, "type": "input", "label": "姓名", "field": "name", "required": true}]}"#,
        )
        .unwrap();
        assert!(b.validate().is_ok());
        assert_eq!(b.title.as_deref(), Some(" 回访 "), "text is stored as sent");
        assert_eq!(
            items_text(&b.items).unwrap().unwrap(),
            r#"[{"id":1,"type":"input","label":"姓名","field":"name","required":true}]"#
        );
        let b: FormSave =
            serde_json::from_str(r#"{"title": "x", "items": [{"type": "input"}]}"#).unwrap();
        let e = ApiError::from(b.validate().unwrap_err());
        assert_eq!(e.msg, "items[0].field: required");
        let p: PageSave = serde_json::from_str(r#"{"items": [{"label": "a"}]}"#).unwrap();
        let e = ApiError::from(p.validate().unwrap_err());
        assert_eq!(e.msg, "items[0].type: required");
        assert!(serde_json::from_str::<FormSave>(r#"{"items": {"a": 1}}"#).is_err());
    }
}
