//! [`LogReader`]: the one reader of the log, for replays, rebuilds and every live path (the live
//! projectors, the gateway's fan-out).
//!
//! A reader is a background task that owns an *ordered consumer of its own making*: an
//! ephemeral, unacknowledged, in-memory pull consumer, read with one explicit pull request at a
//! time. Each message's consumer sequence must follow the last one; on a gap, a failed or
//! unanswered pull request (the consumer deleted, nats-server restarted, the connection lost),
//! the consumer is re-created right after the last stream sequence read, so nothing is skipped
//! and nothing is read twice. What it reads arrives in batches through a channel, so
//! [`LogReader::next`] is cancel-safe: a `select!` that drops it loses nothing.
//!
//! It is not async-nats's `OrderedConfig` stream: that stream's continuous pulls count the
//! messages still owed by its requests with a saturating counter that, when a request's messages
//! arrive before the request's own bookkeeping (a busy machine), loses decrements; the client then
//! believes messages are owed that the server has finished with, sends no new pull request, and
//! waits until its safety timer (the request's expiry + 5 s) fires. That was the sporadic 10–36 s
//! stall of replays, rebuilds and live projectors (async-nats 0.51.0, `consumer/pull.rs`,
//! `Stream::poll_next`; a debug log of a stalled 1M replay showed the client had received exactly
//! 1,796 whole batches of 500 when it stopped asking).
//!
//! Three ways to end ([`ReadUntil`]): at the stream's head as it was when the consumer was
//! created (a rebuild or an audit replay's catch-up), past a given stream sequence (an audit
//! replay "as of"), or never (a live path, which follows the head). A following reader hands
//! over what it has as soon as the consumer has nothing more pending: at the head a message is
//! delivered on its own, without waiting for company. Inside an atomic batch "nothing pending"
//! comes mid-batch (nats-server delivers while it still stores the rest), so there the reader
//! first takes what has already arrived ([`inside_atomic_batch`]): a live projector then applies
//! a batch of commits in one transaction instead of three (measured: PostgreSQL's CPU an HTTP
//! `order/create` 45–49 → 36–37 µs, 64 connections 4.6–4.9k → 4.9–5.2k/s).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::mpsc;

/// How many messages one pull request asks for.
pub const PULL_BATCH: usize = 2000;

/// How long one pull request waits at the head of the stream before the server ends it (it then
/// answers `408 Request Timeout` and the reader asks again). A request that is neither answered
/// nor ended [`UNANSWERED_GRACE`] after this is taken as lost (nats-server restarted, the
/// connection dropped) and the consumer re-created: a following reader notices a lost server
/// within `PULL_EXPIRY + UNANSWERED_GRACE` = 1.5 s.
pub const PULL_EXPIRY: Duration = Duration::from_secs(1);

/// See [`PULL_EXPIRY`].
pub const UNANSWERED_GRACE: Duration = Duration::from_millis(500);

/// How long a reader waits for its consumer to be created before it tries again.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// Messages a reader may have read ahead of its user (batches in its channel).
const CHANNEL_BATCHES: usize = 4;

/// One message read from a stream.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Its stream sequence.
    pub stream_sequence: u64,
    /// The record's position in its stream: its stream sequence, or for a record read out of a
    /// pack ([`crate::pack`]) `stream sequence × 1,024 + its index` (the records of a pack
    /// share its stream sequence and are handed over in one batch).
    pub position: u64,
    pub subject: String,
    /// When JetStream stored it (UTC).
    pub published: DateTime<Utc>,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

/// Where a reader stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadUntil {
    /// At the stream's head as it is when the reader's consumer is created (nothing pending).
    Head,
    /// After stream sequence `n` (or at the head, if that comes first).
    Sequence(u64),
    /// Never: follow the head until the reader is dropped.
    Follow,
}

/// Why a reader stopped before its end.
#[derive(Debug, Clone, thiserror::Error)]
#[error("reading {stream}: {reason}")]
pub struct ReadError {
    /// The stream read.
    pub stream: String,
    /// What went wrong (the last of the failed attempts).
    pub reason: String,
}

