//! Group conversations on a socket: `/ws/group/{id}?token=…[&after_seq=N]` (the web dialect:
//! the socket is bound to the group on connect), and group frames on any user socket (the Go
//! dialect: `join_group`, `group_message`, `group_read`, `group_recall`, `leave_group`, and
//! `typing` / `typing_stop` with a `group_id`).
//!
//! Every write is checked against the group's state before anything is appended
//! ([`crate::hub::Hub::check_group_message`]); a refusal is an `error` frame with the
//! `group_id`, the socket stays open and nothing is stored. Acks carry the record's position
//! in its shard; a resume (`after_seq`) replays exactly the group's records after it, then the
//! live tail, each position once.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use chrono::Utc;
use domain::{Group, MessageDraft};
use eventstore::group_chat::{
    group_message_at, read_group_after, GroupMessage, GroupRead, GroupRecall, GroupRecord,
};
use serde_json::{json, Value};

use crate::hub::{group_own_key, group_room, Hub};
use crate::protocol::{group_error_frame, group_frame, ClientFrame};
use crate::socket::{authenticate, query_param, refuse, upgrade, Opening, Socket};
use crate::GatewayState;

/// `GET /ws/group/{group_id}?token=…[&after_seq=N]`: a socket bound to that group on connect
/// (when the caller is a member), speaking the web dialect (`{type, payload}` without ids: the
/// bound group is meant); with `after_seq` it resumes from that sequence first.
pub async fn ws_group(
    State(state): State<GatewayState>,
    Path(group_id): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let Some(group_id) = group_id.parse::<i64>().ok().filter(|id| *id > 0) else {
        return refuse(StatusCode::BAD_REQUEST, "bad group id");
    };
    let after_seq = match query_param(&uri, "after_seq").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return refuse(StatusCode::BAD_REQUEST, "after_seq must be a sequence"),
    };
    let user_id = match authenticate(&state, &uri, &headers).await {
        Ok(id) => id,
        Err((status, msg)) => return refuse(status, &msg),
    };
    upgrade(
        ws,
        state,
        user_id,
        Opening {
            group: Some(group_id),
            after_seq,
            ..Default::default()
        },
    )
}

/// A number in a frame's body: a JSON number or a numeric string.
fn number(body: &Value, key: &str) -> Option<u64> {
    match body.get(key) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
}

impl Socket {
    fn group_error(&self, group_id: i64, message: &str) {
        self.conn.send(group_error_frame(group_id, message));
    }

    /// Whether a frame is about a group, and which (`Some(None)`: a group frame without one).
    pub(crate) fn group_target(&self, f: &ClientFrame) -> Option<Option<i64>> {
        let kind = f.kind.as_str();
        // A group id that is not positive names no group: the frame is still a group frame and
        // is refused as one.
        let explicit = f.group_id.filter(|id| *id != 0);
        let group_kind = matches!(
            kind,
            "join_group" | "leave_group" | "group_message" | "group_read" | "group_recall"
        );
        let typing = matches!(kind, "typing" | "typing_stop") && explicit.is_some();
        // The web dialect on a group socket: no ids, the bound group (or the one its URL names,
        // if the socket was refused it) is meant.
        let fallback = self.bound_group.or(self.group_path);
        let web = self.bound.is_none()
            && f.session_id.is_none()
            && fallback.is_some()
            && matches!(
                kind,
                "message"
                    | "read"
                    | "typing"
                    | "typing_stop"
                    | "recall"
                    | "revoke"
                    | "resume"
                    | "leave"
            );
        (group_kind || typing || web).then(|| explicit.or(fallback))
    }

    /// Handles a group frame.
    pub(crate) async fn group(&mut self, f: ClientFrame, group: Option<i64>) {
        let Some(group_id) = group.filter(|id| *id > 0) else {
            return self.group_error(0, &format!("{} needs a group_id (a positive id)", f.kind));
        };
        let body = f.body();
        match f.kind.as_str() {
            "join_group" => self.open_group(group_id, number(&body, "after_seq")).await,
            "resume" => match number(&body, "after_seq") {
                Some(after) => self.open_group(group_id, Some(after)).await,
                None => self.group_error(group_id, "resume needs after_seq (a sequence number)"),
            },
            "leave_group" | "leave" => {
                if self.bound_group == Some(group_id) {
                    self.bound_group = None;
                    self.state.hub.leave_group(group_id, self.conn.id);
                }
                self.conn.send(group_frame(
                    "group_left",
                    group_id,
                    json!({ "group_id": group_id }),
                ));
            }
            "group_message" | "message" => self.group_message(group_id, &f).await,
            "group_read" | "read" => self.group_read(group_id, &body).await,
            "group_recall" | "recall" | "revoke" => self.group_recall(group_id, &body).await,
            _ => self.group_typing(group_id, &f).await,
        }
    }

