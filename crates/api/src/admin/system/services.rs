//! The live service registry (`system:view`): every mychat process and plugin that answers the
//! NATS micro services protocol now ([`web::registry::discover`]), with its ping round trip,
//! uptime, requests, errors and live figures (projection lag, sockets).

use std::time::Duration;

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use web::envelope::{reply, Envelope};
use web::error::Problem;
use web::extract::Path;
use web::registry::ServiceInstance;

use crate::{ApiError, ApiResult, AppState};

/// How long the admin API gathers answers.
pub const WINDOW: Duration = Duration::from_millis(300);

/// The live instances.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Services {
    /// Every instance that answered, by name and id.
    pub services: Vec<ServiceInstance>,
}

async fn live(state: &AppState) -> Result<Vec<ServiceInstance>, ApiError> {
    web::registry::discover(&state.nats, WINDOW)
        .await
        .map_err(|e| ApiError::unavailable(format!("NATS: {e:#}")))
}

/// The live services
///
/// Every instance answering `$SRV.PING` within 300 ms (an instance that stopped is absent), with
/// `$SRV.INFO` and `$SRV.STATS`.
#[utoipa::path(get, path = "/api/admin/system/services", tag = "system",
    responses((status = 200, description = "the live instances", body = Envelope<Services>)))]
pub async fn list_services(
    State(state): State<AppState>,
) -> ApiResult<axum::Json<Envelope<Services>>> {
    Ok(reply(Services {
        services: live(&state).await?,
    }))
}

/// One live service instance
///
/// The instance `id` if it answers now (in `data.services`, alone).
#[utoipa::path(get, path = "/api/admin/system/services/{id}", tag = "system",
    params(("id" = String, Path, description = "the instance id")),
    responses(
        (status = 200, description = "the instance", body = Envelope<Services>),
        (status = 404, description = "no such instance answers", body = Problem, content_type = "application/problem+json")))]
pub async fn get_service(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Envelope<Services>>> {
    let services: Vec<ServiceInstance> = live(&state)
        .await?
        .into_iter()
        .filter(|s| s.id == id)
        .collect();
    if services.is_empty() {
        return Err(ApiError::not_found("service instance"));
    }
    Ok(reply(Services { services }))
}
