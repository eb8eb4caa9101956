//! The online view in the admin API (contract c.6 #57–#68): online users, kick, mute, admin
//! message and broadcast, acting on the WebSocket gateway nodes through NATS
//! ([`crate::admin_bus`]), never on in-process state.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use validator::Validate;
use web::envelope::{reply, Envelope, Reply};
use web::error::Problem;

use crate::admin::common::{lenient, Caller};
use crate::admin::listing::invalid;
use crate::admin_bus::{
    kick_subject, message_subject, mute_subject, scatter_gather, Delivered, KickRequest,
    MuteRequest, PresenceReply, SocketInfo, TextRequest, BROADCAST, COLLECT_WINDOW, MUTES,
    PRESENCE,
};
use crate::{ApiError, ApiJson, ApiPath, AppState};

/// OpenAPI tag of every online operation.
pub const TAG: &str = "online";

/// Every socket of every gateway node that answered within the collect window.
async fn sockets(state: &AppState) -> Result<Vec<SocketInfo>, ApiError> {
    let replies: Vec<PresenceReply> = scatter_gather(
        &state.nats,
        PRESENCE.to_string(),
        &json!({}),
        COLLECT_WINDOW,
    )
    .await?;
    Ok(replies.into_iter().flat_map(|r| r.sockets).collect())
}

/// Whom an online user is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnlineRole {
    /// A user who is also a counselor.
    Counselor,
    /// Any other user.
    User,
}

/// A user with at least one socket on a gateway node (their earliest socket).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OnlineUser {
    /// The user's id.
    pub id: i64,
    /// The user's id (the client reads this one).
    pub user_id: i64,
    /// Login name.
    pub username: String,
    /// Email.
    pub email: String,
    /// Avatar URL.
    pub avatar: String,
    /// `counselor` or `user`.
    pub role: OnlineRole,
    /// When the earliest socket connected (RFC 3339), or `未知` (unknown) when the node did not
    /// say.
    pub online_time: String,
    /// The session the socket is bound to.
    pub session_id: i64,
    /// Whether the user is muted (persisted or on the node).
    pub is_muted: bool,
}

/// Online users: one entry per user (their earliest socket), with username and role.
async fn online(state: &AppState) -> Result<Vec<OnlineUser>, ApiError> {
    let mut by_user: BTreeMap<i64, SocketInfo> = BTreeMap::new();
    for s in sockets(state).await? {
        by_user
            .entry(s.user_id)
            .and_modify(|cur| {
                if s.connected_at < cur.connected_at {
                    *cur = s.clone();
                }
            })
            .or_insert(s);
    }
    let ids: Vec<i64> = by_user.keys().copied().collect();
    let rows: Vec<(i64, String, String, String, bool, bool)> = sqlx::query_as(
        "SELECT u.id, u.username, u.email, u.avatar, c.id IS NOT NULL, m.user_id IS NOT NULL \
         FROM users u LEFT JOIN counselors c ON c.user_id = u.id LEFT JOIN user_mutes m ON m.user_id = u.id \
         WHERE u.id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&state.db)
    .await?;
    let info: HashMap<i64, _> = rows.into_iter().map(|r| (r.0, r)).collect();
    Ok(by_user
        .values()
        .map(|s| {
            let (username, email, avatar, counselor, muted) = info
                .get(&s.user_id)
                .map(|r| (r.1.clone(), r.2.clone(), r.3.clone(), r.4, r.5))
                .unwrap_or_default();
            OnlineUser {
                id: s.user_id,
                user_id: s.user_id,
                username,
                email,
                avatar,
                role: if counselor {
                    OnlineRole::Counselor
                } else {
                    OnlineRole::User
                },
                online_time: s
                    .connected_at
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| "未知".into()),
                session_id: s.session_id,
                is_muted: muted || s.muted,
            }
        })
        .collect())
}

/// The online users with their ids.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OnlineUsers {
    /// Their ids.
    pub user_ids: Vec<i64>,
    /// The users.
    pub users: Vec<OnlineUser>,
    /// How many.
    pub count: usize,
    /// How many (again).
    pub total: usize,
}

