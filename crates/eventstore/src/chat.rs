//! The records of the `CHAT` stream (`chat.<session_id>`): chat messages as the gateway stores
//! them. A record's stream sequence is the message's id and its position for resuming.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::group::{
    batch_first_sequence, publish_atomic_batch, request, CommitError, GroupCommitSettings,
    ERR_BATCH_DUPLICATE_MSG_ID,
};

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
    /// An administrator redacted messages of a session (issue 4): read models blank their text;
    /// the messages, the redaction and who did it stay in the log.
    Redaction(Redaction),
    /// The recipient read a message (issue 5). Stored once per message and reader.
    MessageRead(ReadReceipt),
    /// The sender revoked (withdrew) one of their messages (issue 5). Stored once per message.
    MessageRevoked(Revocation),
}

impl ChatRecord {
    /// The record's kind as in its `Mychat-Record` header: `message`, `redaction`,
    /// `message_read`, `message_revoked`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::MessageRead(_) => "message_read",
            Self::MessageRevoked(_) => "message_revoked",
            Self::Redaction(_) => "redaction",
        }
    }

    /// The session the record belongs to.
    pub fn session_id(&self) -> i64 {
        match self {
            Self::Message(m) => m.session_id,
            Self::MessageRead(r) => r.session_id,
            Self::MessageRevoked(r) => r.session_id,
            Self::Redaction(r) => r.session_id,
        }
    }
}

/// A read receipt: `read_by` has read message `message_seq` (the message's `CHAT` stream
/// sequence) of session `session_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReceipt {
    pub session_id: i64,
    /// The read message's stream sequence in `CHAT`.
    pub message_seq: u64,
    /// The reader's users-table id (never the message's sender).
    pub read_by: i64,
    pub read_at: DateTime<Utc>,
}

/// A revocation: the sender withdrew message `message_seq` of session `session_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub session_id: i64,
    /// The revoked message's stream sequence in `CHAT`.
    pub message_seq: u64,
    /// The message's sender (only the sender may revoke).
    pub revoked_by: i64,
    pub revoked_at: DateTime<Utc>,
}

/// Messages redacted by an administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redaction {
    pub session_id: i64,
    /// The redacted messages' ids (`CHAT` stream sequences); empty = every message of the
    /// session up to this record.
    pub message_ids: Vec<i64>,
    /// The administrator (administrators-table id).
    pub admin_id: i64,
    pub reason: String,
    pub redacted_at: DateTime<Utc>,
}

