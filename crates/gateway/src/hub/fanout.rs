//! The chat fan-out: one reader per chat stream for the whole node, each record encoded once
//! into its frame and routed to the local sockets of its session (own messages acked, not
//! echoed), and the fan-out latency metric.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use chrono::{DateTime, Utc};
use eventstore::chat::{message_id, ChatRecord};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::protocol::frame;

use super::state::{Hub, Part};

/// Most records a fan-out reader hands over at once; the node yields to the sockets' tasks
/// between batches, so that a burst does not fill a fast socket's queue before it can write.
pub const FANOUT_BATCH: usize = 64;

/// The body of a `message` frame (contract d.4), borrowed from its record: `id` and `message_id`
/// are its id across the chat streams ([`message_id`]), `seq` its position in its shard,
/// `created_at` when the gateway accepted it (RFC 3339, UTC).
#[derive(serde::Serialize)]
struct MessageData<'a> {
    id: i64,
    seq: u64,
    message_id: i64,
    session_id: i64,
    sender_id: i64,
    sender_type: &'a str,
    content_type: &'a str,
    content: &'a str,
    file_url: &'a str,
    client_msg_id: &'a str,
    created_at: &'a DateTime<Utc>,
}

impl Hub {
    /// The frame of a chat record at position `seq` of shard `shard`, and its own-message
    /// id (for messages). `seq` is the record's position in its session's stream (resumes);
    /// `id` / `message_id` its id across the chat streams ([`message_id`]).
    pub fn record_frame(shard: u16, seq: u64, record: &ChatRecord) -> (String, Option<String>) {
        let id = message_id(shard, seq);
        let of = |message_seq: u64| message_id(shard, message_seq);
        match record {
            ChatRecord::Message(m) => {
                let data = MessageData {
                    id,
                    seq,
                    message_id: id,
                    session_id: m.session_id,
                    sender_id: m.sender_id,
                    sender_type: &m.sender_type,
                    content_type: &m.content_type,
                    content: &m.content,
                    file_url: &m.file_url,
                    client_msg_id: &m.client_msg_id,
                    created_at: &m.sent_at,
                };
                (
                    frame("message", m.session_id, data),
                    Some(own_key(m.sender_id, &m.client_msg_id)),
                )
            }
            ChatRecord::MessageRead(r) => (
                frame(
                    "message_read",
                    r.session_id,
                    json!({ "seq": seq, "message_id": of(r.message_seq), "message_seq": r.message_seq, "read_by": r.read_by, "read_at": r.read_at }),
                ),
                None,
            ),
            ChatRecord::MessageRevoked(r) => (
                frame(
                    "message_revoked",
                    r.session_id,
                    json!({ "seq": seq, "message_id": of(r.message_seq), "message_seq": r.message_seq, "revoked_by": r.revoked_by, "revoked_at": r.revoked_at }),
                ),
                None,
            ),
            // An administrator's redaction reaches clients as a revoke of those messages.
            ChatRecord::Redaction(r) => (
                frame(
                    "message_revoked",
                    r.session_id,
                    json!({
                        "seq": seq,
                        "session_id": r.session_id,
                        "message_ids": r.message_ids.iter().map(|s| of(*s as u64)).collect::<Vec<_>>(),
                        "message_seqs": r.message_ids,
                        "reason": r.reason,
                        "redacted": true,
                    }),
                ),
                None,
            ),
        }
    }

    fn route_chat(&self, shard: u16, seq: u64, record: ChatRecord, stored_at: i64) {
        let session_id = record.session_id();
        if let Some(a) = self.active.lock().expect("hub lock").get_mut(&session_id) {
            a.last_activity = a.last_activity.max(stored_at);
        }
        let (text, own) = Self::record_frame(shard, seq, &record);
        // Encoded once; every socket's queue shares the same bytes.
        let text = Utf8Bytes::from(text);
        for conn in self.room(session_id) {
            conn.deliver(session_id, seq, &text, own.as_deref());
        }
    }

    /// Runs the node's chat fan-out until `shutdown`: one reader per chat stream of the layout
    /// (the shards, and the legacy `CHAT` if there is one), each from that stream's head when it
    /// starts (new records only), each record routed to the local sockets of its session.
    pub async fn run_chat_fanout(self: Arc<Self>, shutdown: CancellationToken) {
        let streams = self.chat.layout().streams();
        let mut readers = tokio::task::JoinSet::new();
        for (shard, stream) in streams {
            readers.spawn(self.clone().follow_chat(shard, stream, shutdown.clone()));
        }
        while readers.join_next().await.is_some() {}
    }

