//! [`JetStreamEventStore`]: the cqrs-es [`EventStore`] on the `EVENTS` stream.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::time::Duration;

use async_nats::jetstream::stream::Stream;
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
use crate::group::{CommitError, CommitOutcome, GroupCommitter, PendingCommit};
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
    committer: Option<GroupCommitter>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> Clone for JetStreamEventStore<A> {
    fn clone(&self) -> Self {
        Self {
            js: self.js.clone(),
            stream: self.stream.clone(),
            upcasters: self.upcasters.clone(),
            committer: self.committer.clone(),
            _aggregate: PhantomData,
        }
    }
}

/// Messages per batched direct get request when loading an aggregate.
pub const DIRECT_GET_BATCH: usize = 256;

fn load_error<E: std::error::Error>(what: &str) -> AggregateError<E> {
    AggregateError::DatabaseConnectionError(what.to_string().into())
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
            committer: None,
            _aggregate: PhantomData,
        })
    }

    /// The same store, committing through `committer` (group commit) instead of one plain
    /// publish per commit.
    pub fn with_committer(mut self, committer: GroupCommitter) -> Self {
        self.committer = Some(committer);
        self
    }

    /// The `EVENTS` stream handle.
    pub fn stream(&self) -> &Stream<()> {
        &self.stream
    }

    /// Writes `commit` (through the group committer when there is one) and returns its outcome.
    ///
    /// # Errors
    /// [`CommitError`] when JetStream did not answer; the commit may be stored.
    pub async fn write(&self, commit: PendingCommit) -> Result<CommitOutcome, CommitError> {
        match &self.committer {
            Some(c) => c.commit(commit).await,
            None => {
                crate::group::write_single(
                    &self.js.client(),
                    &self.stream,
                    EVENTS_STREAM,
                    &commit,
                    Duration::from_secs(10),
                )
                .await
            }
        }
    }

    /// The envelopes of the commit stored at `sequence` (decoded, upcast), marked duplicate when
    /// `duplicate`.
    ///
    /// # Errors
    /// On a JetStream error or an undecodable message.
    pub async fn stored_envelopes(
        &self,
        sequence: u64,
        duplicate: bool,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let first = self
            .stream
            .direct_get(sequence)
            .await
            .map_err(store_error)?;
        let commit = Commit::decode(&first.payload)
            .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
        self.envelopes(sequence, commit, duplicate)
    }

    /// The envelopes of `commit` as it was stored at `sequence`.
    ///
    /// # Errors
    /// When an event cannot be decoded.
    pub fn commit_envelopes(
        &self,
        sequence: u64,
        commit: Commit,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        self.envelopes(sequence, commit, false)
    }

    /// Every commit of one aggregate, in order, read with batched direct gets, so no consumer
    /// is created. Returns `(stream_sequence, commit)` pairs.
    ///
    /// # Errors
    /// On a JetStream error or an undecodable message.
    pub async fn load_commits(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<(u64, Commit)>, AggregateError<A::Error>> {
        self.load_commits_after(aggregate_id, 0).await
    }

    /// The commits of one aggregate stored after stream sequence `after`, in order, read with
    /// *batched* direct gets (ADR-31: one request `{"seq", "next_by_subj", "batch"}` to
    /// `$JS.API.DIRECT.GET.EVENTS` answers up to [`DIRECT_GET_BATCH`] messages, then an
    /// end-of-batch status 204; 404 when there is none). No consumer is created.
    ///
    /// # Errors
    /// On a JetStream error, a timeout (5 s per message) or an undecodable message.
    pub async fn load_commits_after(
        &self,
        aggregate_id: &str,
        after: u64,
    ) -> Result<Vec<(u64, Commit)>, AggregateError<A::Error>> {
        let subject = Commit::subject(A::TYPE, aggregate_id);
        let client = self.js.client();
        let mut commits = Vec::new();
        let mut from = after + 1;
        loop {
            let inbox = client.new_inbox();
            let mut replies = client.subscribe(inbox.clone()).await.map_err(store_error)?;
            let request = serde_json::json!({
                "seq": from,
                "next_by_subj": subject,
                "batch": DIRECT_GET_BATCH,
            });
            client
                .publish_with_reply(
                    format!("$JS.API.DIRECT.GET.{EVENTS_STREAM}"),
                    inbox,
                    request.to_string().into(),
                )
                .await
                .map_err(store_error)?;
            let mut got = 0;
            loop {
                let message = tokio::time::timeout(
                    Duration::from_secs(5),
                    futures::StreamExt::next(&mut replies),
                )
                .await
                .map_err(|_| load_error("timed out reading the aggregate"))?
                .ok_or_else(|| load_error("direct get subscription closed"))?;
                match message.status.map(|s| s.as_u16()) {
                    Some(404) => return Ok(commits),
                    Some(204) => break,
                    Some(code) if code != 200 => {
                        return Err(load_error(&format!(
                            "direct get answered status {code}: {:?}",
                            message.description
                        )))
                    }
                    _ => {}
                }
                let sequence = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_SEQUENCE))
                    .and_then(|v| v.as_str().parse::<u64>().ok())
                    .ok_or_else(|| load_error("direct get reply without Nats-Sequence"))?;
                let commit = Commit::decode(&message.payload)
                    .map_err(|e| AggregateError::DeserializationError(Box::new(e)))?;
                from = sequence + 1;
                got += 1;
                commits.push((sequence, commit));
            }
            if got < DIRECT_GET_BATCH {
                return Ok(commits);
            }
        }
    }

    /// Aggregate `aggregate_id` brought up to date from a known state: `context` (the aggregate
    /// as of aggregate sequence `context.version` and stream sequence
    /// `context.last_stream_sequence`) with the commits stored after it applied.
    ///
    /// # Errors
    /// On a JetStream error or an undecodable message.
    pub async fn catch_up(
        &self,
        mut context: JetStreamAggregateContext<A>,
    ) -> Result<JetStreamAggregateContext<A>, AggregateError<A::Error>> {
        for (seq, commit) in self
            .load_commits_after(&context.aggregate_id, context.last_stream_sequence)
            .await?
        {
            for envelope in self.envelopes(seq, commit, false)? {
                context.version = envelope.sequence;
                context.aggregate.apply(envelope.payload);
            }
            context.last_stream_sequence = seq;
        }
        Ok(context)
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
        self.catch_up(JetStreamAggregateContext {
            aggregate_id: aggregate_id.to_string(),
            aggregate: A::default(),
            version: 0,
            last_stream_sequence: 0,
        })
        .await
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
        let commit = new_commit::<A>(&events, &context.aggregate_id, context.version, &meta)?;
        let pending = pending_commit(&commit, context.last_stream_sequence)?;
        match self.write(pending).await {
            Ok(CommitOutcome::Stored { sequence }) => self.envelopes(sequence, commit, false),
            Ok(CommitOutcome::Duplicate { sequence }) => {
                // The command id is already in the log: answer with what was stored then.
                self.stored_envelopes(sequence, true).await
            }
            Ok(CommitOutcome::Conflict) => Err(AggregateError::AggregateConflict),
            Err(e) => Err(store_error(e)),
        }
    }
}

