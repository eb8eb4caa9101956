//! System configs (`system_configs`): key/value settings the admin screens edit, grouped by
//! category. A system config (`is_system`) keeps its key and cannot be deleted.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use validator::Validate;
use web::envelope::{message, reply, Envelope, Message, Reply};
use web::error::{unique_violation, Problem};
use web::extract::{Json, Path, Query};

use super::{input, page_rows, row};
use crate::{empty_as_none, paging, ApiError, ApiResult, AppState};

/// A system config (a `system_configs` row).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Config {
    /// The config's id.
    pub id: i64,
    /// Unique, 1–100 characters.
    pub key: String,
    /// Display order within the category.
    pub sort: i32,
    /// How the screen edits the value: `switch`, `number`, `string`, `text` or `json`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The label shown next to the value.
    pub label: String,
    /// The value as JSON text (`"\"MyChat\""`, `"true"`, `"10"`).
    pub value: String,
    /// A note for administrators.
    pub remark: String,
    /// The group the config is shown in (`basic`, `chat`, …).
    pub category: String,
    /// A system config: its key cannot change and it cannot be deleted.
    pub is_system: bool,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

root_list!(
    /// One page of configs (`configs` and `list`), at the root and in `data`.
    ConfigList,
    ConfigPage,
    "configs",
    Config
);

/// `GET /api/admin/configs` filters.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct ConfigQuery {
    /// 1-based page (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 100).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
    /// Alias of `page_size` (the admin client's name).
    #[serde(default, rename = "pageSize", deserialize_with = "empty_as_none")]
    // Checked by `web::paging::check_page_size_alias`, named `pageSize` in a refusal.
    #[param(minimum = 1, maximum = 100)]
    pub page_size_alias: Option<i64>,
    /// Only this category.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub category: Option<String>,
}

/// How the screen edits a config's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConfigType {
    /// On/off (`"true"`/`"false"`).
    Switch,
    /// A number.
    Number,
    /// A one-line text.
    String,
    /// A multi-line text.
    Text,
    /// A JSON document.
    Json,
}

impl ConfigType {
    fn as_str(self) -> &'static str {
        match self {
            ConfigType::Switch => "switch",
            ConfigType::Number => "number",
            ConfigType::String => "string",
            ConfigType::Text => "text",
            ConfigType::Json => "json",
        }
    }
}

/// `POST /api/admin/configs` body: a new config (absent fields take the column defaults:
/// value `""`, category `basic`, type `string`, not a system config, sort 0).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct NewConfig {
    /// Unique key, 1–100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        required(message = "required"),
        length(min = 1, max = 100, message = "must be 1 to 100 characters")
    )]
    pub key: Option<String>,
    /// The value as JSON text; any other JSON value is stored as its JSON text.
    #[serde(default, deserialize_with = "input::json_text")]
    #[schema(value_type = Value)]
    pub value: Option<String>,
    /// At most 50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 50, message = "must be 0 to 50 characters"))]
    pub category: Option<String>,
    /// At most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub label: Option<String>,
    /// How the screen edits the value.
    #[serde(default, rename = "type")]
    pub kind: Option<ConfigType>,
    /// A system config (its key cannot change, it cannot be deleted).
    #[serde(default, deserialize_with = "input::boolean")]
    pub is_system: Option<bool>,
    /// Display order within the category.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// At most 500 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 500, message = "must be 0 to 500 characters"))]
    pub remark: Option<String>,
}

/// `PUT /api/admin/configs/{id}` body: the fields to change (absent or `null` = unchanged; zero
/// values are applied).
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct ConfigUpdate {
    /// 1–100 characters; a system config's key cannot change.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        length(min = 1, max = 100, message = "must be 1 to 100 characters")
    )]
    pub key: Option<String>,
    /// The value as JSON text; any other JSON value is stored as its JSON text.
    #[serde(default, deserialize_with = "input::json_text")]
    #[schema(value_type = Value)]
    pub value: Option<String>,
    /// At most 50 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 50, message = "must be 0 to 50 characters"))]
    pub category: Option<String>,
    /// At most 100 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 100, message = "must be 0 to 100 characters"))]
    pub label: Option<String>,
    /// How the screen edits the value.
    #[serde(default, rename = "type")]
    pub kind: Option<ConfigType>,
    /// Display order within the category.
    #[serde(default, deserialize_with = "input::int")]
    pub sort: Option<i32>,
    /// At most 500 characters.
    #[serde(default, deserialize_with = "input::text")]
    #[validate(length(max = 500, message = "must be 0 to 500 characters"))]
    pub remark: Option<String>,
}

