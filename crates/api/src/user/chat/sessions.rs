//! Chat sessions over HTTP: start (either participant, on a paid order), find by order (which
//! starts it when it does not exist yet), and end (which bills). Their messages are in
//! [`super::messages`].
//!
//! A session's id is its order's id (one session per order; the `ChatSession` aggregate holds it).

use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use domain::{
    ChatSession, EndReason, Order, OrderCommand, OrderStatus, SessionCommand, SessionEvent,
    SessionStatus,
};
use eventstore::Actor;
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::user::orders::placement::request_meta;
use crate::user::state::UserState;
use crate::{ApiError, ApiPath, AppState, AuthUser};

/// The user-API routes of this module.
pub fn router() -> OpenApiRouter<UserState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(start_alias))
        .routes(routes!(session_by_order))
        .routes(routes!(end))
        .routes(routes!(end_alias))
}

/// The users-table id of counselor `counselor_id` (the counselor's login).
pub async fn counselor_user_id(
    state: &AppState,
    counselor_id: i64,
) -> Result<Option<i64>, ApiError> {
    Ok(
        sqlx::query_scalar::<_, Option<i64>>("SELECT user_id FROM counselors WHERE id = $1")
            .bind(counselor_id)
            .fetch_optional(&state.db)
            .await?
            .flatten(),
    )
}

/// Fen as the yuan number MyChat's clients read (`1234` → `12.34`).
pub(super) fn yuan(fen: i64) -> f64 {
    fen as f64 / 100.0
}

/// A started session: its id (the order's id).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StartedSession {
    /// The session's id, which is its order's id.
    pub session_id: i64,
}

/// Starts the session of order `order_id` for `user`, as either participant, idempotently.
///
/// The order decides first (`Order::StartService`): it must be paid by a captured payment that
/// covers its whole amount with no refund decided (422 otherwise), and from then on it can no
/// longer be cancelled or refunded. Only then is the `ChatSession` started, so a session is
/// never billed against money that was not captured or is going back. Every refusal that does not
/// need the aggregates (unknown order 404, not a participant 403, not paid 422) comes before any
/// command, so a refused start appends nothing to the log.
async fn start_session(
    state: &AppState,
    user: &AuthUser,
    headers: &HeaderMap,
    order_id: i64,
) -> Result<(), ApiError> {
    let (order, version) = state.bus.load::<Order>(&order_id.to_string()).await?;
    if version == 0 {
        return Err(ApiError::not_found("order"));
    }
    let counselor_user = counselor_user_id(state, order.counselor_id).await?;
    if order.user_id != user.user_id && counselor_user != Some(user.user_id) {
        return Err(ApiError::forbidden("not a participant of this order"));
    }
    if order.status != OrderStatus::Paid {
        return Err(ApiError::refused(format!(
            "order is not paid (status {})",
            order.status.code()
        )));
    }
    let now = Utc::now();
    let meta = request_meta(headers, Actor::user(user.user_id));
    let mut order_meta = meta.clone();
    order_meta.command_id = format!("{}:order", meta.command_id);
    state
        .bus
        .execute::<Order>(
            &order_id.to_string(),
            OrderCommand::StartService {
                session_id: order_id,
                started_at: now,
            },
            &order_meta,
        )
        .await?;
    let command = SessionCommand::Start {
        order_id,
        user_id: order.user_id,
        counselor_id: order.counselor_id,
        counselor_user_id: counselor_user.unwrap_or_default(),
        price_per_minute: order.price_per_minute,
        prepaid_minutes: order.duration_minutes,
        started_at: now,
    };
    let committed = state
        .bus
        .execute::<ChatSession>(&order_id.to_string(), command, &meta)
        .await?;
    state
        .settle("chat_sessions", committed.stream_sequence)
        .await;
    Ok(())
}

