//! RBAC for the admin API (issue 4): **one** guard, applied to every admin route.
//!
//! Every route is registered through [`Reg::typed`] (a handler's `#[utoipa::path]`, via
//! utoipa-axum's `routes!`) or, for routes not typed yet, [`Reg::at`], together with its [`Perm`]
//! rule, so the router, the rule table ([`rules`]), the admin OpenAPI document and the RBAC matrix
//! test all come from the same list. The guard ([`guard`], an axum `route_layer` middleware) runs after routing:
//!
//! 1. It looks the matched route up in the rule table; a route without a rule is refused (403,
//!    fail closed).
//! 2. [`Perm::Public`] passes. Otherwise the bearer token must be a valid **admin** token of an
//!    enabled administrator (no token → 401, a user token → 403).
//! 3. [`Perm::Code`] needs the code among the administrator's role permissions (roles →
//!    `role_permissions` → `permissions`, enabled rows only); `super_admin` holds every code.
//!    Missing → 403 and the handler never runs, so nothing changes.
//! 4. The handler runs with a [`Caller`] in the request extensions.
//! 5. Audit log: after a successful (2xx) change (any method but GET/HEAD/OPTIONS) a row is
//!    written to `admin_logs` with operator, action, module, target path, IP, user agent,
//!    request body (passwords masked) and time, before the response is returned. For an
//!    event-sourced change the row points at the committed event (`event_stream`, `event_seq`:
//!    the handler attaches an [`EventRef`]); the event itself carries the actor.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{MatchedPath, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use serde_json::Value;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::admin::common::{Caller, EventRef};
use crate::auth::{bearer_token, KIND_ADMIN};
use crate::{ApiError, AppState};

/// The role that holds every permission (contract c.9).
pub const SUPER_ADMIN: &str = "super_admin";

/// What a route requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    /// No token (login, the profile avatar upload the client posts without a token, served files).
    Public,
    /// Any enabled administrator (their own info, password, profile, permissions, uploads).
    Authenticated,
    /// An administrator whose role holds this permission code (contract c.9).
    Code(&'static str),
}

/// One admin route and its rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: Method,
    /// axum path syntax (`/api/admin/users/{id}`).
    pub path: &'static str,
    pub perm: Perm,
    /// OpenAPI tag / audit module.
    pub tag: &'static str,
    pub summary: &'static str,
}

/// Builds the router, its rule table and the typed operations' documentation together.
pub struct Reg {
    pub router: Router<AppState>,
    pub rules: Vec<Rule>,
    /// The operations registered with [`Reg::typed`] as their `#[utoipa::path]` describes them
    /// (paths and the schemas they name); [`crate::admin::openapi::document`] adds what each
    /// rule implies.
    pub typed: OpenApi,
}

impl Default for Reg {
    fn default() -> Self {
        Self::new()
    }
}

/// The operations of a path item with their methods.
pub(crate) fn operations(item: &PathItem) -> impl Iterator<Item = (Method, &Operation)> {
    [
        (Method::GET, &item.get),
        (Method::PUT, &item.put),
        (Method::POST, &item.post),
        (Method::DELETE, &item.delete),
        (Method::OPTIONS, &item.options),
        (Method::HEAD, &item.head),
        (Method::PATCH, &item.patch),
        (Method::TRACE, &item.trace),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
}

/// A `'static` copy of `s`, one per distinct text: rule tables are rebuilt (tests call [`rules`]
/// repeatedly) but only ever hold the documented paths, tags and summaries, so the set is bounded.
fn intern(s: &str) -> &'static str {
    static SEEN: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(s) = seen.get(s) {
        return s;
    }
    let s: &'static str = Box::leak(s.to_owned().into_boxed_str());
    seen.insert(s);
    s
}

