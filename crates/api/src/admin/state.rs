//! The admin API's application state: what every service shares ([`AppState`]) and what only the
//! admin API has (the login rate limits, [`AdminLoginLimiter`]; the API keys, [`KeyCache`]; the jobs, [`Jobs`]). One type per service; a handler
//! takes the part it needs with `State<…>` (axum's `FromRef`).

use axum::extract::FromRef;

use crate::admin::auth::AdminLoginLimiter;
use crate::admin::jobs::Jobs;
use crate::admin::keys::KeyCache;
use crate::app::AppState;

/// The admin API's state (see the module docs).
#[derive(Clone, FromRef)]
pub struct AdminState {
    pub app: AppState,
    pub logins: AdminLoginLimiter,
    /// The process's API keys (issued, rotated and revoked keys pushed from the log).
    pub keys: KeyCache,
    /// The reconciliation and replay jobs (run outside the request).
    pub jobs: Jobs,
}
