//! [`CommandBus`]: runs commands against aggregates on the `EVENTS` stream.

use std::collections::HashMap;

use async_nats::jetstream;
use cqrs_es::{Aggregate, AggregateError, EventStore};

use crate::envelope::{Actor, Upcasters};
use crate::store::{JetStreamEventStore, META_DUPLICATE, META_STREAM_SEQUENCE};

/// How many times a command is attempted when its commit conflicts with a concurrent one
/// (each attempt reloads the aggregate and handles the command again).
pub const MAX_ATTEMPTS: usize = 4;

/// Who and what caused a command: carried into every event's envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMeta {
    /// The command id: the client's `Idempotency-Key`, a process manager's id derived from the
    /// triggering event, or a fresh UUID. Sent as `Nats-Msg-Id`.
    pub command_id: String,
    /// The id shared by everything one request caused.
    pub correlation_id: String,
    /// The id of the event or request that caused this command.
    pub causation_id: Option<String>,
    pub actor: Actor,
}

impl CommandMeta {
    /// A command by `actor` with a fresh command id and correlation id.
    pub fn new(actor: Actor) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        Self {
            command_id: id.clone(),
            correlation_id: id,
            causation_id: None,
            actor,
        }
    }

    /// The same correlation, a new command id `command_id`, caused by `causation_id`.
    pub fn derive(&self, command_id: String, causation_id: Option<String>) -> Self {
        Self {
            command_id,
            correlation_id: self.correlation_id.clone(),
            causation_id,
            actor: self.actor.clone(),
        }
    }

    /// As cqrs-es metadata.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("command_id".into(), self.command_id.clone());
        m.insert("correlation_id".into(), self.correlation_id.clone());
        if let Some(c) = &self.causation_id {
            m.insert("causation_id".into(), c.clone());
        }
        m.insert("actor".into(), self.actor.to_string());
        m
    }

    /// From cqrs-es metadata; missing ids are generated, a missing actor is `system`.
    pub fn from_map(m: &HashMap<String, String>) -> Self {
        let command_id = m
            .get("command_id")
            .cloned()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Self {
            correlation_id: m
                .get("correlation_id")
                .cloned()
                .unwrap_or_else(|| command_id.clone()),
            command_id,
            causation_id: m.get("causation_id").cloned(),
            actor: m
                .get("actor")
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(Actor::system),
        }
    }
}

/// What a successful command did.
#[derive(Debug, Clone)]
pub struct Committed<E> {
    /// The aggregate the events belong to. For a duplicate command id this is the aggregate the
    /// *first* attempt wrote to, which may differ from the one asked for (a retried create that
    /// allocated a new id).
    pub aggregate_id: String,
    /// The stream sequence of the commit; `None` when the command emitted no event (a no-op).
    pub stream_sequence: Option<u64>,
    /// The events committed (or, for a duplicate, the ones the first attempt committed).
    pub events: Vec<E>,
    /// True when JetStream had already stored this command id.
    pub duplicate: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused it (a business rule): 4xx.
    #[error("{0}")]
    Rejected(E),
    /// Concurrent commands kept moving the aggregate: 409.
    #[error("the aggregate was changed concurrently; retry")]
    Conflict,
    /// JetStream or decoding failed: 5xx.
    #[error("event store: {0}")]
    Store(String),
}

impl<E: std::error::Error> From<AggregateError<E>> for CommandError<E> {
    fn from(e: AggregateError<E>) -> Self {
        match e {
            AggregateError::UserError(e) => Self::Rejected(e),
            AggregateError::AggregateConflict => Self::Conflict,
            other => Self::Store(other.to_string()),
        }
    }
}

/// Runs commands: load the aggregate (direct gets), handle the command, commit its events
/// conditionally; on a conflict, reload and retry (up to [`MAX_ATTEMPTS`]). Cheap to clone.
#[derive(Clone)]
pub struct CommandBus {
    js: jetstream::Context,
    upcasters: Upcasters,
}

impl CommandBus {
    /// A bus on `js`'s `EVENTS` stream.
    pub fn new(js: jetstream::Context, upcasters: Upcasters) -> Self {
        Self { js, upcasters }
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The cqrs-es store for aggregate `A`.
    ///
    /// # Errors
    /// When the `EVENTS` stream cannot be reached.
    pub async fn store<A: Aggregate>(&self) -> anyhow::Result<JetStreamEventStore<A>> {
        JetStreamEventStore::new(self.js.clone(), self.upcasters.clone()).await
    }

    /// The current state of aggregate `A` `id` and its aggregate sequence (0 = never written).
    ///
    /// # Errors
    /// [`CommandError::Store`] when the log cannot be read.
    pub async fn load<A: Aggregate>(&self, id: &str) -> Result<(A, usize), CommandError<A::Error>> {
        let store = self
            .store::<A>()
            .await
            .map_err(|e| CommandError::Store(e.to_string()))?;
        let context = store.load_aggregate(id).await?;
        Ok((context.aggregate, context.version))
    }

    /// Executes `command` on aggregate `A` `id`.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] with the aggregate's error, [`CommandError::Conflict`] when
    /// every attempt conflicted, [`CommandError::Store`] on an infrastructure failure.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, id, command_id = %meta.command_id))]
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()>,
        A::Command: Clone,
    {
        let store = self
            .store::<A>()
            .await
            .map_err(|e| CommandError::Store(e.to_string()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut context = store.load_aggregate(id).await?;
            let sink = cqrs_es::event_sink::EventSink::default();
            context
                .aggregate
                .handle(command.clone(), &(), &sink)
                .await
                .map_err(CommandError::Rejected)?;
            let events = sink.collect().await;
            if events.is_empty() {
                return Ok(Committed {
                    aggregate_id: id.to_string(),
                    stream_sequence: None,
                    events,
                    duplicate: false,
                });
            }
            match store.commit(events, context, meta.to_map()).await {
                Ok(envelopes) => {
                    let first = envelopes.first();
                    let stream_sequence = first
                        .and_then(|e| e.metadata.get(META_STREAM_SEQUENCE))
                        .and_then(|s| s.parse().ok());
                    let duplicate = first.is_some_and(|e| e.metadata.contains_key(META_DUPLICATE));
                    let aggregate_id =
                        first.map_or_else(|| id.to_string(), |e| e.aggregate_id.clone());
                    return Ok(Committed {
                        aggregate_id,
                        stream_sequence,
                        events: envelopes.into_iter().map(|e| e.payload).collect(),
                        duplicate,
                    });
                }
                Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(attempt, "conflict; reloading");
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
