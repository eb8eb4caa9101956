//! Group conversations on a node: the groups' state, folded from `ev.group.>` by one reader for
//! the whole node (the membership and mute checks before an append, and the member and mute
//! changes pushed to sockets); group rooms; the frames of group records and events.
//!
//! **Rooms.** A group's sockets are a room keyed by the negated group id ([`group_room`]), next
//! to the sessions' rooms (keyed by their positive ids), so delivery, the per-room sequence
//! high-water mark and resumes work the same for both.
//!
//! **Checks.** Once the reader has caught up with the log, a message is accepted against the
//! node's folded state when it accepts it; when that state refuses (not a member, muted, unknown
//! group), or before the reader has caught up (a node starting, a reader restarting), the group
//! is loaded from the log and the decision taken there, so a member added a moment ago is never
//! refused because the reader had not yet seen it, and a starting node never accepts on a
//! half-read history. A member removed a moment ago may still be accepted within the reader's
//! lag (milliseconds): the refusal then comes with the next message. Each time the reader
//! catches up, the rooms are checked against the folded state (sockets of users who are no
//! longer members, or of dissolved groups, leave), which covers events it read while not live.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chrono::Utc;
use cqrs_es::Aggregate;
use domain::{Group, GroupEvent, GroupMessageRefusal, MessageDraft};
use eventstore::chat::message_id;
use eventstore::envelope::Upcasters;
use eventstore::group_chat::GroupRecord;
use eventstore::Commit;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::protocol::group_frame;

use super::conn::Conn;
use super::fanout::{own_key, record_fanout};
use super::state::{Hub, Part};

/// The room key of group `group_id` (sessions' rooms use their positive ids). Group ids are
/// positive (the sockets refuse others), so the key is negative and never overflows.
pub fn group_room(group_id: i64) -> i64 {
    debug_assert!(group_id > 0);
    -group_id.max(1)
}

/// The own-message key of a group message: scoped to the group, so that a socket in a session
/// and a group that reuses a client id in both suppresses only the right one.
pub fn group_own_key(group_id: i64, sender_id: i64, client_msg_id: &str) -> String {
    own_key(sender_id, &format!("g{group_id}:{client_msg_id}"))
}

impl Hub {
    /// The frame of a group record at position `seq` of shard `shard`, and its
    /// own-message key (messages).
    pub fn group_record_frame(
        shard: u16,
        seq: u64,
        record: &GroupRecord,
    ) -> (String, Option<String>) {
        let of = |s: u64| message_id(shard, s);
        match record {
            GroupRecord::GroupMessage(m) => (
                group_frame(
                    "group_message",
                    m.group_id,
                    json!({
                        "id": of(seq),
                        "seq": seq,
                        "message_id": of(seq),
                        "group_id": m.group_id,
                        "sender_id": m.sender_id,
                        "content_type": m.content_type,
                        "content": m.content,
                        "file_url": m.file_url,
                        "client_msg_id": m.client_msg_id,
                        "mentions": m.mentions,
                        "created_at": m.sent_at,
                    }),
                ),
                Some(group_own_key(m.group_id, m.sender_id, &m.client_msg_id)),
            ),
            GroupRecord::GroupRecall(r) => (
                group_frame(
                    "group_recall",
                    r.group_id,
                    json!({ "seq": seq, "group_id": r.group_id, "message_seq": r.message_seq, "message_id": of(r.message_seq), "recalled_by": r.recalled_by, "recalled_at": r.recalled_at }),
                ),
                None,
            ),
            GroupRecord::GroupRedaction(r) => (
                group_frame(
                    "group_recall",
                    r.group_id,
                    json!({
                        "seq": seq,
                        "group_id": r.group_id,
                        "message_seq": r.message_seqs.first(),
                        "message_id": r.message_seqs.first().map(|s| of(*s)),
                        "message_seqs": r.message_seqs,
                        "message_ids": r.message_seqs.iter().map(|s| of(*s)).collect::<Vec<_>>(),
                        "reason": r.reason,
                        "redacted": true,
                    }),
                ),
                None,
            ),
            GroupRecord::GroupRead(r) => (
                group_frame(
                    "group_read",
                    r.group_id,
                    json!({ "seq": seq, "group_id": r.group_id, "user_id": r.user_id, "read_seq": r.seq, "read_at": r.read_at }),
                ),
                None,
            ),
        }
    }

