//! [`Packer`]: the one writer of a packed stream in a process (see the module documentation of
//! [`crate::pack`]).
//!
//! One pack in flight per stream: while it is being written (one fsync), the records that
//! arrive queue, and the next pack takes all of them (up to [`PackSettings::max_records`] and
//! [`PackSettings::max_bytes`]). A lone record goes out at once, alone. Measured on the
//! project's 2-core machine (`chat_commit_probe`, docs/benchmarks.md): one pack in flight beat
//! two at every rate and shard count tried.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};

use super::{encode, is_pack, position, push_records, PackAppend, HDR_PACK, HDR_PACK_ID};
use crate::group::wire::{request, ERR_WRONG_LAST_SEQUENCE};
use crate::group::CommitError;
use crate::reader::{LogEntry, LogReader, ReadOptions, ReadUntil};

/// How a [`Packer`] packs and deduplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackSettings {
    /// Most records in one pack (at most [`super::PACK_SPAN`]).
    pub max_records: usize,
    /// A pack stops growing once its records' bodies reach this many bytes (nats-server's
    /// `max_payload` is 1 MiB in the project's `nats.conf`; a single larger record is refused).
    pub max_bytes: usize,
    /// A record whose dedup id was stored in the stream this recently is answered as a
    /// duplicate. JetStream's `duplicate_window` plays this part for one-record streams; the
    /// chat streams' is 10 minutes. Every known id is held in memory (~100 bytes).
    pub dedup_window: Duration,
    /// How long a pack waits for its ack before its outcome counts as unknown (it is then
    /// learned from the stream before the next pack).
    pub ack_timeout: Duration,
    /// Records waiting for a pack; appends wait for room beyond.
    pub queue: usize,
}

impl Default for PackSettings {
    fn default() -> Self {
        Self {
            max_records: 256,
            max_bytes: 512 * 1024,
            dedup_window: Duration::from_secs(600),
            ack_timeout: Duration::from_secs(5),
            queue: 65_536,
        }
    }
}

/// Where an appended record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackOutcome {
    /// Stored, durably, at this position.
    Stored {
        /// The record's position ([`super::position`]).
        position: u64,
    },
    /// Its dedup id was already stored within the window, at this position; nothing was written.
    Duplicate {
        /// The first copy's position.
        position: u64,
        /// The stream sequence of the message holding the first copy (its pack's, or, for a
        /// record written one per message before the stream was packed, its own).
        stream_sequence: u64,
    },
}

impl PackOutcome {
    /// The position of the record (or of its first copy).
    pub fn position(&self) -> u64 {
        match *self {
            Self::Stored { position } | Self::Duplicate { position, .. } => position,
        }
    }

    /// The stream sequence of the message holding the record (or its first copy).
    pub fn stream_sequence(&self) -> u64 {
        match *self {
            Self::Stored { position } => super::split_position(position).0,
            Self::Duplicate {
                stream_sequence, ..
            } => stream_sequence,
        }
    }
}

/// Counters of what a [`Packer`] did.
#[derive(Debug, Default)]
pub struct PackStats {
    /// Packs stored.
    pub packs: AtomicU64,
    /// Records stored in them.
    pub records: AtomicU64,
    /// Records answered as duplicates.
    pub duplicates: AtomicU64,
    /// Packs refused because the stream had moved (another writer): read up and sent again.
    pub fenced: AtomicU64,
    /// Reads of the stream after the writer's last known sequence (start, fences, lost acks).
    pub catch_ups: AtomicU64,
    /// Summed round trips of the stored packs (publish → ack), microseconds.
    pub write_micros: AtomicU64,
}

impl PackStats {
    /// `(packs, records, duplicates, fenced, catch_ups)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (
            get(&self.packs),
            get(&self.records),
            get(&self.duplicates),
            get(&self.fenced),
            get(&self.catch_ups),
        )
    }
}

type Reply = oneshot::Sender<Result<PackOutcome, CommitError>>;

struct Job {
    append: PackAppend,
    reply: Reply,
}

