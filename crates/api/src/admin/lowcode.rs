//! Admin API (issue 4): the low-code platform (contract c.8): forms whose `items` is an **array**
//! of FormItems (stored as `form_json` text), form data submit / list / delete, pages with
//! `items` arrays (no `path` needed) and preview.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};
use sqlx::{Postgres, QueryBuilder};

use crate::admin::common::{
    check_len, count, insert_row, json_rows, list_envelope, one, update_row, Bind, Body, Caller, Q,
};
use crate::{ok, ok_msg, ApiError, ApiJson, ApiPath, ApiQuery, ApiResult, AppState};

type Params = ApiQuery<HashMap<String, String>>;

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
    fn json_col(self) -> &'static str {
        match self {
            Self::Form => "form_json",
            Self::Page => "page_json",
        }
    }
    fn what(self) -> &'static str {
        match self {
            Self::Form => "form",
            Self::Page => "page",
        }
    }
}

async fn list(state: &AppState, kind: Kind, q: Q) -> ApiResult<Json<Value>> {
    let (limit, offset, ..) = q.paging(20)?;
    let title = q.str("title").map(crate::admin::common::contains_pattern);
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
    let list = json_rows(state, qb).await?;
    let mut cq = QueryBuilder::new(format!("SELECT count(*) FROM {}", kind.table()));
    filter(&mut cq);
    let total = count(state, cq).await?;
    Ok(list_envelope(
        if matches!(kind, Kind::Form) {
            "forms"
        } else {
            "pages"
        },
        list,
        total,
        json!({}),
    ))
}

/// Validates `items`: an array of objects each with a `type` (FormItem / PageItem); a form item
/// also needs a `field`. Returns the JSON text stored in `form_json` / `page_json`.
fn items_json(kind: Kind, b: &Body, required: bool) -> Result<Option<String>, ApiError> {
    let items = match b.raw("items") {
        None if required => return Err(ApiError::field("items", "required (an array)")),
        None => return Ok(None),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(ApiError::field("items", "must be an array")),
    };
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(ApiError::field(&format!("items[{i}]"), "must be an object"));
        };
        if !obj.get("type").is_some_and(Value::is_string) {
            return Err(ApiError::field(&format!("items[{i}].type"), "required"));
        }
        let field = obj.get("field").and_then(Value::as_str).unwrap_or_default();
        if matches!(kind, Kind::Form) && field.is_empty() {
            return Err(ApiError::field(&format!("items[{i}].field"), "required"));
        }
    }
    Ok(Some(Value::Array(items.clone()).to_string()))
}

async fn save(state: &AppState, kind: Kind, id: Option<i64>, b: Body) -> ApiResult<Json<Value>> {
    let mut cols = Vec::new();
    if let Some(t) = b.str("title")? {
        check_len("title", &t, 1, 100)?;
        cols.push(("title", Bind::Text(t)));
    } else if id.is_none() {
        return Err(ApiError::field("title", "required"));
    }
    if let Some(d) = b.str("description")? {
        check_len("description", &d, 0, 1000)?;
        cols.push(("description", Bind::Text(d)));
    }
    if matches!(kind, Kind::Page) {
        if let Some(p) = b.str("path")? {
            check_len("path", &p, 0, 200)?;
            cols.push(("path", Bind::Text(p)));
        }
    }
    if let Some(j) = items_json(kind, &b, id.is_none())? {
        cols.push((kind.json_col(), Bind::Text(j)));
    }
    if let Some(s) = b.status01("status")? {
        cols.push(("status", Bind::Int(s)));
    }
    let row = match id {
        None => insert_row(state, kind.table(), cols).await?,
        Some(id) => update_row(state, kind.table(), id, cols, true)
            .await?
            .ok_or_else(|| ApiError::not_found(kind.what()))?,
    };
    Ok(ok(row))
}

fn body_id(b: &Body) -> Result<Option<i64>, ApiError> {
    Ok(b.int("id")?.filter(|id| *id > 0))
}

/// `GET /api/admin/lowcode/forms?page&page_size&title` → `{list, forms, total}` (root `list` too).
pub async fn list_forms(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    list(&state, Kind::Form, Q(q)).await
}

/// `POST /api/admin/lowcode/forms` body `{id?, title, description, items: [FormItem]}` → the
/// form (`form_json` = the items array as text); upsert when `id > 0`.
pub async fn save_form(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let id = body_id(&b)?;
    save(&state, Kind::Form, id, b).await
}

/// `PUT /api/admin/lowcode/forms/:id` → the form.
pub async fn update_form(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    save(&state, Kind::Form, Some(id), Body::new(body)?).await
}

