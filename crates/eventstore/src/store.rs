//! [`JetStreamEventStore`]: the cqrs-es [`EventStore`] on the `EVENTS` stream.

use std::collections::HashMap;
use std::marker::PhantomData;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::jetstream::{self};
use async_nats::HeaderMap;
use cqrs_es::{
    Aggregate, AggregateContext, AggregateError, DomainEvent, EventEnvelope, EventStore,
};

use crate::bus::CommandMeta;
use crate::envelope::{
    Commit, RecordedEvent, StoredEvent, Upcasters, HDR_ACTOR, HDR_AGGREGATE_TYPE, HDR_COMMAND_ID,
    HDR_CORRELATION_ID, HDR_EVENT_TYPES,
};
use crate::streams::EVENTS_STREAM;

/// Metadata key, on returned [`EventEnvelope`]s: the stream sequence of the commit.
pub const META_STREAM_SEQUENCE: &str = "stream_sequence";
/// Metadata key, on returned [`EventEnvelope`]s: `"true"` when JetStream found the command id
/// already stored (the envelopes are then the first commit's).
pub const META_DUPLICATE: &str = "duplicate";

/// An aggregate as loaded, with what its commit must check.
#[derive(Debug)]
pub struct JetStreamAggregateContext<A> {
    pub aggregate_id: String,
    pub aggregate: A,
    /// Aggregate sequence of the last event applied (0 = no events).
    pub version: usize,
    /// Stream sequence of the aggregate's last commit (0 = none); the commit sends it as
    /// `Nats-Expected-Last-Subject-Sequence`.
    pub last_stream_sequence: u64,
}

impl<A: Aggregate> AggregateContext<A> for JetStreamAggregateContext<A> {
    fn aggregate(&mut self) -> &mut A {
        &mut self.aggregate
    }
}

/// The cqrs-es event store for aggregate `A`, on the `EVENTS` stream. Cheap to clone.
pub struct JetStreamEventStore<A> {
    js: jetstream::Context,
    stream: Stream<()>,
    upcasters: Upcasters,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for JetStreamEventStore<A> {
    fn clone(&self) -> Self {
        Self {
            js: self.js.clone(),
            stream: self.stream.clone(),
            upcasters: self.upcasters.clone(),
            _aggregate: PhantomData,
        }
    }
}

fn store_error<E: std::error::Error>(
    e: impl std::error::Error + Send + Sync + 'static,
) -> AggregateError<E> {
    AggregateError::DatabaseConnectionError(Box::new(e))
}

impl<A: Aggregate> JetStreamEventStore<A> {
    /// A store on `js`'s `EVENTS` stream (which [`crate::ensure_streams`] created).
    pub async fn new(js: jetstream::Context, upcasters: Upcasters) -> anyhow::Result<Self> {
        let stream = js.get_stream_no_info(EVENTS_STREAM).await?;
        Ok(Self {
            js,
            stream,
            upcasters,
            _aggregate: PhantomData,
        })
    }

