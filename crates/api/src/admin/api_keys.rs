//! Scoped API keys, administered over the admin API (permission `apikey:manage`): issue, list,
//! revoke, rotate. Each change is a command on the `ApiKey` aggregate (`ev.apikey.<id>`); the list
//! reads the `api_keys` read model (and `api_key_usage` for the last use). A key's secret is
//! shown once, in the answer that issues or rotates it; only its hash is stored
//! ([`crate::admin::keys`]).
//!
//! Refusals: a body that is not the typed shape → 400; a scope that is not a permission code →
//! 422 naming it; a scope the caller does not hold → 403; other invalid fields (name, expiry,
//! rate, grace) → 422 naming the field; an unknown key → 404; rotating a revoked or expired key
//! → 409. A refused request appends nothing to the log.

use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use domain::{ApiKey, ApiKeyCommand, ApiKeyError};
use eventstore::CommandError;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use web::command::request_meta;
use web::envelope::{reply, Envelope};
use web::error::Problem;
use web::extract::{Json, Path};

use crate::admin::common::{Caller, Evented};
use crate::admin::keys::{new_key, KeyCache};
use crate::app::ids::IdSequence;
use crate::{ApiError, ApiResult, AppState};

/// OpenAPI tag (and audit module) of the key routes.
pub const TAG: &str = "api-keys";

/// How long a change waits for this node's key cache and the read model before it answers.
const SETTLE: Duration = Duration::from_secs(5);

/// `POST /api/admin/api-keys`: a new key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// A name for people (`finance export`), 1–64 characters after trimming.
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// Permission codes the key holds (`finance:view`, …): 1–64 existing codes, each held by the
    /// caller.
    #[schema(min_items = 1, max_items = 64, inline)]
    pub scopes: Vec<Scope>,
    /// When the key stops working (RFC 3339, in the future); absent: never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per minute the key may make (1–100000; burst the same); absent: no limit.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_per_minute: Option<u32>,
}

/// A permission code: `area:action` (lowercase letters, digits, `_`, `-`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(value_type = String, pattern = "^[a-z0-9_-]+:[a-z0-9_-]+$", example = "finance:view")]
#[serde(transparent)]
pub struct Scope(pub String);

/// `POST /api/admin/api-keys/{id}/rotate`: a new secret for a key.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// How long the replaced secret keeps working, in seconds (0–604800, i.e. up to 7 days).
    #[schema(minimum = 0, maximum = 604800)]
    pub grace_seconds: i64,
}

/// A key's secret, shown once.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IssuedKey {
    /// The key's id.
    pub id: i64,
    /// The whole key (`mck_<12 hex>_<64 hex>`), to send as `X-API-Key` or
    /// `Authorization: Bearer`. Not stored: it cannot be shown again.
    pub key: String,
    /// Its public prefix (the first 16 characters), as the list shows it.
    pub prefix: String,
    /// The key as listed.
    pub api_key: KeyView,
}

/// A key as listed (never its secret).
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct KeyView {
    /// The key's id.
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The public prefix of its current secret.
    pub prefix: String,
    /// The permission codes it holds.
    pub scopes: Vec<String>,
    /// The administrator who issued it.
    pub created_by: i64,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it stops working; null: never.
    pub expires_at: Option<DateTime<Utc>>,
    /// Requests per minute; null: no limit.
    pub rate_per_minute: Option<i32>,
    /// When it was last used (recorded every few seconds, so up to that much behind); null:
    /// never.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When its secret was last rotated; null: never.
    pub rotated_at: Option<DateTime<Utc>>,
    /// The replaced secret's prefix while it is in its grace; null otherwise.
    pub previous_prefix: Option<String>,
    /// When the replaced secret stops working.
    pub previous_valid_until: Option<DateTime<Utc>>,
    /// When it was revoked; null: not revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Every key, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys.
    pub list: Vec<KeyView>,
    /// How many.
    pub total: i64,
}

