//! Every admin-API route (issue 4) with its RBAC rule: the single table the router, the guard,
//! the OpenAPI document and the RBAC matrix test are built from (see [`crate::admin::guard`]).
//! Permission codes are the contract's c.9 codes.

use axum::http::Method;
use utoipa_axum::routes;

use crate::admin::guard::Perm::{Authenticated as Me, Code, Public};
use crate::admin::guard::Reg;
use crate::admin::{
    auth as admin, business as biz, finance as fin, lowcode as lc, online as on, people as ppl,
    system as sys,
};

/// Registers every admin route.
pub fn register() -> Reg {
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    Reg::new()
        // c.1 login and the caller's own session
        .at(
            post.clone(),
            "/api/admin/login",
            Public,
            "auth",
            "Administrator login",
            admin::login,
        )
        .at(
            post.clone(),
            "/api/admin2/login",
            Public,
            "auth",
            "Administrator login (admin2)",
            admin::login,
        )
        .typed(routes!(ppl::test_route), Public)
        .at(
            get.clone(),
            "/api/admin2/info",
            Me,
            "auth",
            "The caller's administrator row",
            ppl::info,
        )
        .at(
            get.clone(),
            "/api/admin/user/info",
            Me,
            "auth",
            "The caller's administrator row",
            ppl::info,
        )
        .at(
            get.clone(),
            "/api/admin/profile",
            Me,
            "auth",
            "The caller's profile",
            ppl::info,
        )
        .at(
            get.clone(),
            "/api/admin2/permissions",
            Me,
            "auth",
            "The caller's permission codes and roles",
            ppl::permissions,
        )
        .at(
            get.clone(),
            "/api/admin/user/permissions",
            Me,
            "auth",
            "The caller's permission codes and roles",
            ppl::permissions,
        )
        .at(
            post.clone(),
            "/api/admin2/logout",
            Me,
            "auth",
            "Log out",
            ppl::logout,
        )
        .at(
            post.clone(),
            "/api/admin/logout",
            Me,
            "auth",
            "Log out",
            ppl::logout,
        )
        .at(
            post.clone(),
            "/api/admin2/password",
            Me,
            "auth",
            "Change the caller's password",
            ppl::change_password,
        )
        .at(
            post.clone(),
            "/api/admin/user/password",
            Me,
            "auth",
            "Change the caller's password",
            ppl::change_password,
        )
        .at(
            put.clone(),
            "/api/admin2/profile",
            Me,
            "auth",
            "Update the caller's profile",
            ppl::update_profile,
        )
        .at(
            put.clone(),
            "/api/admin/profile",
            Me,
            "auth",
            "Update the caller's profile",
            ppl::update_profile,
        )
        // c.1 administrators
        .at(
            get.clone(),
            "/api/admin2/administrators",
            Code("admin:view"),
            "administrators",
            "List administrators",
            ppl::list_admins,
        )
        .at(
            post.clone(),
            "/api/admin2/administrators",
            Code("admin:add"),
            "administrators",
            "Create an administrator",
            ppl::create_admin,
        )
        .at(
            put.clone(),
            "/api/admin2/administrators/{id}",
            Code("admin:edit"),
            "administrators",
            "Update an administrator",
            ppl::update_admin,
        )
        .at(
            delete.clone(),
            "/api/admin2/administrators/{id}",
            Code("admin:delete"),
            "administrators",
            "Delete an administrator",
            ppl::delete_admin,
        )
        .at(
            post.clone(),
            "/api/admin2/administrators/{id}/password",
            Code("admin:reset_password"),
            "administrators",
            "Reset an administrator's password",
            ppl::reset_admin_password,
        )
        .at(
            put.clone(),
            "/api/admin2/administrators/{id}/status",
            Code("admin:edit"),
            "administrators",
            "Enable or disable an administrator",
            ppl::admin_status,
        )
        // c.2 uploads
        .at(
            post.clone(),
            "/api/admin/upload/image",
            Me,
            "uploads",
            "Upload an image (≤ 2 MB)",
            ppl::upload_image,
        )
        .at(
            post.clone(),
            "/api/admin/upload/file",
            Me,
            "uploads",
            "Upload a file (≤ 10 MB)",
            ppl::upload_file,
        )
        .at(
            post.clone(),
            "/api/admin/upload",
            Public,
            "uploads",
            "Profile avatar upload (the client sends no token)",
            ppl::upload_public,
        )
        .at(
            get.clone(),
            "/uploads/{id}/{name}",
            Public,
            "uploads",
            "Serve an uploaded file",
            ppl::serve_upload,
        )
        // c.3 users and counselors
        .at(
            get.clone(),
            "/api/admin/users",
            Code("user:view"),
            "users",
            "List users",
            ppl::list_users,
        )
        .at(
            post.clone(),
            "/api/admin/users",
            Code("user:add"),
            "users",
            "Create a user",
            ppl::create_user,
        )
        .at(
            put.clone(),
            "/api/admin/users/{id}",
            Code("user:edit"),
            "users",
            "Update a user",
            ppl::update_user,
        )
        .at(
            delete.clone(),
            "/api/admin/users/{id}",
            Code("user:delete"),
            "users",
            "Delete a user (soft)",
            ppl::delete_user,
        )
        .at(
            post.clone(),
            "/api/admin/users/{id}/password",
            Code("user:reset_password"),
            "users",
            "Reset a user's password",
            ppl::reset_user_password,
        )
        .at(
            get.clone(),
            "/api/admin/counselors",
            Code("counselor:view"),
            "counselors",
            "List counselors",
            ppl::list_counselors,
        )
        .at(
            post.clone(),
            "/api/admin/counselors",
            Code("counselor:add"),
            "counselors",
            "Create a counselor",
            ppl::create_counselor,
        )
        .at(
            get.clone(),
            "/api/admin/counselors/{id}",
            Code("counselor:view"),
            "counselors",
            "Get a counselor",
            ppl::get_counselor,
        )
        .at(
            put.clone(),
            "/api/admin/counselors/{id}",
            Code("counselor:edit"),
            "counselors",
            "Update a counselor",
            ppl::update_counselor,
        )
        .at(
            delete.clone(),
            "/api/admin/counselors/{id}",
            Code("counselor:delete"),
            "counselors",
            "Delete (or disable) a counselor",
            ppl::delete_counselor,
        )
        .at(
            get.clone(),
            "/api/counselor/list",
            Code("counselor:view"),
            "counselors",
            "List counselors (legacy path)",
            ppl::list_counselors,
        )
        .at(
            get.clone(),
            "/api/counselor/{id}",
            Code("counselor:view"),
            "counselors",
            "Get a counselor (legacy path)",
            ppl::get_counselor,
        )
        // c.4 applications, orders, chat
        .at(
            get.clone(),
            "/api/admin/counselor/applications",
            Code("counselor:view"),
            "applications",
            "List counselor applications",
            ppl::list_applications,
        )
        .at(
            get.clone(),
            "/api/admin/counselor/applications/{id}",
            Code("counselor:view"),
            "applications",
            "Get an application",
            ppl::get_application,
        )
        .at(
            put.clone(),
            "/api/admin/counselor/applications/{id}/review",
            Code("counselor:edit"),
            "applications",
            "Approve or reject an application",
            ppl::review_application,
        )
        .typed(routes!(biz::orders::list_orders), Code("order:view"))
        .typed(
            routes!(biz::orders::order_statistics),
            Code("order:view_statistics"),
        )
        .typed(
            routes!(biz::orders::change_order_status),
            Code("order:edit_status"),
        )
        .typed(routes!(biz::chat::list_sessions), Code("chat:view"))
        .typed(routes!(biz::chat::session_messages), Code("chat:view"))
        .typed(routes!(biz::chat::chat_statistics), Code("chat:view"))
        .typed(routes!(biz::chat::search_messages), Code("chat:view"))
        .typed(routes!(biz::chat::delete_session), Code("chat:manage"))
        .typed(routes!(biz::chat::delete_message), Code("chat:manage"))
        // c.5 statistics and finance
        .typed(routes!(biz::dashboard::statistics), Code("dashboard:view"))
        .typed(
            routes!(biz::dashboard::dashboard_statistics),
            Code("dashboard:view"),
        )
        .typed(
            routes!(biz::dashboard::counselor_ranking),
            Code("dashboard:view"),
        )
        .typed(routes!(biz::dashboard::order_trend), Code("dashboard:view"))
        .typed(
            routes!(biz::dashboard::session_stats),
            Code("dashboard:view"),
        )
        .typed(routes!(fin::pending_withdraws), Code("finance:view"))
        .typed(routes!(fin::list_withdraws), Code("finance:view"))
        .at(
            post.clone(),
            "/api/admin/withdraw/{id}/approve",
            Code("finance:approve_withdraw"),
            "finance",
            "Approve or reject a withdrawal (CounselorAccount command)",
            admin::approve,
        )
        .at(
            post.clone(),
            "/api/admin/withdraw/{id}/transfer",
            Code("finance:approve_withdraw"),
            "finance",
            "Mark an approved withdrawal paid out (CounselorAccount command)",
            admin::transfer,
        )
        .typed(routes!(fin::finance_stats), Code("finance:view"))
        .typed(routes!(fin::revenue), Code("finance:view"))
        .typed(routes!(fin::reports), Code("finance:view"))
        .typed(routes!(fin::accounts), Code("finance:view"))
        .typed(routes!(fin::account), Code("finance:view"))
        // c.6 online users (through NATS), broadcast, configs, logs
        .typed(routes!(on::online_users), Code("system:view"))
        .typed(routes!(on::online_detailed), Code("system:view"))
        .typed(routes!(on::online_detailed_client), Code("system:view"))
        .typed(routes!(on::online_statistics), Code("system:view"))
        .typed(routes!(on::online_statistics_client), Code("system:view"))
        .typed(routes!(on::kick), Code("system:manage_online"))
        .typed(routes!(on::kick_client), Code("system:manage_online"))
        .typed(routes!(on::mute), Code("system:manage_online"))
        .typed(routes!(on::mute_client), Code("system:manage_online"))
        .typed(routes!(on::message), Code("system:manage_online"))
        .typed(routes!(on::broadcast), Code("system:manage_online"))
        .typed(routes!(on::broadcast_client), Code("system:manage_online"))
        .at(
            get.clone(),
            "/api/admin/logs",
            Code("system:view_logs"),
            "system",
            "The audit log",
            sys::logs,
        )
        .at(
            get.clone(),
            "/api/admin/configs",
            Code("system:view"),
            "system",
            "List configs",
            sys::list_configs,
        )
        .at(
            post.clone(),
            "/api/admin/configs",
            Code("system:edit_config"),
            "system",
            "Create a config",
            sys::create_config,
        )
        .at(
            put.clone(),
            "/api/admin/configs/{id}",
            Code("system:edit_config"),
            "system",
            "Update a config",
            sys::update_config,
        )
        .at(
            post.clone(),
            "/api/admin/configs/batch",
            Code("system:edit_config"),
            "system",
            "Upsert configs by key",
            sys::batch_configs,
        )
        .at(
            delete.clone(),
            "/api/admin/configs/{id}",
            Code("system:edit_config"),
            "system",
            "Delete a config",
            sys::delete_config,
        )
        // c.7 RBAC
        .at(
            get.clone(),
            "/api/admin/roles",
            Code("role:view"),
            "rbac",
            "List roles",
            sys::list_roles,
        )
        .at(
            post.clone(),
            "/api/admin/roles",
            Code("role:add"),
            "rbac",
            "Create a role",
            sys::create_role,
        )
        .at(
            put.clone(),
            "/api/admin/roles/{id}",
            Code("role:edit"),
            "rbac",
            "Update a role",
            sys::update_role,
        )
        .at(
            delete.clone(),
            "/api/admin/roles/{id}",
            Code("role:delete"),
            "rbac",
            "Delete a role",
            sys::delete_role,
        )
        .at(
            get.clone(),
            "/api/admin/roles/{id}/permissions",
            Code("role:view"),
            "rbac",
            "A role's permissions",
            sys::role_permissions,
        )
        .at(
            put.clone(),
            "/api/admin/roles/{id}/permissions",
            Code("role:edit"),
            "rbac",
            "Replace a role's permissions",
            sys::set_role_permissions,
        )
        .at(
            post.clone(),
            "/api/admin/roles/{id}/permissions",
            Code("role:edit"),
            "rbac",
            "Replace a role's permissions (client verb)",
            sys::set_role_permissions,
        )
        .at(
            get.clone(),
            "/api/admin/roles/{id}/users",
            Code("role:view"),
            "rbac",
            "Administrators holding a role",
            sys::role_users,
        )
        .at(
            get.clone(),
            "/api/admin/permissions/tree",
            Code("permission:view"),
            "rbac",
            "Permission tree",
            sys::permission_tree,
        )
        .at(
            get.clone(),
            "/api/admin/permissions",
            Code("permission:view"),
            "rbac",
            "List permissions",
            sys::list_permissions,
        )
        .at(
            post.clone(),
            "/api/admin/permissions",
            Code("permission:add"),
            "rbac",
            "Create a permission",
            sys::create_permission,
        )
        .at(
            put.clone(),
            "/api/admin/permissions/{id}",
            Code("permission:edit"),
            "rbac",
            "Update a permission",
            sys::update_permission,
        )
        .at(
            delete.clone(),
            "/api/admin/permissions/{id}",
            Code("permission:delete"),
            "rbac",
            "Delete a permission",
            sys::delete_permission,
        )
        .at(
            get.clone(),
            "/api/admin/menus/tree",
            Code("menu:view"),
            "rbac",
            "Menu tree",
            sys::menu_tree,
        )
        .at(
            get.clone(),
            "/api/admin/menus",
            Code("menu:view"),
            "rbac",
            "List menus (as a tree)",
            sys::list_menus,
        )
        .at(
            post.clone(),
            "/api/admin/menus",
            Code("menu:add"),
            "rbac",
            "Create a menu",
            sys::create_menu,
        )
        .at(
            put.clone(),
            "/api/admin/menus/{id}",
            Code("menu:edit"),
            "rbac",
            "Update a menu",
            sys::update_menu,
        )
        .at(
            delete.clone(),
            "/api/admin/menus/{id}",
            Code("menu:delete"),
            "rbac",
            "Delete a menu",
            sys::delete_menu,
        )
        // c.8 low-code
        .typed(routes!(lc::list_forms), Code("lowcode:data:manage"))
        .typed(routes!(lc::save_form), Code("lowcode:form:design"))
        .typed(routes!(lc::update_form), Code("lowcode:form:design"))
        .typed(routes!(lc::get_form), Code("lowcode:form:design"))
        .typed(routes!(lc::delete_form), Code("lowcode:form:design"))
        .typed(routes!(lc::list_form_data), Code("lowcode:data:manage"))
        .typed(routes!(lc::submit_form_data), Code("lowcode:data:manage"))
        .typed(
            routes!(lc::submit_form_data_client),
            Code("lowcode:data:manage"),
        )
        .typed(routes!(lc::delete_form_data), Code("lowcode:data:manage"))
        .typed(routes!(lc::list_pages), Code("lowcode:page:design"))
        .typed(routes!(lc::save_page), Code("lowcode:page:design"))
        .typed(routes!(lc::update_page), Code("lowcode:page:design"))
        .typed(routes!(lc::get_page), Code("lowcode:page:design"))
        .typed(routes!(lc::delete_page), Code("lowcode:page:design"))
        .typed(routes!(lc::preview_page), Code("lowcode:page:design"))
}
