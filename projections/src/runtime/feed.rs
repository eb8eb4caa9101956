//! The [`LiveFeed`]: one following reader of a stream, shared by every live projector of a
//! process that reads that stream.
//!
//! Each live projector used to follow its stream with a consumer of its own, so every message was
//! delivered by nats-server, parsed and checked once per projector (an `order/create` commit
//! reached four consumers: the `orders` read model and the three projections on several subjects,
//! `ledger`, `notifications` and `process_manager`). A feed reads the stream once, unfiltered,
//! with the log's one reader ([`eventstore::LogReader`]: gap-checked, the consumer re-created on
//! a gap or a lost server), and hands each subscriber the messages on its subjects, in stream
//! order, each once. Every projector keeps what makes it a projector: its advisory lock, its own
//! transactions and checkpoint, its poison-event stop. Only the reading is shared.
//!
//! **Joining.** A projector joins at the stream sequence up to which it has seen everything on its
//! subjects. The feed keeps the last [`FEED_HISTORY`] messages it read; a join at or after the
//! start of that history is served from it and then follows live. A join before it is answered
//! [`Joined::Behind`] with the feed's head: the projector reads up to that head with a reader of
//! its own ([`super::spawn_reader`]) and joins again there, which the history then covers. The
//! first join starts the feed's reader at the stream's head (so a projector far behind, a new
//! one, catches up by itself instead of holding up those at the head); the reader stops when
//! no subscriber has been left for [`FEED_IDLE`] (a standby process reads nothing).
//!
//! **A subscriber that falls behind** ([`SUBSCRIBER_MESSAGES`] messages handed over and not yet
//! taken: a projector catching up through large transactions, a stalled PostgreSQL) is dropped
//! from the feed: its receiver ends, and the projector catches up by itself and joins again. The feed never
//! waits for one projector, so a slow one does not hold up the others or the read-your-writes
//! waits on them.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use eventstore::reader::subject_matches;
use eventstore::{LogReader, ReadOptions, ReadUntil};
use tokio::sync::{mpsc, oneshot};

use super::projection::LogMessage;
use super::reader::log_messages;

/// How many of the last messages read a feed keeps for projectors that join (all subjects): a
/// projector whose own catch-up reached the feed's head joins from this history while the head
/// moves on (at 5,000 single-message commits a second, ~0.8 s of the log).
pub const FEED_HISTORY: usize = 4096;

/// How many messages may wait for one subscriber before the feed drops it (see the module doc):
/// ~1.6 s of the log at 5,000 messages a second, far more than a live projector's transaction
/// (a count of messages, not of batches: at the head a batch is often one message).
pub const SUBSCRIBER_MESSAGES: usize = 8192;

/// How long a feed keeps reading with no subscriber before it stops: a projector told
/// [`Joined::Behind`] catches up by itself and joins again, usually well within it.
pub const FEED_IDLE: Duration = Duration::from_secs(10);

/// The answer to [`LiveFeed::join`].
pub enum Joined {
    /// Subscribed: the messages on the subjects after the joining position, in stream order.
    Following(FeedReceiver),
    /// The feed's history starts after the joining position (or holds more of the joiner's
    /// messages than a subscriber may have waiting): read up to this stream sequence (the feed's
    /// head) by other means, then join again there.
    Behind(u64),
}

/// A subscriber's end of a [`LiveFeed`]: batches (never empty) in stream order.
pub struct FeedReceiver {
    rx: mpsc::UnboundedReceiver<Vec<LogMessage>>,
    /// Messages handed over and not yet taken (bounded by the feed: [`SUBSCRIBER_MESSAGES`]).
    waiting: Arc<AtomicUsize>,
}

impl FeedReceiver {
    /// The next batch; `None` once the feed has dropped this subscriber (it fell behind, or the
    /// feed stopped): the projector then reads by itself from what it last received.
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Option<Vec<LogMessage>> {
        let batch = self.rx.recv().await?;
        self.waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        Some(batch)
    }

    /// A batch already handed over, if there is one (never waits).
    pub fn try_recv(&mut self) -> Option<Vec<LogMessage>> {
        let batch = self.rx.try_recv().ok()?;
        self.waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        Some(batch)
    }
}

struct Join {
    subjects: Vec<String>,
    after: u64,
    answer: oneshot::Sender<anyhow::Result<Joined>>,
}

/// One stream's shared live reader (see the module doc). Cheap to clone: clones share the feed;
/// its task ends when the last clone is dropped.
#[derive(Clone)]
pub struct LiveFeed {
    joins: mpsc::Sender<Join>,
    dropped: Arc<AtomicU64>,
}