const VIEW: &str = "SELECT k.id, k.name, k.prefix, k.scopes, k.created_by, k.created_at, k.expires_at, \
     k.rate_per_minute, u.last_used_at, k.rotated_at, \
     CASE WHEN k.previous_valid_until > now() THEN k.previous_prefix END AS previous_prefix, \
     CASE WHEN k.previous_valid_until > now() THEN k.previous_valid_until END AS previous_valid_until, \
     k.revoked_at FROM api_keys k LEFT JOIN api_key_usage u ON u.key_id = k.id";

async fn view(state: &AppState, id: i64) -> Result<KeyView, ApiError> {
    sqlx::query_as::<_, KeyView>(&format!("{VIEW} WHERE k.id = $1"))
        .bind(id)
        .fetch_optional(&state.db)
        .await?
        .ok_or_else(|| ApiError::not_found("api key"))
}

/// A refused key command as HTTP (see the module docs).
fn refused(e: CommandError<ApiKeyError>) -> ApiError {
    match e {
        CommandError::Rejected(ApiKeyError::Invalid { field, reason }) => {
            ApiError::unprocessable(field, reason)
        }
        CommandError::Rejected(ApiKeyError::NotFound) => ApiError::not_found("api key"),
        CommandError::Rejected(e) => ApiError::conflict(e.to_string()),
        CommandError::Conflict => ApiError::conflict("the key was changed concurrently; retry"),
        CommandError::Store(s) => ApiError::internal(anyhow::anyhow!(s).context("event store")),
    }
}

/// Waits until this node's key cache and the `api_keys` read model show stream sequence `seq`.
async fn settle(state: &AppState, keys: &KeyCache, seq: Option<u64>) {
    if let Some(seq) = seq {
        if !keys.wait_for(seq, SETTLE).await {
            tracing::warn!(seq, "the key cache lags behind the write");
        }
    }
    state.settle("api_keys", seq).await;
}

/// Issue an API key
///
/// Issues a key holding `scopes` (each an existing permission code the caller holds). The
/// answer carries the secret (`data.key`) this once.
#[utoipa::path(post, path = "/api/admin/api-keys", tag = TAG,
    request_body = CreateKey,
    responses(
        (status = 200, description = "the key and its secret", body = Envelope<IssuedKey>),
        (status = 400, description = "not a key request", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "a scope the caller does not hold", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "an unknown scope, or an invalid name, expiry or rate", body = Problem, content_type = "application/problem+json")))]
pub async fn create_key(
    State(state): State<AppState>,
    State(keys): State<KeyCache>,
    caller: Caller,
    headers: HeaderMap,
    Json(req): Json<CreateKey>,
) -> ApiResult<Evented<Envelope<IssuedKey>>> {
    let scopes: Vec<String> = req.scopes.into_iter().map(|s| s.0).collect();
    if scopes.is_empty() || scopes.len() > domain::api_key::MAX_SCOPES {
        return Err(ApiError::unprocessable(
            "scopes",
            "1 to 64 permission codes",
        ));
    }
    let known: Vec<String> =
        sqlx::query_scalar("SELECT code FROM permissions WHERE code = ANY($1)")
            .bind(&scopes)
            .fetch_all(&state.db)
            .await?;
    if let Some(unknown) = scopes.iter().find(|s| !known.contains(s)) {
        return Err(ApiError::unprocessable(
            "scopes",
            format!("unknown permission code `{unknown}`"),
        ));
    }
    if let Some(missing) = scopes.iter().find(|s| !caller.permissions.contains(s)) {
        return Err(ApiError::forbidden(format!(
            "scopes: you do not hold `{missing}`, so you cannot grant it"
        )));
    }
    let id = state
        .ids
        .next(&state.db, IdSequence::ApiKeys)
        .await
        .map_err(ApiError::from)?;
    let new = new_key().await?;
    let command = ApiKeyCommand::Issue {
        key_id: id,
        name: req.name,
        scopes,
        secret: new.secret.clone(),
        created_by: caller.admin_id,
        expires_at: req.expires_at,
        rate_per_minute: req.rate_per_minute,
        at: Utc::now(),
    };
    let meta = request_meta(&headers, caller.actor());
    let committed = state
        .bus
        .execute_new::<ApiKey>(&id.to_string(), command, &meta)
        .await
        .map_err(refused)?;
    settle(&state, &keys, committed.stream_sequence).await;
    Ok(Evented::new(
        reply(IssuedKey {
            id,
            key: new.key,
            prefix: new.secret.prefix,
            api_key: view(&state, id).await?,
        }),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
}

/// List API keys
///
/// Every key, newest first, without secrets: prefix, scopes, issuer, times, last use.
#[utoipa::path(get, path = "/api/admin/api-keys", tag = TAG,
    responses((status = 200, description = "every key", body = Envelope<KeyList>)))]
