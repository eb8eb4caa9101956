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