/// Online users
///
/// `{user_ids, users, count, total}` (contract c.6 #57), from every gateway node that answers
/// within the collect window.
#[utoipa::path(get, path = "/api/admin/online/users", tag = TAG,
    responses((status = 200, body = Envelope<OnlineUsers>)))]
pub async fn online_users(State(state): State<AppState>) -> Reply<OnlineUsers> {
    let users = online(&state).await?;
    let n = users.len();
    Ok(reply(OnlineUsers {
        user_ids: users.iter().map(|u| u.user_id).collect(),
        users,
        count: n,
        total: n,
    }))
}

/// The online users.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OnlineDetailed {
    /// The users.
    pub users: Vec<OnlineUser>,
    /// How many.
    pub total: usize,
}

async fn detailed(state: &AppState) -> Reply<OnlineDetailed> {
    let users = online(state).await?;
    let total = users.len();
    Ok(reply(OnlineDetailed { users, total }))
}

/// Online users, detailed
///
/// `{users, total}` (#58).
#[utoipa::path(get, path = "/api/admin/online/users/detailed", tag = TAG,
    responses((status = 200, body = Envelope<OnlineDetailed>)))]
pub async fn online_detailed(State(state): State<AppState>) -> Reply<OnlineDetailed> {
    detailed(&state).await
}

/// Online users, detailed (client path)
///
/// The same as `GET /api/admin/online/users/detailed` (#63).
#[utoipa::path(get, path = "/admin/online/users/detailed", tag = TAG,
    responses((status = 200, body = Envelope<OnlineDetailed>)))]
pub async fn online_detailed_client(State(state): State<AppState>) -> Reply<OnlineDetailed> {
    detailed(&state).await
}

/// Counts of online users.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OnlineStatistics {
    /// Online users.
    pub total_online: usize,
    /// Of them counselors.
    pub counselor_online: usize,
    /// Of them other users.
    pub user_online: usize,
    /// Muted counselors online.
    pub muted_counselor: usize,
    /// Muted users online (counselors included).
    pub muted_online_count: usize,
}

async fn statistics(state: &AppState) -> Reply<OnlineStatistics> {
    let users = online(state).await?;
    let count = |f: &dyn Fn(&OnlineUser) -> bool| users.iter().filter(|u| f(u)).count();
    let counselor = |u: &OnlineUser| u.role == OnlineRole::Counselor;
    Ok(reply(OnlineStatistics {
        total_online: users.len(),
        counselor_online: count(&counselor),
        user_online: count(&|u| u.role == OnlineRole::User),
        muted_counselor: count(&|u| counselor(u) && u.is_muted),
        muted_online_count: count(&|u| u.is_muted),
    }))
}

/// Online statistics
///
/// `{total_online, counselor_online, user_online, muted_counselor, muted_online_count}` (#61).
#[utoipa::path(get, path = "/api/admin/online/statistics", tag = TAG,
    responses((status = 200, body = Envelope<OnlineStatistics>)))]
pub async fn online_statistics(State(state): State<AppState>) -> Reply<OnlineStatistics> {
    statistics(&state).await
}

/// Online statistics (client path)
///
/// The same as `GET /api/admin/online/statistics` (#66).
#[utoipa::path(get, path = "/admin/online/statistics", tag = TAG,
    responses((status = 200, body = Envelope<OnlineStatistics>)))]
pub async fn online_statistics_client(State(state): State<AppState>) -> Reply<OnlineStatistics> {
    statistics(&state).await
}

fn delivered(replies: &[Delivered]) -> usize {
    replies.iter().map(|d| d.delivered).sum()
}

/// Sockets reached for one user.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserDelivery {
    /// The user.
    pub user_id: i64,
    /// Sockets that got the frame.
    pub delivered: usize,
}