pub async fn list_keys(State(state): State<AppState>) -> ApiResult<axum::Json<Envelope<KeyList>>> {
    let list = sqlx::query_as::<_, KeyView>(&format!("{VIEW} ORDER BY k.id DESC"))
        .fetch_all(&state.db)
        .await?;
    let total = list.len() as i64;
    Ok(reply(KeyList { list, total }))
}

/// Revoke an API key
///
/// Both secrets of the key stop working on every node within a second. Revoking a revoked key
/// changes nothing.
#[utoipa::path(delete, path = "/api/admin/api-keys/{id}", tag = TAG,
    params(("id" = i64, Path, description = "the key's id")),
    responses(
        (status = 200, description = "the revoked key", body = Envelope<KeyView>),
        (status = 404, description = "no such key", body = Problem, content_type = "application/problem+json")))]
pub async fn revoke_key(
    State(state): State<AppState>,
    State(keys): State<KeyCache>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> ApiResult<Evented<Envelope<KeyView>>> {
    if id <= 0 {
        return Err(ApiError::not_found("api key"));
    }
    let meta = request_meta(&headers, caller.actor());
    let command = ApiKeyCommand::Revoke {
        by: caller.admin_id,
        at: Utc::now(),
    };
    let committed = state
        .bus
        .execute::<ApiKey>(&id.to_string(), command, &meta)
        .await
        .map_err(refused)?;
    settle(&state, &keys, committed.stream_sequence).await;
    Ok(Evented::new(
        reply(view(&state, id).await?),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
}

/// Rotate an API key's secret
///
/// Issues a new secret (shown this once); the replaced one keeps working for exactly
/// `grace_seconds`, then never.
#[utoipa::path(post, path = "/api/admin/api-keys/{id}/rotate", tag = TAG,
    params(("id" = i64, Path, description = "the key's id")),
    request_body = RotateKey,
    responses(
        (status = 200, description = "the key and its new secret", body = Envelope<IssuedKey>),
        (status = 400, description = "not a rotation request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "no such key", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the key is revoked or expired", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "grace_seconds out of range", body = Problem, content_type = "application/problem+json")))]
pub async fn rotate_key(
    State(state): State<AppState>,
    State(keys): State<KeyCache>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Json(req): Json<RotateKey>,
) -> ApiResult<Evented<Envelope<IssuedKey>>> {
    if id <= 0 {
        return Err(ApiError::not_found("api key"));
    }
    if !(0..=domain::api_key::MAX_GRACE_SECONDS).contains(&req.grace_seconds) {
        return Err(ApiError::unprocessable(
            "grace_seconds",
            "0 to 604800 seconds",
        ));
    }
    let new = new_key().await?;
    let command = ApiKeyCommand::Rotate {
        by: caller.admin_id,
        secret: new.secret.clone(),
        grace_seconds: req.grace_seconds,
        at: Utc::now(),
    };
    let meta = request_meta(&headers, caller.actor());
    let committed = state
        .bus
        .execute::<ApiKey>(&id.to_string(), command, &meta)
        .await
        .map_err(refused)?;
    settle(&state, &keys, committed.stream_sequence).await;
    Ok(Evented::new(
        reply(IssuedKey {
            id,
            key: new.key,
            prefix: new.secret.prefix,
            api_key: view(&state, id).await?,
        }),
        eventstore::EVENTS_STREAM,
        committed.stream_sequence,
    ))
}
