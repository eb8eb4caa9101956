//! Every admin-API route with its RBAC rule: the single table the router, the guard, the
//! OpenAPI document and the RBAC matrix test are built from (see [`crate::admin::table`]).
//! Permission codes are the contract's c.9 codes.
//!
//! An entry (`.typed(routes!(handler), perm)`) takes its method, path, tag and summary from the
//! handler's `#[utoipa::path]`; an alias path is a handler of its own.

use utoipa_axum::routes;

use crate::admin::table::Perm::{Authenticated as Me, Code, Public};
use crate::admin::table::Reg;
use crate::admin::{
    api_keys as keys, auth as admin, business as biz, finance as fin, job_routes as jobs,
    lowcode as lc, online as on, people as ppl, system as sys, withdrawals as wd,
};

/// Registers every admin route.
pub fn register() -> Reg {
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
        .typed(routes!(biz::groups::list_groups), Code("group:view"))
        .typed(routes!(biz::groups::group_messages), Code("group:view"))
        .typed(routes!(biz::groups::dissolve_group), Code("group:manage"))
        .typed(
            routes!(biz::groups::redact_group_message),
            Code("group:manage"),
        )
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
        .typed(routes!(wd::approve), Code("finance:approve_withdraw"))
        .typed(routes!(wd::transfer), Code("finance:approve_withdraw"))
        .typed(routes!(fin::finance_stats), Code("finance:view"))
        .typed(routes!(fin::revenue), Code("finance:view"))
        .typed(routes!(fin::reports), Code("finance:view"))
        .typed(routes!(fin::accounts), Code("finance:view"))
        .typed(routes!(fin::account), Code("finance:view"))
        // reconciliations and audit replays as jobs
        .typed(
            routes!(jobs::create_reconciliation),
            Code("finance:reconcile"),
        )
        .typed(routes!(jobs::get_reconciliation), Code("finance:reconcile"))
        .typed(routes!(jobs::create_replay), Code("audit:replay"))
        .typed(routes!(jobs::get_replay), Code("audit:replay"))
        .typed(routes!(jobs::replay_diff), Code("audit:replay"))
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
        .typed(routes!(sys::audit::logs), Code("system:view_logs"))
        .typed(routes!(sys::services::list_services), Code("system:view"))
        .typed(routes!(sys::services::get_service), Code("system:view"))
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
        // API keys (machine clients of the admin API)
        .typed(routes!(keys::create_key), Code("apikey:manage"))
        .typed(routes!(keys::list_keys), Code("apikey:manage"))
        .typed(routes!(keys::revoke_key), Code("apikey:manage"))
        .typed(routes!(keys::rotate_key), Code("apikey:manage"))
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
