//! Admin API (issue 4): online users, kick, mute, admin message and broadcast (contract c.6
//! #57–#68), acting on the WebSocket gateway nodes through NATS ([`crate::admin_bus`]), never on
//! in-process state.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::Json;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::admin::common::{Body, Caller};
use crate::admin_bus::{
    kick_subject, message_subject, mute_subject, scatter_gather, Delivered, KickRequest,
    MuteRequest, PresenceReply, SocketInfo, TextRequest, BROADCAST, COLLECT_WINDOW, MUTES,
    PRESENCE,
};
use crate::{ok, ApiError, ApiJson, ApiPath, ApiResult, AppState};

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

/// Online users: one entry per user (their earliest socket), with username and role.
async fn online(state: &AppState) -> Result<Vec<Value>, ApiError> {
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
            json!({
                "id": s.user_id,
                "user_id": s.user_id,
                "username": username,
                "email": email,
                "avatar": avatar,
                "role": if counselor { "counselor" } else { "user" },
                "online_time": s.connected_at.map(|t| t.to_rfc3339()).unwrap_or_else(|| "未知".into()),
                "session_id": s.session_id,
                "is_muted": muted || s.muted,
            })
        })
        .collect())
}

/// `GET /api/admin/online/users` → `{user_ids, users, count}` (contract c.6 #57).
pub async fn online_users(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let users = online(&state).await?;
    let ids: Vec<Value> = users.iter().map(|u| u["user_id"].clone()).collect();
    let n = users.len();
    Ok(ok(
        json!({ "user_ids": ids, "users": users, "count": n, "total": n }),
    ))
}

/// `GET /api/admin/online/users/detailed` (also without `/api`) → `{users: [{user_id, username,
/// role, online_time, session_id, is_muted}], total}` (#58, #63).
pub async fn online_detailed(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let users = online(&state).await?;
    let n = users.len();
    Ok(ok(json!({ "users": users, "total": n })))
}

/// `GET /api/admin/online/statistics` (also without `/api`) → `{total_online, counselor_online,
/// user_online, muted_counselor, muted_online_count}` (#61, #66).
pub async fn online_statistics(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let users = online(&state).await?;
    let is = |u: &Value, role: &str| u["role"] == role;
    let muted = |u: &Value| u["is_muted"] == true;
    Ok(ok(json!({
        "total_online": users.len(),
        "counselor_online": users.iter().filter(|u| is(u, "counselor")).count(),
        "user_online": users.iter().filter(|u| is(u, "user")).count(),
        "muted_counselor": users.iter().filter(|u| is(u, "counselor") && muted(u)).count(),
        "muted_online_count": users.iter().filter(|u| muted(u)).count(),
    })))
}

fn delivered(replies: &[Delivered]) -> usize {
    replies.iter().map(|d| d.delivered).sum()
}

/// `POST /api/admin/online/users/:id/kick` (also without `/api`): every node sends the user's
/// sockets `force_logout` and closes them → `{delivered}`; 400 when the user has no socket (#59).
pub async fn kick(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
) -> ApiResult<Json<Value>> {
    let req = KickRequest {
        reason: "你已被管理员强制下线".into(),
        admin_id: caller.admin_id,
    };
    let replies: Vec<Delivered> =
        scatter_gather(&state.nats, kick_subject(user_id), &req, COLLECT_WINDOW).await?;
    let n = delivered(&replies);
    if n == 0 {
        return Err(ApiError::bad_request("user is not online"));
    }
    Ok(ok(json!({ "user_id": user_id, "delivered": n })))
}

/// `POST /api/admin/online/mute` (also without `/api`) body `{user_id, is_muted}`
/// (`is_muted: false` unmutes: applied). Persisted in `user_mutes` (gateways load it at start),
/// then every node is told → `{user_id, is_muted, delivered}` (#60).
pub async fn mute(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let b = Body::new(body)?;
    let user_id = b
        .int("user_id")?
        .ok_or_else(|| ApiError::field("user_id", "required"))?;
    let muted = b
        .bool("is_muted")?
        .ok_or_else(|| ApiError::field("is_muted", "required"))?;
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
    Ok(ok(
        json!({ "user_id": user_id, "is_muted": muted, "delivered": delivered(&replies), "nodes": replies.len() }),
    ))
}

fn content(b: &Body) -> Result<String, ApiError> {
    let c = b.required("content")?;
    crate::admin::common::check_len("content", &c, 1, 2000)?;
    Ok(c)
}

/// `POST /api/admin/online/users/:id/message` body `{content}` → an `admin_message` frame to
/// the user's sockets; 400 when offline (#62).
pub async fn message(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(user_id): ApiPath<i64>,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let req = TextRequest {
        content: content(&Body::new(body)?)?,
        admin_id: caller.admin_id,
    };
    let replies: Vec<Delivered> =
        scatter_gather(&state.nats, message_subject(user_id), &req, COLLECT_WINDOW).await?;
    let n = delivered(&replies);
    if n == 0 {
        return Err(ApiError::bad_request("user is not online"));
    }
    Ok(ok(json!({ "user_id": user_id, "delivered": n })))
}

/// `POST /api/admin/broadcast` (also without `/api`) body `{content}` → a `system_message` frame
/// to every socket of every node → `{delivered, nodes}` (#67, #68).
pub async fn broadcast(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
) -> ApiResult<Json<Value>> {
    let req = TextRequest {
        content: content(&Body::new(body)?)?,
        admin_id: caller.admin_id,
    };
    let replies: Vec<Delivered> =
        scatter_gather(&state.nats, BROADCAST.to_string(), &req, COLLECT_WINDOW).await?;
    Ok(ok(
        json!({ "delivered": delivered(&replies), "nodes": replies.len() }),
    ))
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
