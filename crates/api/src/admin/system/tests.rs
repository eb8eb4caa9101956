//! The system area's wire shape: rows typed from PostgreSQL's JSON serialize to the very text the
//! untyped answers sent, lists keep their root-and-`data` shape, trees attach `children` last,
//! and every route keeps its permission, tag and summary (the audit log records the latter two).

use serde::Serialize;
use serde_json::{json, Value};

use super::audit::{AuditEntry, AuditLog};
use super::configs::{Config, ConfigList};
use super::menus::{Menu, MenuNode};
use super::permissions::{Permission, PermissionNode};
use super::roles::{Role, RoleRow, RoleUser};
use super::row;
use super::tree::build_tree;
use crate::admin::table::Perm;

/// Rows as PostgreSQL 16 renders them with `to_jsonb(row)::text` (keys in `jsonb` order).
const CONFIG: &str = r#"{"id": 1, "key": "basic.system_name", "sort": 1, "type": "string", "label": "系统名称", "value": "\"MyChat\"", "remark": "", "category": "basic", "is_system": true, "created_at": "2026-12-04T09:58:52.421969+00:00", "updated_at": "2026-12-04T09:58:52.421969+00:00"}"#;
const ROLE_ROW: &str = r#"{"id": 1, "code": "super_admin", "name": "超级管理员", "sort": 1, "status": 1, "created_at": "2026-12-04T09:58:52.40605+00:00", "updated_at": "2026-12-04T09:58:52.40605+00:00", "user_count": 0, "description": "every permission"}"#;
const ROLE: &str = r#"{"id": 1, "code": "super_admin", "name": "超级管理员", "sort": 1, "status": 1, "created_at": "2026-12-04T09:58:52.40605+00:00", "updated_at": "2026-12-04T09:58:52.40605+00:00", "description": "every permission"}"#;
const PERMISSION: &str = r#"{"id": 1, "code": "dashboard:view", "icon": "", "name": "仪表盘", "path": "", "sort": 1, "type": "api", "status": 1, "component": "", "parent_id": 0, "created_at": "2026-12-04T09:58:52.410028+00:00", "updated_at": "2026-12-04T09:58:52.410028+00:00"}"#;
const MENU: &str = r#"{"id": 1, "icon": "", "name": "m", "path": "", "sort": 0, "type": 2, "status": 1, "component": "", "parent_id": null, "created_at": "2026-12-04T09:58:56.887699+00:00", "permission": "", "updated_at": "2026-12-04T09:58:56.887699+00:00"}"#;
const AUDIT: &str = r#"{"id": 1, "action": "b", "module": "c", "status": 200, "target": "", "admin_id": 1, "operator": "a", "response": "", "event_seq": null, "api_key_id": null, "created_at": "2026-12-04T09:58:56.89052+00:00", "ip_address": "", "user_agent": "", "description": "", "api_key_name": "", "event_stream": "", "request_data": ""}"#;
const ROLE_USER: &str = r#"{"id": 1, "email": "", "status": 1, "nickname": "", "username": "x", "created_at": "2026-12-04T09:58:56.891316+00:00"}"#;

/// What the untyped handlers sent for a row: PostgreSQL's JSON parsed into a `Value` (keys in
/// order) and serialized again.
fn untyped(text: &str) -> String {
    serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap()
}

fn typed<T: Serialize + serde::de::DeserializeOwned>(text: &str) -> String {
    serde_json::to_string(&row::<T>(text).unwrap()).unwrap()
}

