//! The records of the `CHAT` stream (`chat.<session_id>`): chat messages as the gateway stores
//! them. A record's stream sequence is the message's id and its position for resuming.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The subject of a session's chat records.
pub fn chat_subject(session_id: i64) -> String {
    format!("chat.{session_id}")
}

/// One record in `CHAT`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatRecord {
    /// A message sent by a participant.
    Message(ChatMessage),
    /// An administrator redacted messages of a session (issue 4): read models blank their text;
    /// the messages, the redaction and who did it stay in the log.
    Redaction(Redaction),
    /// The recipient read a message (issue 5). Stored once per message and reader.
    MessageRead(ReadReceipt),
    /// The sender revoked (withdrew) one of their messages (issue 5). Stored once per message.
    MessageRevoked(Revocation),
}

impl ChatRecord {
    /// The session the record belongs to.
    pub fn session_id(&self) -> i64 {
        match self {
            Self::Message(m) => m.session_id,
            Self::MessageRead(r) => r.session_id,
            Self::MessageRevoked(r) => r.session_id,
            Self::Redaction(r) => r.session_id,
        }
    }
}

/// A read receipt: `read_by` has read message `message_seq` (the message's `CHAT` stream
/// sequence) of session `session_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReceipt {
    pub session_id: i64,
    /// The read message's stream sequence in `CHAT`.
    pub message_seq: u64,
    /// The reader's users-table id (never the message's sender).
    pub read_by: i64,
    pub read_at: DateTime<Utc>,
}

/// A revocation: the sender withdrew message `message_seq` of session `session_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub session_id: i64,
    /// The revoked message's stream sequence in `CHAT`.
    pub message_seq: u64,
    /// The message's sender (only the sender may revoke).
    pub revoked_by: i64,
    pub revoked_at: DateTime<Utc>,
}

/// Messages redacted by an administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redaction {
    pub session_id: i64,
    /// The redacted messages' ids (`CHAT` stream sequences); empty = every message of the
    /// session up to this record.
    pub message_ids: Vec<i64>,
    /// The administrator (administrators-table id).
    pub admin_id: i64,
    pub reason: String,
    pub redacted_at: DateTime<Utc>,
}

/// Appends a [`Redaction`] to `CHAT` on `chat.<session_id>` and returns its stream sequence once
/// stored.
///
/// # Errors
/// When JetStream does not acknowledge the record.
pub async fn append_redaction(
    js: &async_nats::jetstream::Context,
    redaction: &Redaction,
) -> Result<u64, AppendError> {
    let body = serde_json::to_vec(&ChatRecord::Redaction(redaction.clone()))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Mychat-Record", "redaction");
    let ack = js
        .publish_with_headers(chat_subject(redaction.session_id), headers, body.into())
        .await?
        .await?;
    Ok(ack.sequence)
}

/// A chat message as stored (contract b.2 ChatMessage, without the read-model fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub session_id: i64,
    /// The sender's users-table id.
    pub sender_id: i64,
    /// `user` or `counselor`.
    pub sender_type: String,
    /// `text`, `image` or `file`.
    pub content_type: String,
    pub content: String,
    pub file_url: String,
    /// The client's message id (`Nats-Msg-Id`): a resend with the same id is stored once.
    pub client_msg_id: String,
    pub sent_at: DateTime<Utc>,
}

/// Why a chat record was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("publishing to CHAT: {0}")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's stream sequence in `CHAT` (the message id).
    pub seq: u64,
    /// True when the client message id was already stored (a resend): `seq` is the first copy's.
    pub duplicate: bool,
}

/// The `Nats-Msg-Id` of a message: the client's message id scoped to the session and the sender
/// (JetStream deduplicates across the whole stream, and clients pick their ids independently).
pub fn message_dedup_id(message: &ChatMessage) -> String {
    format!(
        "{}:{}:{}",
        message.session_id, message.sender_id, message.client_msg_id
    )
}

/// Appends a message to `CHAT` on `chat.<session_id>` with `Nats-Msg-Id` =
/// [`message_dedup_id`], and returns once it is durably stored. The caller checks that the sender is a participant
/// of an active session first.
///
/// # Errors
/// When JetStream does not acknowledge the message.
pub async fn append_message(
    js: &async_nats::jetstream::Context,
    message: &ChatMessage,
) -> Result<Appended, AppendError> {
    let body = serde_json::to_vec(&ChatRecord::Message(message.clone()))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        message_dedup_id(message).as_str(),
    );
    headers.insert("Mychat-Record", "message");
    let started = std::time::Instant::now();
    let ack = async {
        js.publish_with_headers(chat_subject(message.session_id), headers, body.into())
            .await?
            .await
    }
    .await;
    metrics::histogram!(
        crate::METRIC_PUBLISH_SECONDS,
        "stream" => "CHAT",
        "outcome" => if ack.is_ok() { "acked" } else { "error" }
    )
    .record(started.elapsed().as_secs_f64());
    let ack = ack?;
    Ok(Appended {
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// Appends any record to `CHAT` on `chat.<session_id>` with `Nats-Msg-Id` = `dedup_id`, and returns
/// once it is durably stored (a repeat of `dedup_id` within the duplicate window returns the first
/// copy's sequence with `duplicate: true`).
///
/// # Errors
/// When JetStream does not acknowledge the record.
pub async fn append_record(
    js: &async_nats::jetstream::Context,
    record: &ChatRecord,
    dedup_id: &str,
) -> Result<Appended, AppendError> {
    let body = serde_json::to_vec(record)?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, dedup_id);
    let kind = match record {
        ChatRecord::Message(_) => "message",
        ChatRecord::MessageRead(_) => "message_read",
        ChatRecord::MessageRevoked(_) => "message_revoked",
        ChatRecord::Redaction(_) => "redaction",
    };
    headers.insert("Mychat-Record", kind);
    let ack = js
        .publish_with_headers(chat_subject(record.session_id()), headers, body.into())
        .await?
        .await?;
    Ok(Appended {
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// The `Nats-Msg-Id` of a read receipt: one per message and reader.
pub fn read_dedup_id(r: &ReadReceipt) -> String {
    format!("read:{}:{}:{}", r.session_id, r.message_seq, r.read_by)
}

/// The `Nats-Msg-Id` of a revocation: one per message.
pub fn revoke_dedup_id(r: &Revocation) -> String {
    format!("revoke:{}:{}", r.session_id, r.message_seq)
}