/// The writer of one packed stream in this process. Cheap to clone; its task stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Packer {
    tx: mpsc::Sender<Job>,
    stats: Arc<PackStats>,
    max_bytes: usize,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer").finish_non_exhaustive()
    }
}

impl Packer {
    /// Starts the writer of stream `stream`, publishing its packs on `subject` (one of the
    /// stream's subjects). It reads the stream's last [`PackSettings::dedup_window`] before its
    /// first pack.
    pub fn start(
        js: jetstream::Context,
        stream: impl Into<String>,
        subject: impl Into<String>,
        settings: PackSettings,
    ) -> Self {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let stats = Arc::new(PackStats::default());
        let max_bytes = settings.max_bytes;
        let writer = Writer {
            client: js.client(),
            js,
            stream: stream.into(),
            subject: subject.into(),
            settings,
            stats: stats.clone(),
            id: uuid::Uuid::new_v4().simple().to_string(),
            packs_sent: 0,
            last: 0,
            behind: true,
            loaded: false,
            head_hint: None,
            index: DedupIndex::default(),
        };
        tokio::spawn(writer.run(rx));
        Self {
            tx,
            stats,
            max_bytes,
        }
    }

    /// Appends one record and returns once it is durably stored (or known to be, under its
    /// dedup id).
    ///
    /// # Errors
    /// [`CommitError`] when the record is refused before anything is written (its body is not
    /// one JSON value, or larger than [`PackSettings::max_bytes`]), when the stream refused the
    /// pack (nothing of it stored), or when the outcome could not be learned (nats-server
    /// unreachable): the record may be stored, and a retry with the same dedup id is safe.
    pub async fn append(&self, append: PackAppend) -> Result<PackOutcome, CommitError> {
        if append.body.len() > self.max_bytes {
            return Err(CommitError(format!(
                "record {}: {} bytes (at most {})",
                append.dedup_id,
                append.body.len(),
                self.max_bytes
            )));
        }
        let json = std::str::from_utf8(&append.body)
            .map_err(|e| CommitError(format!("record {}: not UTF-8: {e}", append.dedup_id)))?;
        serde_json::from_str::<&RawValue>(json)
            .map_err(|e| CommitError(format!("record {}: not JSON: {e}", append.dedup_id)))?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { append, reply })
            .await
            .map_err(|_| CommitError("the packer has stopped".into()))?;
        answer
            .await
            .map_err(|_| CommitError("the packer has stopped".into()))?
    }

    /// Its counters.
    pub fn stats(&self) -> Arc<PackStats> {
        self.stats.clone()
    }
}

/// The dedup ids stored in the stream within the window: id → the first copy's position and
/// stream sequence, and the order they expire in.
#[derive(Default)]
struct DedupIndex {
    ids: HashMap<Arc<str>, (u64, u64)>,
    order: VecDeque<(DateTime<Utc>, Arc<str>)>,
}

impl DedupIndex {
    fn get(&self, id: &str) -> Option<(u64, u64)> {
        self.ids.get(id).copied()
    }

    /// Records `id` at `position`, in the message at `stream_sequence` stored at `at` (the first
    /// copy wins).
    fn insert(&mut self, id: &str, (position, stream_sequence): (u64, u64), at: DateTime<Utc>) {
        if self.ids.contains_key(id) {
            return;
        }
        let id: Arc<str> = Arc::from(id);
        self.ids.insert(id.clone(), (position, stream_sequence));
        self.order.push_back((at, id));
    }

    /// Forgets the ids stored before `cutoff`.
    fn expire(&mut self, cutoff: DateTime<Utc>) {
        while let Some((at, _)) = self.order.front() {
            if *at >= cutoff {
                break;
            }
            if let Some((_, id)) = self.order.pop_front() {
                self.ids.remove(&id);
            }
        }
    }
}

