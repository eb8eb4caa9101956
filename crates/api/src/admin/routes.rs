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
        .at(
            get.clone(),
            "/api/admin/orders",
            Code("order:view"),
            "orders",
            "List orders",
            biz::orders::list_orders,
        )
        .at(
            get.clone(),
            "/api/admin/orders/statistics",
            Code("order:view_statistics"),
            "orders",
            "Order statistics",
            biz::orders::order_statistics,
        )
        .at(
            put.clone(),
            "/api/admin/orders/{id}/status",
            Code("order:edit_status"),
            "orders",
            "Change an order's status (Order command)",
            biz::orders::change_order_status,
        )
        .at(
            get.clone(),
            "/api/admin/chat/sessions",
            Code("chat:view"),
            "chat",
            "List chat sessions",
            biz::chat::list_sessions,
        )
        .at(
            get.clone(),
            "/api/admin/chat/sessions/{id}/messages",
            Code("chat:view"),
            "chat",
            "A session's messages",
            biz::chat::session_messages,
        )
        .at(
            get.clone(),
            "/api/admin/chat/statistics",
            Code("chat:view"),
            "chat",
            "Chat statistics",
            biz::chat::chat_statistics,
        )
        .at(
            get.clone(),
            "/api/admin/chat/messages/search",
            Code("chat:view"),
            "chat",
            "Full-text search over messages",
            biz::chat::search_messages,
        )
        .at(
            delete.clone(),
            "/api/admin/chat/sessions/{id}",
            Code("chat:manage"),
            "chat",
            "Redact a session's messages",
            biz::chat::delete_session,
        )
        .at(
            delete.clone(),
            "/api/admin/chat/messages/{id}",
            Code("chat:manage"),
            "chat",
            "Redact one message",
            biz::chat::delete_message,
        )
        // c.5 statistics and finance
        .at(
            get.clone(),
            "/api/admin/statistics",
            Code("dashboard:view"),
            "dashboard",
            "Dashboard statistics",
            biz::dashboard::statistics,
        )
        .at(
            get.clone(),
            "/api/admin/dashboard/statistics",
            Code("dashboard:view"),
            "dashboard",
            "Dashboard statistics",
            biz::dashboard::statistics,
        )
        .at(
            get.clone(),
            "/api/admin/stats/counselor/ranking",
            Code("dashboard:view"),
            "dashboard",
            "Counselor ranking",
            biz::dashboard::counselor_ranking,
        )
        .at(
            get.clone(),
            "/api/admin/stats/order/trend",
            Code("dashboard:view"),
            "dashboard",
            "Order trend",
            biz::dashboard::order_trend,
        )
        .at(
            get.clone(),
            "/api/admin/session/stats",
            Code("dashboard:view"),
            "dashboard",
            "Session statistics",
            biz::dashboard::session_stats,
        )
        .at(
            get.clone(),
            "/api/admin/withdraws/pending",
            Code("finance:view"),
            "finance",
            "Pending withdrawals",
            fin::pending_withdraws,
        )
        .at(
            get.clone(),
            "/api/admin/withdraws",
            Code("finance:view"),
            "finance",
            "List withdrawals",
            fin::list_withdraws,
        )
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
        .at(
            get.clone(),
            "/api/admin/finance/stats",
            Code("finance:view"),
            "finance",
            "Finance statistics",
            fin::finance_stats,
        )
        .at(
            get.clone(),
            "/api/admin/finance/revenue",
            Code("finance:view"),
            "finance",
            "Revenue by day / week / month / year",
            fin::revenue,
        )
        .at(
            get.clone(),
            "/api/admin/finance/reports",
            Code("finance:view"),
            "finance",
            "Finance reports",
            fin::reports,
        )
        .at(
            get.clone(),
            "/api/admin/finance/accounts",
            Code("finance:view"),
            "finance",
            "Counselor accounts",
            fin::accounts,
        )
        .at(
            get.clone(),
            "/api/admin/finance/accounts/{id}",
            Code("finance:view"),
            "finance",
            "One counselor's account",
            fin::account,
        )
        // c.6 online users (through NATS), broadcast, configs, logs
        .at(
            get.clone(),
            "/api/admin/online/users",
            Code("system:view"),
            "online",
            "Online users",
            on::online_users,
        )
        .at(
            get.clone(),
            "/api/admin/online/users/detailed",
            Code("system:view"),
            "online",
            "Online users, detailed",
            on::online_detailed,
        )
        .at(
            get.clone(),
            "/admin/online/users/detailed",
            Code("system:view"),
            "online",
            "Online users, detailed (client path)",
            on::online_detailed,
        )
        .at(
            get.clone(),
            "/api/admin/online/statistics",
            Code("system:view"),
            "online",
            "Online statistics",
            on::online_statistics,
        )
        .at(
            get.clone(),
            "/admin/online/statistics",
            Code("system:view"),
            "online",
            "Online statistics (client path)",
            on::online_statistics,
        )
        .at(
            post.clone(),
            "/api/admin/online/users/{id}/kick",
            Code("system:manage_online"),
            "online",
            "Kick a user's sockets",
            on::kick,
        )
        .at(
            post.clone(),
            "/admin/online/users/{id}/kick",
            Code("system:manage_online"),
            "online",
            "Kick a user's sockets (client path)",
            on::kick,
        )
        .at(
            post.clone(),
            "/api/admin/online/mute",
            Code("system:manage_online"),
            "online",
            "Mute or unmute a user",
            on::mute,
        )
        .at(
            post.clone(),
            "/admin/online/mute",
            Code("system:manage_online"),
            "online",
            "Mute or unmute a user (client path)",
            on::mute,
        )
        .at(
            post.clone(),
            "/api/admin/online/users/{id}/message",
            Code("system:manage_online"),
            "online",
            "Send a user an admin message",
            on::message,
        )
        .at(
            post.clone(),
            "/api/admin/broadcast",
            Code("system:manage_online"),
            "online",
            "Broadcast a system message",
            on::broadcast,
        )
        .at(
            post.clone(),
            "/admin/broadcast",
            Code("system:manage_online"),
            "online",
            "Broadcast a system message (client path)",
            on::broadcast,
        )
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
        .at(
            get.clone(),
            "/api/admin/lowcode/forms",
            Code("lowcode:data:manage"),
            "lowcode",
            "List forms",
            lc::list_forms,
        )
        .at(
            post.clone(),
            "/api/admin/lowcode/forms",
            Code("lowcode:form:design"),
            "lowcode",
            "Save a form",
            lc::save_form,
        )
        .at(
            put.clone(),
            "/api/admin/lowcode/forms/{id}",
            Code("lowcode:form:design"),
            "lowcode",
            "Update a form",
            lc::update_form,
        )
        .at(
            get.clone(),
            "/api/admin/lowcode/forms/{id}",
            Code("lowcode:form:design"),
            "lowcode",
            "Get a form",
            lc::get_form,
        )
        .at(
            delete.clone(),
            "/api/admin/lowcode/forms/{id}",
            Code("lowcode:form:design"),
            "lowcode",
            "Delete a form",
            lc::delete_form,
        )
        .at(
            get.clone(),
            "/api/admin/lowcode/forms/{id}/data",
            Code("lowcode:data:manage"),
            "lowcode",
            "List a form's data",
            lc::list_form_data,
        )
        .at(
            post.clone(),
            "/api/admin/lowcode/forms/{id}/submit",
            Code("lowcode:data:manage"),
            "lowcode",
            "Submit form data",
            lc::submit_form_data,
        )
        .at(
            post.clone(),
            "/api/admin/lowcode/forms/{id}/data",
            Code("lowcode:data:manage"),
            "lowcode",
            "Submit form data (client path)",
            lc::submit_form_data_client,
        )
        .at(
            delete.clone(),
            "/api/admin/lowcode/forms/{id}/data/{data_id}",
            Code("lowcode:data:manage"),
            "lowcode",
            "Delete a form data record",
            lc::delete_form_data,
        )
        .at(
            get.clone(),
            "/api/admin/lowcode/pages",
            Code("lowcode:page:design"),
            "lowcode",
            "List pages",
            lc::list_pages,
        )
        .at(
            post.clone(),
            "/api/admin/lowcode/pages",
            Code("lowcode:page:design"),
            "lowcode",
            "Save a page",
            lc::save_page,
        )
        .at(
            put.clone(),
            "/api/admin/lowcode/pages/{id}",
            Code("lowcode:page:design"),
            "lowcode",
            "Update a page",
            lc::update_page,
        )
        .at(
            get.clone(),
            "/api/admin/lowcode/pages/{id}",
            Code("lowcode:page:design"),
            "lowcode",
            "Get a page",
            lc::get_page,
        )
        .at(
            delete.clone(),
            "/api/admin/lowcode/pages/{id}",
            Code("lowcode:page:design"),
            "lowcode",
            "Delete a page",
            lc::delete_page,
        )
        .at(
            get,
            "/api/admin/lowcode/pages/{id}/preview",
            Code("lowcode:page:design"),
            "lowcode",
            "Preview a page",
            lc::preview_page,
        )
}