/// `POST /api/chat/start/:order_id` → `{session_id}`. Either participant may start the session of
/// a paid order; starting again returns the same session.
///
/// The order decides first (`Order::StartService`): it must be paid by a captured payment that
/// covers its whole amount with no refund decided (422 otherwise), and from then on it can no
/// longer be cancelled or refunded. Only then is the `ChatSession` started, so a session is
/// never billed against money that was not captured or is going back.
#[utoipa::path(
    post,
    path = "/api/chat/start/{order_id}",
    operation_id = "chat_start",
    tag = "chat",
    summary = "Start the session of a paid order (either participant)",
    description = "Either participant (the order's user or its counselor) starts the session of \
        a paid order; starting it again answers the same session and appends nothing. The order \
        must be paid by a captured payment covering its whole amount with no refund decided; \
        from then on it can no longer be cancelled or refunded.",
    params(("order_id" = i64, Path, description = "The order's id (also the session's id)")),
    responses(
        (status = 200, description = "The session (started now or before)", body = Envelope<StartedSession>),
        (status = 422, description = "The order is not paid (or not fully funded)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant of this order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(order_id): ApiPath<i64>,
) -> Reply<StartedSession> {
    start_session(&state, &user, &headers, order_id).await?;
    Ok(reply(StartedSession {
        session_id: order_id,
    }))
}

/// `POST /api/chat/session/:order_id/start`: seed 001's alias of [`start`].
#[utoipa::path(
    post,
    path = "/api/chat/session/{order_id}/start",
    operation_id = "chat_start_alias",
    tag = "chat",
    summary = "Seed 001 alias of /api/chat/start/{order_id}",
    description = "The same operation as `POST /api/chat/start/{order_id}`.",
    params(("order_id" = i64, Path, description = "The order's id (also the session's id)")),
    responses(
        (status = 200, description = "The session (started now or before)", body = Envelope<StartedSession>),
        (status = 422, description = "The order is not paid (or not fully funded)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant of this order", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn start_alias(
    state: State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    order_id: ApiPath<i64>,
) -> Reply<StartedSession> {
    start(state, user, headers, order_id).await
}

/// Loads a session the caller takes part in (404 unknown, 403 not a participant).
pub(super) async fn participant_session(
    state: &AppState,
    user: &AuthUser,
    session_id: i64,
) -> Result<ChatSession, ApiError> {
    let (session, version) = state
        .bus
        .load::<ChatSession>(&session_id.to_string())
        .await?;
    if version == 0 {
        return Err(ApiError::not_found("session"));
    }
    if !session.is_participant(user.user_id) {
        return Err(ApiError::forbidden("not a participant of this session"));
    }
    Ok(session)
}

/// The session of an order and its status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OrderSession {
    /// The session's id, which is its order's id.
    pub session_id: i64,
    /// 1 active, 2 ended.
    #[schema(minimum = 0, maximum = 3)]
    pub status: i16,
}

/// `GET /api/chat/order/:order_id/session` → `{session_id, status}`: the order's session, started
/// when it does not exist yet.
///
/// This is how MyChat's web client enters a paid order's chat from its Orders page, so the user
/// must be able to obtain the session while the order is paid (contract b.3). An existing session
/// is answered as it is (active or ended) to its participants (403 to anyone else). When there is
/// none yet, the session is started exactly as `POST /api/chat/start/:order_id` starts it
/// (the same code): either participant, on a paid order, idempotently — a second call
/// answers the same session and appends nothing; a caller who is neither the order's user nor its
/// counselor (403), an unknown order (404) or an order that is not paid (422) is refused as the
/// start route refuses it, with nothing appended to the log.
#[utoipa::path(
    get,
    path = "/api/chat/order/{order_id}/session",
    operation_id = "chat_session_by_order",
    tag = "chat",
    summary = "The session of an order, started if it does not exist yet",
    description = "Answers the order's session `{session_id, status}`. An existing session (active \
        or ended) is answered to its participants. When the order has no session yet, it is \
        started exactly as `POST /api/chat/start/{order_id}` starts it: by either participant \
        (the order's user or its counselor), on a paid order, idempotently (a second call answers \
        the same session and appends nothing). A caller who is not a participant (403), an \
        unknown order (404) or an order that is not paid (422) is refused as the start route \
        refuses it, and nothing is recorded.",
    params(("order_id" = i64, Path, description = "The order's id (also the session's id)")),
    responses(
        (status = 200, description = "The order's session (found, or started now)", body = Envelope<OrderSession>),
        (status = 400, description = "No session yet and the order is not paid (or not fully funded)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant of this order or its session", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown order", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn session_by_order(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(order_id): ApiPath<i64>,
) -> Reply<OrderSession> {
    let row = sqlx::query(
        "SELECT id, status, user_id, counselor_user_id FROM chat_sessions WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&state.db)
    .await?;
    if let Some(row) = row {
        if row.get::<i64, _>("user_id") != user.user_id
            && row.get::<i64, _>("counselor_user_id") != user.user_id
        {
            return Err(ApiError::forbidden("not a participant of this session"));
        }
        return Ok(reply(OrderSession {
            session_id: row.get("id"),
            status: row.get("status"),
        }));
    }
    // Not in the read model: the session may exist already (the read model trails the log) —
    // then it is answered from its aggregate, as it is — or it is started now.
    let (session, version) = state.bus.load::<ChatSession>(&order_id.to_string()).await?;
    if version > 0 {
        if !session.is_participant(user.user_id) {
            return Err(ApiError::forbidden("not a participant of this session"));
        }
        return Ok(reply(OrderSession {
            session_id: order_id,
            status: session.status.code(),
        }));
    }
    start_session(&state, &user, &headers, order_id).await?;
    Ok(reply(OrderSession {
        session_id: order_id,
        status: SessionStatus::Active.code(),
    }))
}

/// The bill of a session, amounts in yuan with `_fen` twins.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SessionBill {
    /// How long the session lasted, seconds.
    pub duration: i64,
    /// The minutes billed.
    pub duration_minutes: i64,
    /// Price per minute, yuan.
    pub price_per_minute: f64,
    /// What the session cost, yuan.
    pub total_amount: f64,
    /// What the session cost, fen.
    pub total_amount_fen: i64,
    /// The platform's share, yuan.
    pub platform_fee: f64,
    /// The platform's share, fen.
    pub platform_fee_fen: i64,
    /// The counselor's share, yuan.
    pub counselor_fee: f64,
    /// The counselor's share, fen.
    pub counselor_fee_fen: i64,
    /// What goes back to the user (prepaid minus cost), yuan.
    pub refund: f64,
    /// What goes back to the user, fen.
    pub refund_fen: i64,
}

/// An ended session: its duration and its bill (each present when this call ended and billed it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EndedSession {
    /// The session's id.
    pub session_id: i64,
    /// How long the session lasted, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub duration: Option<i64>,
    /// The session's bill.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub billing: Option<SessionBill>,
}

/// `POST /api/chat/end/:session_id` → `{session_id, duration, billing}`: either participant ends
/// the session, which bills it (once). The counselor's share and the user's refund follow through
/// the process manager.
#[utoipa::path(
    post,
    path = "/api/chat/end/{session_id}",
    operation_id = "chat_end",
    tag = "chat",
    summary = "End and bill the session (either participant)",
    params(("session_id" = i64, Path, description = "The session's id (its order's id)")),
    responses(
        (status = 200, description = "The ended session and its bill", body = Envelope<EndedSession>),
        (status = 400, description = "The session has already ended", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant of this session", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn end(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    ApiPath(session_id): ApiPath<i64>,
) -> Reply<EndedSession> {
    participant_session(&state, &user, session_id).await?;
    let command = SessionCommand::End {
        ended_by: user.user_id,
        reason: EndReason::Participant,
        ended_at: Utc::now(),
    };
    let meta = request_meta(&headers, Actor::user(user.user_id));
    let committed = state
        .bus
        .execute::<ChatSession>(&session_id.to_string(), command, &meta)
        .await?;
    state
        .settle("chat_sessions", committed.stream_sequence)
        .await;
    let mut out = EndedSession {
        session_id,
        duration: None,
        billing: None,
    };
    for event in &committed.events {
        match event {
            SessionEvent::SessionEnded {
                duration_seconds, ..
            } => out.duration = Some(*duration_seconds),
            SessionEvent::SessionBilled {
                billed_minutes,
                price_per_minute,
                amount,
                platform_fee,
                counselor_fee,
                refund,
                duration_seconds,
                ..
            } => {
                out.billing = Some(SessionBill {
                    duration: *duration_seconds,
                    duration_minutes: *billed_minutes,
                    price_per_minute: yuan(*price_per_minute),
                    total_amount: yuan(*amount),
                    total_amount_fen: *amount,
                    platform_fee: yuan(*platform_fee),
                    platform_fee_fen: *platform_fee,
                    counselor_fee: yuan(*counselor_fee),
                    counselor_fee_fen: *counselor_fee,
                    refund: yuan(*refund),
                    refund_fen: *refund,
                });
            }
            SessionEvent::SessionStarted { .. } => {}
        }
    }
    Ok(reply(out))
}

/// `POST /api/chat/session/:session_id/end`: seed 001's alias of [`end`].
#[utoipa::path(
    post,
    path = "/api/chat/session/{session_id}/end",
    operation_id = "chat_end_alias",
    tag = "chat",
    summary = "Seed 001 alias of /api/chat/end/{session_id}",
    params(("session_id" = i64, Path, description = "The session's id (its order's id)")),
    responses(
        (status = 200, description = "The ended session and its bill", body = Envelope<EndedSession>),
        (status = 400, description = "The session has already ended", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a participant of this session", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown session", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently; retry", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn end_alias(
    state: State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    session_id: ApiPath<i64>,
) -> Reply<EndedSession> {
    end(state, user, headers, session_id).await
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn yuan_numbers_are_the_edges_yuan_numbers() {
        for fen in [0, 1, 30, 350, 500, 1234, 99_999_999_999] {
            assert_eq!(
                serde_json::to_string(&yuan(fen)).unwrap(),
                crate::money::yuan(fen).to_string()
            );
        }
    }

    #[test]
    fn an_ended_session_omits_what_this_call_did_not_decide() {
        let bare = EndedSession {
            session_id: 7,
            duration: None,
            billing: None,
        };
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            json!({ "session_id": 7 }).to_string()
        );
        let billed = EndedSession {
            session_id: 7,
            duration: Some(61),
            billing: Some(SessionBill {
                duration: 61,
                duration_minutes: 2,
                price_per_minute: yuan(500),
                total_amount: yuan(1000),
                total_amount_fen: 1000,
                platform_fee: yuan(300),
                platform_fee_fen: 300,
                counselor_fee: yuan(700),
                counselor_fee_fen: 700,
                refund: yuan(14_000),
                refund_fen: 14_000,
            }),
        };
        assert_eq!(
            serde_json::to_string(&billed).unwrap(),
            json!({
                "session_id": 7,
                "duration": 61,
                "billing": {
                    "duration": 61, "duration_minutes": 2, "price_per_minute": 5.0,
                    "total_amount": 10.0, "total_amount_fen": 1000, "platform_fee": 3.0,
                    "platform_fee_fen": 300, "counselor_fee": 7.0, "counselor_fee_fen": 700,
                    "refund": 140.0, "refund_fen": 14000,
                },
            })
            .to_string()
        );
    }
}
