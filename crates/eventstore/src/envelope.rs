//! The stored form of the log.
//!
//! One command's events are one JetStream message (a [`Commit`]) on the subject
//! `ev.<aggregate_type>.<aggregate_id>`; its JSON body carries the envelope and the events, and its
//! headers repeat what a consumer needs to filter and route without decoding the body:
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | the command id (JetStream drops a repeat within the duplicate window) |
//! | `Nats-Expected-Last-Subject-Sequence` | the stream sequence the aggregate was loaded at (0 = new) |
//! | `Mychat-Aggregate-Type` | e.g. `order` |
//! | `Mychat-Event-Types` | the commit's event types, comma-separated |
//! | `Mychat-Command-Id`, `Mychat-Correlation-Id`, `Mychat-Actor` | as in the body |
//!
//! An event's position in the log is `(stream_sequence, index in the commit)`; its aggregate
//! sequence (1-based, per aggregate) is in the body.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Header: the aggregate type of a commit.
pub const HDR_AGGREGATE_TYPE: &str = "Mychat-Aggregate-Type";
/// Header: the commit's event types, comma-separated.
pub const HDR_EVENT_TYPES: &str = "Mychat-Event-Types";
/// Header: the command id.
pub const HDR_COMMAND_ID: &str = "Mychat-Command-Id";
/// Header: the correlation id (flows from the HTTP request into every event it causes).
pub const HDR_CORRELATION_ID: &str = "Mychat-Correlation-Id";
/// Header: the actor, as `kind:id`.
pub const HDR_ACTOR: &str = "Mychat-Actor";

/// Who issued a command: a user, an administrator, or the system (a process manager, a timer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `user`, `admin` or `system`.
    pub kind: String,
    /// The users-table id for `user`, the administrators-table id for `admin`, 0 for `system`.
    pub id: i64,
}

impl Actor {
    /// A user (users-table id).
    pub fn user(id: i64) -> Self {
        Self {
            kind: "user".into(),
            id,
        }
    }
    /// An administrator (administrators-table id).
    pub fn admin(id: i64) -> Self {
        Self {
            kind: "admin".into(),
            id,
        }
    }
    /// mychat itself (process managers, timers).
    pub fn system() -> Self {
        Self {
            kind: "system".into(),
            id: 0,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

impl FromStr for Actor {
    type Err = EnvelopeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, id) = s.split_once(':').ok_or(EnvelopeError::Actor)?;
        Ok(Self {
            kind: kind.to_string(),
            id: id.parse().map_err(|_| EnvelopeError::Actor)?,
        })
    }
}

/// One event inside a commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    /// The aggregate sequence, 1-based, per aggregate.
    pub sequence: usize,
    pub event_type: String,
    pub event_version: String,
    /// The event as the domain serialised it (`{"OrderPlaced": {...}}`).
    pub payload: serde_json::Value,
}

/// The body of one message in `EVENTS`: one command's events and their envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Commit {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub command_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: Actor,
    /// When the commit was written (UTC).
    pub recorded_at: DateTime<Utc>,
    pub events: Vec<RecordedEvent>,
}

/// Why a stored message could not be read as a commit.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed commit: {0}")]
    Json(#[from] serde_json::Error),
    #[error("malformed actor (expected kind:id)")]
    Actor,
    #[error("subject {0} is not ev.<aggregate_type>.<aggregate_id>")]
    Subject(String),
}

impl Commit {
    /// The subject a commit of this aggregate is stored on.
    pub fn subject(aggregate_type: &str, aggregate_id: &str) -> String {
        format!("ev.{aggregate_type}.{aggregate_id}")
    }

    /// Decodes a message body.
    ///
    /// # Errors
    /// [`EnvelopeError::Json`] when the body is not a commit.
    pub fn decode(body: &[u8]) -> Result<Self, EnvelopeError> {
        Ok(serde_json::from_slice(body)?)
    }

    /// The commit's events, each with its full envelope, at `stream_sequence`.
    pub fn into_stored(self, stream_sequence: u64) -> Vec<StoredEvent> {
        let Commit {
            aggregate_type,
            aggregate_id,
            command_id,
            correlation_id,
            causation_id,
            actor,
            recorded_at,
            events,
        } = self;
        let count = events.len();
        events
            .into_iter()
            .enumerate()
            .map(|(index, e)| StoredEvent {
                stream_sequence,
                index,
                last_in_commit: index + 1 == count,
                aggregate_type: aggregate_type.clone(),
                aggregate_id: aggregate_id.clone(),
                sequence: e.sequence,
                event_type: e.event_type,
                event_version: e.event_version,
                command_id: command_id.clone(),
                correlation_id: correlation_id.clone(),
                causation_id: causation_id.clone(),
                actor: actor.clone(),
                recorded_at,
                payload: e.payload,
            })
            .collect()
    }
}

/// One event read from the log, with its whole envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The stream sequence of the commit that holds the event.
    pub stream_sequence: u64,
    /// The event's index within its commit (0-based).
    pub index: usize,
    /// True for the commit's last event.
    pub last_in_commit: bool,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate sequence (1-based).
    pub sequence: usize,
    pub event_type: String,
    pub event_version: String,
    pub command_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub actor: Actor,
    pub recorded_at: DateTime<Utc>,
    pub payload: serde_json::Value,
}

impl StoredEvent {
    /// The aggregate id as a number (every mychat aggregate id is a decimal integer).
    pub fn aggregate_id_i64(&self) -> Option<i64> {
        self.aggregate_id.parse().ok()
    }

    /// Decodes the payload as the domain event `E`.
    ///
    /// # Errors
    /// When the payload is not an `E` (an unknown type or version with no upcaster).
    pub fn decode<E: DeserializeOwned>(&self) -> Result<E, serde_json::Error> {
        serde_json::from_value(self.payload.clone())
    }
}

/// The upcasters applied to every event read from the log, before it is decoded: an old event is
/// upcast on read, never rewritten (cqrs-es [`EventUpcaster`]).
#[derive(Clone, Default)]
pub struct Upcasters(Arc<Vec<Box<dyn EventUpcaster>>>);

impl Upcasters {
    /// A registry of the given upcasters, applied in order.
    pub fn new(upcasters: Vec<Box<dyn EventUpcaster>>) -> Self {
        Self(Arc::new(upcasters))
    }

    /// Upcasts one stored event until no upcaster applies.
    pub fn upcast(&self, mut event: StoredEvent) -> StoredEvent {
        for upcaster in self.0.iter() {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                let serialized = SerializedEvent::new(
                    event.aggregate_id.clone(),
                    event.sequence,
                    event.aggregate_type.clone(),
                    event.event_type.clone(),
                    event.event_version.clone(),
                    event.payload.clone(),
                    serde_json::Value::Null,
                );
                let up = upcaster.upcast(serialized);
                event.event_type = up.event_type;
                event.event_version = up.event_version;
                event.payload = up.payload;
            }
        }
        event
    }
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upcasters({})", self.0.len())
    }
}

impl StoredEvent {
    /// The event's position in the log as one number: `stream_sequence × 1024 + index`. Read-model
    /// rows store the position of the last event applied and refuse older ones.
    pub fn position(&self) -> i64 {
        (self.stream_sequence as i64) * 1024 + self.index as i64
    }
}