struct Writer {
    js: jetstream::Context,
    client: async_nats::Client,
    stream: String,
    subject: String,
    settings: PackSettings,
    stats: Arc<PackStats>,
    /// This writer's id in its packs' [`HDR_PACK_ID`].
    id: String,
    packs_sent: u64,
    /// The stream's last sequence as this writer knows it: every record stored up to it is in
    /// `index` (within the window).
    last: u64,
    /// Whether the stream must be read after `last` before the next pack (at start, after a
    /// lost ack).
    behind: bool,
    /// Whether the window has been read (at start).
    loaded: bool,
    /// The stream's last sequence as a refused pack's error gave it: a few messages behind are
    /// read by direct gets rather than a consumer.
    head_hint: Option<u64>,
    index: DedupIndex,
}

/// Packs of one group whose ack is lost before its records are answered with an error (the
/// outcome unknown; a retry with the same dedup ids is safe).
const ATTEMPTS: usize = 4;

/// Up to this many messages behind (another writer's packs), a writer reads them by direct gets.
const DIRECT_GETS: u64 = 64;

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        // Read the window before the first record arrives (tried again before the first pack if
        // the stream cannot be read now).
        if let Err(e) = self.catch_up(&[]).await {
            tracing::warn!(stream = self.stream, error = %e, "a packer could not read its stream yet");
        }
        let mut carry: Option<Job> = None;
        loop {
            let first = match carry.take() {
                Some(job) => job,
                None => match rx.recv().await {
                    Some(job) => job,
                    None => return,
                },
            };
            let mut bytes = first.append.body.len();
            let mut jobs = vec![first];
            while jobs.len()
                < self
                    .settings
                    .max_records
                    .clamp(1, super::PACK_SPAN as usize)
            {
                let Ok(job) = rx.try_recv() else { break };
                if bytes + job.append.body.len() > self.settings.max_bytes {
                    carry = Some(job);
                    break;
                }
                bytes += job.append.body.len();
                jobs.push(job);
            }
            self.write(jobs).await;
        }
    }

    /// Writes one group of records (as one pack, or fewer records once duplicates are answered),
    /// and answers each.
    async fn write(&mut self, mut jobs: Vec<Job>) {
        // This group's packs whose ack was lost (their ids), and those of them found stored.
        let mut sent: Vec<String> = Vec::new();
        let mut ours: HashSet<u64> = HashSet::new();
        // The dedup ids of this group already answered as stored (a repeat of one, after a
        // lost ack, is a duplicate).
        let mut answered: HashSet<String> = HashSet::new();
        // Packs refused because another writer stored first are sent again for as long as an ack
        // may take (each refusal means the stream moved: nothing is stuck); lost acks count.
        let deadline = Instant::now() + self.settings.ack_timeout;
        let mut lost = 0;
        loop {
            if self.behind {
                match self.catch_up(&sent).await {
                    Ok(found) => ours.extend(found),
                    Err(e) => return fail(jobs, &e),
                }
            }
            // Answer what the stream already holds; of several appends of one id, the first
            // goes in the pack and the others follow it.
            let mut pack: Vec<Job> = Vec::with_capacity(jobs.len());
            let mut followers: Vec<(usize, Job)> = Vec::new();
            let mut in_pack: HashMap<String, usize> = HashMap::new();
            for job in jobs.drain(..) {
                if let Some((position, stream_sequence)) = self.index.get(&job.append.dedup_id) {
                    // In a pack of this group whose ack was lost: stored by this append.
                    let outcome = if ours.contains(&stream_sequence)
                        && answered.insert(job.append.dedup_id.clone())
                    {
                        self.stats.records.fetch_add(1, Ordering::Relaxed);
                        PackOutcome::Stored { position }
                    } else {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        PackOutcome::Duplicate {
                            position,
                            stream_sequence,
                        }
                    };
                    let _ = job.reply.send(Ok(outcome));
                } else if let Some(&i) = in_pack.get(&job.append.dedup_id) {
                    followers.push((i, job));
                } else {
                    in_pack.insert(job.append.dedup_id.clone(), pack.len());
                    pack.push(job);
                }
            }
            if pack.is_empty() {
                return;
            }
            let appends: Vec<&PackAppend> = pack.iter().map(|j| &j.append).collect();
            let body = match encode(&appends) {
                Ok(body) => body,
                Err(e) => {
                    return fail(
                        pack.into_iter().chain(followers.into_iter().map(|f| f.1)),
                        &e,
                    )
                }
            };
            self.packs_sent += 1;
            let pack_id = format!("{}-{}", self.id, self.packs_sent);
            let expected = self.last;
            let mut headers = HeaderMap::new();
            headers.insert(HDR_PACK, pack.len().to_string().as_str());
            headers.insert(HDR_PACK_ID, pack_id.as_str());
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                expected.to_string().as_str(),
            );
            let started = Instant::now();
            let ack = request(
                &self.client,
                &self.stream,
                &self.subject,
                headers,
                body.into(),
                self.settings.ack_timeout,
            )
            .await;
            let stored_at = match ack.map(|ack| (ack.error, ack.seq)) {
                Ok((None, seq)) => {
                    self.stats
                        .write_micros
                        .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if seq != expected + 1 {
                        // Not what the fence allows; read the stream before the next pack.
                        tracing::warn!(
                            stream = self.stream,
                            expected,
                            seq,
                            "a pack stored at an unexpected sequence"
                        );
                        self.behind = true;
                    } else {
                        self.last = seq;
                    }
                    seq
                }
                Ok((Some(e), _)) => {
                    if e.err_code == ERR_WRONG_LAST_SEQUENCE {
                        // Another writer moved the stream: read what it wrote, then again.
                        self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                        self.behind = true;
                        // nats-server: "wrong last sequence: <the stream's last>".
                        self.head_hint = e
                            .description
                            .rsplit(' ')
                            .next()
                            .and_then(|n| n.parse().ok());
                        jobs = requeue(pack, followers);
                        if Instant::now() >= deadline {
                            let why = format!("the stream kept moving ({})", e.description);
                            return fail(jobs, &CommitError(why));
                        }
                        continue;
                    }
                    let e =
                        CommitError(format!("JetStream error {}: {}", e.err_code, e.description));
                    return fail(
                        pack.into_iter().chain(followers.into_iter().map(|f| f.1)),
                        &e,
                    );
                }
                Err(e) => {
                    // The pack may be stored, now or later: its id says, once the stream is read
                    // (before the next attempt, or by the next group if this was the last).
                    self.behind = true;
                    sent.push(pack_id);
                    jobs = requeue(pack, followers);
                    lost += 1;
                    if lost >= ATTEMPTS {
                        return fail(jobs, &e);
                    }
                    continue;
                }
            };
            let now = Utc::now();
            self.stats.packs.fetch_add(1, Ordering::Relaxed);
            self.stats
                .records
                .fetch_add(pack.len() as u64, Ordering::Relaxed);
            let positions: Vec<u64> = (0..pack.len()).map(|i| position(stored_at, i)).collect();
            for (job, &p) in pack.iter().zip(&positions) {
                self.index.insert(&job.append.dedup_id, (p, stored_at), now);
            }
            for (job, &p) in pack.into_iter().zip(&positions) {
                let _ = job.reply.send(Ok(PackOutcome::Stored { position: p }));
            }
            for (i, job) in followers {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                let _ = job.reply.send(Ok(PackOutcome::Duplicate {
                    position: positions[i],
                    stream_sequence: stored_at,
                }));
            }
            self.index.expire(now - window(&self.settings));
            return;
        }
    }

    /// Reads the stream after `last` (at start: from the window's start) to its head, indexing
    /// every record, and returns the sequences of the packs named in `own` that it read.
    async fn catch_up(&mut self, own: &[String]) -> Result<Vec<u64>, CommitError> {
        self.stats.catch_ups.fetch_add(1, Ordering::Relaxed);
        let after = if self.loaded {
            self.last
        } else {
            self.window_start().await?
        };
        let mut own_seqs = Vec::new();
        let mut last = after;
        let hint = self.head_hint.take().filter(|&n| self.loaded && n > after);
        let near = match hint {
            Some(head) if head - after <= DIRECT_GETS => self
                .direct_gets(after, head)
                .await
                .ok()
                .map(|entries| (head, entries)),
            _ => None,
        };
        if let Some((head, entries)) = near {
            for e in &entries {
                self.index_entry(e, own, &mut own_seqs);
            }
            // Every message up to the head was read (one without records included).
            last = head;
        } else {
            let mut reader = LogReader::spawn(
                self.js.clone(),
                ReadOptions::new(self.stream.clone(), after, ReadUntil::Head),
            );
            while let Some(batch) = reader.next().await {
                let batch = batch.map_err(|e| CommitError(e.to_string()))?;
                for e in &batch {
                    last = e.stream_sequence;
                    self.index_entry(e, own, &mut own_seqs);
                }
            }
        }
        self.last = self.last.max(last);
        self.loaded = true;
        self.behind = false;
        self.index.expire(Utc::now() - window(&self.settings));
        Ok(own_seqs)
    }

    /// Indexes a record read from the stream (one of a pack's, or a one-record message's) by its
    /// dedup id, and notes its stream sequence in `own_seqs` when it is in one of the packs
    /// named in `own`.
    fn index_entry(&mut self, e: &LogEntry, own: &[String], own_seqs: &mut Vec<u64>) {
        let Some(headers) = e.headers.as_ref() else {
            return;
        };
        if let Some(id) = headers.get(HDR_PACK_ID) {
            if own.iter().any(|o| o == id.as_str()) && own_seqs.last() != Some(&e.stream_sequence) {
                own_seqs.push(e.stream_sequence);
            }
        }
        if let Some(id) = headers.get(async_nats::header::NATS_MESSAGE_ID) {
            self.index
                .insert(id.as_str(), (e.position, e.stream_sequence), e.published);
        }
    }

    /// The records after stream sequence `after` up to `head`, by concurrent direct gets, in
    /// order (as a reader hands them over).
    async fn direct_gets(&self, after: u64, head: u64) -> Result<Vec<LogEntry>, CommitError> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| CommitError(e.to_string()))?;
        let gets = (after + 1..=head).map(|seq| {
            let stream = &stream;
            async move {
                stream
                    .direct_get(seq)
                    .await
                    .map_err(|e| CommitError(format!("direct get {seq}: {e}")))
            }
        });
        let mut entries = Vec::new();
        for m in futures::future::try_join_all(gets).await? {
            let t = m.time;
            let published =
                DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default();
            if is_pack(Some(&m.headers)) {
                push_records(
                    &mut entries,
                    (m.sequence, m.subject.as_str()),
                    published,
                    Some(m.headers),
                    m.payload,
                    &|_| true,
                );
            } else {
                entries.push(LogEntry {
                    stream_sequence: m.sequence,
                    position: m.sequence,
                    subject: m.subject.to_string(),
                    published,
                    headers: Some(m.headers),
                    payload: m.payload,
                });
            }
        }
        Ok(entries)
    }

    /// The stream sequence just before the first message stored within the window: asked of an
    /// ephemeral consumer delivering by start time, whose delivered stream sequence before it
    /// delivers anything is the one before its first.
    async fn window_start(&self) -> Result<u64, CommitError> {
        let err = |e: &dyn std::fmt::Display| CommitError(format!("{}: {e}", self.stream));
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| err(&e))?;
        let since = Utc::now() - window(&self.settings);
        let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(
            since.timestamp_nanos_opt().unwrap_or(0),
        ))
        .map_err(|e| err(&e))?;
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                ack_policy: AckPolicy::None,
                memory_storage: true,
                num_replicas: 1,
                inactive_threshold: Duration::from_secs(10),
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        let info = consumer.cached_info();
        let before = info.delivered.stream_sequence;
        let name = info.name.clone();
        let _ = stream.delete_consumer(&name).await;
        Ok(before)
    }
}

fn window(settings: &PackSettings) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(settings.dedup_window).unwrap_or(chrono::TimeDelta::MAX)
}

/// The records of a pack not written, in their order, for another attempt.
fn requeue(pack: Vec<Job>, followers: Vec<(usize, Job)>) -> Vec<Job> {
    pack.into_iter()
        .chain(followers.into_iter().map(|(_, j)| j))
        .collect()
}

fn fail(jobs: impl IntoIterator<Item = Job>, e: &CommitError) {
    for job in jobs {
        let _ = job.reply.send(Err(e.clone()));
    }
}
