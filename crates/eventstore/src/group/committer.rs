//! The [`GroupCommitter`] handle and its task (the worker): the queue of appends, the writes in
//! flight, lingering for a batch to fill, the deferral of appends that could fail each other, and
//! the per-subject last sequences and recent dedup ids the committer remembers.

use std::collections::{HashSet, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_nats::jetstream::stream::Stream;
use async_nats::Client;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};

use super::commit::{
    CommitError, CommitOutcome, GroupCommitSettings, GroupCommitStats, PendingCommit,
};
use super::wire::resolve_stale;
use super::write::{write_batch, write_singles, Job, WriteResult};

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
                queued: std::time::Instant::now(),
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
    /// Per subject of a checked append, the last stream sequence this committer stored there.
    known: lru::LruCache<String, u64>,
    /// Dedup ids this committer stored lately.
    recent: lru::LruCache<String, ()>,
    settings: GroupCommitSettings,
    stats: Arc<GroupCommitStats>,
    next_batch: u64,
    batch_prefix: String,
}

/// What one write's future settled, and what kind of write it was.
struct Written {
    result: WriteResult,
    /// It was the last write of its slot.
    releases_slot: bool,
    /// It was an atomic batch (its appends settled together), not a plain publish.
    atomic_batch: bool,
}

/// One write's future.
type WriteFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Written> + Send>>;

/// Times the committer sends without lingering after a linger that waited in vain (it ended
/// with the queue holding less than half of what it waited for). Measured (`wrk`, HTTP
/// `order/create` at 64 connections against `mychat up`, 2-core machine): HTTP clients come back
/// ~3 ms after their batch settles (the read-your-writes wait, the answer, the next request), so
/// every linger ran its whole millisecond (tokio's timer counts whole milliseconds) and gathered
/// a few stragglers: 4.6–4.8k orders/s with a 1 ms linger every time, 4.8–5.1k with this
/// back-off, 5.0–5.1k with none. A closed loop in the process (the store's benchmark stage) comes
/// back within the linger and keeps lingering.
const LINGER_BACKOFF_WRITES: u32 = 16;

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
        // How many appends the queue can expect before the next write: when an atomic batch
        // settles, those it held plus those it answered (under a closed loop, a client sends its
        // next command when its last is acknowledged, so each answered append is about to come
        // back). Plain publishes settle one by one, and a client answered by one may already be
        // back in the queue when the next settles, so they set no expectation.
        let mut expected = 0usize;
        // When the last write in flight settled (the start of a turnaround).
        let mut idle_since: Option<std::time::Instant> = None;
        // Lingers still to skip after one that waited in vain.
        let mut linger_skips = 0u32;
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
                Some(written) = in_flight.next(), if !in_flight.is_empty() => {
                    if written.releases_slot {
                        slots -= 1;
                    }
                    let WriteResult::Done { settled, retry } = written.result;
                    if written.atomic_batch {
                        expected = expected.max(queue.len() + retry.len() + settled.len());
                    }
                    for (job, outcome) in settled {
                        busy_subjects.remove(&job.commit.subject);
                        busy_ids.remove(&job.commit.command_id);
                        match &outcome {
                            Ok(CommitOutcome::Stored { sequence }) => {
                                // Only checked appends (an aggregate's commits) are ever
                                // compared with a subject's last sequence; chat records are not.
                                if job.commit.expected_last_sequence.is_some() {
                                    self.learn(&job.commit.subject, *sequence);
                                }
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
                    if in_flight.is_empty() {
                        idle_since = Some(std::time::Instant::now());
                    }
                }
            }
            // Linger: a busy committer (writes in flight, or its last write was a batch) with a
            // free slot waits a little for the appends its last batch answered to come back, so
            // that a closed loop's next round goes out as one batch instead of two halves each
            // paying the batch's fixed cost: until the queue holds `expected` (at most
            // `max_batch`), or `linger` passed, or nothing arrived for a quarter of it (the
            // answered are not coming back at once: an open loop). An idle committer never
            // waits. After a linger that ended with the queue under half of what it waited for
            // (clients that return later than the linger: HTTP clients, answered only once the
            // read model shows their write), the next [`LINGER_BACKOFF_WRITES`] writes that
            // would linger go without.
            if !self.settings.linger.is_zero()
                && (slots > 0 || busy)
                && slots < self.settings.max_in_flight
                && !queue.is_empty()
                && open
            {
                if linger_skips > 0 {
                    linger_skips -= 1;
                } else {
                    let target = expected.min(self.settings.max_batch);
                    let deadline = tokio::time::Instant::now() + self.settings.linger;
                    let gap = self.settings.linger / 4;
                    while queue.len() < target {
                        let until = deadline.min(tokio::time::Instant::now() + gap);
                        match tokio::time::timeout_at(until, rx.recv()).await {
                            Ok(Some(job)) => queue.push_back(job),
                            Ok(None) => {
                                open = false;
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if queue.len() * 2 < target {
                        linger_skips = LINGER_BACKOFF_WRITES;
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
                expected = 0;
                if let Some(since) = idle_since.take() {
                    // A turnaround when the writers came back at once (an append of this write
                    // was queued within the linger, at least 1 ms, of the settle); a later first
                    // append means the committer sat idle.
                    let window = self
                        .settings
                        .linger
                        .max(std::time::Duration::from_millis(1));
                    let first = batch.iter().map(|job| job.queued).min();
                    if first.is_some_and(|first| first <= since + window) {
                        self.stats.turnarounds.fetch_add(1, Ordering::Relaxed);
                        self.stats
                            .turnaround_micros
                            .fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                }
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
                      result: WriteResult,
                      atomic_batch: bool| {
            stats.writes.fetch_add(1, Ordering::Relaxed);
            stats
                .write_micros
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            Written {
                result,
                releases_slot: left.fetch_sub(1, Ordering::AcqRel) == 1,
                atomic_batch,
            }
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
                finish(stats, left, started, result, false)
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
                finish(stats, left, started, result, true)
            }));
        }
        writes
    }
}