/// `GET /api/admin/lowcode/forms/:id` → the form.
pub async fn get_form(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    Ok(ok(one(
        &state,
        "SELECT to_jsonb(f)::text FROM lowcode_forms f WHERE id = $1",
        id,
        "form",
    )
    .await?))
}

/// `DELETE /api/admin/lowcode/forms/:id` (its data goes with it).
pub async fn delete_form(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    delete(&state, Kind::Form, id).await
}

async fn delete(state: &AppState, kind: Kind, id: i64) -> ApiResult<Json<Value>> {
    let sql = format!("DELETE FROM {} WHERE id = $1", kind.table());
    let done = sqlx::query(&sql).bind(id).execute(&state.db).await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(kind.what()));
    }
    Ok(ok_msg("deleted"))
}

/// `GET /api/admin/lowcode/forms/:id/data?page&page_size` → `{list: [{id, form_id, form_data
/// (JSON text), created_by, created_at}], total}`.
pub async fn list_form_data(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    let _form = get_form(State(state.clone()), ApiPath(id)).await?;
    let (limit, offset, ..) = Q(q).paging(20)?;
    let mut qb =
        QueryBuilder::new("SELECT to_jsonb(d)::text FROM lowcode_form_data d WHERE form_id = ");
    qb.push_bind(id);
    qb.push(" ORDER BY id DESC LIMIT ")
        .push_bind(limit)
        .push(" OFFSET ")
        .push_bind(offset);
    let list = json_rows(&state, qb).await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM lowcode_form_data WHERE form_id = $1")
            .bind(id)
            .fetch_one(&state.db)
            .await?;
    Ok(list_envelope("data", list, total, json!({})))
}

/// `POST /api/admin/lowcode/forms/:id/submit` (also `…/data`) body: a JSON object field → value;
/// every `required` item of the form must be present and non-empty → the stored record.
pub async fn submit_form_data(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
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
            let missing = match b.raw(field) {
                None => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                Some(_) => false,
            };
            if missing {
                return Err(ApiError::field(field, "required"));
            }
        }
    }
    let row = insert_row(
        &state,
        "lowcode_form_data",
        vec![
            ("form_id", Bind::Int(id)),
            ("form_data", Bind::Text(Value::Object(b.0).to_string())),
            ("created_by", Bind::Int(caller.admin_id)),
        ],
    )
    .await?;
    Ok(ok(row))
}

/// `DELETE /api/admin/lowcode/forms/:id/data/:data_id`; 404 if no such record of that form.
pub async fn delete_form_data(
    State(state): State<AppState>,
    ApiPath((id, data_id)): ApiPath<(i64, i64)>,
) -> ApiResult<Json<Value>> {
    let done = sqlx::query("DELETE FROM lowcode_form_data WHERE id = $1 AND form_id = $2")
        .bind(data_id)
        .bind(id)
        .execute(&state.db)
        .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found("form data"));
    }
    Ok(ok_msg("deleted"))
}

/// `GET /api/admin/lowcode/pages?page&page_size&title` → `{list, pages, total}`.
pub async fn list_pages(
    State(state): State<AppState>,
    ApiQuery(q): Params,
) -> ApiResult<Json<Value>> {
    list(&state, Kind::Page, Q(q)).await
}

/// `POST /api/admin/lowcode/pages` body `{id?, title, description, path?, items: [PageItem]}` →
/// the page (`page_json` = the items array as text); upsert when `id > 0`.
pub async fn save_page(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let id = body_id(&b)?;
    save(&state, Kind::Page, id, b).await
}

/// `PUT /api/admin/lowcode/pages/:id` → the page.
pub async fn update_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    save(&state, Kind::Page, Some(id), Body::new(body)?).await
}

/// `GET /api/admin/lowcode/pages/:id` → the page.
pub async fn get_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    Ok(ok(one(
        &state,
        "SELECT to_jsonb(p)::text FROM lowcode_pages p WHERE id = $1",
        id,
        "page",
    )
    .await?))
}

/// `DELETE /api/admin/lowcode/pages/:id`.
pub async fn delete_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    delete(&state, Kind::Page, id).await
}

/// `GET /api/admin/lowcode/pages/:id/preview` → `{title, page_json, items}`.
pub async fn preview_page(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let page = one(
        &state,
        "SELECT to_jsonb(p)::text FROM lowcode_pages p WHERE id = $1",
        id,
        "page",
    )
    .await?;
    let items: Value = page["page_json"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or(Value::Array(Vec::new()));
    Ok(ok(
        json!({ "title": page["title"], "page_json": page["page_json"], "items": items }),
    ))
}
