//! Orders: placing one (a command on the `Order` aggregate), reading them, and their lifecycle
//! (status, cancel, validate, timeline, the counselor's list).

pub mod lifecycle;
pub mod placement;

use utoipa_axum::router::OpenApiRouter;

use crate::user::state::UserState;

/// The routes of this area.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .merge(lifecycle::router())
        .merge(placement::router())
}