    /// Routes a group record from a chat stream to the group's local sockets, and a message's
    /// `group_mention` to the mentioned members' local sockets.
    pub(super) fn route_group_entry(&self, shard: u16, entry: &eventstore::LogEntry) {
        let seq = entry.position;
        let record = match serde_json::from_slice::<GroupRecord>(&entry.payload) {
            Ok(r) => r,
            Err(e) => return tracing::warn!(seq, error = %e, "undecodable group record"),
        };
        let group_id = record.group_id();
        let (text, own) = Self::group_record_frame(shard, seq, &record);
        let text = Utf8Bytes::from(text);
        let room = group_room(group_id);
        for conn in self.room(room) {
            conn.deliver(room, seq, &text, own.as_deref());
        }
        if let GroupRecord::GroupMessage(m) = &record {
            if !m.mentions.is_empty() {
                let mention = Utf8Bytes::from(group_frame(
                    "group_mention",
                    group_id,
                    json!({ "group_id": group_id, "seq": seq, "message_id": message_id(shard, seq), "sender_id": m.sender_id, "content": m.content }),
                ));
                for user in &m.mentions {
                    for conn in self.user_conns(*user) {
                        conn.send(mention.clone());
                    }
                }
            }
        }
        record_fanout("CHAT", entry.published);
    }

    /// Binds a socket to a group's room.
    pub fn join_group(&self, group_id: i64, conn: Arc<Conn>) {
        let mut rooms = self.rooms.lock().expect("hub lock");
        let room = rooms.entry(group_room(group_id)).or_default();
        if !room.iter().any(|c| c.id == conn.id) {
            room.push(conn);
        }
    }

    /// Unbinds a socket from a group's room.
    pub fn leave_group(&self, group_id: i64, conn_id: u64) {
        self.leave(group_room(group_id), conn_id);
    }

    /// Whether `sender_id` may write `draft` into group `group_id` now, by the node's folded
    /// state; `None` when the node does not know the group. See the module docs for when a
    /// refusal is checked again against the log.
    pub fn check_group_message(
        &self,
        group_id: i64,
        sender_id: i64,
        draft: MessageDraft,
        mentions: &[i64],
    ) -> Option<Result<domain::group::AcceptedGroupMessage, GroupMessageRefusal>> {
        if !self.groups_caught_up.load(Ordering::Relaxed) {
            return None;
        }
        let groups = self.groups.lock().expect("hub lock");
        let group = groups.get(&group_id)?;
        Some(group.accept_message(sender_id, draft, mentions, Utc::now()))
    }

    /// Runs `f` on the node's state of group `group_id` (`None`: unknown to the node, or the
    /// reader has not caught up with the log since it started).
    pub fn with_group<R>(&self, group_id: i64, f: impl FnOnce(&Group) -> R) -> Option<R> {
        if !self.groups_caught_up.load(Ordering::Relaxed) {
            return None;
        }
        self.groups.lock().expect("hub lock").get(&group_id).map(f)
    }

    /// Sockets of users who are no longer members of their group's room (or of a dissolved
    /// group) leave it.
    fn prune_group_rooms(&self) {
        let groups = self.groups.lock().expect("hub lock");
        let mut rooms = self.rooms.lock().expect("hub lock");
        rooms.retain(|key, conns| {
            if *key >= 0 {
                return true;
            }
            let Some(group) = groups.get(&-*key) else {
                return true;
            };
            conns.retain(|c| group.is_member(c.user_id));
            !conns.is_empty()
        });
    }

    /// Replaces the node's state of a group with `group` as loaded from the log at `version`
    /// (kept only if it is not older than what the node has).
    pub fn note_group(&self, group_id: i64, group: Group, version: usize) {
        let mut groups = self.groups.lock().expect("hub lock");
        let mut versions = self.group_versions.lock().expect("hub lock");
        if versions.get(&group_id).is_none_or(|v| *v <= version) {
            versions.insert(group_id, version);
            groups.insert(group_id, group);
        }
    }

