//! The gateway side of the admin ↔ gateway NATS contract ([`web::gateway_bus`]): every
//! node answers presence requests with its sockets and acts on kick / mute / admin message /
//! broadcast requests for the sockets it holds, then replies with how many it acted on.
//!
//! Presence source: every socket of the node's [`Hub`] (`session_id` 0 when not bound to a
//! session). Mutes are held per node in the hub, loaded at start from
//! the admin API (`mychat.admin.mutes`) and kept in step by `mychat.gateway.mute.<user_id>`.

use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use web::gateway_bus::{
    user_of, Delivered, KickRequest, MuteList, MuteRequest, PresenceReply, SocketInfo, TextRequest,
    BROADCAST, KICK_ANY, MESSAGE_ANY, MUTES, MUTE_ANY, PRESENCE,
};

use crate::hub::Hub;
use crate::protocol::frame;

/// Subscribes to the admin subjects and serves them until `shutdown`.
///
/// # Errors
/// When a subscription cannot be made.
pub async fn run(
    nats: async_nats::Client,
    hub: Arc<Hub>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let node = uuid::Uuid::new_v4().to_string();
    let mut subs = futures::stream::select_all([
        nats.subscribe(PRESENCE).await?,
        nats.subscribe(KICK_ANY).await?,
        nats.subscribe(MUTE_ANY).await?,
        nats.subscribe(MESSAGE_ANY).await?,
        nats.subscribe(BROADCAST).await?,
    ]);
    nats.flush().await?;
    load_mutes(&nats, &hub).await;
    loop {
        let msg = tokio::select! {
            m = subs.next() => match m { Some(m) => m, None => break },
            _ = shutdown.cancelled() => break,
        };
        let reply = handle(&node, &hub, &msg);
        if let (Some(to), Some(body)) = (msg.reply.clone(), reply) {
            if let Err(e) = nats.publish(to, body.into()).await {
                tracing::warn!(error = %e, "answering an admin request");
            }
        }
    }
    Ok(())
}

async fn load_mutes(nats: &async_nats::Client, hub: &Hub) {
    match web::gateway_bus::scatter_gather::<MuteList>(
        nats,
        MUTES.to_string(),
        &json!({}),
        web::gateway_bus::COLLECT_WINDOW,
    )
    .await
    {
        Ok(replies) => {
            for id in replies.into_iter().flat_map(|m| m.user_ids) {
                hub.set_muted(id, true);
            }
        }
        Err(e) => tracing::warn!(error = %e, "loading the mute list"),
    }
}

/// Serves one admin request; returns the reply body.
fn handle(node: &str, hub: &Hub, msg: &async_nats::Message) -> Option<Vec<u8>> {
    let subject = msg.subject.as_str();
    let delivered = |n: usize| {
        serde_json::to_vec(&Delivered {
            node: node.to_string(),
            delivered: n,
        })
        .ok()
    };
    let now = Utc::now();
    if subject == PRESENCE {
        let sockets = hub
            .connections()
            .into_iter()
            .map(|(session_id, c)| SocketInfo {
                user_id: c.user_id,
                session_id,
                conn_id: c.id,
                connected_at: Some(c.connected_at),
                muted: hub.is_muted(c.user_id),
            })
            .collect();
        return serde_json::to_vec(&PresenceReply {
            node: node.to_string(),
            sockets,
        })
        .ok();
    }
    if subject == BROADCAST {
        let req: TextRequest = serde_json::from_slice(&msg.payload).ok()?;
        let conns = hub.connections();
        for (session_id, c) in &conns {
            c.send(frame(
                "system_message",
                *session_id,
                json!({ "content": req.content, "created_at": now }),
            ));
        }
        return delivered(conns.len());
    }
    let user_id = user_of(subject)?;
    let mine: Vec<_> = hub
        .connections()
        .into_iter()
        .filter(|(_, c)| c.user_id == user_id)
        .collect();
    if subject.starts_with("mychat.gateway.kick.") {
        let req: KickRequest = serde_json::from_slice(&msg.payload).ok()?;
        for (session_id, c) in &mine {
            c.send(frame(
                "force_logout",
                *session_id,
                json!({ "reason": req.reason, "created_at": now }),
            ));
            // Let the writer flush the frame, then close the socket.
            let close = c.close.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                close.cancel();
            });
        }
        return delivered(mine.len());
    }
    if subject.starts_with("mychat.gateway.mute.") {
        let req: MuteRequest = serde_json::from_slice(&msg.payload).ok()?;
        hub.set_muted(user_id, req.muted);
        for (session_id, c) in &mine {
            c.send(frame(
                "admin_message",
                *session_id,
                json!({ "content": if req.muted { "you have been muted by an administrator" } else { "you have been unmuted" }, "muted": req.muted, "created_at": now }),
            ));
        }
        return delivered(mine.len());
    }
    if subject.starts_with("mychat.gateway.message.") {
        let req: TextRequest = serde_json::from_slice(&msg.payload).ok()?;
        for (session_id, c) in &mine {
            c.send(frame(
                "admin_message",
                *session_id,
                json!({ "content": req.content, "created_at": now }),
            ));
        }
        return delivered(mine.len());
    }
    None
}
