//! The admin API's route table: every route with its RBAC rule ([`Perm`]), registered through
//! [`Reg::typed`] (a handler's `#[utoipa::path]`, via utoipa-axum's `routes!`), so a route cannot
//! exist without its documentation. The router, the guard's rule lookup, the admin OpenAPI document and the
//! RBAC matrix test are all built from it ([`crate::admin::routes`] fills it).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

use axum::http::Method;
use axum::Router;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::UtoipaMethodRouter;

use crate::admin::state::AdminState;

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
    pub router: Router<AdminState>,
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
    pub fn typed(mut self, routes: UtoipaMethodRouter<AdminState>, perm: Perm) -> Self {
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
}