async fn kick_user(state: &AppState, caller: &Caller, user_id: i64) -> Reply<UserDelivery> {
    let req = KickRequest {
        reason: "你已被管理员强制下线".into(),
        admin_id: caller.admin_id,
    };
    let replies: Vec<Delivered> =
        scatter_gather(&state.nats, kick_subject(user_id), &req, COLLECT_WINDOW).await?;
    let n = delivered(&replies);
    if n == 0 {
        return Err(ApiError::refused("user is not online"));
    }
    Ok(reply(UserDelivery {
        user_id,
        delivered: n,
    }))
}

/// Kick a user's sockets
///
/// Every node sends the user's sockets `force_logout` and closes them; 400 when the user has no
/// socket (#59).
#[utoipa::path(post, path = "/api/admin/online/users/{id}/kick", tag = TAG,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = Envelope<UserDelivery>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn kick(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> Reply<UserDelivery> {
    kick_user(&state, &caller, user_id).await
}

/// Kick a user's sockets (client path)
///
/// The same as `POST /api/admin/online/users/{id}/kick`.
#[utoipa::path(post, path = "/admin/online/users/{id}/kick", tag = TAG,
    params(("id" = i64, Path, description = "User id")),
    responses((status = 200, body = Envelope<UserDelivery>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn kick_client(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> Reply<UserDelivery> {
    kick_user(&state, &caller, user_id).await
}

/// An optional boolean as the admin client sends it: `true`/`false` or `1`/`0`.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    use serde::de::Error as _;
    match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Bool(b)) => Ok(Some(b)),
        Some(serde_json::Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
        Some(serde_json::Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
        Some(_) => Err(D::Error::custom("must be a boolean")),
    }
}

/// Mute or unmute a user.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct MuteChange {
    /// The user.
    #[serde(default, deserialize_with = "lenient::int")]
    #[schema(value_type = i64)]
    #[validate(required(message = "required"))]
    pub user_id: Option<i64>,
    /// `true` mutes, `false` unmutes (`1`/`0` accepted).
    #[serde(default, deserialize_with = "flag")]
    #[schema(value_type = bool)]
    #[validate(required(message = "required"))]
    pub is_muted: Option<bool>,
}

/// A mute change and how far it reached.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MuteApplied {
    /// The user.
    pub user_id: i64,
    /// Muted now.
    pub is_muted: bool,
    /// The user's sockets told.
    pub delivered: usize,
    /// Gateway nodes that answered.
    pub nodes: usize,
}

async fn apply_mute(state: &AppState, caller: &Caller, body: MuteChange) -> Reply<MuteApplied> {
    body.validate()?;
    let user_id = body.user_id.unwrap_or_default();
    let muted = body.is_muted.unwrap_or_default();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
        .bind(user_id)
        .fetch_one(&state.db)
        .await?;
    if !exists {
        return Err(ApiError::not_found("user"));
    }
    if muted {
        sqlx::query("INSERT INTO user_mutes (user_id, admin_id) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING")
            .bind(user_id)
            .bind(caller.admin_id)
            .execute(&state.db)
            .await?;
    } else {
        sqlx::query("DELETE FROM user_mutes WHERE user_id = $1")
            .bind(user_id)
            .execute(&state.db)
            .await?;
    }
    let req = MuteRequest {
        muted,
        admin_id: caller.admin_id,
    };
    let replies: Vec<Delivered> =
        scatter_gather(&state.nats, mute_subject(user_id), &req, COLLECT_WINDOW).await?;
    Ok(reply(MuteApplied {
        user_id,
        is_muted: muted,
        delivered: delivered(&replies),
        nodes: replies.len(),
    }))
}