/// `POST /api/admin/configs/batch` body.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct BatchConfigs {
    /// The configs to upsert by key.
    #[serde(default)]
    #[validate(required(message = "must be an array"), nested)]
    pub configs: Option<Vec<BatchConfig>>,
}

/// One config of a batch: inserted, or its value replaced when the key exists.
#[web::limits]
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, Validate)]
pub struct BatchConfig {
    /// The config's key (required, non-empty).
    #[serde(default, deserialize_with = "input::text")]
    #[validate(
        custom(function = "web::text::trimmed"),
        required(message = "required"),
        length(min = 1, message = "required")
    )]
    pub key: Option<String>,
    /// The value as JSON text (default `""`); any other JSON value is stored as its JSON text.
    #[serde(default, deserialize_with = "input::json_text")]
    #[schema(value_type = Value)]
    pub value: Option<String>,
    /// The category of a new config (default `basic`; an existing config keeps its own).
    #[serde(default, deserialize_with = "input::text")]
    pub category: Option<String>,
}

/// How many configs a batch upserted.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BatchCount {
    /// How many configs were inserted or updated.
    pub count: usize,
}

/// The answer to a created config: the envelope with the new id at the root as well.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConfigCreated {
    /// Always 200.
    pub code: u16,
    /// Always `"success"`.
    pub msg: String,
    /// The new config's id.
    pub id: i64,
    /// The new config.
    pub data: Config,
}

/// List configs
///
/// Lists configs, by `sort` then id, optionally of one category.
#[utoipa::path(
    get,
    path = "/api/admin/configs",
    tag = "system",
    params(ConfigQuery),
    responses(
        (status = 200, description = "One page of configs", body = ConfigList),
        (status = 400, description = "A bad paging parameter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_configs(
    State(state): State<AppState>,
    Query(q): Query<ConfigQuery>,
) -> ApiResult<axum::Json<ConfigList>> {
    validator::Validate::validate(&q)?;
    web::paging::check_page_size_alias(q.page_size_alias)?;
    let (limit, offset) = paging(q.page, q.page_size.or(q.page_size_alias), 100)?;
    let filter = |qb: &mut QueryBuilder<'_, Postgres>| {
        qb.push(" WHERE TRUE");
        if let Some(c) = &q.category {
            qb.push(" AND category = ").push_bind(c.clone());
        }
    };
    let (list, total) = page_rows(
        &state,
        "*",
        "system_configs",
        filter,
        "sort, id",
        limit,
        offset,
    )
    .await?;
    Ok(axum::Json(ConfigList::new(list, total)))
}

