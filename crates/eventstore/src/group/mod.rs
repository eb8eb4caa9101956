//! [`GroupCommitter`]: the one write path of a stream. Commands' commits on `EVENTS` and every
//! chat record on the chat shards go through a committer of their stream (one task per stream
//! and process); each append carries a dedup id (`Nats-Msg-Id`) and, for an aggregate's commit,
//! the subject's expected last sequence.
//!
//! With `sync_interval: always` every JetStream write is fsynced before its ack, so one publish
//! per append is bounded by the disk (DESIGN §3: ~2.2k/s sequential, ~4.4k/s pipelined on the
//! project's machines), while an *atomic batch* (ADR-50, stream `allow_atomic_publish`) is stored
//! with one fsync for all its messages. What a committer does with what it is given, per
//! [`GroupCommitSettings`] (the stream's strategy: batches, plain publishes, or both):
//!
//! - **No added latency when alone.** When nothing is in flight an append goes out at once, as a
//!   plain publish (a batch of one costs an extra round trip on the server). Groups smaller than
//!   [`GroupCommitSettings::min_batch`] also go out as concurrent plain publishes (a
//!   `min_batch` above `max_batch` never batches).
//! - **Gathering.** While up to [`GroupCommitSettings::max_in_flight`] writes are in flight, new
//!   appends queue; each free slot takes everything queued (up to
//!   [`GroupCommitSettings::max_batch`] messages) as one atomic batch. If
//!   [`GroupCommitSettings::linger`] is non-zero, a busy committer waits up to that long for a
//!   batch to fill. Each message keeps its own `Nats-Msg-Id` and, when it has one,
//!   `Nats-Expected-Last-Subject-Sequence`.
//! - **Never two appends that could fail each other in flight at once:** at most one append per
//!   dedup id, and one per subject among those with an expected sequence; a later one waits for
//!   the earlier to settle. The committer also remembers the last stream sequence it stored per
//!   subject (bounded LRU), so a commit whose expected sequence is already known to be stale is
//!   answered without a round trip, and the dedup ids it stored lately: a resend of one goes out
//!   as a plain publish, where JetStream answers the duplicate itself (in an atomic batch it would
//!   make the whole batch fail).
//! - **A failed check fails nobody else.** nats-server 2.15 rejects the *whole* batch when one
//!   message's check fails and reports it on the commit message's reply without saying which
//!   message (observed: `err_code` 10071 "wrong last sequence: N", 10164 for a stale subject
//!   repeated inside the batch, 10201 "atomic publish batch contains duplicate message id" when a
//!   `Nats-Msg-Id` is already stored). On a sequence error the committer reads each subject's last
//!   sequence with a direct get, answers the stale commits, and sends the others again; on a
//!   duplicate-id error (or when it cannot tell) it sends the batch's appends one by one as plain
//!   publishes, where JetStream answers each individually.
//! - **Outcomes.** Each append gets [`CommitOutcome::Stored`] (its own stream sequence: an atomic
//!   batch is stored at consecutive sequences ending at the ack's `seq`),
//!   [`CommitOutcome::Duplicate`] (the dedup id is already in the stream, at that sequence) or
//!   [`CommitOutcome::Conflict`] (the subject moved, and not because of this command).

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::header::{
    NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
};
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};

use crate::envelope::HDR_COMMAND_ID;

/// JetStream error code: `Nats-Expected-Last-Subject-Sequence` did not match.
pub const ERR_WRONG_LAST_SEQUENCE: u64 = 10071;
/// JetStream error code seen for a stale expected sequence on a subject repeated inside a batch.
pub const ERR_BATCH_WRONG_LAST_SEQUENCE: u64 = 10164;
/// JetStream error code: a message of the atomic batch carries an already stored `Nats-Msg-Id`.
pub const ERR_BATCH_DUPLICATE_MSG_ID: u64 = 10201;

