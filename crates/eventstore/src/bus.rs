//! [`CommandBus`]: runs commands against aggregates on the `EVENTS` stream.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, OnceLock};

use async_nats::jetstream;
use cqrs_es::{Aggregate, AggregateError, EventStore};

use crate::envelope::{Actor, Upcasters};
use crate::group::{CommitOutcome, GroupCommitSettings, GroupCommitter};
use crate::store::{
    new_commit, pending_commit, JetStreamAggregateContext, JetStreamEventStore, META_DUPLICATE,
    META_STREAM_SEQUENCE,
};
use crate::streams::EVENTS_STREAM;

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

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// Runs `future` with `correlation_id` as the ambient correlation id: every [`CommandMeta::new`]
/// inside it (on the same task) takes it (the HTTP request id flows into the envelope
/// of every event the request causes).
pub async fn with_correlation<F: std::future::Future>(
    correlation_id: String,
    future: F,
) -> F::Output {
    CORRELATION_ID.scope(correlation_id, future).await
}

/// The ambient correlation id of [`with_correlation`], if any.
pub fn current_correlation() -> Option<String> {
    CORRELATION_ID.try_with(Clone::clone).ok()
}

impl CommandMeta {
    /// A command by `actor` with a fresh command id; its correlation id is the ambient one
    /// ([`with_correlation`]) or else the command id.
    pub fn new(actor: Actor) -> Self {
        let id = uuid::Uuid::now_v7().to_string();
        Self {
            command_id: id.clone(),
            correlation_id: current_correlation().unwrap_or(id),
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

/// How a [`CommandBus`] commits and caches. Defaults: group commit with
/// [`GroupCommitSettings::default`], 10 000 cached aggregates, [`MAX_ATTEMPTS`] attempts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BusSettings {
    /// Group commit bounds (`None`: one plain publish per commit, as before group commit existed).
    pub group_commit: Option<GroupCommitSettings>,
    /// Aggregates kept in memory (LRU, by count; 0 = no cache).
    pub cache_capacity: usize,
    /// Attempts of a command whose commit conflicts (each reloads and handles again). A
    /// conflict caused by a stale cache entry does not count.
    pub max_attempts: usize,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            group_commit: Some(GroupCommitSettings::default()),
            cache_capacity: 10_000,
            max_attempts: MAX_ATTEMPTS,
        }
    }
}

/// An aggregate kept in memory: its state (the aggregate value itself, of the type its key
/// names: a command takes it out, decides on it and puts it back, with no decoding), the
/// aggregate sequence of its last event, and the stream sequence of its last commit (what the
/// next commit expects).
struct CachedAggregate {
    state: Box<dyn std::any::Any + Send + Sync>,
    version: usize,
    last_stream_sequence: u64,
}

type AggregateCache = Mutex<lru::LruCache<(&'static str, String), CachedAggregate>>;

/// Counters of the aggregate cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Commands that found their aggregate in memory.
    pub hits: std::sync::atomic::AtomicU64,
    /// Commands that loaded their aggregate from the log.
    pub misses: std::sync::atomic::AtomicU64,
    /// Cached aggregates found stale by the expected-sequence check (reloaded, retried).
    pub stale: std::sync::atomic::AtomicU64,
}

struct BusInner {
    settings: BusSettings,
    committer: OnceLock<GroupCommitter>,
    cache: Option<AggregateCache>,
    cache_stats: CacheStats,
    locks: AggregateLocks,
}

/// One async lock per aggregate with a command running in this process: commands on
/// the same aggregate run one after another in a process, so a burst on one hot aggregate (the
/// withdrawal attack: 1,000 requests on one counselor account) loads it once and commits from
/// the warm cache instead of every request reloading it and losing the optimistic-concurrency
/// race. Between processes the expected-sequence check still decides. An entry is removed when
/// its last holder leaves.
type AggregateLocks = std::sync::Mutex<
    std::collections::HashMap<(&'static str, String), Arc<tokio::sync::Mutex<()>>>,
>;

/// Holds an aggregate's lock; removes the map entry on drop when nobody else waits for it.
struct AggregateGuard<'a> {
    locks: &'a AggregateLocks,
    key: (&'static str, String),
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for AggregateGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.lock().expect("aggregate locks");
        drop(self.guard.take());
        if let Some(entry) = map.get(&self.key) {
            // Only the map's own reference is left: no holder, no waiter.
            if Arc::strong_count(entry) == 1 {
                map.remove(&self.key);
            }
        }
    }
}

