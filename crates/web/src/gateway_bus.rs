//! The admin ↔ gateway contract: the core-NATS subjects and bodies the admin API (requester) and
//! every gateway node (responder) exchange. Core NATS, not JetStream: these are live actions on
//! live sockets, meaningless once the sockets are gone.
//!
//! | subject | kind | payload → reply |
//! |---|---|---|
//! | `mychat.gateway.presence` | request, every node replies | `{}` → [`PresenceReply`] |
//! | `mychat.gateway.kick.<user_id>` | request, every node replies | [`KickRequest`] → [`Delivered`] |
//! | `mychat.gateway.mute.<user_id>` | request, every node replies | [`MuteRequest`] → [`Delivered`] |
//! | `mychat.gateway.message.<user_id>` | request, every node replies | [`TextRequest`] → [`Delivered`] |
//! | `mychat.gateway.broadcast` | request, every node replies | [`TextRequest`] → [`Delivered`] |
//! | `mychat.admin.mutes` | request, an admin node replies | `{}` → [`MuteList`] |
//!
//! Because several gateway nodes answer one request, the requester publishes with its own inbox
//! as reply subject and collects replies for [`COLLECT_WINDOW`] ([`scatter_gather`]). A node with
//! nothing to report still replies (`delivered: 0`), so the requester knows how many nodes it
//! heard from.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// Presence request subject.
pub const PRESENCE: &str = "mychat.gateway.presence";
/// Broadcast request subject.
pub const BROADCAST: &str = "mychat.gateway.broadcast";
/// Where gateways ask for the persisted mute list at start.
pub const MUTES: &str = "mychat.admin.mutes";

/// Every kick subject (a gateway node subscribes to it).
pub const KICK_ANY: &str = "mychat.gateway.kick.*";
/// Every mute subject.
pub const MUTE_ANY: &str = "mychat.gateway.mute.*";
/// Every admin-message subject.
pub const MESSAGE_ANY: &str = "mychat.gateway.message.*";

/// The user a kick / mute / message subject names (its last token).
pub fn user_of(subject: &str) -> Option<i64> {
    subject.rsplit('.').next()?.parse().ok()
}

/// `mychat.gateway.kick.<user_id>`.
pub fn kick_subject(user_id: i64) -> String {
    format!("mychat.gateway.kick.{user_id}")
}
/// `mychat.gateway.mute.<user_id>`.
pub fn mute_subject(user_id: i64) -> String {
    format!("mychat.gateway.mute.{user_id}")
}
/// `mychat.gateway.message.<user_id>`.
pub fn message_subject(user_id: i64) -> String {
    format!("mychat.gateway.message.{user_id}")
}

/// How long a requester collects replies from gateway nodes.
pub const COLLECT_WINDOW: Duration = Duration::from_millis(500);

/// One socket of a node.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SocketInfo {
    pub user_id: i64,
    /// The session the socket is bound to.
    pub session_id: i64,
    pub conn_id: u64,
    pub connected_at: Option<DateTime<Utc>>,
    pub muted: bool,
}

/// A node's answer to [`PRESENCE`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PresenceReply {
    /// The node's id (random per process).
    pub node: String,
    pub sockets: Vec<SocketInfo>,
}

/// Body of a kick: the `force_logout` frame's reason.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KickRequest {
    pub reason: String,
    pub admin_id: i64,
}

/// Body of a mute.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MuteRequest {
    pub muted: bool,
    pub admin_id: i64,
}

/// Body of an admin message / broadcast: the frame's `content`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TextRequest {
    pub content: String,
    pub admin_id: i64,
}

/// The admin API's answer to [`MUTES`]: every muted user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MuteList {
    pub user_ids: Vec<i64>,
}

/// A node's answer to kick / mute / message / broadcast: how many of its sockets it acted on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivered {
    pub node: String,
    pub delivered: usize,
}

/// Publishes `payload` on `subject` with a fresh inbox as reply subject and collects every reply
/// that arrives within `window`, decoding each as `R` (undecodable replies are skipped).
///
/// # Errors
/// When NATS refuses the subscription or the publish.
pub async fn scatter_gather<R: serde::de::DeserializeOwned>(
    nats: &async_nats::Client,
    subject: String,
    payload: &impl Serialize,
    window: Duration,
) -> anyhow::Result<Vec<R>> {
    let inbox = nats.new_inbox();
    let mut sub = nats.subscribe(inbox.clone()).await?;
    nats.publish_with_reply(subject, inbox, serde_json::to_vec(payload)?.into())
        .await?;
    nats.flush().await?;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, sub.next()).await {
        if let Ok(r) = serde_json::from_slice(&msg.payload) {
            out.push(r);
        }
    }
    let _ = sub.unsubscribe().await;
    Ok(out)
}