/// How commits are grouped. Defaults: batches of 8 to 256 commits, 1 write in flight, no
/// linger, a queue of 65 536 commits, the last sequence of 65 536 subjects remembered.
///
/// One write in flight, measured (`mychat bench commands`, 2-core machine, nats-server 2.15.1,
/// `sync_interval: always`): nats-server stages each atomic batch of an R1 file stream in a
/// file store of its own (created, fsynced and deleted per batch), serially in the stream's loop,
/// so a second batch in flight only waits there, and splits the queue into smaller batches that
/// each pay that fixed cost: HTTP `order/create` at 64 clients 4.0–4.4k/s with 1 in flight,
/// 3.0–3.7k/s with 2, 4.0k/s with 4; the store at 64 committers 10.4k/s with 1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct GroupCommitSettings {
    /// Most commits in one atomic batch (nats-server allows up to 1000 messages).
    pub max_batch: usize,
    /// Fewest commits worth an atomic batch: a smaller group goes out as concurrent plain
    /// publishes (measured on the project's machine: an atomic batch costs a fixed ~10-20 ms
    /// round trip on nats-server 2.15.1 under load, a plain publish ~0.5-0.7 ms).
    pub min_batch: usize,
    /// Most writes (batches or single publishes) awaiting their ack at once.
    pub max_in_flight: usize,
    /// How long a busy committer (writes in flight, or its last write an atomic batch) waits
    /// for a batch to fill before sending it (0 = never waits; an idle committer never waits).
    #[serde(with = "micros")]
    pub linger: Duration,
    /// Commits that may wait for the committer before `commit` itself waits (back-pressure).
    pub queue: usize,
    /// Subjects whose last stored sequence the committer remembers (LRU).
    pub known_subjects: usize,
    /// How long a write may wait for its ack.
    #[serde(with = "micros")]
    pub ack_timeout: Duration,
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        Self {
            max_batch: 256,
            min_batch: 8,
            max_in_flight: 1,
            linger: Duration::ZERO,
            queue: 65_536,
            known_subjects: 65_536,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

/// One append, ready to publish: a command's commit, or a chat record.
#[derive(Debug, Clone)]
pub struct PendingCommit {
    /// `ev.<aggregate_type>.<aggregate_id>`, `chat.<shard>.<session_id>`.
    pub subject: String,
    /// The message's headers, `Nats-Msg-Id` included, without the batch headers and without
    /// `Nats-Expected-Last-Subject-Sequence` (the committer adds them).
    pub headers: HeaderMap,
    /// The encoded [`crate::Commit`] or chat record.
    pub body: Bytes,
    /// The dedup id (the command id; already in `headers` as `Nats-Msg-Id`).
    pub command_id: String,
    /// For an aggregate's commit: the stream sequence of the subject's last message when the
    /// aggregate was loaded (0 = the subject must be empty). `None`: no check (chat records).
    pub expected_last_sequence: Option<u64>,
}

/// What happened to one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored, durable, at this stream sequence.
    Stored {
        /// The commit's stream sequence.
        sequence: u64,
    },
    /// This command id was already stored, at this stream sequence; nothing new was written.
    Duplicate {
        /// The stream sequence of the first commit with this command id.
        sequence: u64,
    },
    /// The subject moved past the expected sequence (not by this command): nothing was written.
    Conflict,
}

/// The committer could not tell what happened (JetStream unreachable, timeout): the commit may or
/// may not be stored; retrying with the same command id is safe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("commit: {0}")]
pub struct CommitError(pub String);

/// Counters of what the committer did (for benchmarks and logs).
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    /// Plain publishes (a lone commit, or a fallback).
    pub single_writes: AtomicU64,
    /// Atomic batches sent.
    pub batches: AtomicU64,
    /// Commits sent inside atomic batches.
    pub batched_commits: AtomicU64,
    /// Batches rejected by a failed check (their other commits were sent again).
    pub failed_batches: AtomicU64,
    /// Commits answered as stale from the committer's own knowledge, without a round trip.
    pub known_stale: AtomicU64,
    /// Writes (an atomic batch, or one plain publish) that completed.
    pub writes: AtomicU64,
    /// Their summed round trips (send → ack), microseconds.
    pub write_micros: AtomicU64,
}

impl GroupCommitStats {
    /// The mean round trip of a write (a batch or a group of plain publishes), milliseconds.
    pub fn mean_write_ms(&self) -> f64 {
        let n = self.writes.load(Ordering::Relaxed).max(1);
        self.write_micros.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
    }

    /// `(single_writes, batches, batched_commits, failed_batches, known_stale)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.single_writes.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
            self.batched_commits.load(Ordering::Relaxed),
            self.failed_batches.load(Ordering::Relaxed),
            self.known_stale.load(Ordering::Relaxed),
        )
    }
}