    /// The group as the log has it, noted in the node's state.
    async fn load_group(&self, group_id: i64) -> Result<Group, String> {
        match self.state.bus.load::<Group>(&group_id.to_string()).await {
            Ok((_, 0)) => Err("group not found".into()),
            Ok((group, version)) => {
                self.state.hub.note_group(group_id, group.clone(), version);
                Ok(group)
            }
            Err(e) => {
                tracing::error!(error = %e, group_id, "loading a group");
                Err("temporarily unavailable".into())
            }
        }
    }

    /// The group, when the socket's user is a member (the node's state first, the log when it
    /// says no).
    async fn member_group(&self, group_id: i64) -> Result<Option<Group>, String> {
        let user = self.conn.user_id;
        if self
            .state
            .hub
            .with_group(group_id, |g| g.is_member(user))
            .unwrap_or(false)
        {
            return Ok(None);
        }
        let group = self.load_group(group_id).await?;
        if group.dissolved {
            return Err("group has been dissolved".into());
        }
        if !group.is_member(user) {
            return Err("not a member of this group".into());
        }
        Ok(Some(group))
    }

    /// Binds the socket to a group it belongs to (`group_joined {group_id, role}`), resuming
    /// after `after_seq` first when given.
    pub(crate) async fn open_group(&mut self, group_id: i64, after_seq: Option<u64>) {
        let room = group_room(group_id);
        let loaded = match self.member_group(group_id).await {
            Ok(g) => g,
            Err(e) => return self.group_error(group_id, &e),
        };
        if let Some(after) = after_seq {
            // Hold live records back before joining, so none slips past the replay.
            self.conn.begin_replay(room, after);
        }
        if let Some(old) = self
            .bound_group
            .replace(group_id)
            .filter(|o| *o != group_id)
        {
            self.state.hub.leave_group(old, self.conn.id);
        }
        let user = self.conn.user_id;
        let role = match &loaded {
            Some(g) => g.role_of(user),
            None => self
                .state
                .hub
                .with_group(group_id, |g| g.role_of(user))
                .flatten(),
        };
        self.conn.send(group_frame(
            "group_joined",
            group_id,
            json!({ "group_id": group_id, "role": role.map_or("member", |r| r.as_str()) }),
        ));
        // Joining again (a member removed and added back, a second `join_group`) is harmless.
        self.state.hub.join_group(group_id, self.conn.clone());
        let Some(after) = after_seq else {
            return;
        };
        let max = self.state.hub.config().max_replay;
        let chat = self.state.hub.chat();
        let (replayed, recovered) =
            match read_group_after(chat.jetstream(), chat.layout(), group_id, after, max).await {
                Ok((records, complete)) => {
                    let shard = chat.layout().place_group(group_id).shard;
                    // Messages recalled or redacted later in the replay go out without their
                    // text, as history shows them.
                    let hidden: std::collections::HashSet<u64> = records
                        .iter()
                        .flat_map(|(_, r)| match r {
                            GroupRecord::GroupRecall(r) => vec![r.message_seq],
                            GroupRecord::GroupRedaction(r) => r.message_seqs.clone(),
                            _ => Vec::new(),
                        })
                        .collect();
                    let mut n = 0;
                    for (seq, mut record) in records {
                        if let GroupRecord::GroupMessage(m) = &mut record {
                            if hidden.contains(&seq) {
                                m.content.clear();
                                m.file_url.clear();
                            }
                        }
                        if self.conn.take_replayed(room, seq) {
                            let (text, _) = Hub::group_record_frame(shard, seq, &record);
                            if !self.conn.send_wait(text).await {
                                break;
                            }
                            n += 1;
                        }
                    }
                    (n, complete)
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), group_id, "group resume");
                    (0, false)
                }
            };
        let done = group_frame(
            "group_resumed",
            group_id,
            json!({
                "group_id": group_id,
                "after_seq": after,
                "replayed": replayed,
                "last_seq": self.conn.hwm(room),
                "recovered": recovered,
            }),
        );
        self.conn.send_wait(done).await;
        self.conn.end_replay(room);
    }

    /// Stores a group message once the group accepts it, then acks it with its sequence.
    async fn group_message(&mut self, group_id: i64, f: &ClientFrame) {
        let body = f.body();
        let mentions: Vec<i64> = match body.get("mentions") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => match serde_json::from_value::<Vec<i64>>(v.clone()) {
                Ok(m) if m.len() <= 100 => m,
                _ => {
                    return self.group_error(group_id, "mentions: a list of at most 100 member ids")
                }
            },
        };
        let draft = MessageDraft {
            content: f.field("content"),
            content_type: f.field("content_type"),
            file_url: f.field("file_url"),
            client_msg_id: f.client_msg_id(),
        };
        let user = self.conn.user_id;
        let hub = &self.state.hub;
        let accepted = match hub.check_group_message(group_id, user, draft.clone(), &mentions) {
            Some(Ok(a)) => Ok(a),
            // Refused or unknown by the node's state: decide again on the log's.
            _ => match self.load_group(group_id).await {
                Ok(group) => group
                    .accept_message(user, draft, &mentions, Utc::now())
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
        };
        let message = match accepted {
            Ok(a) => GroupMessage::accepted(group_id, user, a, Utc::now()),
            Err(e) => return self.group_error(group_id, &e),
        };
        let id = message.client_msg_id.clone();
        let own = group_own_key(group_id, user, &id);
        let room = group_room(group_id);
        // The sender's own message is acked, not echoed, on the socket bound to the group.
        let bound = self.bound_group == Some(group_id);
        if bound {
            self.conn
                .sent
                .lock()
                .expect("sent lock")
                .insert(own.clone());
        }
        match hub
            .chat()
            .append_group(&GroupRecord::GroupMessage(message))
            .await
        {
            Ok(appended) => {
                if bound && appended.duplicate && self.conn.hwm(room) >= appended.seq {
                    self.conn.sent.lock().expect("sent lock").remove(&own);
                }
                self.conn.send(group_frame(
                    "ack",
                    group_id,
                    json!({ "client_msg_id": id, "seq": appended.seq, "message_id": appended.id, "duplicate": appended.duplicate }),
                ));
            }
            Err(e) => {
                self.conn.sent.lock().expect("sent lock").remove(&own);
                tracing::error!(error = %e, group_id, "storing a group message");
                self.group_error(
                    group_id,
                    "message not stored (its chat stream is unavailable); retry with the same id",
                );
            }
        }
    }

    /// The message sequence a read or recall names: `seq`, `message_seq`, or a `message_id` of
    /// the group's stream.
    fn named_seq(&self, group_id: i64, body: &Value) -> Result<u64, String> {
        if let Some(seq) = number(body, "seq").or_else(|| number(body, "message_seq")) {
            return Ok(seq);
        }
        let id = number(body, "message_id").ok_or("needs seq (the message's sequence)")?;
        let (shard, seq) = eventstore::chat::split_message_id(id as i64);
        if shard != self.state.hub.chat().layout().place_group(group_id).shard || seq == 0 {
            return Err(format!("message {id} is not a message of this group"));
        }
        Ok(seq)
    }

    /// `group_read {seq}`: the member's read cursor moves to a message of the group.
    async fn group_read(&mut self, group_id: i64, body: &Value) {
        let seq = match self.named_seq(group_id, body) {
            Ok(s) => s,
            Err(e) => return self.group_error(group_id, &format!("read {e}")),
        };
        if let Err(e) = self.member_group(group_id).await {
            return self.group_error(group_id, &e);
        }
        let chat = self.state.hub.chat();
        match group_message_at(chat.jetstream(), chat.layout(), group_id, seq).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return self
                    .group_error(group_id, &format!("message {seq} not found in this group"))
            }
            Err(_) => return self.group_error(group_id, "temporarily unavailable"),
        }
        let record = GroupRecord::GroupRead(GroupRead {
            group_id,
            user_id: self.conn.user_id,
            seq,
            read_at: Utc::now(),
        });
        self.store_group(group_id, &record, "read").await;
    }

    /// `group_recall {seq}`: the sender recalls their own message within 2 minutes.
    async fn group_recall(&mut self, group_id: i64, body: &Value) {
        let seq = match self.named_seq(group_id, body) {
            Ok(s) => s,
            Err(e) => return self.group_error(group_id, &format!("recall {e}")),
        };
        let chat = self.state.hub.chat();
        let message = match group_message_at(chat.jetstream(), chat.layout(), group_id, seq).await {
            Ok(Some(m)) => m,
            Ok(None) => {
                return self
                    .group_error(group_id, &format!("message {seq} not found in this group"))
            }
            Err(_) => return self.group_error(group_id, "temporarily unavailable"),
        };
        let group = match self.load_group(group_id).await {
            Ok(g) => g,
            Err(e) => return self.group_error(group_id, &e),
        };
        let now = Utc::now();
        if let Err(e) = group.may_recall(self.conn.user_id, message.sender_id, message.sent_at, now)
        {
            return self.group_error(group_id, &e.to_string());
        }
        let record = GroupRecord::GroupRecall(GroupRecall {
            group_id,
            message_seq: seq,
            recalled_by: self.conn.user_id,
            recalled_at: now,
        });
        self.store_group(group_id, &record, "recall").await;
    }

    async fn store_group(&self, group_id: i64, record: &GroupRecord, what: &str) {
        match self.state.hub.chat().append_group(record).await {
            Ok(a) => self.conn.send(group_frame(
                "ack",
                group_id,
                json!({ "kind": what, "seq": a.seq, "message_id": a.id, "duplicate": a.duplicate }),
            )),
            Err(e) => {
                tracing::error!(error = %e, group_id, "storing a group record");
                self.group_error(group_id, &format!("{what} not stored; retry"));
            }
        }
    }

    /// Typing in a group: core NATS `typing.g.<group_id>`, never stored.
    async fn group_typing(&mut self, group_id: i64, f: &ClientFrame) {
        if let Err(e) = self.member_group(group_id).await {
            return self.group_error(group_id, &e);
        }
        self.publish_typing(format!("typing.g.{group_id}"), f).await;
    }
}
