//! The user API's route list: every module's routes with their documentation, from which the
//! router and the OpenAPI document ([`super::openapi`]) are both made.

use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::user::state::UserState;

/// `GET /health`'s answer (no envelope, as MyChat's).
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness.
#[utoipa::path(
    get,
    path = "/health",
    tag = "system",
    responses((status = 200, description = "The API is up", body = Health))
)]
pub async fn health() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Every route of the user API with its documentation (each module registers through
/// utoipa-axum). The sandbox cashier and callback only with `sandbox`.
pub fn all(sandbox: bool) -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .merge(super::users::router())
        .merge(super::account::router())
        .merge(super::orders::router())
        .merge(super::payments::router(sandbox))
        .merge(super::chat::router())
        .merge(super::earnings::router())
        .merge(super::reviews::router())
        .merge(super::applications::router())
        .merge(super::notifications::router())
        .merge(super::files::router())
        .merge(super::groups::router())
}
