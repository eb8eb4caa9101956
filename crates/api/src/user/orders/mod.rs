//! Orders: placing one (a command on the `Order` aggregate), reading them, and their lifecycle
//! (status, cancel, validate, timeline, the counselor's list).

pub mod lifecycle;
pub mod placement;

use utoipa_axum::router::OpenApiRouter;

use crate::app::AppState;

/// The routes of this area.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(lifecycle::router())
        .merge(placement::router())
}