impl LiveFeed {
    /// A feed of `stream` on `js`, handing over batches of at most `batch_size` messages and
    /// dropping a subscriber with more than `max_waiting` messages not taken. Its task
    /// starts at once; its reader with the first join.
    pub fn spawn(
        js: jetstream::Context,
        stream: &str,
        batch_size: usize,
        max_waiting: usize,
    ) -> Self {
        let (joins, rx) = mpsc::channel(16);
        let dropped = Arc::new(AtomicU64::new(0));
        let dispatcher = Dispatcher {
            js,
            dropped: dropped.clone(),
            stream: stream.to_string(),
            batch_size: batch_size.max(1),
            max_waiting: max_waiting.max(1),
            reader: None,
            subscribers: Vec::new(),
            history: VecDeque::with_capacity(FEED_HISTORY),
            history_after: 0,
            head: 0,
        };
        tokio::spawn(dispatcher.run(rx));
        Self { joins, dropped }
    }

    /// How many subscribers this feed has dropped for falling behind (each then caught up by
    /// itself and joined again).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Subscribes to the messages on `subjects` (NATS wildcards) after stream sequence `after`:
    /// the joiner has seen every message on them up to `after`.
    ///
    /// # Errors
    /// When the feed's task has ended (the process is shutting down), or it cannot learn where
    /// its stream's head is to start reading.
    pub async fn join(&self, subjects: Vec<String>, after: u64) -> anyhow::Result<Joined> {
        let (answer, rx) = oneshot::channel();
        self.joins
            .send(Join {
                subjects,
                after,
                answer,
            })
            .await
            .map_err(|_| anyhow::anyhow!("the live feed has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the live feed has stopped"))?
    }
}

/// The live feeds of one process, one per stream, created on first use. Cheap to clone.
#[derive(Clone)]
pub struct LiveFeeds {
    js: jetstream::Context,
    batch_size: usize,
    max_waiting: usize,
    feeds: Arc<Mutex<HashMap<String, LiveFeed>>>,
}

impl std::fmt::Debug for LiveFeeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveFeeds")
            .field("batch_size", &self.batch_size)
            .field("max_waiting", &self.max_waiting)
            .finish_non_exhaustive()
    }
}

impl LiveFeeds {
    /// The feeds on `nats`, dropping a subscriber with [`SUBSCRIBER_MESSAGES`] messages not taken,
    /// handing over batches of at most `batch_size` messages (a live
    /// projector's transaction size).
    pub fn new(nats: async_nats::Client, batch_size: usize) -> Self {
        Self {
            js: jetstream::new(nats),
            batch_size,
            max_waiting: SUBSCRIBER_MESSAGES,
            feeds: Arc::default(),
        }
    }

    /// The same feeds dropping a subscriber with more than `n` messages not taken (instead of
    /// [`SUBSCRIBER_MESSAGES`]); for feeds not yet created.
    pub fn with_max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = n.max(1);
        self
    }

    /// The feed of `stream`.
    pub fn feed(&self, stream: &str) -> LiveFeed {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds
            .entry(stream.to_string())
            .or_insert_with(|| {
                LiveFeed::spawn(self.js.clone(), stream, self.batch_size, self.max_waiting)
            })
            .clone()
    }
}

struct Subscriber {
    subjects: Vec<String>,
    /// Messages up to this stream sequence are not handed over (the joiner has them).
    after: u64,
    tx: mpsc::UnboundedSender<Vec<LogMessage>>,
    /// Messages handed over and not yet taken.
    waiting: Arc<AtomicUsize>,
    max_waiting: usize,
}

impl Subscriber {
    fn wants(&self, m: &LogMessage) -> bool {
        m.stream_sequence > self.after
            && self.subjects.iter().any(|f| subject_matches(f, &m.subject))
    }

    /// Hands over the messages it wants, in batches of `batch_size` (more when a pack's records,
    /// which share a stream sequence, would be cut: a batch ends between stream messages only,
    /// since checkpoints count stream sequences); false when it cannot take them (it would have
    /// more than [`SUBSCRIBER_MESSAGES`] waiting, or it is gone).
    fn hand_over<'a>(
        &self,
        messages: impl Iterator<Item = &'a LogMessage>,
        batch_size: usize,
    ) -> bool {
        let mut batch: Vec<LogMessage> = Vec::new();
        for m in messages.filter(|m| self.wants(m)) {
            let between_messages = batch
                .last()
                .is_some_and(|last| last.stream_sequence != m.stream_sequence);
            if batch.len() >= batch_size
                && between_messages
                && !self.send(std::mem::take(&mut batch))
            {
                return false;
            }
            batch.push(m.clone());
        }
        batch.is_empty() || self.send(batch)
    }

    fn send(&self, batch: Vec<LogMessage>) -> bool {
        let n = batch.len();
        if self.waiting.fetch_add(n, Ordering::Relaxed) + n > self.max_waiting {
            return false;
        }
        self.tx.send(batch).is_ok()
    }
}

