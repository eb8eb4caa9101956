//! Group conversations in the chat log: a group's records (messages, recalls, redactions, read
//! cursors) in the chat shard streams, on their own subject per group.
//!
//! **Subjects.** Group `g`'s records are on `group.<k>.<g>` in shard stream `CHAT_<k>`, `k = g mod
//! N + 1` ([`ChatLayout::place_group`]): next to the sessions' `chat.<k>.<session>`, so a shard's
//! one committer (one fsync per batch) carries both, and a node's one reader per shard fans out
//! both. Readers that want one kind filter by subject (`chat.<k>.*` or `group.<k>.*`). A group's
//! records keep one order; its resume position is their position (`seq`), and a message's
//! id across the chat streams is [`crate::chat::message_id`] of it, like a session message's.
//!
//! **Dedup ids** (`Nats-Msg-Id`, within the stream's duplicate window): a message
//! `g:<group>:<sender>:<client_msg_id>`, a recall `grecall:<group>:<seq>`, a read cursor
//! `gread:<group>:<user>:<seq>`, a redaction `gredact:<group>:<admin>:<seqs>`.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::chat::{ChatLayout, ChatPlace, LEGACY_CHAT_STREAM};

/// One record of a group in a chat stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GroupRecord {
    /// A member's message.
    GroupMessage(GroupMessage),
    /// The sender recalled one of their messages (within the recall window of
    /// [`domain::group::RECALL_WINDOW_SECONDS`]). Stored once per message.
    GroupRecall(GroupRecall),
    /// A platform administrator redacted messages: read models blank their text; the messages,
    /// the redaction and who did it stay in the log.
    GroupRedaction(GroupRedaction),
    /// A member's read cursor moved to `seq` (unread = later messages not sent by the member).
    GroupRead(GroupRead),
}

impl GroupRecord {
    /// The record's kind as in its `Mychat-Record` header: `group_message`, `group_recall`,
    /// `group_redaction`, `group_read`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::GroupMessage(_) => "group_message",
            Self::GroupRecall(_) => "group_recall",
            Self::GroupRedaction(_) => "group_redaction",
            Self::GroupRead(_) => "group_read",
        }
    }

    /// The group the record belongs to.
    pub fn group_id(&self) -> i64 {
        match self {
            Self::GroupMessage(m) => m.group_id,
            Self::GroupRecall(r) => r.group_id,
            Self::GroupRedaction(r) => r.group_id,
            Self::GroupRead(r) => r.group_id,
        }
    }

    /// Its dedup id (`Nats-Msg-Id`; see the module documentation).
    pub fn dedup_id(&self) -> String {
        match self {
            Self::GroupMessage(m) => {
                format!("g:{}:{}:{}", m.group_id, m.sender_id, m.client_msg_id)
            }
            Self::GroupRecall(r) => format!("grecall:{}:{}", r.group_id, r.message_seq),
            Self::GroupRead(r) => format!("gread:{}:{}:{}", r.group_id, r.user_id, r.seq),
            Self::GroupRedaction(r) => format!(
                "gredact:{}:{}:{}",
                r.group_id,
                r.admin_id,
                r.message_seqs
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }
}

/// A group message as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMessage {
    pub group_id: i64,
    /// The sender's users-table id.
    pub sender_id: i64,
    /// `text`, `image` or `file`.
    pub content_type: String,
    pub content: String,
    pub file_url: String,
    /// The client's message id: a resend with the same id is stored once.
    pub client_msg_id: String,
    /// Members mentioned (`@`), each once: they are notified.
    #[serde(default)]
    pub mentions: Vec<i64>,
    pub sent_at: DateTime<Utc>,
}

impl GroupMessage {
    /// The record of a message group `group_id` accepted from `sender_id`
    /// ([`domain::Group::accept_message`]), sent at `sent_at`. Without a client id it gets a
    /// random one (a UUID), so it is stored once too.
    pub fn accepted(
        group_id: i64,
        sender_id: i64,
        message: domain::group::AcceptedGroupMessage,
        sent_at: DateTime<Utc>,
    ) -> Self {
        Self {
            group_id,
            sender_id,
            content_type: message.content_type.into(),
            content: message.content,
            file_url: message.file_url,
            client_msg_id: message
                .client_msg_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            mentions: message.mentions,
            sent_at,
        }
    }
}

/// A recall: the sender withdrew message `message_seq` of the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecall {
    pub group_id: i64,
    /// The recalled message's position.
    pub message_seq: u64,
    /// The message's sender (only the sender recalls).
    pub recalled_by: i64,
    pub recalled_at: DateTime<Utc>,
}