/// Create a config
///
/// Creates a config; the new id is answered at the root (`id`) and in `data`.
#[utoipa::path(
    post,
    path = "/api/admin/configs",
    tag = "system",
    request_body = NewConfig,
    responses(
        (status = 200, description = "The new config", body = ConfigCreated),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A duplicate key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_config(
    State(state): State<AppState>,
    Json(body): Json<NewConfig>,
) -> ApiResult<axum::Json<ConfigCreated>> {
    body.validate()?;
    let text: String = sqlx::query_scalar(
        "INSERT INTO system_configs (key, value, category, label, type, is_system, sort, remark) \
         VALUES ($1, COALESCE($2, ''), COALESCE($3, 'basic'), COALESCE($4, ''), \
         COALESCE($5, 'string'), COALESCE($6, FALSE), COALESCE($7, 0), COALESCE($8, '')) \
         RETURNING to_jsonb(system_configs.*)::text",
    )
    .bind(&body.key)
    .bind(&body.value)
    .bind(&body.category)
    .bind(&body.label)
    .bind(body.kind.map(ConfigType::as_str))
    .bind(body.is_system)
    .bind(body.sort)
    .bind(&body.remark)
    .fetch_one(&state.db)
    .await
    .map_err(unique_violation)?;
    let config: Config = row(&text)?;
    Ok(axum::Json(ConfigCreated {
        code: 200,
        msg: "success".to_string(),
        id: config.id,
        data: config,
    }))
}

/// Update a config
///
/// Changes a config's fields; a system config's key cannot change.
#[utoipa::path(
    put,
    path = "/api/admin/configs/{id}",
    tag = "system",
    params(("id" = i64, Path, description = "The config's id")),
    request_body = ConfigUpdate,
    responses(
        (status = 200, description = "The config", body = Envelope<Config>),
        (status = 400, description = "A field is not of the documented shape", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A system config's key cannot change", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A duplicate key", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such config", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn update_config(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Json(body): Json<ConfigUpdate>,
) -> Reply<Config> {
    body.validate()?;
    let current: Option<(String, bool)> =
        sqlx::query_as("SELECT key, is_system FROM system_configs WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    let (key, is_system) = current.ok_or_else(|| ApiError::not_found("config"))?;
    let new_key = body.key.filter(|k| *k != key);
    if new_key.is_some() && is_system {
        // A permanent refusal for this row, as deleting a system config is.
        return Err(
            ApiError::field("key", "a system config's key cannot change")
                .with_status(axum::http::StatusCode::FORBIDDEN),
        );
    }
    let text: Option<String> = sqlx::query_scalar(
        "UPDATE system_configs t SET updated_at = now(), key = COALESCE($2, key), \
         value = COALESCE($3, value), category = COALESCE($4, category), \
         label = COALESCE($5, label), type = COALESCE($6, type), sort = COALESCE($7, sort), \
         remark = COALESCE($8, remark) WHERE id = $1 RETURNING to_jsonb(t)::text",
    )
    .bind(id)
    .bind(&new_key)
    .bind(&body.value)
    .bind(&body.category)
    .bind(&body.label)
    .bind(body.kind.map(ConfigType::as_str))
    .bind(body.sort)
    .bind(&body.remark)
    .fetch_optional(&state.db)
    .await
    .map_err(unique_violation)?;
    let text = text.ok_or_else(|| ApiError::not_found("config"))?;
    Ok(reply(row(&text)?))
}

/// Upsert configs by key
///
/// Upserts configs by key in one transaction: a new key is inserted (category default
/// `basic`), an existing key gets the new value.
#[utoipa::path(
    post,
    path = "/api/admin/configs/batch",
    tag = "system",
    request_body = BatchConfigs,
    responses(
        (status = 200, description = "How many configs were upserted", body = Envelope<BatchCount>),
        (status = 400, description = "`configs` missing or an item without a key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn batch_configs(
    State(state): State<AppState>,
    Json(body): Json<BatchConfigs>,
) -> Reply<BatchCount> {
    body.validate()?;
    let items = body.configs.unwrap_or_default();
    let mut tx = state.db.begin().await?;
    for item in &items {
        sqlx::query(
            "INSERT INTO system_configs (key, value, category) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
        )
        .bind(item.key.as_deref().unwrap_or_default())
        .bind(item.value.as_deref().unwrap_or_default())
        .bind(item.category.as_deref().unwrap_or("basic"))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(reply(BatchCount { count: items.len() }))
}

/// Delete a config
///
/// Deletes a config; a system config cannot be deleted.
#[utoipa::path(
    delete,
    path = "/api/admin/configs/{id}",
    tag = "system",
    params(("id" = i64, Path, description = "The config's id")),
    responses(
        (status = 200, description = "`msg` is `deleted`", body = Message),
        (status = 403, description = "A system config", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such config", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_config(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Message>> {
    let is_system: Option<bool> =
        sqlx::query_scalar("SELECT is_system FROM system_configs WHERE id = $1")
            .bind(id)
            .fetch_optional(&state.db)
            .await?;
    match is_system {
        None => Err(ApiError::not_found("config")),
        Some(true) => Err(ApiError::forbidden("a system config cannot be deleted")),
        Some(false) => {
            sqlx::query("DELETE FROM system_configs WHERE id = $1")
                .bind(id)
                .execute(&state.db)
                .await?;
            Ok(message("deleted"))
        }
    }
}