/// Appends a [`Redaction`] to `CHAT` on `chat.<session_id>` and returns its stream sequence once
/// stored.
///
/// # Errors
/// When JetStream does not acknowledge the record.
pub async fn append_redaction(
    js: &async_nats::jetstream::Context,
    redaction: &Redaction,
) -> Result<u64, AppendError> {
    let body = serde_json::to_vec(&ChatRecord::Redaction(redaction.clone()))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Mychat-Record", "redaction");
    let ack = js
        .publish_with_headers(chat_subject(redaction.session_id), headers, body.into())
        .await?
        .await?;
    Ok(ack.sequence)
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

/// Why a chat record was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("publishing to CHAT: {0}")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
    /// The chat group committer got no answer (timeout, connection): the record may be stored; a
    /// retry with the same dedup id is safe.
    #[error("group commit to CHAT: {0}")]
    Commit(#[from] crate::group::CommitError),
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's stream sequence in `CHAT` (the message id).
    pub seq: u64,
    /// True when the client message id was already stored (a resend): `seq` is the first copy's.
    pub duplicate: bool,
}

/// The `Nats-Msg-Id` of a message: the client's message id scoped to the session and the sender
/// (JetStream deduplicates across the whole stream, and clients pick their ids independently).
pub fn message_dedup_id(message: &ChatMessage) -> String {
    format!(
        "{}:{}:{}",
        message.session_id, message.sender_id, message.client_msg_id
    )
}

/// Appends a message to `CHAT` on `chat.<session_id>` with `Nats-Msg-Id` =
/// [`message_dedup_id`], and returns once it is durably stored. The caller checks that the sender is a participant
/// of an active session first.
///
/// # Errors
/// When JetStream does not acknowledge the message.
pub async fn append_message(
    js: &async_nats::jetstream::Context,
    message: &ChatMessage,
) -> Result<Appended, AppendError> {
    let body = serde_json::to_vec(&ChatRecord::Message(message.clone()))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        message_dedup_id(message).as_str(),
    );
    headers.insert("Mychat-Record", "message");
    let started = std::time::Instant::now();
    let ack = async {
        js.publish_with_headers(chat_subject(message.session_id), headers, body.into())
            .await?
            .await
    }
    .await;
    metrics::histogram!(
        crate::METRIC_PUBLISH_SECONDS,
        "stream" => "CHAT",
        "outcome" => if ack.is_ok() { "acked" } else { "error" }
    )
    .record(started.elapsed().as_secs_f64());
    let ack = ack?;
    Ok(Appended {
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// Appends any record to `CHAT` on `chat.<session_id>` with `Nats-Msg-Id` = `dedup_id`, and returns
/// once it is durably stored (a repeat of `dedup_id` within the duplicate window returns the first
/// copy's sequence with `duplicate: true`).
///
/// # Errors
/// When JetStream does not acknowledge the record.
pub async fn append_record(
    js: &async_nats::jetstream::Context,
    record: &ChatRecord,
    dedup_id: &str,
) -> Result<Appended, AppendError> {
    let body = serde_json::to_vec(record)?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, dedup_id);
    headers.insert("Mychat-Record", record.kind());
    let ack = js
        .publish_with_headers(chat_subject(record.session_id()), headers, body.into())
        .await?
        .await?;
    Ok(Appended {
        seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// The `Nats-Msg-Id` of a read receipt: one per message and reader.
pub fn read_dedup_id(r: &ReadReceipt) -> String {
    format!("read:{}:{}:{}", r.session_id, r.message_seq, r.read_by)
}

/// The `Nats-Msg-Id` of a revocation: one per message.
pub fn revoke_dedup_id(r: &Revocation) -> String {
    format!("revoke:{}:{}", r.session_id, r.message_seq)
}

// ---- group commit of chat records (issue 5) ---------------------------------------------------

/// Counters of what a [`ChatCommitter`] did (benchmarks, logs).
#[derive(Debug, Default)]
pub struct ChatCommitStats {
    /// Plain publishes (a small group, a likely resend, or the fallback after a failed batch).
    pub single_writes: AtomicU64,
    /// Atomic batches sent.
    pub batches: AtomicU64,
    /// Records sent inside atomic batches.
    pub batched_records: AtomicU64,
    /// Batches refused (a `Nats-Msg-Id` already stored): their records were sent again as plain
    /// publishes.
    pub failed_batches: AtomicU64,
    /// Appends answered from another append of the same dedup id in flight (no write of their own).
    pub coalesced: AtomicU64,
    /// Writes (a batch, or a group of concurrent plain publishes) that completed.
    pub writes: AtomicU64,
    /// Their summed round trips (send → last ack), microseconds.
    pub write_micros: AtomicU64,
}

impl ChatCommitStats {
    /// `(single_writes, batches, batched_records, failed_batches, coalesced)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.single_writes.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
            self.batched_records.load(Ordering::Relaxed),
            self.failed_batches.load(Ordering::Relaxed),
            self.coalesced.load(Ordering::Relaxed),
        )
    }

    /// The mean round trip of a write (a batch or a group of plain publishes), milliseconds.
    pub fn mean_write_ms(&self) -> f64 {
        let n = self.writes.load(Ordering::Relaxed).max(1);
        self.write_micros.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0
    }
}

type ChatReply = oneshot::Sender<Result<Appended, CommitError>>;

struct ChatJob {
    subject: String,
    kind: &'static str,
    body: Bytes,
    dedup_id: String,
    /// Sent as a plain publish (a dedup id this committer wrote recently: probably a resend, which
    /// would make an atomic batch fail for everyone in it).
    single: bool,
    reply: ChatReply,
}

/// Group commit of `CHAT` records (issue 5): many sockets' messages, read receipts and
/// revocations are written as one atomic batch (stream `allow_atomic_publish`, one fsync for the
/// batch under `sync_interval: always`), each acknowledged with its own stream sequence only once
/// the batch is stored.
///
/// Duplicates (`Nats-Msg-Id` = the record's dedup id) keep their plain-publish meaning, a resend
/// is stored once and answered with the first copy's sequence and `duplicate: true`, although
/// nats-server 2.15.1 refuses a *whole* atomic batch (`err_code` 10201, not saying which message)
/// when one of its ids is already stored or appears twice in it (observed,
/// `cargo run -p eventstore --example batch_probe`, cases C2, D, G):
///
/// - two appends of one dedup id that meet in the committer (queued or in flight) are written
///   once: the later one gets the earlier one's sequence with `duplicate: true`;
/// - an append whose dedup id this committer stored recently (LRU of
///   [`GroupCommitSettings::known_subjects`] ids) goes out as a plain publish, where JetStream
///   answers the duplicate itself;
/// - a batch refused anyway (the resend of a record written through another node or before a
///   restart) is sent again record by record as plain publishes; each gets its own answer.
///
/// Grouping follows [`crate::GroupCommitter`]: with nothing in flight an append goes out at once;
/// while [`GroupCommitSettings::max_in_flight`] writes are in flight appends queue, and each free
/// slot takes up to [`GroupCommitSettings::max_batch`] of them; groups smaller than
/// [`GroupCommitSettings::min_batch`] go out as concurrent plain publishes. There is no
/// expected-sequence check on `CHAT`, so one session's records may share a batch (they keep
/// their arrival order). Cheap to clone; the task stops with the last clone.
#[derive(Clone)]
pub struct ChatCommitter {
    tx: mpsc::Sender<ChatJob>,
    stats: Arc<ChatCommitStats>,
}

impl std::fmt::Debug for ChatCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCommitter").finish_non_exhaustive()
    }
}

impl ChatCommitter {
    /// Starts the committer task on the current tokio runtime, publishing on `client` (the
    /// `CHAT` stream must allow atomic publishes: [`crate::ensure_streams`]).
    pub fn start(client: Client, settings: GroupCommitSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let stats = Arc::new(ChatCommitStats::default());
        let worker = ChatWorker {
            client,
            recent: lru::LruCache::new(
                NonZeroUsize::new(settings.known_subjects.max(1)).expect("max(1)"),
            ),
            settings,
            stats: stats.clone(),
            next_batch: 0,
            batch_prefix: format!("chat-{}", uuid::Uuid::now_v7().simple()),
        };
        tokio::spawn(worker.run(rx));
        Self { tx, stats }
    }

    /// What the committer did so far.
    pub fn stats(&self) -> &ChatCommitStats {
        &self.stats
    }

    /// Appends a message (dedup id [`message_dedup_id`]) and returns once it is durably stored.
    ///
    /// # Errors
    /// [`AppendError`] when it cannot be encoded or JetStream did not answer (it may be stored;
    /// retrying with the same client message id is safe).
    pub async fn append_message(&self, message: &ChatMessage) -> Result<Appended, AppendError> {
        let record = ChatRecord::Message(message.clone());
        self.append_record(&record, &message_dedup_id(message))
            .await
    }

    /// Appends any record with `Nats-Msg-Id` = `dedup_id` and returns once it is durably stored
    /// (a repeat of `dedup_id` within the stream's duplicate window: the first copy's sequence,
    /// `duplicate: true`).
    ///
    /// # Errors
    /// As [`ChatCommitter::append_message`].
    pub async fn append_record(
        &self,
        record: &ChatRecord,
        dedup_id: &str,
    ) -> Result<Appended, AppendError> {
        let body = serde_json::to_vec(record)?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(ChatJob {
                subject: chat_subject(record.session_id()),
                kind: record.kind(),
                body: body.into(),
                dedup_id: dedup_id.to_string(),
                single: false,
                reply,
            })
            .await
            .map_err(|_| CommitError("the chat committer stopped".into()))?;
        Ok(rx
            .await
            .map_err(|_| CommitError("the chat committer dropped the append".into()))??)
    }
}

struct ChatWorker {
    client: Client,
    /// Dedup ids this committer stored lately.
    recent: lru::LruCache<String, ()>,
    settings: GroupCommitSettings,
    stats: Arc<ChatCommitStats>,
    next_batch: u64,
    batch_prefix: String,
}

type ChatSettled = Vec<(String, ChatReply, Result<Appended, CommitError>)>;
type ChatWrite = std::pin::Pin<Box<dyn std::future::Future<Output = ChatSettled> + Send>>;

impl ChatWorker {
    async fn run(mut self, mut rx: mpsc::Receiver<ChatJob>) {
        let mut queue: VecDeque<ChatJob> = VecDeque::new();
        let mut in_flight: FuturesUnordered<ChatWrite> = FuturesUnordered::new();
        // Dedup ids queued or in flight → the later appends of the same id, waiting for it.
        let mut followers: HashMap<String, Vec<ChatReply>> = HashMap::new();
        let mut open = true;
        loop {
            if !open && queue.is_empty() && in_flight.is_empty() {
                return;
            }
            tokio::select! {
                job = rx.recv(), if open => match job {
                    Some(job) => {
                        self.accept(job, &mut queue, &mut followers);
                        while let Ok(job) = rx.try_recv() {
                            self.accept(job, &mut queue, &mut followers);
                        }
                    }
                    None => open = false,
                },
                Some(settled) = in_flight.next(), if !in_flight.is_empty() => {
                    for (id, reply, outcome) in settled {
                        if let Ok(a) = &outcome {
                            self.recent.put(id.clone(), ());
                            for f in followers.remove(&id).unwrap_or_default() {
                                let _ = f.send(Ok(Appended { seq: a.seq, duplicate: true }));
                            }
                        } else {
                            for f in followers.remove(&id).unwrap_or_default() {
                                let _ = f.send(outcome.clone());
                            }
                        }
                        let _ = reply.send(outcome);
                    }
                    while let Ok(job) = rx.try_recv() {
                        self.accept(job, &mut queue, &mut followers);
                    }
                }
            }
            if !self.settings.linger.is_zero()
                && !in_flight.is_empty()
                && in_flight.len() < self.settings.max_in_flight
                && !queue.is_empty()
                && queue.len() < self.settings.max_batch
                && open
            {
                let deadline = tokio::time::Instant::now() + self.settings.linger;
                while queue.len() < self.settings.max_batch {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(job)) => self.accept(job, &mut queue, &mut followers),
                        Ok(None) => {
                            open = false;
                            break;
                        }
                        Err(_) => break,
                    }
                }
            }
            while in_flight.len() < self.settings.max_in_flight.max(1) && !queue.is_empty() {
                let n = queue.len().min(self.settings.max_batch.max(1));
                let group: Vec<ChatJob> = queue.drain(..n).collect();
                in_flight.push(self.write(group));
            }
        }
    }

    fn accept(
        &mut self,
        mut job: ChatJob,
        queue: &mut VecDeque<ChatJob>,
        followers: &mut HashMap<String, Vec<ChatReply>>,
    ) {
        if let Some(waiting) = followers.get_mut(&job.dedup_id) {
            // The same id is already queued or in flight: answer this one from it.
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
            waiting.push(job.reply);
            return;
        }
        followers.insert(job.dedup_id.clone(), Vec::new());
        job.single = self.recent.contains(&job.dedup_id);
        queue.push_back(job);
    }

    fn write(&mut self, group: Vec<ChatJob>) -> ChatWrite {
        let stats = self.stats.clone();
        let started = std::time::Instant::now();
        let write = self.write_group(group);
        Box::pin(async move {
            let settled = write.await;
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats
                .write_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            settled
        })
    }

    fn write_group(&mut self, group: Vec<ChatJob>) -> ChatWrite {
        let client = self.client.clone();
        let stats = self.stats.clone();
        let timeout = self.settings.ack_timeout;
        let (singles, batched): (Vec<ChatJob>, Vec<ChatJob>) =
            group.into_iter().partition(|j| j.single);
        if batched.len() < self.settings.min_batch.max(2) {
            let all: Vec<ChatJob> = singles.into_iter().chain(batched).collect();
            stats
                .single_writes
                .fetch_add(all.len() as u64, Ordering::Relaxed);
            return Box::pin(async move { chat_singles(&client, all, timeout).await });
        }
        self.next_batch += 1;
        let batch_id = format!("{}-{}", self.batch_prefix, self.next_batch);
        stats
            .single_writes
            .fetch_add(singles.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats
            .batched_records
            .fetch_add(batched.len() as u64, Ordering::Relaxed);
        Box::pin(async move {
            let (mut a, b) = futures::future::join(
                chat_singles(&client, singles, timeout),
                chat_batch(&client, &stats, batched, batch_id, timeout),
            )
            .await;
            a.extend(b);
            a
        })
    }
}

