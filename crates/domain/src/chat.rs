//! The rules a chat message obeys before it is stored: its sender takes part in the session, the
//! session is active, its content type is one the clients render, and its text fits. A socket's
//! `message` frame (the gateway) and the HTTP fallback (the user API) are held to the same rules
//! by [`ChatSession::accept_message`].
//!
//! Messages are not aggregate events (they go to the chat log, not to `EVENTS`), but whether one
//! may be written is a decision about a session, so it lives here.

use crate::session::{ChatSession, SessionStatus};

/// The longest message text, in characters.
pub const MAX_CONTENT_CHARS: usize = 5000;
/// The longest client message id (the deduplication key of a resend), in characters.
pub const MAX_CLIENT_MSG_ID_CHARS: usize = 100;
/// The content types a message may have (contract a.6); an empty one means `text`.
pub const CONTENT_TYPES: [&str; 3] = ["text", "image", "file"];

/// A message as its sender wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageDraft {
    /// The text (may be empty when `file_url` is set).
    pub content: String,
    /// `text`, `image` or `file`; empty means `text`.
    pub content_type: String,
    /// The attachment's URL, or empty.
    pub file_url: String,
    /// The client's id for the message (a resend with the same id is stored once); empty when
    /// the client sent none.
    pub client_msg_id: String,
}

/// A message the session accepts: the draft with its sender's role and a known content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedMessage {
    /// `user` or `counselor`: the sender's side in the session.
    pub sender_type: &'static str,
    /// One of [`CONTENT_TYPES`].
    pub content_type: &'static str,
    pub content: String,
    pub file_url: String,
    /// The client's id, `None` when it sent none (the caller assigns one).
    pub client_msg_id: Option<String>,
}

/// Why a session refuses a message. `Display` is the text the clients show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageRefusal {
    /// The sender is neither the session's user nor its counselor.
    #[error("not a participant of this session")]
    NotParticipant,
    /// The session is not active (waiting or ended).
    #[error("session has ended")]
    SessionEnded,
    /// A field of the draft is invalid.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field's name on the wire (`content`, `content_type`, `client_msg_id`).
        field: &'static str,
        reason: &'static str,
    },
    /// Neither text (not blank) nor an attachment: each field is well-formed, the pair is
    /// refused (a rule across fields).
    #[error("content: must not be empty")]
    Empty,
}

impl MessageDraft {
    /// The draft's own rules, whoever writes it and wherever (a session or a group): its
    /// content type (returned, `""` read as `text`), text or file present, lengths.
    ///
    /// # Errors
    /// [`MessageRefusal::Invalid`] naming `content_type`, `content` or `client_msg_id`;
    /// [`MessageRefusal::Empty`] for neither text nor a file.
    pub fn validate(&self) -> Result<&'static str, MessageRefusal> {
        let content_type = match self.content_type.as_str() {
            "" | "text" => "text",
            "image" => "image",
            "file" => "file",
            _ => {
                return Err(MessageRefusal::Invalid {
                    field: "content_type",
                    reason: "one of text, image, file",
                })
            }
        };
        if self.content.trim().is_empty() && self.file_url.is_empty() {
            return Err(MessageRefusal::Empty);
        }
        if self.content.chars().count() > MAX_CONTENT_CHARS {
            return Err(MessageRefusal::Invalid {
                field: "content",
                reason: "at most 5000 characters",
            });
        }
        if self.client_msg_id.chars().count() > MAX_CLIENT_MSG_ID_CHARS {
            return Err(MessageRefusal::Invalid {
                field: "client_msg_id",
                reason: "at most 100 characters",
            });
        }
        Ok(content_type)
    }
}

impl ChatSession {
    /// Whether `sender_id` may write `draft` into this session now, and as whom.
    ///
    /// # Errors
    /// [`MessageRefusal`]: not a participant, the session is not active, or an invalid field (a
    /// content type other than [`CONTENT_TYPES`], no text and no file, more than
    /// [`MAX_CONTENT_CHARS`] characters, a client id longer than [`MAX_CLIENT_MSG_ID_CHARS`]).
    pub fn accept_message(
        &self,
        sender_id: i64,
        draft: MessageDraft,
    ) -> Result<AcceptedMessage, MessageRefusal> {
        if !self.is_participant(sender_id) {
            return Err(MessageRefusal::NotParticipant);
        }
        if self.status != SessionStatus::Active {
            return Err(MessageRefusal::SessionEnded);
        }
        let content_type = draft.validate()?;
        Ok(AcceptedMessage {
            sender_type: if sender_id == self.user_id {
                "user"
            } else {
                "counselor"
            },
            content_type,
            content: draft.content,
            file_url: draft.file_url,
            client_msg_id: (!draft.client_msg_id.is_empty()).then_some(draft.client_msg_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> ChatSession {
        ChatSession {
            status: SessionStatus::Active,
            order_id: 7,
            user_id: 1,
            counselor_id: 3,
            counselor_user_id: 2,
            ..Default::default()
        }
    }

    fn text(content: &str) -> MessageDraft {
        MessageDraft {
            content: content.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_participant_writes_as_their_side_of_the_session() {
        let s = active();
        assert_eq!(s.accept_message(1, text("hi")).unwrap().sender_type, "user");
        let m = s.accept_message(2, text("hello")).unwrap();
        assert_eq!((m.sender_type, m.content_type), ("counselor", "text"));
        assert_eq!(m.client_msg_id, None);
    }

    #[test]
    fn outsiders_ended_sessions_and_bad_fields_are_refused() {
        let s = active();
        assert_eq!(
            s.accept_message(9, text("hi")),
            Err(MessageRefusal::NotParticipant)
        );
        let ended = ChatSession {
            status: SessionStatus::Ended,
            ..active()
        };
        assert_eq!(
            ended.accept_message(1, text("hi")),
            Err(MessageRefusal::SessionEnded)
        );
        let refusal = s.accept_message(1, text("  ")).unwrap_err();
        assert_eq!(refusal.to_string(), "content: must not be empty");
        let video = MessageDraft {
            content_type: "video".into(),
            ..text("x")
        };
        assert!(matches!(
            s.accept_message(1, video),
            Err(MessageRefusal::Invalid {
                field: "content_type",
                ..
            })
        ));
        assert!(s.accept_message(1, text(&"字".repeat(5001))).is_err());
        assert!(s.accept_message(1, text(&"字".repeat(5000))).is_ok());
        let file_only = MessageDraft {
            file_url: "/uploads/a.png".into(),
            content_type: "image".into(),
            ..Default::default()
        };
        assert_eq!(
            s.accept_message(1, file_only).unwrap().content_type,
            "image"
        );
    }
}