#[test]
fn typed_rows_are_byte_for_byte_the_untyped_rows() {
    assert_eq!(typed::<Config>(CONFIG), untyped(CONFIG));
    assert_eq!(typed::<RoleRow>(ROLE_ROW), untyped(ROLE_ROW));
    assert_eq!(typed::<Role>(ROLE), untyped(ROLE));
    assert_eq!(typed::<Permission>(PERMISSION), untyped(PERMISSION));
    assert_eq!(typed::<Menu>(MENU), untyped(MENU));
    assert_eq!(typed::<AuditEntry>(AUDIT), untyped(AUDIT));
    assert_eq!(typed::<RoleUser>(ROLE_USER), untyped(ROLE_USER));
    let with_parent = MENU.replace(r#""parent_id": null"#, r#""parent_id": 7"#);
    assert_eq!(typed::<Menu>(&with_parent), untyped(&with_parent));
    let with_event = AUDIT.replace(r#""event_seq": null"#, r#""event_seq": 42"#);
    assert_eq!(typed::<AuditEntry>(&with_event), untyped(&with_event));
}

#[test]
fn lists_are_at_the_root_and_in_data() {
    let config: Config = row(CONFIG).unwrap();
    let row: Value = serde_json::from_str(CONFIG).unwrap();
    let typed = serde_json::to_string(&ConfigList::new(vec![config], 9)).unwrap();
    let untyped = json!({
        "configs": [row.clone()], "list": [row.clone()], "total": 9,
        "code": 200, "msg": "success",
        "data": {"configs": [row.clone()], "list": [row], "total": 9},
    });
    assert_eq!(typed, serde_json::to_string(&untyped).unwrap());
    let empty = serde_json::to_string(&AuditLog::new(Vec::new(), 0)).unwrap();
    assert_eq!(
        empty,
        r#"{"logs":[],"list":[],"total":0,"code":200,"msg":"success","data":{"logs":[],"list":[],"total":0}}"#
    );
}

#[test]
fn trees_attach_children_last_and_only_where_there_are_some() {
    let permission = |id: i64, parent: i64| PermissionNode {
        permission: Permission {
            id,
            parent_id: parent,
            ..row(PERMISSION).unwrap()
        },
        children: None,
    };
    // 3's parent is not among the rows: it is a root.
    let tree = build_tree(vec![permission(1, 0), permission(2, 1), permission(3, 99)]);
    let v: Value = serde_json::to_value(&tree).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["children"][0]["id"], 2);
    assert!(v[0]["children"][0].get("children").is_none());
    assert!(v[1].get("children").is_none());
    let first = serde_json::to_string(&v[0]).unwrap();
    assert!(first.ends_with(r#""updated_at":"2026-12-04T09:58:52.410028+00:00","children":[{"id":2,"code":"dashboard:view","icon":"","name":"仪表盘","path":"","sort":1,"type":"api","status":1,"component":"","parent_id":1,"created_at":"2026-12-04T09:58:52.410028+00:00","updated_at":"2026-12-04T09:58:52.410028+00:00"}]}"#), "{first}");
    let menu = |id: i64, parent: Option<i64>| MenuNode {
        menu: Menu {
            id,
            parent_id: parent,
            ..row(MENU).unwrap()
        },
        children: None,
    };
    let tree = build_tree(vec![menu(1, None), menu(2, Some(1))]);
    assert_eq!(tree.len(), 1);
    assert_eq!(tree[0].children.as_ref().unwrap()[0].menu.id, 2);
}

#[test]
fn routes_keep_their_permission_tag_and_summary() {
    let expected: &[(&str, &str, Perm, &str, &str)] = &[
        (
            "GET",
            "/api/admin/logs",
            Perm::Code("system:view_logs"),
            "system",
            "The audit log",
        ),
        (
            "GET",
            "/api/admin/configs",
            Perm::Code("system:view"),
            "system",
            "List configs",
        ),
        (
            "POST",
            "/api/admin/configs",
            Perm::Code("system:edit_config"),
            "system",
            "Create a config",
        ),
        (
            "PUT",
            "/api/admin/configs/{id}",
            Perm::Code("system:edit_config"),
            "system",
            "Update a config",
        ),
        (
            "POST",
            "/api/admin/configs/batch",
            Perm::Code("system:edit_config"),
            "system",
            "Upsert configs by key",
        ),
        (
            "DELETE",
            "/api/admin/configs/{id}",
            Perm::Code("system:edit_config"),
            "system",
            "Delete a config",
        ),
        (
            "GET",
            "/api/admin/roles",
            Perm::Code("role:view"),
            "rbac",
            "List roles",
        ),
        (
            "POST",
            "/api/admin/roles",
            Perm::Code("role:add"),
            "rbac",
            "Create a role",
        ),
        (
            "PUT",
            "/api/admin/roles/{id}",
            Perm::Code("role:edit"),
            "rbac",
            "Update a role",
        ),
        (
            "DELETE",
            "/api/admin/roles/{id}",
            Perm::Code("role:delete"),
            "rbac",
            "Delete a role",
        ),
        (
            "GET",
            "/api/admin/roles/{id}/permissions",
            Perm::Code("role:view"),
            "rbac",
            "A role's permissions",
        ),
        (
            "PUT",
            "/api/admin/roles/{id}/permissions",
            Perm::Code("role:edit"),
            "rbac",
            "Replace a role's permissions",
        ),
        (
            "POST",
            "/api/admin/roles/{id}/permissions",
            Perm::Code("role:edit"),
            "rbac",
            "Replace a role's permissions (client verb)",
        ),
        (
            "GET",
            "/api/admin/roles/{id}/users",
            Perm::Code("role:view"),
            "rbac",
            "Administrators holding a role",
        ),
        (
            "GET",
            "/api/admin/permissions/tree",
            Perm::Code("permission:view"),
            "rbac",
            "Permission tree",
        ),
        (
            "GET",
            "/api/admin/permissions",
            Perm::Code("permission:view"),
            "rbac",
            "List permissions",
        ),
        (
            "POST",
            "/api/admin/permissions",
            Perm::Code("permission:add"),
            "rbac",
            "Create a permission",
        ),
        (
            "PUT",
            "/api/admin/permissions/{id}",
            Perm::Code("permission:edit"),
            "rbac",
            "Update a permission",
        ),
        (
            "DELETE",
            "/api/admin/permissions/{id}",
            Perm::Code("permission:delete"),
            "rbac",
            "Delete a permission",
        ),
        (
            "GET",
            "/api/admin/menus/tree",
            Perm::Code("menu:view"),
            "rbac",
            "Menu tree",
        ),
        (
            "GET",
            "/api/admin/menus",
            Perm::Code("menu:view"),
            "rbac",
            "List menus (as a tree)",
        ),
        (
            "POST",
            "/api/admin/menus",
            Perm::Code("menu:add"),
            "rbac",
            "Create a menu",
        ),
        (
            "PUT",
            "/api/admin/menus/{id}",
            Perm::Code("menu:edit"),
            "rbac",
            "Update a menu",
        ),
        (
            "DELETE",
            "/api/admin/menus/{id}",
            Perm::Code("menu:delete"),
            "rbac",
            "Delete a menu",
        ),
    ];
    let rules = crate::admin::routes::register().rules;
    for (method, path, perm, tag, summary) in expected {
        let rule = rules
            .iter()
            .find(|r| r.method.as_str() == *method && r.path == *path)
            .unwrap_or_else(|| panic!("{method} {path} is registered"));
        assert_eq!(
            (rule.perm, rule.tag, rule.summary),
            (*perm, *tag, *summary),
            "{method} {path}"
        );
    }
}

/// The 400 message a body gets, or `None` when it is accepted.
fn refusal<T: serde::de::DeserializeOwned + validator::Validate>(body: &str) -> Option<String> {
    match web::extract::parse_json::<T>(body.as_bytes()) {
        Err(e) => Some(e.msg),
        Ok(v) => v.validate().err().map(|e| crate::ApiError::from(e).msg),
    }
}

#[test]
fn bodies_are_validated_before_any_sql_and_name_the_field() {
    use super::configs::{BatchConfigs, NewConfig};
    use super::menus::NewMenu;
    use super::permissions::NewPermission;
    use super::roles::{NewRole, RoleUpdate};
    assert_eq!(refusal::<NewConfig>("{}").unwrap(), "key: required");
    assert!(refusal::<NewConfig>(r#"{"key": "k", "type": "colour"}"#)
        .unwrap()
        .contains("type"));
    assert_eq!(
        refusal::<NewConfig>(
            r#"{"key": "chat.welcome", "value": "\"hi\"", "category": "chat", "type": "string", "is_system": false, "sort": 0}"#
        ),
        None
    );
    assert_eq!(
        refusal::<BatchConfigs>(r#"{"configs": [{"key": "a"}, {"value": 1}]}"#).unwrap(),
        "configs[1].key: required"
    );
    assert_eq!(
        refusal::<BatchConfigs>("{}").unwrap(),
        "configs: must be an array"
    );
    assert_eq!(
        refusal::<NewRole>(r#"{"name": "审核员", "code": "Auditor"}"#).unwrap(),
        "code: must match ^[a-z][a-z0-9_]*$"
    );
    assert_eq!(
        refusal::<NewRole>(r#"{"name": "审核员", "code": "auditor", "status": 0, "sort": 0}"#),
        None
    );
    assert_eq!(
        refusal::<RoleUpdate>(r#"{"status": 2}"#).unwrap(),
        "status: must be 0 or 1"
    );
    assert_eq!(
        refusal::<NewMenu>(r#"{"name": "用户", "type": 4}"#).unwrap(),
        "invalid field `type`: must be 1 (directory), 2 (menu) or 3 (button)"
    );
    assert_eq!(
        refusal::<NewMenu>(
            r#"{"id": null, "parent_id": null, "name": "系统", "type": 1, "sort": 0, "status": 1}"#
        ),
        None
    );
    assert_eq!(
        refusal::<NewPermission>(
            r#"{"name": "报表导出", "code": "report:export", "type": "button", "parent_id": "3"}"#
        ),
        None
    );
    assert_eq!(
        refusal::<NewPermission>(r#"{"name": "x", "code": "report:view"}"#).unwrap(),
        "name: must be 2 to 50 characters"
    );
}