struct Job {
    commit: PendingCommit,
    reply: oneshot::Sender<Result<CommitOutcome, CommitError>>,
    /// Batches this commit was part of that failed (at 2, it goes out as a plain publish).
    failures: u32,
}

/// The group committer of one process (or one [`crate::CommandBus`]). Cheap to clone; the task
/// stops when the last clone is dropped.
#[derive(Clone)]
pub struct GroupCommitter {
    tx: mpsc::Sender<Job>,
    stats: Arc<GroupCommitStats>,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter").finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct AckJson {
    #[serde(default)]
    pub(crate) error: Option<ApiErrorJson>,
    #[serde(default)]
    pub(crate) seq: u64,
    #[serde(default)]
    pub(crate) duplicate: bool,
    #[serde(default)]
    pub(crate) count: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ApiErrorJson {
    #[serde(default)]
    pub(crate) err_code: u64,
    #[serde(default)]
    pub(crate) description: String,
}

/// Publishes `messages` (subject, headers, body; at least one) as one atomic batch
/// `batch_id` (ADR-50: `Nats-Batch-Id`, `Nats-Batch-Sequence` from 1, `Nats-Batch-Commit: 1` on
/// the last, the only one JetStream acks) and returns the commit's ack. Shared by the command
/// path ([`GroupCommitter`]) and the chat path ([`crate::chat::ChatCommitter`]).
///
/// # Errors
/// When a message cannot be sent or the commit is not acknowledged in `timeout`; a refused batch
/// is an `Ok` ack whose `error` says why (nothing of it was stored).
pub(crate) async fn publish_atomic_batch(
    client: &Client,
    stream_name: &str,
    messages: Vec<(String, HeaderMap, Bytes)>,
    batch_id: &str,
    timeout: Duration,
) -> Result<AckJson, CommitError> {
    let n = messages.len();
    for (i, (subject, mut headers, body)) in messages.into_iter().enumerate() {
        headers.insert(NATS_BATCH_ID, batch_id);
        headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        if i + 1 < n {
            client
                .publish_with_headers(subject, headers, body)
                .await
                .map_err(|e| CommitError(e.to_string()))?;
        } else {
            headers.insert(NATS_BATCH_COMMIT, "1");
            return request(client, stream_name, &subject, headers, body, timeout).await;
        }
    }
    Err(CommitError(
        "an atomic batch needs at least one message".into(),
    ))
}

/// The stream sequence of the first of `n` messages an accepted atomic batch stored (they are
/// stored at consecutive sequences ending at the ack's).
///
/// # Errors
/// When the ack does not cover exactly `n` messages.
pub(crate) fn batch_first_sequence(ack: &AckJson, n: usize) -> Result<u64, CommitError> {
    let count = ack.count.unwrap_or(n as u64);
    if count != n as u64 || ack.seq < n as u64 {
        return Err(CommitError(format!(
            "batch ack for {count} of {n} messages"
        )));
    }
    Ok(ack.seq + 1 - n as u64)
}

enum WriteResult {
    /// Each job settled (or to be re-queued).
    Done {
        settled: Vec<(Job, Result<CommitOutcome, CommitError>)>,
        retry: Vec<Job>,
    },
}

impl GroupCommitter {
    /// Starts the committer task of stream `stream_name` (`stream`, its handle) on the current
    /// tokio runtime, publishing on `client`.
    pub fn start(
        client: Client,
        stream: Stream<()>,
        stream_name: &str,
        settings: GroupCommitSettings,
    ) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let stats = Arc::new(GroupCommitStats::default());
        let remembered = NonZeroUsize::new(settings.known_subjects.max(1)).expect("max(1)");
        let worker = Worker {
            client,
            stream,
            stream_name: Arc::from(stream_name),
            known: lru::LruCache::new(remembered),
            recent: lru::LruCache::new(remembered),
            settings,
            stats: stats.clone(),
            next_batch: 0,
            batch_prefix: uuid::Uuid::now_v7().simple().to_string(),
        };
        tokio::spawn(worker.run(rx));
        Self { tx, stats }
    }

    /// What the committer did so far.
    pub fn stats(&self) -> &GroupCommitStats {
        &self.stats
    }

