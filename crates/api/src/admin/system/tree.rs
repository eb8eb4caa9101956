//! The two RBAC trees (permissions and menus): nesting flat rows into nodes, and the rules a
//! node's parent obeys — it exists, and it is neither the node itself nor one of its
//! descendants (no cycles); a node with children cannot be deleted.

use std::collections::{HashMap, HashSet};

use crate::{ApiError, AppState};

/// A row that nests in a tree by `parent_id`.
pub trait TreeNode: Sized {
    /// The row's id.
    fn id(&self) -> i64;
    /// Its parent's id; 0 (or `NULL`) for a root.
    fn parent_id(&self) -> i64;
    /// Attaches the node's children.
    fn set_children(&mut self, children: Vec<Self>);
}

/// Nests flat rows by `parent_id` (0, null, or a parent not among the rows = root), keeping
/// their order; `children` only on nodes that have some. Nesting stops at depth 64.
pub fn build_tree<N: TreeNode>(rows: Vec<N>) -> Vec<N> {
    let ids: HashSet<i64> = rows.iter().map(TreeNode::id).collect();
    let mut children: HashMap<i64, Vec<N>> = HashMap::new();
    let mut roots = Vec::new();
    for r in rows {
        let p = r.parent_id();
        if p == 0 || !ids.contains(&p) {
            roots.push(r);
        } else {
            children.entry(p).or_default().push(r);
        }
    }
    fn attach<N: TreeNode>(node: &mut N, children: &mut HashMap<i64, Vec<N>>, depth: usize) {
        if let Some(mut kids) = children.remove(&node.id()) {
            if depth < 64 {
                for k in &mut kids {
                    attach(k, children, depth + 1);
                }
            }
            node.set_children(kids);
        }
    }
    for r in &mut roots {
        attach(r, &mut children, 0);
    }
    roots
}

/// The table a tree lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// `permissions` (root: `parent_id` 0).
    Permissions,
    /// `menus` (root: `parent_id` NULL).
    Menus,
}

impl Tree {
    fn parent_sql(self) -> &'static str {
        match self {
            Tree::Permissions => "SELECT COALESCE(parent_id, 0) FROM permissions WHERE id = $1",
            Tree::Menus => "SELECT COALESCE(parent_id, 0) FROM menus WHERE id = $1",
        }
    }
    fn children_sql(self) -> &'static str {
        match self {
            Tree::Permissions => "SELECT EXISTS (SELECT 1 FROM permissions WHERE parent_id = $1)",
            Tree::Menus => "SELECT EXISTS (SELECT 1 FROM menus WHERE parent_id = $1)",
        }
    }
}

/// Checks that `parent` exists in `tree` and that making it the parent of `id` creates no
/// cycle (`parent` is neither `id` nor a descendant of `id`); 0 is the root and always fine.
///
/// # Errors
/// 422 naming `parent_id` (no such parent, a cycle, too deep: the tree's current state), or a
/// database error.
pub async fn check_parent(
    state: &AppState,
    tree: Tree,
    id: Option<i64>,
    parent: i64,
) -> Result<(), ApiError> {
    if parent == 0 {
        return Ok(());
    }
    if Some(parent) == id {
        return Err(ApiError::unprocessable(
            "parent_id",
            "a node cannot be its own parent",
        ));
    }
    // Walk up from the new parent: reaching `id` means a cycle.
    let mut cursor = parent;
    for _ in 0..256 {
        let up: Option<i64> = sqlx::query_scalar(tree.parent_sql())
            .bind(cursor)
            .fetch_optional(&state.db)
            .await?;
        match up {
            None if cursor == parent => {
                return Err(ApiError::unprocessable("parent_id", "no such parent"))
            }
            None | Some(0) => return Ok(()),
            Some(p) if Some(p) == id => {
                return Err(ApiError::unprocessable(
                    "parent_id",
                    "would make a node its own ancestor",
                ))
            }
            Some(p) => cursor = p,
        }
    }
    Err(ApiError::unprocessable("parent_id", "tree too deep"))
}

/// Whether node `id` of `tree` has children.
///
/// # Errors
/// A database error.
pub async fn has_children(state: &AppState, tree: Tree, id: i64) -> Result<bool, ApiError> {
    Ok(sqlx::query_scalar(tree.children_sql())
        .bind(id)
        .fetch_one(&state.db)
        .await?)
}