impl Reg {
    /// Empty.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            rules: Vec::new(),
            typed: OpenApi::default(),
        }
    }

    /// Registers the operation(s) of `routes!(handler)` (utoipa-axum) under rule `perm`; method,
    /// path, tag and summary come from the handler's `#[utoipa::path]`.
    ///
    /// # Panics
    /// When the handlers document more than one path (each path gets a `typed` entry of its own,
    /// so a handler is never routed under another handler's path), or an operation has no tag or
    /// no summary (the audit log's module and description) — programming errors every test that
    /// builds the route table reports.
    pub fn typed(mut self, routes: UtoipaMethodRouter<AppState>, perm: Perm) -> Self {
        let (schemas, paths, method_router) = routes;
        assert_eq!(
            paths.paths.len(),
            1,
            "one documented path per `Reg::typed` entry: {:?}",
            paths.paths.keys().collect::<Vec<_>>()
        );
        for (path, item) in paths.paths {
            let path = intern(&path);
            self.router = self.router.route(path, method_router.clone());
            for (method, op) in operations(&item) {
                let tag =
                    op.tags.as_ref().and_then(|t| t.first()).unwrap_or_else(|| {
                        panic!("{method} {path}: `#[utoipa::path]` needs a tag")
                    });
                let summary = op.summary.as_deref().unwrap_or_else(|| {
                    panic!("{method} {path}: `#[utoipa::path]` needs a summary (doc comment)")
                });
                self.rules.push(Rule {
                    method,
                    path,
                    perm,
                    tag: intern(tag),
                    summary: intern(summary),
                });
            }
            match self.typed.paths.paths.get_mut(path) {
                Some(existing) => existing.merge_operations(item),
                None => {
                    self.typed.paths.paths.insert(path.to_string(), item);
                }
            }
        }
        self.typed
            .components
            .get_or_insert_with(Default::default)
            .schemas
            .extend(schemas);
        self
    }

    /// Registers `handler` for `method path` under rule `perm` (an operation not typed yet: the
    /// document describes it from the rule alone).
    pub fn at<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        perm: Perm,
        tag: &'static str,
        summary: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).expect("a routable method");
        self.router = self.router.route(path, on(filter, handler));
        self.rules.push(Rule {
            method,
            path,
            perm,
            tag,
            summary,
        });
        self
    }
}

/// Every admin route with its rule (the router is built and dropped).
pub fn rules() -> Vec<Rule> {
    crate::admin::routes::register().rules
}

/// The whole admin API behind the guard, plus `/api-docs/openapi.json` and `/swagger` (public).
pub fn router(state: &AppState) -> Router<AppState> {
    let reg = crate::admin::routes::register();
    let table: Arc<HashMap<(Method, &'static str), Rule>> = Arc::new(
        reg.rules
            .iter()
            .map(|r| ((r.method.clone(), r.path), r.clone()))
            .collect(),
    );
    let openapi = Arc::new(crate::admin::openapi::document(&reg));
    // Gateways starting later ask for the persisted mute list (see `admin_bus`).
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(crate::admin::online::serve_mutes(state.clone()));
    }
    reg.router
        .route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), table),
            guard,
        ))
        .route(
            "/api-docs/openapi.json",
            axum::routing::get(move || {
                let doc = openapi.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .merge(crate::swagger::swagger_ui("/api-docs/openapi.json"))
        // `POST /api/admin/upload/file` accepts 10 MB files (axum's default limit is 2 MB).
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// The largest request body the admin API reads: a 10 MB upload plus its multipart framing.
pub const MAX_BODY: usize = 11 * 1024 * 1024;

type GuardState = (AppState, Arc<HashMap<(Method, &'static str), Rule>>);

/// The RBAC guard (see the module docs).
pub async fn guard(
    State((state, table)): State<GuardState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let rule = matched
        .as_ref()
        .and_then(|m| table.get(&(method.clone(), m.as_str())));
    let Some(rule) = rule else {
        return ApiError::forbidden("no permission rule for this route").into_response();
    };
    if rule.perm == Perm::Public {
        return next.run(req).await;
    }
    let (mut parts, body) = req.into_parts();
    let caller = match authenticate(&state, &parts).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
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
    // Issue 8: revoked on logout (`revoked_tokens`) or by a password change
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
    })
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
         user_agent, request_data, status, event_stream, event_seq) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
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
    .execute(&state.db)
    .await?;
    Ok(())
}