struct Dispatcher {
    js: jetstream::Context,
    dropped: Arc<AtomicU64>,
    stream: String,
    batch_size: usize,
    max_waiting: usize,
    reader: Option<LogReader>,
    subscribers: Vec<Subscriber>,
    /// The last messages read, in stream order (at most [`FEED_HISTORY`]).
    history: VecDeque<LogMessage>,
    /// Every message after this stream sequence up to `head` is in `history`.
    history_after: u64,
    /// The last stream sequence read.
    head: u64,
}

impl Dispatcher {
    async fn run(mut self, mut joins: mpsc::Receiver<Join>) {
        // Since when the reader has run with no subscriber.
        let mut idle_since: Option<tokio::time::Instant> = None;
        loop {
            let idle_until = idle_since.map(|t| t + FEED_IDLE);
            tokio::select! {
                join = joins.recv() => match join {
                    Some(join) => self.join(join).await,
                    None => return,
                },
                _ = sleep_until(idle_until) => self.stop(),
                batch = next_batch(&mut self.reader) => match batch {
                    Some(Ok(entries)) => self.dispatch(log_messages(entries)),
                    Some(Err(e)) => {
                        tracing::warn!(stream = self.stream, error = %e, "live feed: reader failed; its subscribers read by themselves");
                        self.stop();
                    }
                    None => self.stop(),
                },
            }
            self.subscribers.retain(|s| !s.tx.is_closed());
            idle_since = match (
                self.reader.is_some() && self.subscribers.is_empty(),
                idle_since,
            ) {
                (false, _) => None,
                (true, None) => Some(tokio::time::Instant::now()),
                (true, since) => since,
            };
        }
    }

