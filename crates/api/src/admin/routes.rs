//! Every admin-API route (issue 4) with its RBAC rule: the single table the router, the guard,
//! the OpenAPI document and the RBAC matrix test are built from (see [`crate::admin::guard`]).
//! Permission codes are the contract's c.9 codes.
//!
//! A typed entry (`.typed(routes!(handler), perm)`) takes its method, path, tag and summary from
//! the handler's `#[utoipa::path]`; an alias path is a handler of its own. Entries not typed yet
//! (`.at(...)`) name them here.

use axum::http::Method;
use utoipa_axum::routes;

use crate::admin::table::Perm::{Authenticated as Me, Code, Public};
use crate::admin::table::Reg;
use crate::admin::{
    auth as admin, business as biz, finance as fin, lowcode as lc, online as on, people as ppl,
    system as sys, withdrawals as wd,
};

/// Registers every admin route.
pub fn register() -> Reg {
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    Reg::new()
        // c.1 login and the caller's own session
        .typed(routes!(admin::login), Public)
        .typed(routes!(admin::admin2_login), Public)
        .typed(routes!(ppl::test_route), Public)
        .typed(routes!(ppl::session::info), Me)
        .typed(routes!(ppl::session::user_info), Me)
        .typed(routes!(ppl::session::profile), Me)
        .typed(routes!(ppl::session::permissions), Me)
        .typed(routes!(ppl::session::user_permissions), Me)
        .typed(routes!(ppl::session::logout), Me)
        .typed(routes!(ppl::session::admin_logout), Me)
        .typed(routes!(ppl::session::change_password), Me)
        .typed(routes!(ppl::session::user_password), Me)
        .typed(routes!(ppl::session::update_profile), Me)
        .typed(routes!(ppl::session::update_admin_profile), Me)
        // c.1 administrators
        .typed(
            routes!(ppl::administrators::list_admins),
            Code("admin:view"),
        )
        .typed(
            routes!(ppl::administrators::create_admin),
            Code("admin:add"),
        )
        .typed(
            routes!(ppl::administrators::update_admin),
            Code("admin:edit"),
        )
        .typed(
            routes!(ppl::administrators::delete_admin),
            Code("admin:delete"),
        )
        .typed(
            routes!(ppl::administrators::reset_admin_password),
            Code("admin:reset_password"),
        )
        .typed(
            routes!(ppl::administrators::admin_status),
            Code("admin:edit"),
        )
        // c.2 uploads
        .typed(routes!(ppl::uploads::upload_image), Me)
        .typed(routes!(ppl::uploads::upload_file), Me)
        .typed(routes!(ppl::uploads::upload_public), Public)
        .typed(routes!(ppl::uploads::serve_upload), Public)
        // c.3 users and counselors
        .typed(routes!(ppl::users::list_users), Code("user:view"))
        .typed(routes!(ppl::users::create_user), Code("user:add"))
        .typed(routes!(ppl::users::update_user), Code("user:edit"))
        .typed(routes!(ppl::users::delete_user), Code("user:delete"))
        .typed(
            routes!(ppl::users::reset_user_password),
            Code("user:reset_password"),
        )
        .typed(
            routes!(ppl::counselors::list_counselors),
            Code("counselor:view"),
        )
        .typed(
            routes!(ppl::counselors::create_counselor),
            Code("counselor:add"),
        )
        .typed(
            routes!(ppl::counselors::get_counselor),
            Code("counselor:view"),
        )
        .typed(
            routes!(ppl::counselors::update_counselor),
            Code("counselor:edit"),
        )
        .typed(
            routes!(ppl::counselors::delete_counselor),
            Code("counselor:delete"),
        )
        .typed(
            routes!(ppl::counselors::legacy_list_counselors),
            Code("counselor:view"),
        )
        .typed(
            routes!(ppl::counselors::legacy_get_counselor),
            Code("counselor:view"),
        )
        // c.4 applications, orders, chat
        .typed(
            routes!(ppl::applications::list_applications),
            Code("counselor:view"),
        )
        .typed(
            routes!(ppl::applications::get_application),
            Code("counselor:view"),
        )
        .typed(
            routes!(ppl::applications::review_application),
            Code("counselor:edit"),
        )
        .at(
            get.clone(),
            "/api/admin/orders",
            Code("order:view"),
            "orders",
            "List orders",
            biz::list_orders,
        )
        .at(
            get.clone(),
            "/api/admin/orders/statistics",
            Code("order:view_statistics"),
            "orders",
            "Order statistics",
            biz::order_statistics,
        )
        .at(
            put.clone(),
            "/api/admin/orders/{id}/status",
            Code("order:edit_status"),
            "orders",
            "Change an order's status (Order command)",
            biz::change_order_status,
        )
        .at(
            get.clone(),
            "/api/admin/chat/sessions",
            Code("chat:view"),
            "chat",
            "List chat sessions",
            biz::list_sessions,
        )
        .at(
            get.clone(),
            "/api/admin/chat/sessions/{id}/messages",
            Code("chat:view"),
            "chat",
            "A session's messages",
            biz::session_messages,
        )
        .at(
            get.clone(),
            "/api/admin/chat/statistics",
            Code("chat:view"),
            "chat",
            "Chat statistics",
            biz::chat_statistics,
        )
        .at(
            get.clone(),
            "/api/admin/chat/messages/search",
            Code("chat:view"),
            "chat",
            "Full-text search over messages",
            biz::search_messages,
        )
        .at(
            delete.clone(),
            "/api/admin/chat/sessions/{id}",
            Code("chat:manage"),
            "chat",
            "Redact a session's messages",
            biz::delete_session,
        )
        .at(
            delete.clone(),
            "/api/admin/chat/messages/{id}",
            Code("chat:manage"),
            "chat",
            "Redact one message",
            biz::delete_message,
        )
        // c.5 statistics and finance
        .at(
            get.clone(),
            "/api/admin/statistics",
            Code("dashboard:view"),
            "dashboard",
            "Dashboard statistics",
            biz::statistics,
        )
        .at(
            get.clone(),
            "/api/admin/dashboard/statistics",
            Code("dashboard:view"),
            "dashboard",
            "Dashboard statistics",
            biz::statistics,
        )
        .at(
            get.clone(),
            "/api/admin/stats/counselor/ranking",
            Code("dashboard:view"),
            "dashboard",
            "Counselor ranking",
            biz::counselor_ranking,
        )
        .at(
            get.clone(),
            "/api/admin/stats/order/trend",
            Code("dashboard:view"),
            "dashboard",
            "Order trend",
            biz::order_trend,
        )
        .at(
            get.clone(),
            "/api/admin/session/stats",
            Code("dashboard:view"),
            "dashboard",
            "Session statistics",
            biz::session_stats,
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
        .typed(routes!(wd::approve), Code("finance:approve_withdraw"))
        .typed(routes!(wd::transfer), Code("finance:approve_withdraw"))
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
        .typed(routes!(sys::audit::logs), Code("system:view_logs"))
        .typed(routes!(sys::configs::list_configs), Code("system:view"))
        .typed(
            routes!(sys::configs::create_config),
            Code("system:edit_config"),
        )
        .typed(
            routes!(sys::configs::update_config),
            Code("system:edit_config"),
        )
        .typed(
            routes!(sys::configs::batch_configs),
            Code("system:edit_config"),
        )
        .typed(
            routes!(sys::configs::delete_config),
            Code("system:edit_config"),
        )
        // c.7 RBAC
        .typed(routes!(sys::roles::list_roles), Code("role:view"))
        .typed(routes!(sys::roles::create_role), Code("role:add"))
        .typed(routes!(sys::roles::update_role), Code("role:edit"))
        .typed(routes!(sys::roles::delete_role), Code("role:delete"))
        .typed(routes!(sys::roles::role_permissions), Code("role:view"))
        .typed(routes!(sys::roles::set_role_permissions), Code("role:edit"))
        .typed(
            routes!(sys::roles::post_role_permissions),
            Code("role:edit"),
        )
        .typed(routes!(sys::roles::role_users), Code("role:view"))
        .typed(
            routes!(sys::permissions::permission_tree),
            Code("permission:view"),
        )
        .typed(
            routes!(sys::permissions::list_permissions),
            Code("permission:view"),
        )
        .typed(
            routes!(sys::permissions::create_permission),
            Code("permission:add"),
        )
        .typed(
            routes!(sys::permissions::update_permission),
            Code("permission:edit"),
        )
        .typed(
            routes!(sys::permissions::delete_permission),
            Code("permission:delete"),
        )
        .typed(routes!(sys::menus::menu_tree), Code("menu:view"))
        .typed(routes!(sys::menus::list_menus), Code("menu:view"))
        .typed(routes!(sys::menus::create_menu), Code("menu:add"))
        .typed(routes!(sys::menus::update_menu), Code("menu:edit"))
        .typed(routes!(sys::menus::delete_menu), Code("menu:delete"))
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
            lc::submit_form_data,
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
