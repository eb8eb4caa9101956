//! `Idempotency-Key` for every state-changing request of the user API (the IETF
//! draft "The Idempotency-Key HTTP Header Field").
//!
//! A `POST`/`PUT`/`PATCH`/`DELETE` carrying `Idempotency-Key` (1–200 visible ASCII characters) is
//! recorded per caller (the verified token's user; a request without one is not keyed, as
//! there is no caller to scope its key to) with the SHA-256 of its method, path, query and body:
//! - first time: the request runs; its response (status and body) is stored, unless it is a 5xx,
//!   a 401 or a 429, in which case the key is released so that a retry can run (a request refused
//!   for who sent it or when, not for what it asks, never claimed the key: a retry with a valid
//!   token, or after `Retry-After`, runs);
//! - same key, same request: the stored response is returned (header `Idempotent-Replayed: true`)
//!   and nothing runs again;
//! - same key, another request: 422; same key while the first is still running: 409 (a claim
//!   left by a process that died mid-request may be taken again after 60 s).
//!
//! Keys expire after 24 hours. Commands also get the key as their command id
//! ([`crate::user::orders::placement::request_meta`]), so a retry racing past this layer is still applied once.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::{ApiError, AppState};

/// A claim still running after this many seconds belongs to a process that died mid-request: a
/// retry may claim it again. Safe because the command id (`idem:<actor>:<key>`) is the
/// `Nats-Msg-Id`, and JetStream drops a repeat within its 10-minute duplicate window, far longer.
const STALE_CLAIM_SECONDS: f64 = 60.0;

/// Largest request body hashed (larger requests are refused by the routes' own limits first).
const MAX_BODY: usize = 13 * 1024 * 1024;

/// Whether `path` is a payment provider's notification (`/api/payment/<provider>/callback`):
/// those answer in the provider's own format, are idempotent by themselves (a capture is applied
/// once per payment), and providers send no `Idempotency-Key`, so the key is not honoured there.
pub fn is_provider_notification(path: &str) -> bool {
    path.strip_prefix("/api/payment/")
        .and_then(|rest| rest.strip_suffix("/callback"))
        .is_some_and(|provider| !provider.is_empty() && !provider.contains('/'))
}

/// The methods each route declares, by its path template (`/api/group/{id}`), read from the
/// routes' OpenAPI document: a request with another method is answered 405 by the routing, and
/// its key is not looked at.
#[derive(Debug, Default)]
pub struct Declared(HashMap<String, Vec<Method>>);

impl Declared {
    /// The declared methods of every path of `doc`.
    pub fn from_document(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut methods = HashMap::new();
        for (path, item) in &doc.paths.paths {
            let declared: Vec<Method> = [
                (&item.post, Method::POST),
                (&item.put, Method::PUT),
                (&item.patch, Method::PATCH),
                (&item.delete, Method::DELETE),
            ]
            .into_iter()
            .filter(|(op, _)| op.is_some())
            .map(|(_, m)| m)
            .collect();
            methods.insert(path.clone(), declared);
        }
        Self(methods)
    }

    fn allows(&self, path: &str, method: &Method) -> bool {
        self.0.get(path).is_some_and(|m| m.contains(method))
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`), as a route layer: it sees the
/// matched route's template.
pub async fn layer(
    State((state, declared)): State<(AppState, Arc<Declared>)>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) || !declared.allows(&route, req.method())
        || is_provider_notification(req.uri().path())
    {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get("idempotency-key") else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k)
            if !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| (0x21..0x7f).contains(&b)) =>
        {
            k.to_string()
        }
        _ => {
            return ApiError::field("Idempotency-Key", "1 to 200 visible ASCII characters")
                .into_response()
        }
    };
    // A key belongs to the caller who sent it: without a verified token there is no caller to
    // scope it to (two clients of a shared "anonymous" scope would collide on a key), so the
    // request runs as if it carried none; a protected route then answers 401.
    let Some(scope) = scope(&state, &req) else {
        return next.run(req).await;
    };
    match run(&state, scope, key, req, next).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The caller a key is recorded for (`<kind>:<user id>` of a verified token), if any.
fn scope(state: &AppState, req: &Request) -> Option<String> {
    let auth = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())?;
    let claims = state
        .jwt
        .verify(auth.strip_prefix("Bearer ")?.trim())
        .ok()?;
    Some(format!("{}:{}", claims.kind, claims.user_id))
}

async fn run(
    state: &AppState,
    scope: String,
    key: String,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"))?;
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("")
            .as_bytes(),
    );
    hasher.update(b"\n");
    hasher.update(&bytes);
    let hash = hex::encode(hasher.finalize());

    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) \
         ON CONFLICT (scope, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, status = NULL, \
         body = NULL, content_type = NULL, created_at = now() WHERE idempotency_keys.created_at < now() - interval '24 hours' \
         OR (idempotency_keys.status IS NULL AND idempotency_keys.created_at < now() - $4 * interval '1 second') \
         RETURNING 1",
    )
    .bind(&scope)
    .bind(&key)
    .bind(&hash)
    .bind(STALE_CLAIM_SECONDS)
    .fetch_optional(&state.db)
    .await?;
    if claimed.is_none() {
        type Stored = (String, Option<i16>, Option<Vec<u8>>, Option<String>);
        let (stored_hash, status, body, content_type): Stored = sqlx::query_as(
            "SELECT request_hash, status, body, content_type FROM idempotency_keys \
             WHERE scope = $1 AND key = $2",
        )
        .bind(&scope)
        .bind(&key)
        .fetch_one(&state.db)
        .await?;
        if stored_hash != hash {
            return Err(ApiError::refused(
                "Idempotency-Key was already used for a different request",
            ));
        }
        let Some(status) = status else {
            return Err(ApiError::conflict(
                "a request with this Idempotency-Key is still being processed",
            ));
        };
        let mut response = Response::new(Body::from(body.unwrap_or_default()));
        *response.status_mut() = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
        // The first answer's media type, as it was served.
        let content_type = content_type
            .and_then(|c| HeaderValue::from_str(&c).ok())
            .unwrap_or(HeaderValue::from_static("application/json"));
        response
            .headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, content_type);
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Ok(response);
    }

    // The claimed request runs to completion in its own task: a client that disconnects (or
    // times out) does not cancel it half-way, so its key is always answered or released, and a
    // retry with the same key settles it (found by scripts/chaos).
    let state = state.clone();
    tokio::spawn(async move {
        let request = Request::from_parts(parts, Body::from(bytes));
        finish(&state, &scope, &key, request, next).await
    })
    .await
    .map_err(|e| ApiError::internal(anyhow::anyhow!("request task: {e}")))?
}

/// Whether a response leaves its key unclaimed: a server error, or a refusal of the caller
/// (401: not authenticated; 429: over a rate limit) rather than of the request.
fn releases_key(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::UNAUTHORIZED
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// Runs a claimed request and stores its response (or releases the key, [`releases_key`]).
async fn finish(
    state: &AppState,
    scope: &str,
    key: &str,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let body = to_bytes(body, usize::MAX)
        .await
        .map_err(|e| anyhow::anyhow!("buffering the response: {e}"))?;
    if releases_key(parts.status) {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .execute(&state.db)
            .await?;
    } else {
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, body = $4, content_type = $5 \
             WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .bind(parts.status.as_u16() as i16)
        .bind(body.to_vec())
        .bind(
            parts
                .headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        )
        .execute(&state.db)
        .await?;
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}