    async fn join(&mut self, join: Join) {
        if self.reader.is_none() {
            // Start at the stream's head (or at the joiner, if it is past it): a projector far
            // behind catches up by itself rather than holding up the others at the head.
            let last = match self.js.get_stream(&self.stream).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .map(|i| i.state.last_sequence)
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e.into()),
            };
            let last = match last {
                Ok(last) => last,
                Err(e) => {
                    let _ = join
                        .answer
                        .send(Err(anyhow::anyhow!("live feed of {}: {e}", self.stream)));
                    return;
                }
            };
            let start = last.max(join.after);
            self.reader = Some(LogReader::spawn(
                self.js.clone(),
                ReadOptions::new(self.stream.clone(), start, ReadUntil::Follow)
                    .batch_size(self.batch_size),
            ));
            self.history.clear();
            self.history_after = start;
            self.head = start;
        }
        if join.after < self.history_after {
            let _ = join.answer.send(Ok(Joined::Behind(self.head)));
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let subscriber = Subscriber {
            subjects: join.subjects,
            after: join.after,
            tx,
            waiting: waiting.clone(),
            max_waiting: self.max_waiting,
        };
        if !subscriber.hand_over(self.history.iter(), self.batch_size) {
            let _ = join.answer.send(Ok(Joined::Behind(self.head)));
            return;
        }
        if join
            .answer
            .send(Ok(Joined::Following(FeedReceiver { rx, waiting })))
            .is_ok()
        {
            self.subscribers.push(subscriber);
        }
    }

    fn dispatch(&mut self, messages: Vec<LogMessage>) {
        let batch_size = self.batch_size;
        let (dropped, stream, max_waiting) = (&self.dropped, &self.stream, self.max_waiting);
        self.subscribers.retain(|s| {
            let kept = s.hand_over(messages.iter(), batch_size);
            // (A subscriber that has gone is not one that fell behind.)
            if !kept && !s.tx.is_closed() {
                dropped.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    stream,
                    max_waiting,
                    "live feed: a subscriber has too many messages waiting; it reads by itself \
                     and joins again"
                );
            }
            kept
        });
        if let Some(last) = messages.last() {
            self.head = last.stream_sequence;
        }
        for m in messages {
            if self.history.len() == FEED_HISTORY {
                if let Some(old) = self.history.pop_front() {
                    self.history_after = old.stream_sequence;
                }
            }
            self.history.push_back(m);
        }
    }

    /// Stops reading and drops every subscriber (each then reads by itself).
    fn stop(&mut self) {
        self.reader = None;
        self.subscribers.clear();
        self.history.clear();
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

async fn next_batch(
    reader: &mut Option<LogReader>,
) -> Option<Result<Vec<eventstore::LogEntry>, eventstore::reader::ReadError>> {
    match reader {
        Some(r) => r.next().await,
        None => std::future::pending().await,
    }
}

/// How a live projector reads its stream: from the process's [`LiveFeed`] once it has joined it,
/// by itself until then (and after the feed has dropped it); without a feed, by itself
/// following the head ([`super::follow`]).
pub(crate) struct LiveSource {
    js: jetstream::Context,
    stream: &'static str,
    subjects: Vec<String>,
    batch_size: usize,
    feed: Option<LiveFeed>,
    state: SourceState,
}

enum SourceState {
    /// Reading by itself; with a feed, up to `covers` (the feed's head when it said
    /// [`Joined::Behind`]), then joining there.
    Own {
        reader: super::ProjectionReader,
        covers: Option<u64>,
    },
    /// Following the feed.
    Feed(FeedReceiver),
    /// To join the feed at this stream sequence.
    Join(u64),
}

impl LiveSource {
    /// Reads `subjects` of `stream` after stream sequence `after`.
    pub(crate) fn new(
        js: jetstream::Context,
        stream: &'static str,
        subjects: Vec<String>,
        after: u64,
        batch_size: usize,
        feed: Option<LiveFeed>,
    ) -> Self {
        let state = match feed {
            Some(_) => SourceState::Join(after),
            None => SourceState::Own {
                reader: super::follow(js.clone(), stream, subjects.clone(), after, batch_size),
                covers: None,
            },
        };
        Self {
            js,
            stream,
            subjects,
            batch_size,
            feed,
            state,
        }
    }

    /// The next batch (never empty), in stream order. `seen` is the stream sequence up to which
    /// the projector has taken in every message handed to it (where it joins the feed again).
    /// Cancel-safe: a join that is cancelled is made again by the next call.
    ///
    /// # Errors
    /// When the stream cannot be read, or the feed has stopped.
    pub(crate) async fn recv(&mut self, seen: u64) -> anyhow::Result<Vec<LogMessage>> {
        loop {
            match &mut self.state {
                SourceState::Own { reader, covers } => match reader.recv().await {
                    Some(batch) => return batch,
                    None => match *covers {
                        Some(covers) => self.state = SourceState::Join(covers.max(seen)),
                        None => anyhow::bail!("reading {}: the reader ended", self.stream),
                    },
                },
                SourceState::Feed(rx) => match rx.recv().await {
                    Some(batch) => return Ok(batch),
                    None => self.state = SourceState::Join(seen),
                },
                SourceState::Join(after) => {
                    let after = *after;
                    let Some(feed) = &self.feed else {
                        anyhow::bail!("joining without a feed");
                    };
                    self.state = match feed.join(self.subjects.clone(), after).await? {
                        Joined::Following(rx) => SourceState::Feed(rx),
                        Joined::Behind(head) => SourceState::Own {
                            reader: super::spawn_reader(
                                self.js.clone(),
                                self.stream,
                                self.subjects.clone(),
                                after,
                                Some(head),
                                self.batch_size,
                            ),
                            covers: Some(head),
                        },
                    };
                }
            }
        }
    }

    /// A batch already read, if there is one (never waits).
    pub(crate) fn try_recv(&mut self) -> Option<anyhow::Result<Vec<LogMessage>>> {
        match &mut self.state {
            SourceState::Own { reader, .. } => reader.try_recv(),
            SourceState::Feed(rx) => rx.try_recv().map(Ok),
            SourceState::Join(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_over_never_cuts_the_records_of_one_stream_message() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let subscriber = Subscriber {
            subjects: vec!["chat.1.*".into()],
            after: 0,
            tx,
            waiting: Arc::default(),
            max_waiting: 1_000,
        };
        // Stream message 2 is a pack of three records; 4 is one record on another subject.
        let message = |seq: u64, subject: &str| {
            LogMessage::new(seq, subject.into(), chrono::Utc::now(), Default::default())
        };
        let messages = [
            message(1, "chat.1.7"),
            message(2, "chat.1.7"),
            message(2, "chat.1.8"),
            message(2, "chat.1.7"),
            message(3, "chat.1.8"),
            message(4, "group.1.3"),
            message(5, "chat.1.7"),
        ];
        assert!(subscriber.hand_over(messages.iter(), 2));
        let mut batches = vec![];
        while let Ok(batch) = rx.try_recv() {
            batches.push(batch.iter().map(|m| m.stream_sequence).collect::<Vec<_>>());
        }
        assert_eq!(batches, vec![vec![1, 2, 2, 2], vec![3, 5]]);
    }
}