/// Runs commands: load the aggregate (from the in-memory LRU cache, else with direct gets),
/// handle the command, commit its events conditionally through the group committer; on a
/// conflict, reload and retry (up to [`BusSettings::max_attempts`]). Cheap to clone: clones share
/// the committer and the cache.
#[derive(Clone)]
pub struct CommandBus {
    js: jetstream::Context,
    upcasters: Upcasters,
    inner: Arc<BusInner>,
}

impl CommandBus {
    /// A bus on `js`'s `EVENTS` stream with [`BusSettings::default`].
    pub fn new(js: jetstream::Context, upcasters: Upcasters) -> Self {
        Self::with_settings(js, upcasters, BusSettings::default())
    }

    /// A bus on `js`'s `EVENTS` stream. The group committer starts on first use (on the tokio
    /// runtime of that call).
    pub fn with_settings(
        js: jetstream::Context,
        upcasters: Upcasters,
        settings: BusSettings,
    ) -> Self {
        let cache = NonZeroUsize::new(settings.cache_capacity)
            .map(|capacity| Mutex::new(lru::LruCache::new(capacity)));
        Self {
            js,
            upcasters,
            inner: Arc::new(BusInner {
                settings,
                committer: OnceLock::new(),
                cache,
                cache_stats: CacheStats::default(),
                locks: AggregateLocks::default(),
            }),
        }
    }

    /// The bus's settings.
    pub fn settings(&self) -> &BusSettings {
        &self.inner.settings
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The group committer, when group commit is on (started on first call).
    ///
    /// # Errors
    /// When the `EVENTS` stream cannot be reached.
    pub async fn committer(&self) -> anyhow::Result<Option<GroupCommitter>> {
        let Some(settings) = &self.inner.settings.group_commit else {
            return Ok(None);
        };
        if let Some(c) = self.inner.committer.get() {
            return Ok(Some(c.clone()));
        }
        let stream = self.js.get_stream_no_info(EVENTS_STREAM).await?;
        let c = self.inner.committer.get_or_init(|| {
            GroupCommitter::start(self.js.client(), stream, EVENTS_STREAM, settings.clone())
        });
        Ok(Some(c.clone()))
    }

    /// The aggregate cache's counters.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.inner.cache_stats
    }

    /// Forgets every cached aggregate.
    pub fn clear_cache(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// The cqrs-es store for aggregate `A` (committing through the group committer).
    ///
    /// # Errors
    /// When the `EVENTS` stream cannot be reached.
    pub async fn store<A: Aggregate>(&self) -> anyhow::Result<JetStreamEventStore<A>> {
        let store = JetStreamEventStore::new(self.js.clone(), self.upcasters.clone()).await?;
        Ok(match self.committer().await? {
            Some(c) => store.with_committer(c),
            None => store,
        })
    }

    /// The current state of aggregate `A` `id` and its aggregate sequence (0 = never written),
    /// read from the log.
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

    /// Takes aggregate `A` `id` out of the cache (concurrent commands on it load from the log
    /// meanwhile; the newest version goes back after a commit): `(state, aggregate sequence,
    /// stream sequence of the last commit)`.
    fn take_cached<A: Aggregate + 'static>(&self, id: &str) -> Option<(A, usize, u64)> {
        let cache = self.inner.cache.as_ref()?;
        let entry = cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop(&(A::TYPE, id.to_string()))?;
        // The key's type names the value's: a mismatch would be two aggregates with one `TYPE`.
        let state = entry.state.downcast::<A>().ok()?;
        Some((*state, entry.version, entry.last_stream_sequence))
    }

