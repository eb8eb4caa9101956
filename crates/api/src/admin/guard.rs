//! RBAC for the admin API: **one** guard, applied to every admin route.
//!
//! Every route is registered in the route table ([`crate::admin::table::Reg`]) together with its [`Perm`]
//! rule, so the router, the rule table ([`crate::admin::rules`]), the admin OpenAPI document and the RBAC matrix
//! test all come from the same list. The guard ([`guard`], an axum `route_layer` middleware) runs after routing:
//!
//! 1. It looks the matched route up in the rule table (HEAD under GET's rule). A method the
//!    path does not have is a 405 with `Allow`, before any authentication; a route without a
//!    rule is refused (403, fail closed).
//! 2. [`Perm::Public`] passes. Otherwise the request must carry either an API key
//!    (`X-API-Key: <key>`, or `Authorization: Bearer <key>`: a key starts with `mck_`, a JWT
//!    never does) or a valid **admin** token of an enabled administrator (nothing → 401, a user
//!    token → 403). A key is checked against the process's [`KeyCache`] (no database read):
//!    malformed, unknown, revoked, expired or replaced → 401, over its rate → 429 with
//!    `Retry-After`. A key only passes [`Perm::Code`] routes (not an administrator's own
//!    session routes, [`Perm::Authenticated`]: 403).
//! 3. [`Perm::Code`] needs the code among the administrator's role permissions (roles →
//!    `role_permissions` → `permissions`, enabled rows only; `super_admin` holds every code), or
//!    among a key's scopes. Missing → 403 and the handler never runs, so nothing changes.
//! 4. The handler runs with a [`Caller`] in the request extensions.
//! 5. Audit log: after a successful (2xx) change (any method but GET/HEAD/OPTIONS) a row is
//!    written to `admin_logs` with operator, action, module, target path, IP, user agent,
//!    request body (passwords masked) and time, before the response is returned; a key's row
//!    names the key (`api_key_id`, `api_key_name`, operator `apikey:<id>:<name>`). For an
//!    event-sourced change the row points at the committed event (`event_stream`, `event_seq`:
//!    the handler attaches an [`EventRef`]); the event itself carries the actor.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::admin::common::{Caller, EventRef, KeyActor};
use crate::admin::keys::{is_api_key, KeyCache};
use crate::admin::table::{Perm, Rule, SUPER_ADMIN};
use crate::auth::{bearer_token, KIND_ADMIN};
use crate::{ApiError, AppState};

/// The largest request body the admin API reads: a 10 MB upload plus its multipart framing.
pub const MAX_BODY: usize = 11 * 1024 * 1024;