    /// A shared handle on [`GroupCommitter::stats`].
    pub fn stats_handle(&self) -> Arc<GroupCommitStats> {
        self.stats.clone()
    }

    /// Appends `commit` with the others in flight and returns its outcome once it is durable (or
    /// refused).
    ///
    /// # Errors
    /// [`CommitError`] when JetStream did not answer; the commit may be stored.
    #[tracing::instrument(level = "debug", name = "group_commit", skip_all)]
    pub async fn commit(&self, commit: PendingCommit) -> Result<CommitOutcome, CommitError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                commit,
                reply,
                failures: 0,
            })
            .await
            .map_err(|_| CommitError("the group committer stopped".into()))?;
        rx.await
            .map_err(|_| CommitError("the group committer dropped the commit".into()))?
    }
}

struct Worker {
    client: Client,
    stream: Stream<()>,
    /// The stream's name (metrics).
    stream_name: Arc<str>,
    /// Per subject, the last stream sequence this committer stored there.
    known: lru::LruCache<String, u64>,
    /// Dedup ids this committer stored lately.
    recent: lru::LruCache<String, ()>,
    settings: GroupCommitSettings,
    stats: Arc<GroupCommitStats>,
    next_batch: u64,
    batch_prefix: String,
}

/// One write's future: what it settled, and whether it was the last of its slot.
type WriteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = (WriteResult, bool)> + Send>>;

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut queue: VecDeque<Job> = VecDeque::new();
        let mut in_flight: FuturesUnordered<WriteFuture> = FuturesUnordered::new();
        // Writes in flight, counted as the settings count them: a batch, or a group of plain
        // publishes (whose members settle one by one, each on its own ack).
        let mut slots = 0usize;
        // The last write was an atomic batch: appends are arriving faster than one at a time.
        let mut busy = false;
        // Subjects and command ids of the writes in flight.
        let mut busy_subjects: HashSet<String> = HashSet::new();
        let mut busy_ids: HashSet<String> = HashSet::new();
        let mut open = true;
        loop {
            if !open && queue.is_empty() && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                job = rx.recv(), if open => match job {
                    Some(job) => {
                        queue.push_back(job);
                        while queue.len() < self.settings.max_batch * self.settings.max_in_flight.max(1) {
                            match rx.try_recv() {
                                Ok(job) => queue.push_back(job),
                                Err(_) => break,
                            }
                        }
                    }
                    None => open = false,
                },
                Some((result, releases)) = in_flight.next(), if !in_flight.is_empty() => {
                    if releases {
                        slots -= 1;
                    }
                    let WriteResult::Done { settled, retry } = result;
                    for (job, outcome) in settled {
                        busy_subjects.remove(&job.commit.subject);
                        busy_ids.remove(&job.commit.command_id);
                        match &outcome {
                            Ok(CommitOutcome::Stored { sequence }) => {
                                self.learn(&job.commit.subject, *sequence);
                                self.recent.put(job.commit.command_id.clone(), ());
                            }
                            Ok(CommitOutcome::Duplicate { .. }) => {
                                self.known.pop(&job.commit.subject);
                                self.recent.put(job.commit.command_id.clone(), ());
                            }
                            Ok(_) | Err(_) => {
                                self.known.pop(&job.commit.subject);
                            }
                        }
                        let _ = job.reply.send(outcome);
                    }
                    for job in retry.into_iter().rev() {
                        busy_subjects.remove(&job.commit.subject);
                        busy_ids.remove(&job.commit.command_id);
                        queue.push_front(job);
                    }
                    // Pick up whatever arrived meanwhile.
                    while let Ok(job) = rx.try_recv() {
                        queue.push_back(job);
                    }
                }
            }
            // Linger: a busy committer (writes in flight, or its last write was a batch) with a
            // small batch waits a little for more. An idle one never waits.
            if !self.settings.linger.is_zero()
                && (slots > 0 || busy)
                && slots < self.settings.max_in_flight
                && !queue.is_empty()
                && queue.len() < self.settings.max_batch
                && open
            {
                let deadline = tokio::time::Instant::now() + self.settings.linger;
                while queue.len() < self.settings.max_batch {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(job)) => queue.push_back(job),
                        Ok(None) => {
                            open = false;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            while slots < self.settings.max_in_flight.max(1) && !queue.is_empty() {
                let mut batch = Vec::new();
                let mut batch_subjects = HashSet::new();
                let mut batch_ids = HashSet::new();
                let mut deferred = VecDeque::new();
                while let Some(job) = queue.pop_front() {
                    if batch.len() >= self.settings.max_batch.max(1) {
                        queue.push_front(job);
                        break;
                    }
                    let subject = &job.commit.subject;
                    let checked = job.commit.expected_last_sequence.is_some();
                    if (checked
                        && (busy_subjects.contains(subject) || batch_subjects.contains(subject)))
                        || busy_ids.contains(&job.commit.command_id)
                        || batch_ids.contains(&job.commit.command_id)
                    {
                        deferred.push_back(job);
                        continue;
                    }
                    let expected = job.commit.expected_last_sequence;
                    if let (Some(expected), Some(&last)) = (expected, self.known.peek(subject)) {
                        if expected < last {
                            // Known stale: resolve (conflict or duplicate) off the loop.
                            self.stats.known_stale.fetch_add(1, Ordering::Relaxed);
                            let stream = self.stream.clone();
                            tokio::spawn(async move {
                                let outcome = resolve_stale(&stream, &job.commit).await;
                                let _ = job.reply.send(outcome);
                            });
                            continue;
                        }
                    }
                    if checked {
                        batch_subjects.insert(subject.clone());
                    }
                    batch_ids.insert(job.commit.command_id.clone());
                    batch.push(job);
                }
                // Deferred commits keep their place at the front.
                for job in deferred.into_iter().rev() {
                    queue.push_front(job);
                }
                if batch.is_empty() {
                    break;
                }
                for job in &batch {
                    if job.commit.expected_last_sequence.is_some() {
                        busy_subjects.insert(job.commit.subject.clone());
                    }
                    busy_ids.insert(job.commit.command_id.clone());
                }
                slots += 1;
                busy = batch.len() >= self.settings.min_batch.max(2);
                in_flight.extend(self.write(batch));
            }
        }
    }

    fn learn(&mut self, subject: &str, sequence: u64) {
        match self.known.get_mut(subject) {
            Some(s) => *s = (*s).max(sequence),
            None => {
                self.known.put(subject.to_string(), sequence);
            }
        }
    }

    /// The futures of one write (one slot): the batch, and each plain publish on its own, so that
    /// a plain publish settles on its own ack; the slot is released by the last of them.
    fn write(&mut self, group: Vec<Job>) -> Vec<WriteFuture> {
        let client = self.client.clone();
        let stream = self.stream.clone();
        let name = self.stream_name.clone();
        let timeout = self.settings.ack_timeout;
        // A resend of a dedup id stored lately, or an append whose batches failed twice, goes
        // out on its own.
        let recent = &self.recent;
        let (mut singles, mut batched): (Vec<Job>, Vec<Job>) = group
            .into_iter()
            .partition(|j| j.failures >= 2 || recent.contains(&j.commit.command_id));
        if batched.len() < self.settings.min_batch.max(2) {
            singles.append(&mut batched);
        }
        let stats = &self.stats;
        stats
            .single_writes
            .fetch_add(singles.len() as u64, Ordering::Relaxed);
        let members = singles.len() + usize::from(!batched.is_empty());
        let left = Arc::new(std::sync::atomic::AtomicUsize::new(members));
        let mut writes: Vec<WriteFuture> = Vec::with_capacity(members);
        let finish = |stats: Arc<GroupCommitStats>,
                      left: Arc<std::sync::atomic::AtomicUsize>,
                      started: std::time::Instant,
                      result: WriteResult| {
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats
                .write_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            (result, left.fetch_sub(1, Ordering::AcqRel) == 1)
        };
        for job in singles {
            let (client, stream, name, stats, left) = (
                client.clone(),
                stream.clone(),
                name.clone(),
                stats.clone(),
                left.clone(),
            );
            writes.push(Box::pin(async move {
                let started = std::time::Instant::now();
                let result = write_singles(client, stream, name, vec![job], timeout).await;
                finish(stats, left, started, result)
            }));
        }
        if !batched.is_empty() {
            self.next_batch += 1;
            let batch_id = format!("{}-{}", self.batch_prefix, self.next_batch);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats
                .batched_commits
                .fetch_add(batched.len() as u64, Ordering::Relaxed);
            let stats = stats.clone();
            writes.push(Box::pin(async move {
                let started = std::time::Instant::now();
                let result = write_batch(
                    client,
                    stream,
                    name,
                    stats.clone(),
                    batched,
                    batch_id,
                    timeout,
                )
                .await;
                finish(stats, left, started, result)
            }));
        }
        writes
    }
}