/// Messages of a group redacted by a platform administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRedaction {
    pub group_id: i64,
    /// The redacted messages' positions (at least one).
    pub message_seqs: Vec<u64>,
    /// The administrator (administrators-table id).
    pub admin_id: i64,
    pub reason: String,
    pub redacted_at: DateTime<Utc>,
}

/// A member's read cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRead {
    pub group_id: i64,
    pub user_id: i64,
    /// The member has read every message up to this position.
    pub seq: u64,
    pub read_at: DateTime<Utc>,
}

impl ChatLayout {
    /// Where group `group_id`'s records live: always a shard stream (never the legacy `CHAT`).
    pub fn place_group(&self, group_id: i64) -> ChatPlace {
        let shard = (group_id.rem_euclid(i64::from(self.shards)) + 1) as u16;
        ChatPlace {
            shard,
            stream: crate::chat::shard_stream(shard),
            subject: format!("group.{shard}.{group_id}"),
        }
    }

    /// The group a record's subject names (`group.<shard>.<group>`), if it is a group subject.
    pub fn group_of(subject: &str) -> Option<i64> {
        let rest = subject.strip_prefix("group.")?;
        rest.rsplit('.').next()?.parse().ok()
    }
}

/// The subject filter of shard `shard`'s group records (`group.<shard>.*`); the legacy stream
/// (shard 0) has none.
pub fn group_subjects(shard: u16) -> Option<String> {
    (shard != 0).then(|| format!("group.{shard}.*"))
}

/// Reads group `group_id`'s records after position `after_seq`
/// ([`crate::chat_read::records_after`]), at most `max`, oldest first, as `(position, record)`;
/// undecodable records are skipped. Also answers whether the stream still held everything after
/// `after_seq` and nothing was left over `max`.
///
/// # Errors
/// When the stream cannot be read.
pub async fn read_group_after(
    js: &jetstream::Context,
    layout: &ChatLayout,
    group_id: i64,
    after_seq: u64,
    max: usize,
) -> anyhow::Result<(Vec<(u64, GroupRecord)>, bool)> {
    let place = layout.place_group(group_id);
    debug_assert_ne!(place.stream, LEGACY_CHAT_STREAM);
    let (records, complete) =
        crate::chat_read::records_after(js, layout, place.shard, &place.subject, after_seq, max)
            .await?;
    let out = records
        .into_iter()
        .filter_map(|r| {
            serde_json::from_slice::<GroupRecord>(&r.body)
                .ok()
                .map(|g| (r.position, g))
        })
        .collect();
    Ok((out, complete))
}

/// The group message at position `seq` of group `group_id`'s stream, if there is one.
///
/// # Errors
/// When the stream cannot be read (a missing position is `Ok(None)`).
pub async fn group_message_at(
    js: &jetstream::Context,
    layout: &ChatLayout,
    group_id: i64,
    seq: u64,
) -> anyhow::Result<Option<GroupMessage>> {
    let place = layout.place_group(group_id);
    let Some(record) = crate::chat_read::record_at(js, layout, place.shard, seq).await? else {
        return Ok(None);
    };
    if record.subject != place.subject {
        return Ok(None);
    }
    Ok(match serde_json::from_slice::<GroupRecord>(&record.body) {
        Ok(GroupRecord::GroupMessage(m)) if m.group_id == group_id => Some(m),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_lives_in_one_shard_on_its_own_subject() {
        let layout = ChatLayout::new(4);
        let place = layout.place_group(10);
        assert_eq!(place.shard, 3);
        assert_eq!(place.stream, "CHAT_3");
        assert_eq!(place.subject, "group.3.10");
        assert_eq!(ChatLayout::group_of(&place.subject), Some(10));
        assert_eq!(ChatLayout::group_of("chat.3.10"), None);
        // Even with a legacy stream, groups go to the shards.
        let legacy = ChatLayout {
            legacy_upto_session: Some(1_000),
            ..ChatLayout::new(4)
        };
        assert_eq!(legacy.place_group(10).stream, "CHAT_3");
    }

    #[test]
    fn records_round_trip_with_their_kind() {
        let r = GroupRecord::GroupRecall(GroupRecall {
            group_id: 5,
            message_seq: 9,
            recalled_by: 2,
            recalled_at: Utc::now(),
        });
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kind"], "group_recall");
        assert_eq!(serde_json::from_value::<GroupRecord>(json).unwrap(), r);
        assert_eq!(r.dedup_id(), "grecall:5:9");
    }
}
