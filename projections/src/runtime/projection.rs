//! The [`Projection`] trait and what it applies: a [`LogMessage`] (one stored message of the log,
//! decoded lazily into its events, each seen as an [`EventRef`]), the event decoding and
//! upcasting every projection shares, and the [`FailedAt`] context that names a poison message.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventstore::envelope::{StoredEvent, Upcasters};
use eventstore::Commit;
use sqlx::PgConnection;

/// Decodes a stored event's payload as `E` without copying it (`StoredEvent::decode` clones
/// the JSON value first; this borrows it: same result, less work per event in replays).
///
/// # Errors
/// When the payload is not an `E` (an unknown event type or version).
pub fn decode<E: serde::de::DeserializeOwned>(
    stored: &StoredEvent,
) -> Result<E, serde_json::Error> {
    E::deserialize(&stored.payload)
}

/// The upcasters every projection reads `EVENTS` through (cqrs-es `EventUpcaster`s; none are
/// registered yet: every stored event is at its current version). Register new ones here.
pub fn upcasters() -> Upcasters {
    Upcasters::default()
}

/// One message read from a stream. Cheap to clone: the payload and its decoded events are
/// shared, so a message handed to several projections (an audit replay's one reader feeds every
/// projection) is decoded once, by whichever projection asks first ([`LogMessage::events`]).
#[derive(Debug, Clone)]
pub struct LogMessage {
    /// The stream sequence.
    pub stream_sequence: u64,
    /// The record's position in its stream: the stream sequence, or for a chat record read out
    /// of a pack `stream sequence × 1,024 + its index` ([`eventstore::pack`]; the records of a
    /// pack share its stream sequence, the unit of checkpoints and skips).
    pub position: u64,
    pub subject: String,
    /// When JetStream stored it.
    pub time: DateTime<Utc>,
    pub payload: Bytes,
    /// The commit's event types, comma-separated, as its `Mychat-Event-Types` header carries them
    /// (`None` when the message has no such header).
    pub event_types: Option<Arc<str>>,
    /// The commit's events once decoded (or why they could not be).
    decoded: Arc<std::sync::OnceLock<Result<Arc<[StoredEvent]>, String>>>,
}

/// One event of a decoded message: shares the message's decoded events (cheap to clone) and
/// dereferences to its [`StoredEvent`].
#[derive(Debug, Clone)]
pub struct EventRef {
    events: Arc<[StoredEvent]>,
    index: usize,
}

impl std::ops::Deref for EventRef {
    type Target = StoredEvent;
    fn deref(&self) -> &StoredEvent {
        &self.events[self.index]
    }
}

impl LogMessage {
    /// A message at `stream_sequence` on `subject`, stored by JetStream at `time`.
    pub fn new(stream_sequence: u64, subject: String, time: DateTime<Utc>, payload: Bytes) -> Self {
        Self {
            stream_sequence,
            position: stream_sequence,
            subject,
            time,
            payload,
            event_types: None,
            decoded: Arc::default(),
        }
    }

    /// The same record at `position` (a pack's record; see [`LogMessage::position`]).
    pub fn at_position(mut self, position: u64) -> Self {
        self.position = position;
        self
    }

    /// The same message with its commit's event types (the `Mychat-Event-Types` header:
    /// comma-separated).
    pub fn with_event_types(mut self, event_types: Option<&str>) -> Self {
        self.event_types = event_types.map(Arc::from);
        self
    }

    /// Whether `projection` does nothing for this message: every event type in its
    /// `Mychat-Event-Types` header is one the projection [ignores](Projection::ignores). A
    /// message without the header is never skipped.
    pub fn ignored_by(&self, projection: &dyn Projection) -> bool {
        let ignored = projection.ignores();
        if ignored.is_empty() {
            return false;
        }
        match self.event_types.as_deref() {
            Some(types) if !types.is_empty() => types.split(',').all(|t| ignored.contains(&t)),
            _ => false,
        }
    }

    /// The message as a commit's events (for `EVENTS`), upcast ([`upcasters`]), in commit
    /// order. Decoded on the first call and shared by every clone of the message after it.
    ///
    /// # Errors
    /// When the body is not a commit (the error names the stream sequence).
    pub fn events(&self) -> anyhow::Result<Arc<[StoredEvent]>> {
        let decoded = self.decoded.get_or_init(|| {
            let upcasters = upcasters();
            Commit::decode(&self.payload)
                .map(|commit| {
                    commit
                        .into_stored(self.stream_sequence)
                        .into_iter()
                        .map(|e| upcasters.upcast(e))
                        .collect()
                })
                .map_err(|e| {
                    format!(
                        "decoding the commit at stream sequence {}: {e}",
                        self.stream_sequence
                    )
                })
        });
        decoded.clone().map_err(|e| anyhow::anyhow!(e))
    }