/// What to read and how (see [`LogReader::spawn`]).
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The stream (`EVENTS`, a chat shard).
    pub stream: String,
    /// Subject filters (NATS wildcards). None: the whole stream. One: filtered by the server.
    /// Several: read unfiltered and kept client side (measured on nats-server 2.15 with one
    /// subject per aggregate: a consumer with several wildcard filters delivers ~4k messages/s,
    /// a single-filter or unfiltered one > 100k/s).
    pub subjects: Vec<String>,
    /// Read the messages after this stream sequence (0 = from the start).
    pub after: u64,
    /// Where to stop.
    pub until: ReadUntil,
    /// Most messages in one batch handed to the user.
    pub batch_size: usize,
    /// For a reader that ends (at the head or at a sequence): how long it keeps re-creating its
    /// consumer, with the following reader's backoff, while nothing is read (nats-server
    /// restarting, say) before it fails. `None`: it fails after three consumers in a row read
    /// nothing, without waiting (an interactive read, whose user would rather have the error).
    pub patience: Option<Duration>,
}

impl ReadOptions {
    /// Reads `stream` (all of it) after stream sequence `after` until `until`, in batches of at
    /// most 500.
    pub fn new(stream: impl Into<String>, after: u64, until: ReadUntil) -> Self {
        Self {
            stream: stream.into(),
            subjects: Vec::new(),
            after,
            until,
            batch_size: 500,
            patience: None,
        }
    }

    /// Only the messages on these subject filters.
    pub fn subjects(mut self, subjects: Vec<String>) -> Self {
        self.subjects = subjects;
        self
    }

    /// At most `n` messages per batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Outlive an outage of up to `d` (see [`ReadOptions::patience`]).
    pub fn patience(mut self, d: Duration) -> Self {
        self.patience = Some(d);
        self
    }
}

/// A reader of one stream, running in its own task (stopped when this is dropped). Batches come
/// out in stream order, each message once.
pub struct LogReader {
    rx: mpsc::Receiver<Result<Vec<LogEntry>, ReadError>>,
    task: tokio::task::JoinHandle<()>,
    status: Arc<Status>,
}

/// What a reader's task tells about itself.
#[derive(Default)]
struct Status {
    /// It has reached the head of the stream at least once (everything stored when it started
    /// has been handed over).
    caught_up: AtomicBool,
    /// Its last attempt to create a consumer or pull failed (it is retrying).
    failing: AtomicBool,
}