/// What the guard needs: the state, the rule table, the process's API keys.
pub type GuardState = (
    AppState,
    Arc<HashMap<(Method, &'static str), Rule>>,
    KeyCache,
);

/// The RBAC guard (see the module docs).
pub async fn guard(
    State((state, table, keys)): State<GuardState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let lookup = |m: &Method| {
        matched
            .as_ref()
            .and_then(|p| table.get(&(m.clone(), p.as_str())))
    };
    // HEAD is answered by the GET route (axum), under its rule.
    let rule = lookup(&method).or_else(|| {
        (method == Method::HEAD)
            .then(|| lookup(&Method::GET))
            .flatten()
    });
    let Some(rule) = rule else {
        // A path that exists with other methods: 405 with `Allow`, before any authentication.
        if let Some(allow) = matched.as_ref().and_then(|p| allowed(&table, p.as_str())) {
            let mut response = ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                format!("method {method} not allowed here; allowed: {allow}"),
            )
            .into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&allow) {
                response.headers_mut().insert(axum::http::header::ALLOW, v);
            }
            return response;
        }
        return ApiError::forbidden("no permission rule for this route").into_response();
    };
    if rule.perm == Perm::Public {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let caller = match presented_key(&parts) {
        Some(key) => match keys.authenticate(&key).await {
            Ok(k) => key_caller(k),
            Err(e) => return e.into_response(),
        },
        None => match authenticate(&state, &parts).await {
            Ok(c) => c,
            Err(e) => return e.into_response(),
        },
    };
    if caller.api_key.is_some() && rule.perm == Perm::Authenticated {
        return ApiError::forbidden("an API key only reaches the routes of its scopes")
            .into_response();
    }
    if let Perm::Code(code) = rule.perm {
        if !caller.permissions.iter().any(|p| p == code) {
            return ApiError::forbidden(format!("permission `{code}` required")).into_response();
        }
    }
    parts.extensions.insert(caller.clone());
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !mutating {
        return next.run(Request::from_parts(parts, body)).await;
    }
    // Buffer the body so that the audit row can record it (uploads: only their size).
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_BODY} bytes"),
            )
            .into_response()
        }
    };
    let headers = parts.headers.clone();
    let path = parts.uri.path().to_string();
    let req = Request::from_parts(parts, axum::body::Body::from(bytes.clone()));
    let response = next.run(req).await;
    let status = response.status();
    if status.is_success() {
        let event = response.extensions().get::<EventRef>().copied();
        let entry = AuditEntry {
            event,
            caller: &caller,
            rule,
            target: &path,
            headers: &headers,
            body: &bytes,
            status: status.as_u16(),
        };
        if let Err(e) = audit(&state, entry).await {
            tracing::error!(error = %e, "writing the audit log");
            return ApiError::internal(anyhow::anyhow!("audit log: {e}")).into_response();
        }
    }
    response
}

/// The methods the rule table has for `path` (`GET, HEAD, POST`), `None` when it has none.
fn allowed(table: &HashMap<(Method, &'static str), Rule>, path: &str) -> Option<String> {
    let mut methods: Vec<&str> = table
        .keys()
        .filter(|(_, p)| *p == path)
        .map(|(m, _)| m.as_str())
        .collect();
    if methods.is_empty() {
        return None;
    }
    if methods.contains(&"GET") {
        methods.push("HEAD");
    }
    methods.sort_unstable();
    methods.dedup();
    Some(methods.join(", "))
}

/// Authenticates an admin token and loads the role's permission codes.
///
/// # Errors
/// 401 without or with an invalid token, 403 for a user token or a disabled administrator.
pub async fn authenticate(
    state: &AppState,
    parts: &axum::http::request::Parts,
) -> Result<Caller, ApiError> {
    let token =
        bearer_token(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let claims = state.jwt.verify(&token)?;
    if claims.kind != KIND_ADMIN {
        return Err(ApiError::forbidden("an administrator token is required"));
    }
    // Revoked on logout (`revoked_tokens`) or by a password change
    // (`administrators.tokens_valid_after`).
    let row: Option<(i16, String, String, bool)> = sqlx::query_as(
        "SELECT status, role, username, (tokens_valid_after IS NOT NULL \
           AND to_timestamp($2) <= tokens_valid_after) \
           OR EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $3) \
         FROM administrators WHERE id = $1",
    )
    .bind(claims.user_id)
    .bind(claims.iat as f64)
    .bind(&claims.jti)
    .fetch_optional(&state.db)
    .await?;
    let (status, role, username, revoked) =
        row.ok_or_else(|| ApiError::unauthorized("unknown administrator"))?;
    if revoked {
        return Err(ApiError::unauthorized("token revoked"));
    }
    if status != 1 {
        return Err(ApiError::forbidden("administrator disabled"));
    }
    let permissions = role_permissions(state, &role).await?;
    Ok(Caller {
        admin_id: claims.user_id,
        username,
        role,
        permissions,
        jti: claims.jti,
        expires_at: claims.exp,
        api_key: None,
    })
}

/// The API key a request presents: `X-API-Key`, else a bearer token that is a key (not a JWT).
pub fn presented_key(parts: &axum::http::request::Parts) -> Option<String> {
    if let Some(v) = parts.headers.get("x-api-key") {
        return Some(v.to_str().unwrap_or("").trim().to_string());
    }
    parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| is_api_key(t))
        .map(str::to_string)
}

/// The [`Caller`] of an authenticated key: its issuer's id, its scopes as permissions.
fn key_caller(k: crate::admin::keys::KeyCaller) -> Caller {
    Caller {
        admin_id: k.created_by,
        username: format!("apikey:{}:{}", k.id, k.name),
        role: "api_key".into(),
        permissions: k.scopes,
        jti: String::new(),
        expires_at: k.expires_at.map_or(0, |e| e.timestamp()),
        api_key: Some(KeyActor {
            id: k.id,
            name: k.name,
        }),
    }
}

/// The enabled permission codes of role `code` (every code for `super_admin`).
///
/// # Errors
/// On a database error.
pub async fn role_permissions(state: &AppState, code: &str) -> Result<Vec<String>, ApiError> {
    let codes: Vec<String> = if code == SUPER_ADMIN {
        sqlx::query_scalar("SELECT code FROM permissions ORDER BY sort, id")
            .fetch_all(&state.db)
            .await?
    } else {
        sqlx::query_scalar(
            "SELECT p.code FROM roles r JOIN role_permissions rp ON rp.role_id = r.id \
             JOIN permissions p ON p.id = rp.permission_id \
             WHERE r.code = $1 AND r.status = 1 AND p.status = 1 ORDER BY p.sort, p.id",
        )
        .bind(code)
        .fetch_all(&state.db)
        .await?
    };
    Ok(codes)
}

struct AuditEntry<'a> {
    event: Option<EventRef>,
    caller: &'a Caller,
    rule: &'a Rule,
    target: &'a str,
    headers: &'a HeaderMap,
    body: &'a [u8],
    status: u16,
}