fn headers_for(commit: &PendingCommit) -> HeaderMap {
    let mut headers = commit.headers.clone();
    if let Some(expected) = commit.expected_last_sequence {
        headers.insert(
            NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            expected.to_string().as_str(),
        );
    }
    headers
}

pub(crate) async fn request(
    client: &Client,
    stream_name: &str,
    subject: &str,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<AckJson, CommitError> {
    let started = std::time::Instant::now();
    let reply = tokio::time::timeout(
        timeout,
        client.request_with_headers(subject.to_string(), headers, body),
    )
    .await;
    // JetStream publish latency (publish → ack, or → failure), seconds.
    let outcome = match &reply {
        Ok(Ok(_)) => "acked",
        Ok(Err(_)) => "error",
        Err(_) => "timeout",
    };
    metrics::histogram!(
        crate::METRIC_PUBLISH_SECONDS,
        "stream" => stream_name.to_string(),
        "outcome" => outcome
    )
    .record(started.elapsed().as_secs_f64());
    let reply = reply
        .map_err(|_| CommitError("timed out waiting for the JetStream ack".into()))?
        .map_err(|e| CommitError(e.to_string()))?;
    if reply.payload.is_empty() {
        return Err(CommitError(format!(
            "no JetStream ack for {subject} (status {:?})",
            reply.status
        )));
    }
    serde_json::from_slice(&reply.payload)
        .map_err(|e| CommitError(format!("undecodable JetStream ack: {e}")))
}

/// One plain publish (no group commit) to stream `stream_name`: the outcome of a single append.
///
/// # Errors
/// [`CommitError`] when JetStream did not answer or answered an unexpected error.
pub async fn write_single(
    client: &Client,
    stream: &Stream<()>,
    stream_name: &str,
    commit: &PendingCommit,
    timeout: Duration,
) -> Result<CommitOutcome, CommitError> {
    let ack = request(
        client,
        stream_name,
        &commit.subject,
        headers_for(commit),
        commit.body.clone(),
        timeout,
    )
    .await?;
    match ack.error {
        None if ack.duplicate => Ok(CommitOutcome::Duplicate { sequence: ack.seq }),
        None => Ok(CommitOutcome::Stored { sequence: ack.seq }),
        Some(e)
            if e.err_code == ERR_WRONG_LAST_SEQUENCE && commit.expected_last_sequence.is_some() =>
        {
            resolve_stale(stream, commit).await
        }
        Some(e) => Err(CommitError(format!(
            "JetStream error {}: {}",
            e.err_code, e.description
        ))),
    }
}

async fn write_singles(
    client: Client,
    stream: Stream<()>,
    stream_name: Arc<str>,
    batch: Vec<Job>,
    timeout: Duration,
) -> WriteResult {
    let outcomes = futures::future::join_all(
        batch
            .iter()
            .map(|job| write_single(&client, &stream, &stream_name, &job.commit, timeout)),
    )
    .await;
    WriteResult::Done {
        settled: batch.into_iter().zip(outcomes).collect(),
        retry: Vec::new(),
    }
}

async fn write_batch(
    client: Client,
    stream: Stream<()>,
    stream_name: Arc<str>,
    stats: Arc<GroupCommitStats>,
    mut batch: Vec<Job>,
    batch_id: String,
    timeout: Duration,
) -> WriteResult {
    let n = batch.len();
    if n == 0 {
        return WriteResult::Done {
            settled: Vec::new(),
            retry: Vec::new(),
        };
    }
    let messages = batch
        .iter()
        .map(|job| {
            (
                job.commit.subject.clone(),
                headers_for(&job.commit),
                job.commit.body.clone(),
            )
        })
        .collect();
    let ack = match publish_atomic_batch(&client, &stream_name, messages, &batch_id, timeout).await
    {
        Ok(ack) => ack,
        Err(e) => return fail_all(batch, e),
    };
    match ack.error {
        None => {
            let first = match batch_first_sequence(&ack, n) {
                Ok(first) => first,
                Err(e) => return fail_all(batch, e),
            };
            WriteResult::Done {
                settled: batch
                    .into_iter()
                    .enumerate()
                    .map(|(i, job)| {
                        (
                            job,
                            Ok(CommitOutcome::Stored {
                                sequence: first + i as u64,
                            }),
                        )
                    })
                    .collect(),
                retry: Vec::new(),
            }
        }
        Some(e)
            if e.err_code == ERR_WRONG_LAST_SEQUENCE
                || e.err_code == ERR_BATCH_WRONG_LAST_SEQUENCE =>
        {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            // Which one? Read each subject's last sequence (direct gets, concurrently).
            let lasts = futures::future::join_all(
                batch
                    .iter()
                    .map(|job| last_sequence(&stream, &job.commit.subject)),
            )
            .await;
            let mut settled = Vec::new();
            let mut retry = Vec::new();
            let mut stale = Vec::new();
            for (mut job, last) in batch.drain(..).zip(lasts) {
                match (last, job.commit.expected_last_sequence) {
                    (_, None) => {
                        job.failures += 1;
                        retry.push(job);
                    }
                    (Ok(last), Some(expected)) if last != expected => stale.push(job),
                    (Ok(_), Some(_)) => {
                        job.failures += 1;
                        retry.push(job);
                    }
                    (Err(e), Some(_)) => settled.push((job, Err(e))),
                }
            }
            if stale.is_empty() {
                // Could not tell which: the next attempt sends them one by one.
                for job in &mut retry {
                    job.failures = job.failures.max(2);
                }
            }
            let outcomes = futures::future::join_all(
                stale.iter().map(|job| resolve_stale(&stream, &job.commit)),
            )
            .await;
            settled.extend(stale.into_iter().zip(outcomes));
            WriteResult::Done { settled, retry }
        }
        Some(e) if e.err_code == ERR_BATCH_DUPLICATE_MSG_ID => {
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            // Which command id is already stored is not reported: send them one by one, where
            // JetStream answers a duplicate with its first sequence.
            for job in &mut batch {
                job.failures = job.failures.max(2);
            }
            WriteResult::Done {
                settled: Vec::new(),
                retry: batch,
            }
        }
        Some(e) => {
            // Any other refusal: nothing of the batch was stored; each append goes out on its own
            // and gets JetStream's own answer.
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                stream = %stream_name,
                err_code = e.err_code,
                description = %e.description,
                "atomic batch refused; writing its messages one by one"
            );
            for job in &mut batch {
                job.failures = job.failures.max(2);
            }
            WriteResult::Done {
                settled: Vec::new(),
                retry: batch,
            }
        }
    }
}