    /// [`LogMessage::events`], one shared handle per event.
    ///
    /// # Errors
    /// As [`LogMessage::events`].
    pub fn event_refs(&self) -> anyhow::Result<impl Iterator<Item = EventRef>> {
        let events = self.events()?;
        Ok((0..events.len()).map(move |index| EventRef {
            events: events.clone(),
            index,
        }))
    }
}

/// A read model (or process manager) fed from one stream.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the checkpoint's key, and the name in spans, logs and metrics.
    fn name(&self) -> &'static str;
    /// The stream it reads (default `EVENTS`).
    fn stream(&self) -> &'static str {
        eventstore::EVENTS_STREAM
    }
    /// The subjects it needs (e.g. `ev.order.>`).
    fn subjects(&self) -> Vec<String>;
    /// Event types on its subjects that it is known to do nothing for. A commit made only of
    /// such events is not applied: the live projector opens no transaction for it (its
    /// checkpoint moves past it with the next batch, or within a second), and replays leave it
    /// out. Unknown types are never ignored, so a projection that refuses what it does not know
    /// (the ledger) still sees every new event type. The names are the stored `event_type`s
    /// (upcasters must not rename a type that a projection ignores).
    fn ignores(&self) -> &'static [&'static str] {
        &[]
    }
    /// The version of its code. Bump it when `apply` changes what it writes: the projectors then
    /// rebuild it blue/green on start ([`crate::rebuild`]).
    fn version(&self) -> i32 {
        1
    }
    /// The tables it writes (created by `migrations/` in `public`). Rebuilds and audit replays
    /// create the same tables (`LIKE public.<table> INCLUDING ALL`) in their own schema; empty
    /// for a projection that writes no table (the process manager), which cannot be replayed.
    fn tables(&self) -> Vec<&'static str> {
        vec![]
    }
    /// Projections that write the same tables as this one (itself included) and are therefore
    /// rebuilt together, into one shadow schema swapped in at once (the chat messages: one
    /// projection per chat stream, one table). Empty (the default): it alone.
    fn siblings(&self) -> Vec<Arc<dyn Projection>> {
        Vec::new()
    }
    /// Applies one message inside the batch's transaction. An error aborts the whole batch (and
    /// its checkpoint); the projection stops at that message until the cause is fixed.
    ///
    /// `tx` is already inside the batch's transaction, which the live projector opens with a
    /// `BEGIN` statement (not sqlx's `begin`): statements only; no `begin`, `COMMIT` or
    /// `ROLLBACK` of its own.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()>;
    /// Applies a whole batch of messages, in stream order, inside the batch's transaction, with
    /// the same result as [`Projection::apply`] on each message in turn (the default does
    /// exactly that). Read models override it with multi-row statements (a few SQL round trips
    /// per batch instead of one or more per message).
    ///
    /// An error need not name the message: the runtime rolls the batch back to a savepoint and
    /// re-applies it message by message with [`Projection::apply`] to find the poison event
    /// ([`apply_in_tx`]).
    ///
    /// [`apply_in_tx`]: crate::runtime::apply_in_tx
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        for message in messages {
            self.apply(&mut *tx, message).await.context(FailedAt {
                stream_sequence: message.stream_sequence,
                subject: message.subject.clone(),
            })?;
        }
        Ok(())
    }
}

/// The context the default [`Projection::apply_batch`] puts on a message's error: the runtime
/// then knows the poison event without applying the batch again.
#[derive(Debug, Clone)]
pub struct FailedAt {
    /// The stream sequence of the message that failed.
    pub stream_sequence: u64,
    pub subject: String,
}

impl std::fmt::Display for FailedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "applying stream sequence {} ({})",
            self.stream_sequence, self.subject
        )
    }
}

/// The correlation id of an `EVENTS` commit (`None` for other messages).
pub fn correlation_of(message: &LogMessage) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Only {
        correlation_id: Option<String>,
    }
    serde_json::from_slice::<Only>(&message.payload)
        .ok()
        .and_then(|o| o.correlation_id)
}
