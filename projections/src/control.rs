//! Operators' decisions about projections, recorded in the log: the `ProjectionControl`
//! aggregate on `ev.projection.<name>`.
//!
//! `mychat projections skip <name> <seq> --reason …` commits `ProjectionEventSkipped`; every
//! worker, rebuild and audit replay of that projection then leaves the message at that stream
//! sequence out (and logs that it did). Nothing else ever skips a message.

use std::collections::BTreeSet;

use async_nats::jetstream;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use eventstore::{CommandBus, CommandMeta, Commit};
use serde::{Deserialize, Serialize};

/// The `ProjectionControl` aggregate (`ev.projection.<name>`): the skips decided so far.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectionControl {
    pub skipped: BTreeSet<u64>,
}

/// Commands on a `ProjectionControl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlCommand {
    /// Skip the message at `stream_sequence` for this projection, for `reason` (required).
    Skip {
        projection: String,
        stream_sequence: u64,
        reason: String,
        at: chrono::DateTime<chrono::Utc>,
    },
}

/// Events of a `ProjectionControl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlEvent {
    ProjectionEventSkipped {
        projection: String,
        stream_sequence: u64,
        reason: String,
        at: chrono::DateTime<chrono::Utc>,
    },
}

impl DomainEvent for ControlEvent {
    fn event_type(&self) -> String {
        "ProjectionEventSkipped".into()
    }
    fn event_version(&self) -> String {
        "1.0".into()
    }
}

/// Why a control command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("a reason is required")]
    ReasonRequired,
    #[error("stream sequence must be positive")]
    InvalidSequence,
}

impl Aggregate for ProjectionControl {
    const TYPE: &'static str = "projection";
    type Command = ControlCommand;
    type Event = ControlEvent;
    type Error = ControlError;
    type Services = ();

    async fn handle(
        &mut self,
        command: ControlCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), ControlError> {
        match command {
            ControlCommand::Skip {
                projection,
                stream_sequence,
                reason,
                at,
            } => {
                if reason.trim().is_empty() {
                    return Err(ControlError::ReasonRequired);
                }
                if stream_sequence == 0 {
                    return Err(ControlError::InvalidSequence);
                }
                if self.skipped.contains(&stream_sequence) {
                    return Ok(());
                }
                sink.write(
                    ControlEvent::ProjectionEventSkipped {
                        projection,
                        stream_sequence,
                        reason,
                        at,
                    },
                    self,
                )
                .await;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: ControlEvent) {
        match event {
            ControlEvent::ProjectionEventSkipped {
                stream_sequence, ..
            } => {
                self.skipped.insert(stream_sequence);
            }
        }
    }
}

/// A recorded skip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skip {
    /// The skipped message's stream sequence.
    pub stream_sequence: u64,
    pub reason: String,
    /// Where the decision itself is in the log.
    pub recorded_at_sequence: u64,
}

/// Every skip recorded for `projection`, read with direct gets on `ev.projection.<name>`.
///
/// # Errors
/// On a NATS error other than "no message".
pub async fn skip_events(js: &jetstream::Context, projection: &str) -> anyhow::Result<Vec<Skip>> {
    let stream = js.get_stream(eventstore::EVENTS_STREAM).await?;
    let subject = Commit::subject(ProjectionControl::TYPE, projection);
    let mut from = 1;
    let mut skips = Vec::new();
    loop {
        match stream
            .direct_get_next_for_subject(subject.as_str(), Some(from))
            .await
        {
            Ok(message) => {
                from = message.sequence + 1;
                let commit = Commit::decode(&message.payload)?;
                for stored in commit.into_stored(message.sequence) {
                    let ControlEvent::ProjectionEventSkipped {
                        stream_sequence,
                        reason,
                        ..
                    } = stored.decode::<ControlEvent>()?;
                    skips.push(Skip {
                        stream_sequence,
                        reason,
                        recorded_at_sequence: message.sequence,
                    });
                }
            }
            Err(e) if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound => {
                return Ok(skips)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Records the decision to skip `stream_sequence` for `projection` (idempotent).
///
/// # Errors
/// A missing reason, or a store failure.
pub async fn skip(
    bus: &CommandBus,
    projection: &str,
    stream_sequence: u64,
    reason: &str,
    meta: &CommandMeta,
) -> anyhow::Result<Option<u64>> {
    let committed = bus
        .execute::<ProjectionControl>(
            projection,
            ControlCommand::Skip {
                projection: projection.to_string(),
                stream_sequence,
                reason: reason.to_string(),
                at: chrono::Utc::now(),
            },
            meta,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(committed.stream_sequence)
}