/// The commit of `events` emitted by a command `meta` on aggregate `A` `aggregate_id`, whose
/// last event had aggregate sequence `version` (the events get `version + 1 ..`).
///
/// # Errors
/// When an event cannot be serialized.
pub fn new_commit<A: Aggregate>(
    events: &[A::Event],
    aggregate_id: &str,
    version: usize,
    meta: &CommandMeta,
) -> Result<Commit, AggregateError<A::Error>> {
    let mut recorded = Vec::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        recorded.push(RecordedEvent {
            sequence: version + i + 1,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload: serde_json::to_value(event)
                .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?,
        });
    }
    Ok(Commit {
        aggregate_type: A::TYPE.to_string(),
        aggregate_id: aggregate_id.to_string(),
        command_id: meta.command_id.clone(),
        correlation_id: meta.correlation_id.clone(),
        causation_id: meta.causation_id.clone(),
        actor: meta.actor.clone(),
        recorded_at: chrono::Utc::now(),
        events: recorded,
    })
}

/// The message for `commit`: subject, body, headers (`Nats-Msg-Id` = the command id, the
/// `Mychat-*` routing headers), expecting the subject's last stream sequence to be
/// `expected_last_sequence`.
///
/// # Errors
/// When the commit cannot be encoded.
pub fn pending_commit<E: std::error::Error>(
    commit: &Commit,
    expected_last_sequence: u64,
) -> Result<PendingCommit, AggregateError<E>> {
    let body =
        serde_json::to_vec(commit).map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
    let event_types: Vec<&str> = commit
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        commit.command_id.as_str(),
    );
    headers.insert(HDR_AGGREGATE_TYPE, commit.aggregate_type.as_str());
    headers.insert(HDR_EVENT_TYPES, event_types.join(",").as_str());
    headers.insert(HDR_COMMAND_ID, commit.command_id.as_str());
    headers.insert(HDR_CORRELATION_ID, commit.correlation_id.as_str());
    headers.insert(HDR_ACTOR, commit.actor.to_string().as_str());
    Ok(PendingCommit {
        subject: Commit::subject(&commit.aggregate_type, &commit.aggregate_id),
        headers,
        body: body.into(),
        command_id: commit.command_id.clone(),
        expected_last_sequence: Some(expected_last_sequence),
    })
}