    /// Runs the node's group-event reader (`ev.group.>` from the start of the log: the groups'
    /// state) until `shutdown`; events after the log's head at start are also pushed to the
    /// groups' local sockets, and a removed member's sockets leave the room at once.
    pub async fn run_group_events(self: Arc<Self>, shutdown: CancellationToken) {
        let part = Part::Task("group events");
        self.groups_caught_up.store(false, Ordering::Relaxed);
        let Some(head) = self
            .stream_head(eventstore::EVENTS_STREAM, part, &shutdown)
            .await
        else {
            return;
        };
        let mut reader = eventstore::LogReader::spawn(
            self.chat.jetstream().clone(),
            eventstore::ReadOptions::new(
                eventstore::EVENTS_STREAM,
                0,
                eventstore::ReadUntil::Follow,
            )
            .subjects(vec!["ev.group.>".into()])
            .batch_size(1000),
        );
        self.set_part(part, true);
        let upcasters = Upcasters::default();
        let mut check = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                batch = reader.next() => match batch {
                    Some(Ok(entries)) => {
                        for entry in entries {
                            self.route_group_event_entry(&entry, head, &upcasters);
                        }
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "group-event reader failed");
                        self.set_part(part, false);
                        return;
                    }
                    None => return,
                },
                _ = check.tick() => {
                    self.set_part(part, !reader.is_failing());
                    if reader.is_caught_up() && !self.groups_caught_up.swap(true, Ordering::Relaxed) {
                        self.prune_group_rooms();
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn route_group_event_entry(
        &self,
        entry: &eventstore::LogEntry,
        head: u64,
        upcasters: &Upcasters,
    ) {
        let seq = entry.stream_sequence;
        let Ok(commit) = Commit::decode(&entry.payload) else {
            return tracing::warn!(seq, "undecodable commit");
        };
        for stored in commit.into_stored(seq) {
            let stored = upcasters.upcast(stored);
            let version = stored.sequence;
            let (Some(id), Ok(event)) = (stored.aggregate_id_i64(), stored.decode::<GroupEvent>())
            else {
                continue;
            };
            {
                let mut groups = self.groups.lock().expect("hub lock");
                let mut versions = self.group_versions.lock().expect("hub lock");
                let known = versions.get(&id).copied().unwrap_or(0);
                if version > known {
                    groups.entry(id).or_default().apply(event.clone());
                    versions.insert(id, version);
                }
            }
            if seq > head {
                self.push_group_event(id, &event);
            }
        }
        if seq > head {
            record_fanout("EVENTS", entry.published);
        }
    }

    /// A group event's frame to the group's local sockets; a removed or leaving member's
    /// sockets get it and leave the room; a dissolution empties the room.
    fn push_group_event(&self, group_id: i64, event: &GroupEvent) {
        let (kind, data, gone): (&str, serde_json::Value, Option<i64>) = match event {
            GroupEvent::GroupCreated { .. } => return,
            GroupEvent::GroupUpdated {
                name,
                notice,
                avatar,
                ..
            } => (
                "group_updated",
                json!({ "name": name, "notice": notice, "avatar": avatar }),
                None,
            ),
            GroupEvent::MembersAdded {
                actor_id, user_ids, ..
            } => (
                "group_members_added",
                json!({ "user_ids": user_ids, "by": actor_id }),
                None,
            ),
            GroupEvent::MemberRemoved {
                actor_id, user_id, ..
            } => (
                "group_member_removed",
                json!({ "user_id": user_id, "by": actor_id }),
                Some(*user_id),
            ),
            GroupEvent::MemberLeft { user_id, .. } => (
                "group_member_left",
                json!({ "user_id": user_id }),
                Some(*user_id),
            ),
            GroupEvent::MemberRoleChanged { user_id, role, .. } => (
                "group_role_changed",
                json!({ "user_id": user_id, "role": role.as_str() }),
                None,
            ),
            GroupEvent::OwnershipTransferred {
                from_user_id,
                to_user_id,
                ..
            } => (
                "group_owner_changed",
                json!({ "from_user_id": from_user_id, "to_user_id": to_user_id }),
                None,
            ),
            GroupEvent::MemberMuted { user_id, until, .. } => (
                "group_member_muted",
                json!({ "user_id": user_id, "until": until }),
                None,
            ),
            GroupEvent::GroupMuted { muted, .. } => {
                ("group_muted", json!({ "muted": muted }), None)
            }
            GroupEvent::GroupDissolved { .. } => ("group_dissolved", json!({}), None),
        };
        let mut data = data;
        data["group_id"] = json!(group_id);
        let text = Utf8Bytes::from(group_frame(kind, group_id, data));
        let room = group_room(group_id);
        let conns = self.room(room);
        for conn in &conns {
            conn.send(text.clone());
        }
        let dissolved = matches!(event, GroupEvent::GroupDissolved { .. });
        let mut rooms = self.rooms.lock().expect("hub lock");
        if dissolved {
            rooms.remove(&room);
        } else if let Some(user) = gone {
            if let Some(list) = rooms.get_mut(&room) {
                list.retain(|c| c.user_id != user);
                if list.is_empty() {
                    rooms.remove(&room);
                }
            }
        }
    }
}