fn chat_headers(job: &ChatJob) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, job.dedup_id.as_str());
    headers.insert("Mychat-Record", job.kind);
    headers
}

async fn chat_single(
    client: &Client,
    job: &ChatJob,
    timeout: Duration,
) -> Result<Appended, CommitError> {
    let ack = request(
        client,
        &job.subject,
        chat_headers(job),
        job.body.clone(),
        timeout,
    )
    .await?;
    match ack.error {
        None => Ok(Appended {
            seq: ack.seq,
            duplicate: ack.duplicate,
        }),
        Some(e) => Err(CommitError(format!(
            "JetStream error {}: {}",
            e.err_code, e.description
        ))),
    }
}

async fn chat_singles(client: &Client, jobs: Vec<ChatJob>, timeout: Duration) -> ChatSettled {
    let outcomes =
        futures::future::join_all(jobs.iter().map(|j| chat_single(client, j, timeout))).await;
    jobs.into_iter()
        .zip(outcomes)
        .map(|(j, o)| (j.dedup_id, j.reply, o))
        .collect()
}

async fn chat_batch(
    client: &Client,
    stats: &ChatCommitStats,
    jobs: Vec<ChatJob>,
    batch_id: String,
    timeout: Duration,
) -> ChatSettled {
    let n = jobs.len();
    if n == 0 {
        return Vec::new();
    }
    let fail = |jobs: Vec<ChatJob>, e: CommitError| -> ChatSettled {
        jobs.into_iter()
            .map(|j| (j.dedup_id, j.reply, Err(e.clone())))
            .collect()
    };
    let messages = jobs
        .iter()
        .map(|job| (job.subject.clone(), chat_headers(job), job.body.clone()))
        .collect();
    let ack = match publish_atomic_batch(client, messages, &batch_id, timeout).await {
        Ok(ack) => ack,
        Err(e) => return fail(jobs, e),
    };
    match ack.error {
        None => {
            let first = match batch_first_sequence(&ack, n) {
                Ok(first) => first,
                Err(e) => return fail(jobs, e),
            };
            jobs.into_iter()
                .enumerate()
                .map(|(i, j)| {
                    (
                        j.dedup_id,
                        j.reply,
                        Ok(Appended {
                            seq: first + i as u64,
                            duplicate: false,
                        }),
                    )
                })
                .collect()
        }
        Some(e) => {
            // 10201: one of the ids is already stored (which one is not reported). Nothing of the
            // batch was stored: send each record on its own, where JetStream answers a duplicate
            // with the first copy's sequence. Any other refusal gets the same treatment.
            stats.failed_batches.fetch_add(1, Ordering::Relaxed);
            if e.err_code != ERR_BATCH_DUPLICATE_MSG_ID {
                tracing::warn!(err_code = e.err_code, description = %e.description, "chat batch refused; writing its records one by one");
            }
            stats.single_writes.fetch_add(n as u64, Ordering::Relaxed);
            chat_singles(client, jobs, timeout).await
        }
    }
}