    /// Every commit of one aggregate, in order, read with direct gets (`next_by_subj`), so no
    /// consumer is created. Returns `(stream_sequence, commit)` pairs.
    ///
    /// # Errors
    /// On a JetStream error or an undecodable message.
    pub async fn load_commits(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<(u64, Commit)>, AggregateError<A::Error>> {
        let subject = Commit::subject(A::TYPE, aggregate_id);
        let mut commits = Vec::new();
        let mut from = 1;
        loop {
            match self
                .stream
                .direct_get_next_for_subject(subject.as_str(), Some(from))
                .await
            {
                Ok(message) => {
                    let commit = Commit::decode(&message.payload)
                        .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
                    from = message.sequence + 1;
                    commits.push((message.sequence, commit));
                }
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(commits),
                Err(e) => return Err(store_error(e)),
            }
        }
    }

    fn envelopes(
        &self,
        stream_sequence: u64,
        commit: Commit,
        duplicate: bool,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        commit
            .into_stored(stream_sequence)
            .into_iter()
            .map(|stored| {
                let stored = self.upcasters.upcast(stored);
                let payload = stored
                    .decode::<A::Event>()
                    .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
                Ok(EventEnvelope {
                    aggregate_id: stored.aggregate_id.clone(),
                    sequence: stored.sequence,
                    payload,
                    metadata: envelope_metadata(&stored, duplicate),
                })
            })
            .collect()
    }

    async fn publish(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        self.js
            .publish_with_headers(subject, headers, body.into())
            .await?
            .await
    }
}

fn envelope_metadata(stored: &StoredEvent, duplicate: bool) -> HashMap<String, String> {
    let mut m = CommandMeta {
        command_id: stored.command_id.clone(),
        correlation_id: stored.correlation_id.clone(),
        causation_id: stored.causation_id.clone(),
        actor: stored.actor.clone(),
    }
    .to_map();
    m.insert(
        META_STREAM_SEQUENCE.into(),
        stored.stream_sequence.to_string(),
    );
    m.insert("recorded_at".into(), stored.recorded_at.to_rfc3339());
    m.insert("event_version".into(), stored.event_version.clone());
    if duplicate {
        m.insert(META_DUPLICATE.into(), "true".into());
    }
    m
}

impl<A: Aggregate> EventStore<A> for JetStreamEventStore<A> {
    type AC = JetStreamAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let mut all = Vec::new();
        for (seq, commit) in self.load_commits(aggregate_id).await? {
            all.extend(self.envelopes(seq, commit, false)?);
        }
        Ok(all)
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<JetStreamAggregateContext<A>, AggregateError<A::Error>> {
        let mut context = JetStreamAggregateContext {
            aggregate_id: aggregate_id.to_string(),
            aggregate: A::default(),
            version: 0,
            last_stream_sequence: 0,
        };
        for (seq, commit) in self.load_commits(aggregate_id).await? {
            for envelope in self.envelopes(seq, commit, false)? {
                context.version = envelope.sequence;
                context.aggregate.apply(envelope.payload);
            }
            context.last_stream_sequence = seq;
        }
        Ok(context)
    }

    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, id = %context.aggregate_id, events = events.len()))]
    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: JetStreamAggregateContext<A>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let meta = CommandMeta::from_map(&metadata);
        let mut event_types = Vec::with_capacity(events.len());
        let mut recorded = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            event_types.push(event.event_type());
            recorded.push(RecordedEvent {
                sequence: context.version + i + 1,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_value(event)
                    .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?,
            });
        }
        let commit = Commit {
            aggregate_type: A::TYPE.to_string(),
            aggregate_id: context.aggregate_id.clone(),
            command_id: meta.command_id.clone(),
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.causation_id.clone(),
            actor: meta.actor.clone(),
            recorded_at: chrono::Utc::now(),
            events: recorded,
        };
        let body = serde_json::to_vec(&commit)
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            meta.command_id.as_str(),
        );
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            context.last_stream_sequence.to_string().as_str(),
        );
        headers.insert(HDR_AGGREGATE_TYPE, A::TYPE);
        headers.insert(HDR_EVENT_TYPES, event_types.join(",").as_str());
        headers.insert(HDR_COMMAND_ID, meta.command_id.as_str());
        headers.insert(HDR_CORRELATION_ID, meta.correlation_id.as_str());
        headers.insert(HDR_ACTOR, meta.actor.to_string().as_str());

        let subject = Commit::subject(A::TYPE, &context.aggregate_id);
        match self.publish(subject, headers, body).await {
            Ok(ack) if ack.duplicate => {
                // The command id is already in the log: answer with what was stored then.
                let first = self
                    .stream
                    .direct_get(ack.sequence)
                    .await
                    .map_err(store_error)?;
                let commit = Commit::decode(&first.payload)
                    .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
                self.envelopes(ack.sequence, commit, true)
            }
            Ok(ack) => self.envelopes(ack.sequence, commit, false),
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                // nats-server checks the expected sequence before the duplicate window, so a
                // retry of a commit that did land (its ack was lost) arrives here: if the
                // aggregate moved because of this very command, answer as a duplicate.
                let subject = Commit::subject(A::TYPE, &context.aggregate_id);
                let mut from = context.last_stream_sequence + 1;
                loop {
                    match self
                        .stream
                        .direct_get_next_for_subject(subject.as_str(), Some(from))
                        .await
                    {
                        Ok(message) => {
                            let stored = Commit::decode(&message.payload)
                                .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
                            if stored.command_id == meta.command_id {
                                return self.envelopes(message.sequence, stored, true);
                            }
                            from = message.sequence + 1;
                        }
                        Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                            return Err(AggregateError::AggregateConflict)
                        }
                        Err(e) => return Err(store_error(e)),
                    }
                }
            }
            Err(e) => Err(store_error(e)),
        }
    }
}