/// Mute or unmute a user
///
/// Persisted in `user_mutes` (gateways load it at start), then every node is told (#60).
#[utoipa::path(post, path = "/api/admin/online/mute", tag = TAG, request_body = MuteChange,
    responses((status = 200, body = Envelope<MuteApplied>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn mute(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MuteChange>,
) -> Reply<MuteApplied> {
    apply_mute(&state, &caller, body).await
}

/// Mute or unmute a user (client path)
///
/// The same as `POST /api/admin/online/mute`.
#[utoipa::path(post, path = "/admin/online/mute", tag = TAG, request_body = MuteChange,
    responses((status = 200, body = Envelope<MuteApplied>), (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn mute_client(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<MuteChange>,
) -> Reply<MuteApplied> {
    apply_mute(&state, &caller, body).await
}

fn content_rule(content: &str) -> Result<(), validator::ValidationError> {
    match content.chars().count() {
        0 => Err(invalid("required", "required")),
        1..=2000 => Ok(()),
        _ => Err(invalid("length", "must be 1 to 2000 characters")),
    }
}

/// A text for users' sockets.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, ToSchema, Validate)]
pub struct AdminText {
    /// The text, 1–2000 characters (trimmed).
    #[serde(default, deserialize_with = "lenient::text")]
    #[schema(value_type = String, min_length = 1, max_length = 2000)]
    #[validate(required(message = "required"), custom(function = "content_rule"))]
    pub content: Option<String>,
}

/// Send a user an admin message
///
/// An `admin_message` frame to the user's sockets; 400 when the user is offline (#62).
#[utoipa::path(post, path = "/api/admin/online/users/{id}/message", tag = TAG,
    params(("id" = i64, Path, description = "User id")), request_body = AdminText,
    responses((status = 200, body = Envelope<UserDelivery>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(body): ApiJson<AdminText>,
) -> Reply<UserDelivery> {
    body.validate()?;
    let req = TextRequest {
        content: body.content.unwrap_or_default(),
        admin_id: caller.admin_id,
    };
    let replies: Vec<Delivered> =
        scatter_gather(&state.nats, message_subject(user_id), &req, COLLECT_WINDOW).await?;
    let n = delivered(&replies);
    if n == 0 {
        return Err(ApiError::refused("user is not online"));
    }
    Ok(reply(UserDelivery {
        user_id,
        delivered: n,
    }))
}

/// How far a broadcast reached.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BroadcastDelivery {
    /// Sockets that got the frame.
    pub delivered: usize,
    /// Gateway nodes that answered.
    pub nodes: usize,
}

async fn send_broadcast(
    state: &AppState,
    caller: &Caller,
    body: AdminText,
) -> Reply<BroadcastDelivery> {
    body.validate()?;
    let req = TextRequest {
        content: body.content.unwrap_or_default(),
        admin_id: caller.admin_id,
    };
    let replies: Vec<Delivered> =
        scatter_gather(&state.nats, BROADCAST.to_string(), &req, COLLECT_WINDOW).await?;
    Ok(reply(BroadcastDelivery {
        delivered: delivered(&replies),
        nodes: replies.len(),
    }))
}

/// Broadcast a system message
///
/// A `system_message` frame to every socket of every node (#67).
#[utoipa::path(post, path = "/api/admin/broadcast", tag = TAG, request_body = AdminText,
    responses((status = 200, body = Envelope<BroadcastDelivery>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn broadcast(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AdminText>,
) -> Reply<BroadcastDelivery> {
    send_broadcast(&state, &caller, body).await
}

/// Broadcast a system message (client path)
///
/// The same as `POST /api/admin/broadcast` (#68).
#[utoipa::path(post, path = "/admin/broadcast", tag = TAG, request_body = AdminText,
    responses((status = 200, body = Envelope<BroadcastDelivery>), (status = 400, body = Problem, content_type = "application/problem+json")))]
pub async fn broadcast_client(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<AdminText>,
) -> Reply<BroadcastDelivery> {
    send_broadcast(&state, &caller, body).await
}

/// Answers `mychat.admin.mutes` (queue group `mychat-admin`: one admin node answers) with the
/// persisted mute list, so that a gateway node starting later knows who is muted.
pub async fn serve_mutes(state: AppState) {
    let mut sub = match state
        .nats
        .queue_subscribe(MUTES, "mychat-admin".to_string())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "subscribing to the mute list subject");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply) = msg.reply else { continue };
        let ids: Vec<i64> = match sqlx::query_scalar("SELECT user_id FROM user_mutes")
            .fetch_all(&state.db)
            .await
        {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "reading the mute list");
                continue;
            }
        };
        let body = json!({ "user_ids": ids }).to_string();
        let _ = state.nats.publish(reply, body.into()).await;
    }
}