fn fail_all(batch: Vec<Job>, e: CommitError) -> WriteResult {
    WriteResult::Done {
        settled: batch.into_iter().map(|j| (j, Err(e.clone()))).collect(),
        retry: Vec::new(),
    }
}

/// The stream sequence of `subject`'s last message (0 = none), by direct get.
async fn last_sequence(stream: &Stream<()>, subject: &str) -> Result<u64, CommitError> {
    match stream.direct_get_last_for_subject(subject).await {
        Ok(m) => Ok(m.sequence),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(0),
        Err(e) => Err(CommitError(e.to_string())),
    }
}

/// A commit whose expected sequence is stale: a duplicate if a later message on its subject
/// carries its command id (nats-server 2.15 checks the expected sequence before the duplicate
/// window, so a retried commit whose first attempt landed arrives here), else a conflict.
async fn resolve_stale(
    stream: &Stream<()>,
    commit: &PendingCommit,
) -> Result<CommitOutcome, CommitError> {
    let mut from = commit.expected_last_sequence.unwrap_or(0) + 1;
    loop {
        match stream
            .direct_get_next_for_subject(commit.subject.as_str(), Some(from))
            .await
        {
            Ok(message) => {
                let id = message
                    .headers
                    .get(HDR_COMMAND_ID)
                    .map(|v| v.as_str().to_string());
                if id.as_deref() == Some(commit.command_id.as_str()) {
                    return Ok(CommitOutcome::Duplicate {
                        sequence: message.sequence,
                    });
                }
                from = message.sequence + 1;
            }
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => {
                return Ok(CommitOutcome::Conflict)
            }
            Err(e) => return Err(CommitError(e.to_string())),
        }
    }
}