    async fn follow_chat(
        self: Arc<Self>,
        shard: u16,
        stream: &'static str,
        shutdown: CancellationToken,
    ) {
        let part = Part::Chat(stream);
        let js = self.chat.jetstream().clone();
        // The head when the node starts: records from before it are not fanned out (a client
        // that missed them resumes with `after_seq`).
        let Some(head) = self.stream_head(stream, part, &shutdown).await else {
            return;
        };
        let mut reader = eventstore::LogReader::spawn(
            js,
            eventstore::ReadOptions::new(stream, head, eventstore::ReadUntil::Follow)
                .batch_size(FANOUT_BATCH),
        );
        self.set_part(part, true);
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                batch = reader.next() => match batch {
                    Some(Ok(entries)) => {
                        for entry in entries {
                            self.route_chat_entry(shard, &entry);
                        }
                        // Let the sockets' tasks write what was queued before routing more.
                        tokio::task::yield_now().await;
                    }
                    Some(Err(e)) => {
                        tracing::error!(stream, error = %e, "chat fan-out reader failed");
                        self.set_part(part, false);
                        return;
                    }
                    None => return,
                },
                _ = check.tick() => self.set_part(part, !reader.is_failing()),
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn route_chat_entry(&self, shard: u16, entry: &eventstore::LogEntry) {
        if entry.subject.starts_with("group.") {
            return self.route_group_entry(shard, entry);
        }
        let seq = entry.position;
        match serde_json::from_slice::<ChatRecord>(&entry.payload) {
            Ok(record) => {
                self.route_chat(shard, seq, record, entry.published.timestamp());
                record_fanout("CHAT", entry.published);
            }
            Err(e) => tracing::warn!(seq, error = %e, "undecodable chat record"),
        }
    }

    /// The last sequence of `stream`, asked until JetStream answers (the part is marked down
    /// meanwhile); `None` on shutdown.
    pub(super) async fn stream_head(
        &self,
        stream: &str,
        part: Part,
        shutdown: &CancellationToken,
    ) -> Option<u64> {
        let js = self.chat.jetstream();
        let mut delay = Duration::from_millis(100);
        loop {
            let head = async {
                anyhow::Ok(
                    js.get_stream(stream)
                        .await?
                        .info()
                        .await?
                        .state
                        .last_sequence,
                )
            };
            match head.await {
                Ok(head) => return Some(head),
                Err(e) => {
                    self.set_part(part, false);
                    tracing::warn!(
                        stream,
                        error = format!("{e:#}"),
                        ?delay,
                        "reading a stream's head; retrying"
                    );
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => return None,
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
}

/// The own-message key of a sender's client message id.
pub fn own_key(sender_id: i64, client_msg_id: &str) -> String {
    format!("{sender_id}:{client_msg_id}")
}

/// Records [`crate::METRIC_FANOUT_SECONDS`] for a record stored at `published` that was just
/// handed to the sockets.
pub(super) fn record_fanout(stream: &'static str, published: DateTime<Utc>) {
    let seconds = (Utc::now() - published).num_microseconds().unwrap_or(0) as f64 / 1e6;
    metrics::histogram!(crate::METRIC_FANOUT_SECONDS, "stream" => stream).record(seconds.max(0.0));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_frame_has_the_contract_fields_in_order() {
        let sent_at = DateTime::parse_from_rfc3339("2026-12-05T02:30:00.123Z")
            .unwrap()
            .with_timezone(&Utc);
        let record = ChatRecord::Message(eventstore::chat::ChatMessage {
            session_id: 42,
            sender_id: 1001,
            sender_type: "user".into(),
            content_type: "text".into(),
            content: "你好 \"quoted\"".into(),
            file_url: String::new(),
            client_msg_id: "c-1".into(),
            sent_at,
        });
        let (text, own) = Hub::record_frame(3, 17, &record);
        let id = message_id(3, 17);
        let data = format!(
            r#"{{"id":{id},"seq":17,"message_id":{id},"session_id":42,"sender_id":1001,"sender_type":"user","content_type":"text","content":"你好 \"quoted\"","file_url":"","client_msg_id":"c-1","created_at":"2026-12-05T02:30:00.123Z"}}"#
        );
        assert_eq!(
            text,
            format!(r#"{{"type":"message","session_id":42,"data":{data},"payload":{data}}}"#)
        );
        assert_eq!(own.as_deref(), Some(own_key(1001, "c-1").as_str()));
    }
}