    /// Puts aggregate `A` `id` in the cache unless a newer version is there.
    fn put_cached<A: Aggregate + 'static>(
        &self,
        id: &str,
        state: A,
        version: usize,
        last_stream_sequence: u64,
    ) {
        let Some(cache) = &self.inner.cache else {
            return;
        };
        let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
        let key = (A::TYPE, id.to_string());
        if let Some(existing) = cache.peek(&key) {
            if existing.last_stream_sequence >= last_stream_sequence {
                return;
            }
        }
        cache.put(
            key,
            CachedAggregate {
                state: Box::new(state),
                version,
                last_stream_sequence,
            },
        );
    }

    /// Waits for this process's lock of aggregate `(aggregate_type, id)`.
    async fn lock_aggregate(&self, aggregate_type: &'static str, id: &str) -> AggregateGuard<'_> {
        let key = (aggregate_type, id.to_string());
        let lock = {
            let mut map = self.inner.locks.lock().expect("aggregate locks");
            map.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        AggregateGuard {
            locks: &self.inner.locks,
            key,
            guard: Some(guard),
        }
    }

    /// Executes `command` on aggregate `A` `id`.
    ///
    /// The aggregate comes from the cache when it is there (nothing is read from the log; the
    /// expected-sequence check at commit catches a stale entry, and then the aggregate is
    /// brought up to date from the log and the command handled again, without using up an
    /// attempt), else from the log with batched direct gets. After a conflict, the aggregate is
    /// caught up from the state it was handled on (only the newer commits are read). Commands
    /// on one aggregate run one at a time in this process (a per-aggregate lock).
    ///
    /// # Errors
    /// [`CommandError::Rejected`] with the aggregate's error, [`CommandError::Conflict`] when
    /// every attempt conflicted, [`CommandError::Store`] on an infrastructure failure.
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, id, command_id = %meta.command_id, correlation_id = %meta.correlation_id))]
    pub async fn execute<A>(
        &self,
        id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
    {
        let result = self.execute_once::<A>(id, command, meta, false).await;
        Self::count::<A>(&result);
        result
    }

    /// Executes `command` on aggregate `A` `id`, an id that was just allocated for a new
    /// aggregate (an order id from its sequence): the command is handled on an empty aggregate
    /// without reading the log first, and committed expecting the subject to be empty. If it is
    /// not (the id was used after all), the expected-sequence check fails and the command is
    /// handled again on the aggregate loaded from the log, as [`CommandBus::execute`] would.
    /// Saves the load's round trip on every creation.
    ///
    /// # Errors
    /// As [`CommandBus::execute`].
    #[tracing::instrument(skip_all, fields(aggregate = A::TYPE, id, command_id = %meta.command_id, correlation_id = %meta.correlation_id))]
    pub async fn execute_new<A>(
        &self,
        id: &str,
        command: A::Command,
        meta: &CommandMeta,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
    {
        let result = self.execute_once::<A>(id, command, meta, true).await;
        Self::count::<A>(&result);
        result
    }

    /// Counts a command's outcome ([`crate::METRIC_COMMANDS_TOTAL`]) and logs a commit.
    fn count<A: Aggregate>(result: &Result<Committed<A::Event>, CommandError<A::Error>>) {
        // Command outcomes by aggregate (`mychat_commands_total`).
        let outcome = match &result {
            Ok(c) if c.duplicate => "duplicate",
            Ok(_) => "ok",
            Err(CommandError::Rejected(_)) => "rejected",
            Err(CommandError::Conflict) => "conflict",
            Err(CommandError::Store(_)) => "error",
        };
        metrics::counter!(crate::METRIC_COMMANDS_TOTAL, "aggregate" => A::TYPE, "outcome" => outcome)
            .increment(1);
        if let Ok(c) = &result {
            tracing::debug!(stream_sequence = ?c.stream_sequence, events = c.events.len(), "command committed");
        }
    }

    async fn execute_once<A>(
        &self,
        id: &str,
        command: A::Command,
        meta: &CommandMeta,
        fresh: bool,
    ) -> Result<Committed<A::Event>, CommandError<A::Error>>
    where
        A: Aggregate<Services = ()> + Clone + 'static,
        A::Command: Clone,
    {
        use std::sync::atomic::Ordering::Relaxed;
        let store = self
            .store::<A>()
            .await
            .map_err(|e| CommandError::Store(e.to_string()))?;
        let _aggregate_lock = self.lock_aggregate(A::TYPE, id).await;
        let stats = &self.inner.cache_stats;
        let max_attempts = self.inner.settings.max_attempts.max(1);
        let mut attempt = 0;
        // The state to start from: (aggregate, aggregate sequence, stream sequence), and whether
        // it comes straight from the cache (unverified).
        let mut base = self.take_cached::<A>(id);
        let mut base_is_cached = base.is_some();
        if base_is_cached {
            stats.hits.fetch_add(1, Relaxed);
        } else if fresh {
            // A new aggregate: start empty, unverified like a cache entry (a non-empty subject
            // fails the expected-sequence check and the aggregate is then read from the log).
            base = Some((A::default(), 0, 0));
            base_is_cached = true;
        } else {
            stats.misses.fetch_add(1, Relaxed);
        }
        loop {
            let (mut aggregate, version, last_stream_sequence) = match base.take() {
                Some(cached) if base_is_cached => cached,
                other => {
                    attempt += 1;
                    let context = match other {
                        Some((aggregate, version, last)) => {
                            store
                                .catch_up(JetStreamAggregateContext {
                                    aggregate_id: id.to_string(),
                                    aggregate,
                                    version,
                                    last_stream_sequence: last,
                                })
                                .await?
                        }
                        None => store.load_aggregate(id).await?,
                    };
                    (
                        context.aggregate,
                        context.version,
                        context.last_stream_sequence,
                    )
                }
            };
            // `handle` may change the aggregate before it refuses: the state before it is kept.
            let pre_state = aggregate.clone();
            let sink = cqrs_es::event_sink::EventSink::default();
            // `EventSink::write` applies each event to the aggregate as it is emitted.
            let handled = aggregate.handle(command.clone(), &(), &sink).await;
            let events = sink.collect().await;
            if (handled.is_err() || events.is_empty()) && base_is_cached {
                // A refusal or a no-op commits nothing, so no expected-sequence check tells
                // whether the cached state was current (another process may have moved the
                // aggregate: a payment marking an order paid): decide again on the state caught
                // up with the log (a read of the newer commits only).
                base = Some((pre_state, version, last_stream_sequence));
                base_is_cached = false;
                continue;
            }
            if let Err(e) = handled {
                // The state before handling is still good: keep it cached.
                self.put_cached::<A>(id, pre_state, version, last_stream_sequence);
                return Err(CommandError::Rejected(e));
            }
            if events.is_empty() {
                self.put_cached::<A>(id, pre_state, version, last_stream_sequence);
                return Ok(Committed {
                    aggregate_id: id.to_string(),
                    stream_sequence: None,
                    events,
                    duplicate: false,
                });
            }
            let commit = new_commit::<A>(&events, id, version, meta)?;
            let pending = pending_commit::<A::Error>(&commit, last_stream_sequence)?;
            match store.write(pending).await {
                Ok(CommitOutcome::Stored { sequence }) => {
                    self.put_cached::<A>(id, aggregate, version + events.len(), sequence);
                    return Ok(Committed {
                        aggregate_id: id.to_string(),
                        stream_sequence: Some(sequence),
                        events,
                        duplicate: false,
                    });
                }
                Ok(CommitOutcome::Duplicate { sequence }) => {
                    let envelopes = store.stored_envelopes(sequence, true).await?;
                    let first = envelopes.first();
                    let aggregate_id =
                        first.map_or_else(|| id.to_string(), |e| e.aggregate_id.clone());
                    debug_assert!(first.is_none_or(|e| e.metadata.contains_key(META_DUPLICATE)));
                    let stream_sequence = first
                        .and_then(|e| e.metadata.get(META_STREAM_SEQUENCE))
                        .and_then(|s| s.parse().ok())
                        .or(Some(sequence));
                    return Ok(Committed {
                        aggregate_id,
                        stream_sequence,
                        events: envelopes.into_iter().map(|e| e.payload).collect(),
                        duplicate: true,
                    });
                }
                Ok(CommitOutcome::Conflict) => {
                    // Catch up from the state the command was handled on.
                    base = Some((pre_state, version, last_stream_sequence));
                    if base_is_cached {
                        stats.stale.fetch_add(1, Relaxed);
                        tracing::debug!("stale cached aggregate; catching up");
                        base_is_cached = false;
                        continue;
                    }
                    if attempt >= max_attempts {
                        return Err(CommandError::Conflict);
                    }
                    tracing::debug!(attempt, "conflict; catching up");
                    tokio::task::yield_now().await;
                }
                Err(e) => {
                    return Err(CommandError::Store(e.to_string()));
                }
            }
        }
    }
}