/// The client IP: `X-Forwarded-For` (first hop), else `X-Real-IP` (set by the reverse proxy in
/// front of the admin API).
pub fn client_ip(headers: &HeaderMap) -> String {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .or_else(|| headers.get("x-real-ip").and_then(|v| v.to_str().ok()))
        .unwrap_or("")
        .trim()
        .to_string()
}

fn mask_passwords(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k.contains("password") {
                    *val = Value::from("***");
                } else {
                    mask_passwords(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_passwords),
        _ => {}
    }
}

async fn audit(state: &AppState, e: AuditEntry<'_>) -> Result<(), sqlx::Error> {
    let request_data = match serde_json::from_slice::<Value>(e.body) {
        Ok(mut v) => {
            mask_passwords(&mut v);
            let s = v.to_string();
            s.chars().take(4000).collect()
        }
        Err(_) if e.body.is_empty() => String::new(),
        Err(_) => format!("<{} bytes>", e.body.len()),
    };
    let ua = e
        .headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    sqlx::query(
        "INSERT INTO admin_logs (admin_id, operator, action, module, target, description, ip_address, \
         user_agent, request_data, status, event_stream, event_seq, api_key_id, api_key_name) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)",
    )
    .bind(e.caller.admin_id)
    .bind(&e.caller.username)
    .bind(format!("{} {}", e.rule.method, e.rule.path))
    .bind(e.rule.tag)
    .bind(e.target)
    .bind(e.rule.summary)
    .bind(client_ip(e.headers))
    .bind(ua)
    .bind(request_data)
    .bind(i32::from(e.status))
    .bind(e.event.map(|r| r.stream).unwrap_or_default())
    .bind(e.event.map(|r| r.seq as i64))
    .bind(e.caller.api_key.as_ref().map(|k| k.id))
    .bind(e.caller.api_key.as_ref().map_or("", |k| k.name.as_str()))
    .execute(&state.db)
    .await?;
    Ok(())
}