impl Drop for LogReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LogReader {
    /// Starts reading on `js` as `options` say.
    ///
    /// A reader that ends at the head or at a sequence fails (one [`ReadError`], then `None`)
    /// after three consumers in a row read nothing, or with [`ReadOptions::patience`] once
    /// nothing has been read for that long; a following reader never gives up. Both re-create
    /// their consumer with a backoff of 50 ms doubling to 1 s, logging each attempt, until the
    /// server answers again (a reader without patience at once).
    pub fn spawn(js: jetstream::Context, options: ReadOptions) -> Self {
        let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
        let status = Arc::new(Status::default());
        let task = tokio::spawn({
            let status = status.clone();
            async move {
                if let Err(e) = read(&js, &options, &tx, &status).await {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
        Self { rx, task, status }
    }

    /// Whether the reader has reached the head of its stream at least once: every message
    /// stored before it started has been handed over (queued for [`LogReader::next`]).
    pub fn is_caught_up(&self) -> bool {
        self.status.caught_up.load(Ordering::Relaxed)
    }

    /// Whether the reader's last attempt to read failed and it is retrying (nats-server
    /// unreachable, the stream gone): a following reader never gives up, so this is how its
    /// user learns it is not being fed.
    pub fn is_failing(&self) -> bool {
        self.status.failing.load(Ordering::Relaxed)
    }

    /// The next batch (never empty), in stream order; `None` once the reader has reached its end.
    /// Cancel-safe.
    ///
    /// # Errors
    /// [`ReadError`] when the stream cannot be read (see [`LogReader::spawn`]).
    pub async fn next(&mut self) -> Option<Result<Vec<LogEntry>, ReadError>> {
        self.rx.recv().await
    }

    /// A batch already read, if there is one (never waits).
    pub fn try_next(&mut self) -> Option<Result<Vec<LogEntry>, ReadError>> {
        self.rx.try_recv().ok()
    }

    /// Whether no batch is waiting to be taken.
    pub fn is_idle(&self) -> bool {
        self.rx.is_empty()
    }
}

/// Whether a NATS subject filter (`*` one token, `>` the rest) matches `subject`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether a stored message is inside an atomic batch and not its last: it carries
/// `Nats-Batch-Id` but not `Nats-Batch-Commit` (ADR-50; nats-server keeps both headers on the
/// stored messages). A following reader does not hand over on such a message just because the
/// consumer reports nothing pending: nats-server delivers a batch's messages while it is still
/// storing the rest, so "nothing pending" comes mid-batch; the reader first takes what has
/// already arrived (it never waits for it).
pub fn inside_atomic_batch(headers: Option<&HeaderMap>) -> bool {
    headers.is_some_and(|h| {
        h.get(async_nats::header::NATS_BATCH_ID).is_some()
            && h.get(async_nats::header::NATS_BATCH_COMMIT).is_none()
    })
}

/// The consumer the log is read with: ephemeral, unacknowledged, in memory, one replica, on
/// `filter_subjects` (none: the whole stream), delivering the messages after stream sequence
/// `after`, and removed by the server once unused for `inactive_threshold`. A reader creates one
/// per attempt; a projection's lag reading creates one for its pending count and deletes it.
pub fn log_consumer(
    filter_subjects: Vec<String>,
    after: u64,
    inactive_threshold: Duration,
) -> pull::Config {
    pull::Config {
        filter_subjects,
        deliver_policy: if after == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            }
        },
        ack_policy: AckPolicy::None,
        memory_storage: true,
        num_replicas: 1,
        inactive_threshold,
        ..Default::default()
    }
}

/// How a consumer's read ended.
enum Read {
    /// At the end the reader was asked for, or nobody listens any more.
    Done,
    /// A gap in its consumer sequence or a failed or lost pull request (why): read on from the
    /// last stream sequence with a new consumer.
    Again(String),
}

async fn read(
    js: &jetstream::Context,
    options: &ReadOptions,
    tx: &mpsc::Sender<Result<Vec<LogEntry>, ReadError>>,
    status: &Status,
) -> Result<(), ReadError> {
    let name = options.stream.as_str();
    let failed = |reason: String| ReadError {
        stream: name.to_string(),
        reason,
    };
    let until = options.until;
    if let ReadUntil::Sequence(u) = until {
        if u <= options.after {
            return Ok(());
        }
    }
    let follow = until == ReadUntil::Follow;
    // Whether it waits for the server between attempts (a following or a patient reader).
    let waits = follow || options.patience.is_some();
    let (filter_subjects, keep) = if options.subjects.len() > 1 {
        (Vec::new(), Some(options.subjects.clone()))
    } else {
        (options.subjects.clone(), None)
    };
    let keeps = |subject: &str| {
        keep.as_ref()
            .is_none_or(|k| k.iter().any(|f| subject_matches(f, subject)))
    };
    // A pack's records are kept by their own subjects (a filter that lets the pack through, on
    // the server or here, says nothing about its records).
    let keeps_record = |subject: &str| {
        options.subjects.is_empty() || options.subjects.iter().any(|f| subject_matches(f, subject))
    };
    let batch_size = options.batch_size.max(1);
    // The last stream sequence read: a re-created consumer starts after it.
    let mut last = options.after;
    let mut batch: Vec<LogEntry> = Vec::with_capacity(batch_size.min(PULL_BATCH));
    // Consumers re-created in a row without reading anything.
    let mut retries = 0u32;
    // Since when nothing has been read (for a patient reader's patience).
    let mut stalled_since = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(50);
    loop {
        let before = last;
        let attempt: Result<Read, String> = async {
            // A request sent while the connection is down waits for the JetStream timeout: wait
            // for the connection first (a following or patient reader; it is failing meanwhile),
            // then ask with a short timeout.
            if waits {
                let client = js.client();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
                while client.connection_state() != async_nats::connection::State::Connected {
                    status.failing.store(true, Ordering::Relaxed);
                    if tokio::time::Instant::now() >= deadline {
                        return Err("no connection to nats-server".to_string());
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            let stream = js
                .get_stream_no_info(name)
                .await
                .map_err(|e| format!("stream: {e}"))?;
            // The inactivity threshold is long enough for a reader whose user is slow to take
            // its batches.
            let create = stream.create_consumer(log_consumer(
                filter_subjects.clone(),
                last,
                Duration::from_secs(120),
            ));
            let consumer = tokio::time::timeout(CREATE_TIMEOUT, create)
                .await
                .map_err(|_| "creating a consumer: no answer".to_string())?
                .map_err(|e| format!("creating a consumer: {e}"))?;
            status.failing.store(false, Ordering::Relaxed);
            let consumer_name = consumer.cached_info().name.clone();
            let outcome = read_consumer(
                &consumer,
                follow,
                until,
                &mut last,
                &mut batch,
                batch_size,
                &keeps,
                &keeps_record,
                tx,
                status,
                &js.client(),
            )
            .await;
            // Best effort: an ephemeral consumer also goes away on its own once inactive.
            let _ = stream.delete_consumer(&consumer_name).await;
            Ok(outcome)
        }
        .await;
        let why = match attempt {
            Ok(Read::Done) => break,
            Ok(Read::Again(why)) => why,
            Err(why) => {
                status.failing.store(true, Ordering::Relaxed);
                why
            }
        };
        retries = if last > before { 1 } else { retries + 1 };
        if last > before {
            backoff = Duration::from_millis(50);
            stalled_since = tokio::time::Instant::now();
        }
        let out_of_patience = options
            .patience
            .is_none_or(|p| stalled_since.elapsed() >= p);
        if !follow && retries > 3 && out_of_patience {
            return Err(failed(format!(
                "{why} ({retries} consumers re-created in a row, nothing read for {:?})",
                stalled_since.elapsed()
            )));
        }
        tracing::warn!(
            stream = name,
            after_stream_sequence = last,
            why,
            retry_in = ?backoff,
            "re-creating a reader's consumer"
        );
        // Hand over what was read before waiting.
        if !batch.is_empty() && tx.send(Ok(std::mem::take(&mut batch))).await.is_err() {
            return Ok(());
        }
        if waits {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
    if !batch.is_empty() {
        let _ = tx.send(Ok(batch)).await;
    }
    Ok(())
}

/// The next message of a pull request, waiting at most [`PULL_EXPIRY`] + [`UNANSWERED_GRACE`]
/// for it (or for the request's end). The wait also ends, with a reason to re-create the
/// consumer, as soon as the connection has been lost and is back: the server restarted, and the
/// request (and an in-memory consumer) with it.
async fn wait_next(
    messages: &mut pull::Batch,
    client: &async_nats::Client,
) -> Result<Option<Result<jetstream::Message, async_nats::Error>>, String> {
    use async_nats::connection::State;
    let deadline = tokio::time::Instant::now() + PULL_EXPIRY + UNANSWERED_GRACE;
    let mut lost = false;
    loop {
        let step = (tokio::time::Instant::now() + Duration::from_millis(100)).min(deadline);
        match tokio::time::timeout_at(step, messages.next()).await {
            Ok(next) => return Ok(next),
            Err(_) if tokio::time::Instant::now() >= deadline => {
                return Err("a pull request went unanswered".into())
            }
            Err(_) => match client.connection_state() {
                State::Connected if lost => {
                    return Err("the connection was lost and is back".into())
                }
                State::Connected => {}
                _ => lost = true,
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn read_consumer(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    follow: bool,
    until: ReadUntil,
    last: &mut u64,
    batch: &mut Vec<LogEntry>,
    batch_size: usize,
    keeps: &impl Fn(&str) -> bool,
    keeps_record: &impl Fn(&str) -> bool,
    tx: &mpsc::Sender<Result<Vec<LogEntry>, ReadError>>,
    status: &Status,
    client: &async_nats::Client,
) -> Read {
    if consumer.cached_info().num_pending == 0 {
        status.caught_up.store(true, Ordering::Relaxed);
        if !follow {
            return Read::Done;
        }
    }
    // The consumer sequence of the last message this consumer delivered.
    let mut delivered = 0u64;
    loop {
        let pulled = consumer
            .batch()
            .max_messages(PULL_BATCH)
            .expires(PULL_EXPIRY)
            .messages()
            .await;
        let mut messages = match pulled {
            Ok(messages) => messages,
            Err(e) => {
                status.failing.store(true, Ordering::Relaxed);
                return Read::Again(format!("pull request: {e}"));
            }
        };
        let mut got = 0usize;
        loop {
            // Take what is already there without a timer; wait (bounded) only when nothing is.
            let next = match messages.next().now_or_never() {
                Some(next) => next,
                None => {
                    // Nothing more right now: a follower hands over what it has first.
                    if follow
                        && !batch.is_empty()
                        && tx.send(Ok(std::mem::take(batch))).await.is_err()
                    {
                        return Read::Done;
                    }
                    match wait_next(&mut messages, client).await {
                        Ok(next) => next,
                        Err(why) => {
                            status.failing.store(true, Ordering::Relaxed);
                            return Read::Again(why);
                        }
                    }
                }
            };
            let m = match next {
                // The request is done (all it asked for, or expired at the head).
                None => break,
                Some(Ok(m)) => m,
                Some(Err(e)) => return Read::Again(format!("pull response: {e}")),
            };
            got += 1;
            let info = match m.info() {
                Ok(info) => info,
                Err(e) => return Read::Again(format!("message info: {e}")),
            };
            if info.consumer_sequence != delivered + 1 {
                return Read::Again(format!(
                    "consumer sequence {} after {delivered}",
                    info.consumer_sequence
                ));
            }
            delivered = info.consumer_sequence;
            let pending = info.pending;
            let stream_sequence = info.stream_sequence;
            if let ReadUntil::Sequence(u) = until {
                if stream_sequence > u {
                    return Read::Done;
                }
            }
            let published = DateTime::from_timestamp(
                info.published.unix_timestamp(),
                info.published.nanosecond(),
            )
            .unwrap_or_default();
            *last = stream_sequence;
            let message = m.message;
            let before = batch.len();
            if !keeps(message.subject.as_str()) {
                // Not on the reader's subjects.
            } else if crate::pack::is_pack(message.headers.as_ref()) {
                // A pack is handed over as its records, all in one batch.
                crate::pack::push_records(
                    batch,
                    (stream_sequence, message.subject.as_str()),
                    published,
                    message.headers,
                    message.payload,
                    keeps_record,
                );
            } else {
                batch.push(LogEntry {
                    stream_sequence,
                    position: stream_sequence,
                    subject: message.subject.to_string(),
                    published,
                    headers: message.headers,
                    payload: message.payload,
                });
            }
            if batch.len() > before {
                // A follower hands over at the head, unless mid-way through an atomic batch
                // (the headers are looked at only there, not on every message of a catch-up).
                let at_head = follow
                    && pending == 0
                    && !batch
                        .last()
                        .is_some_and(|e| inside_atomic_batch(e.headers.as_ref()));
                if (batch.len() >= batch_size || at_head)
                    && tx.send(Ok(std::mem::take(batch))).await.is_err()
                {
                    return Read::Done;
                }
            }
            if pending == 0 {
                status.caught_up.store(true, Ordering::Relaxed);
            }
            if !follow {
                let at_end = match until {
                    ReadUntil::Sequence(u) => *last >= u,
                    _ => false,
                };
                if pending == 0 || at_end {
                    return Read::Done;
                }
            }
        }
        // Messages are pending, so a request that brings none (its consumer gone without a
        // word, say) is not waited out again and again. A follower at the head gets nothing
        // when nothing was stored during the request: that is normal.
        if got == 0 && !follow {
            return Read::Again("a pull request brought nothing".into());
        }
        if got == 0 {
            // A request that expired with nothing for it: nothing was pending.
            status.caught_up.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_batch_message_before_its_commit_is_inside_an_atomic_batch() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, *v);
            }
            h
        };
        let first = headers(&[("Nats-Batch-Id", "b-1"), ("Nats-Batch-Sequence", "1")]);
        let last = headers(&[
            ("Nats-Batch-Id", "b-1"),
            ("Nats-Batch-Sequence", "2"),
            ("Nats-Batch-Commit", "1"),
        ]);
        let plain = headers(&[("Nats-Msg-Id", "c-1")]);
        assert!(inside_atomic_batch(Some(&first)));
        assert!(!inside_atomic_batch(Some(&last)));
        assert!(!inside_atomic_batch(Some(&plain)));
        assert!(!inside_atomic_batch(None));
    }
}
