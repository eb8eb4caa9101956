//! The core-NATS relays: typing indicators (`typing.<session_id>`, `typing.g.<group_id>`) to a
//! session's or a group's other local sockets, and notifications (`notify.<user_id>`,
//! `notify.all`: frames, admin kicks and mutes) to a user's sockets or every socket.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::protocol::frame;

use super::conn::{Conn, CLOSE_KICKED};
use super::state::Hub;

/// A typing indicator's `(user_id, kind)`: `kind` is `typing_stop` or `typing`.
fn typing_of(payload: &[u8]) -> Option<(i64, &'static str)> {
    #[derive(Deserialize)]
    struct Typing {
        user_id: i64,
        kind: String,
    }
    let t = serde_json::from_slice::<Typing>(payload).ok()?;
    let kind = if t.kind == "typing_stop" {
        "typing_stop"
    } else {
        "typing"
    };
    Some((t.user_id, kind))
}

impl Hub {
    /// Routes a core-NATS typing indicator to the session's other local sockets.
    fn route_typing(&self, session_id: i64, payload: &[u8]) {
        if let Some((user_id, kind)) = typing_of(payload) {
            let text = frame(
                kind,
                session_id,
                json!({ "user_id": user_id, "is_typing": kind == "typing" }),
            );
            self.to_others(session_id, user_id, text);
        }
    }

    /// Routes a core-NATS typing indicator of a group (`typing.g.<group_id>`) to the group's
    /// other local sockets.
    fn route_group_typing(&self, group_id: i64, payload: &[u8]) {
        if let Some((user_id, kind)) = typing_of(payload) {
            let text = crate::protocol::group_frame(
                kind,
                group_id,
                json!({ "group_id": group_id, "user_id": user_id, "is_typing": kind == "typing" }),
            );
            self.to_others(super::group_room(group_id), user_id, text);
        }
    }

    /// Sends `text` to the sockets of room `room` that are not `user_id`'s.
    fn to_others(&self, room: i64, user_id: i64, text: String) {
        let text = Utf8Bytes::from(text);
        for conn in self.room(room) {
            if conn.user_id != user_id {
                conn.send(text.clone());
            }
        }
    }

    /// Routes a `notify.<user_id>` / `notify.all` message.
    fn route_notify(&self, target: &str, payload: &[u8]) {
        #[derive(Deserialize)]
        struct Notice {
            #[serde(rename = "type")]
            kind: String,
            #[serde(default)]
            data: Value,
            #[serde(default)]
            close: Option<String>,
            #[serde(default)]
            mute_until: Option<i64>,
        }
        let n = match serde_json::from_slice::<Notice>(payload) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, target, "undecodable notify message");
                return;
            }
        };
        let conns: Vec<Arc<Conn>> = if target == "all" {
            self.users
                .lock()
                .expect("hub lock")
                .values()
                .flatten()
                .cloned()
                .collect()
        } else {
            let Ok(user_id) = target.parse::<i64>() else {
                return;
            };
            if let Some(until) = n.mute_until {
                self.muted.lock().expect("hub lock").insert(user_id, until);
            }
            self.user_conns(user_id)
        };
        let text = Utf8Bytes::from(
            json!({ "type": n.kind, "data": n.data, "payload": n.data }).to_string(),
        );
        for conn in conns {
            conn.send(text.clone());
            if let Some(reason) = &n.close {
                let conn = conn.clone();
                let reason = reason.clone();
                // Let the frame go out first.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    conn.close_with(CLOSE_KICKED, &reason);
                });
            }
        }
    }

    /// Routes `typing.<session_id>` until `shutdown`.
    pub async fn run_typing(
        self: Arc<Self>,
        mut sub: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                m = sub.next() => match m {
                    Some(m) => {
                        let target = m.subject.as_str().strip_prefix("typing.").unwrap_or("");
                        if let Some(Ok(group)) = target.strip_prefix("g.").map(str::parse::<i64>) {
                            self.route_group_typing(group, &m.payload);
                        } else if let Ok(sid) = target.parse::<i64>() {
                            self.route_typing(sid, &m.payload);
                        }
                    }
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }

    /// Routes `notify.<user_id>` / `notify.all` until `shutdown`.
    pub async fn run_notify(
        self: Arc<Self>,
        mut sub: async_nats::Subscriber,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                m = sub.next() => match m {
                    Some(m) => {
                        if let Some(target) = m.subject.as_str().strip_prefix("notify.") {
                            self.route_notify(target, &m.payload);
                        }
                    }
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            }
        }
    }
}
