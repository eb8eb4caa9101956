//! The projector runtime: one worker per projection, reading a stream from the projection's
//! checkpoint with an ordered consumer and applying batches transactionally.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::{self};
use async_trait::async_trait;
use backon::BackoffBuilder;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventstore::envelope::{StoredEvent, Upcasters};
use eventstore::Commit;
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

/// The core-NATS subject on which a projector announces its checkpoint after each batch
/// (`mychat.checkpoint.<projection>`, payload: the stream sequence as decimal text).
pub fn checkpoint_subject(name: &str) -> String {
    format!("mychat.checkpoint.{name}")
}

/// Decodes a stored event's payload as `E` without copying it (`StoredEvent::decode` clones
/// the JSON value first; this borrows it: same result, less work per event in replays).
///
/// # Errors
/// When the payload is not an `E` (an unknown event type or version).
pub fn decode<E: serde::de::DeserializeOwned>(
    stored: &StoredEvent,
) -> Result<E, serde_json::Error> {
    E::deserialize(&stored.payload)
}

/// The upcasters every projection reads `EVENTS` through (cqrs-es `EventUpcaster`s; none are
/// registered yet: every stored event is at its current version). Register new ones here.
pub fn upcasters() -> Upcasters {
    Upcasters::default()
}

/// One message read from a stream. Cheap to clone: the payload and its decoded events are
/// shared, so a message handed to several projections (an audit replay's one reader feeds every
/// projection) is decoded once, by whichever projection asks first ([`LogMessage::events`]).
#[derive(Debug, Clone)]
pub struct LogMessage {
    /// The stream sequence.
    pub stream_sequence: u64,
    pub subject: String,
    /// When JetStream stored it.
    pub time: DateTime<Utc>,
    pub payload: Bytes,
    /// The commit's events once decoded (or why they could not be).
    decoded: Arc<std::sync::OnceLock<Result<Arc<[StoredEvent]>, String>>>,
}

/// One event of a decoded message: shares the message's decoded events (cheap to clone) and
/// dereferences to its [`StoredEvent`].
#[derive(Debug, Clone)]
pub struct EventRef {
    events: Arc<[StoredEvent]>,
    index: usize,
}

impl std::ops::Deref for EventRef {
    type Target = StoredEvent;
    fn deref(&self) -> &StoredEvent {
        &self.events[self.index]
    }
}

impl LogMessage {
    /// A message at `stream_sequence` on `subject`, stored by JetStream at `time`.
    pub fn new(stream_sequence: u64, subject: String, time: DateTime<Utc>, payload: Bytes) -> Self {
        Self {
            stream_sequence,
            subject,
            time,
            payload,
            decoded: Arc::default(),
        }
    }

    /// The message as a commit's events (for `EVENTS`), upcast ([`upcasters`]), in commit
    /// order. Decoded on the first call and shared by every clone of the message after it.
    ///
    /// # Errors
    /// When the body is not a commit (the error names the stream sequence).
    pub fn events(&self) -> anyhow::Result<Arc<[StoredEvent]>> {
        let decoded = self.decoded.get_or_init(|| {
            let upcasters = upcasters();
            Commit::decode(&self.payload)
                .map(|commit| {
                    commit
                        .into_stored(self.stream_sequence)
                        .into_iter()
                        .map(|e| upcasters.upcast(e))
                        .collect()
                })
                .map_err(|e| {
                    format!(
                        "decoding the commit at stream sequence {}: {e}",
                        self.stream_sequence
                    )
                })
        });
        decoded.clone().map_err(|e| anyhow::anyhow!(e))
    }

    /// [`LogMessage::events`], one shared handle per event.
    ///
    /// # Errors
    /// As [`LogMessage::events`].
    pub fn event_refs(&self) -> anyhow::Result<impl Iterator<Item = EventRef>> {
        let events = self.events()?;
        Ok((0..events.len()).map(move |index| EventRef {
            events: events.clone(),
            index,
        }))
    }
}

/// A read model (or process manager) fed from one stream.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the checkpoint's key, and the name in spans, logs and metrics.
    fn name(&self) -> &'static str;
    /// The stream it reads (default `EVENTS`).
    fn stream(&self) -> &'static str {
        eventstore::EVENTS_STREAM
    }
    /// The subjects it needs (e.g. `ev.order.>`).
    fn subjects(&self) -> Vec<String>;
    /// The version of its code. Bump it when `apply` changes what it writes: the projectors then
    /// rebuild it blue/green on start ([`crate::rebuild`]).
    fn version(&self) -> i32 {
        1
    }
    /// The tables it writes (created by `migrations/` in `public`). Rebuilds and audit replays
    /// create the same tables (`LIKE public.<table> INCLUDING ALL`) in their own schema; empty
    /// for a projection that writes no table (the process manager), which cannot be replayed.
    fn tables(&self) -> Vec<&'static str> {
        vec![]
    }
    /// Applies one message inside the batch's transaction. An error aborts the whole batch (and
    /// its checkpoint); the projection stops at that message until the cause is fixed.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()>;
    /// Applies a whole batch of messages, in stream order, inside the batch's transaction, with
    /// the same result as [`Projection::apply`] on each message in turn (the default does
    /// exactly that). Read models override it with multi-row statements (a few SQL round trips
    /// per batch instead of one or more per message).
    ///
    /// An error need not name the message: the runtime rolls the batch back to a savepoint and
    /// re-applies it message by message with [`Projection::apply`] to find the poison event
    /// ([`apply_in_tx`]).
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        for message in messages {
            self.apply(&mut *tx, message).await.context(FailedAt {
                stream_sequence: message.stream_sequence,
                subject: message.subject.clone(),
            })?;
        }
        Ok(())
    }
}

/// The context the default [`Projection::apply_batch`] puts on a message's error: the runtime
/// then knows the poison event without applying the batch again.
#[derive(Debug, Clone)]
pub struct FailedAt {
    /// The stream sequence of the message that failed.
    pub stream_sequence: u64,
    pub subject: String,
}

impl std::fmt::Display for FailedAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "applying stream sequence {} ({})",
            self.stream_sequence, self.subject
        )
    }
}

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// How long a batch waits for one more message before it is applied.
    pub linger: Duration,
    /// The Postgres schema the projection writes into (`public` for the live read models).
    /// Each batch's transaction runs with `SET LOCAL search_path TO <schema>, public`.
    pub schema: String,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            linger: Duration::from_millis(2),
            schema: LIVE_SCHEMA.to_string(),
        }
    }
}

/// Runs one projection.
#[derive(Clone)]
pub struct Projector {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub projection: Arc<dyn Projection>,
    pub settings: ProjectorSettings,
}

/// The schema of the live read models.
pub const LIVE_SCHEMA: &str = "public";

/// Whether `schema.table` exists.
///
/// # Errors
/// On a database error.
pub(crate) async fn table_exists(pool: &PgPool, schema: &str, table: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2)",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await?)
}

/// `schema` quoted as an identifier, after checking it is a plain lower-case name
/// (`[a-z_][a-z0-9_]*`, at most 63 bytes).
///
/// # Errors
/// Any other name (schemas come from the command line).
pub fn schema_ident(schema: &str) -> anyhow::Result<String> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    anyhow::ensure!(
        ok,
        "{schema:?} is not a valid schema name ([a-z_][a-z0-9_]*)"
    );
    Ok(format!("\"{schema}\""))
}

/// The checkpoint of `name` (0 when it has never run), creating its row.
///
/// # Errors
/// On a database error.
pub async fn checkpoint(pool: &PgPool, name: &str) -> anyhow::Result<u64> {
    checkpoint_in(pool, LIVE_SCHEMA, name).await
}

/// The checkpoint of `name` in `schema`'s `projection_checkpoints` (0 when it has never run),
/// creating its row.
///
/// # Errors
/// On a database error or an invalid schema name.
pub async fn checkpoint_in(pool: &PgPool, schema: &str, name: &str) -> anyhow::Result<u64> {
    let s = schema_ident(schema)?;
    sqlx::query(&format!(
        "INSERT INTO {s}.projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING"
    ))
    .bind(name)
    .execute(pool)
    .await?;
    let position: i64 = sqlx::query_scalar(&format!(
        "SELECT position FROM {s}.projection_checkpoints WHERE name = $1"
    ))
    .bind(name)
    .fetch_one(pool)
    .await?;
    Ok(position as u64)
}

/// Creates `schema` with a `projection_checkpoints` table and every table of `projections`, each
/// `LIKE public.<table> INCLUDING ALL` (same columns, defaults, constraints and indexes; the
/// indexes keep the live names, so a swapped-in table is indistinguishable from a migrated one).
/// `unlogged` creates them `UNLOGGED` (no WAL; a crash of PostgreSQL empties them): for audit
/// schemas, which can be replayed again; never for tables that become live.
///
/// # Errors
/// On a database error or an invalid schema name.
pub async fn prepare_schema(
    pool: &PgPool,
    schema: &str,
    projections: &[Arc<dyn Projection>],
    unlogged: bool,
) -> anyhow::Result<()> {
    let s = schema_ident(schema)?;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
        .execute(&mut *tx)
        .await?;
    let mut tables = vec!["projection_checkpoints"];
    for p in projections {
        tables.extend(p.tables());
    }
    for table in tables {
        sqlx::query(&format!(
            "CREATE {}TABLE IF NOT EXISTS {s}.{table} (LIKE public.{table} INCLUDING ALL)",
            if unlogged { "UNLOGGED " } else { "" }
        ))
        .execute(&mut *tx)
        .await?;
        // Give the copied indexes the live names (LIKE names them after their columns).
        let live: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        let copied: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $2 AND tablename = $1",
        )
        .bind(table)
        .bind(schema)
        .fetch_all(&mut *tx)
        .await?;
        let shape = |name: &str, def: &str, sch: &str| {
            def.replacen(&format!(" {name} ON {sch}.{table} "), " ON ", 1)
        };
        for (name, def) in &live {
            let want = shape(name, def, "public");
            if let Some((copied_name, _)) = copied
                .iter()
                .find(|(n, d)| n != name && shape(n, d, schema) == want)
            {
                sqlx::query(&format!(
                    "ALTER INDEX {s}.\"{copied_name}\" RENAME TO \"{name}\""
                ))
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Why a batch was not applied.
#[derive(Debug)]
pub enum BatchError {
    /// The message at `stream_sequence` fails to apply: the projection stops there until an
    /// operator fixes the cause or skips it (`mychat projections skip`).
    Poison {
        stream_sequence: u64,
        subject: String,
        cause: anyhow::Error,
    },
    /// Postgres or NATS unavailable, a serialization failure, or the checkpoint moved under this
    /// worker: retried from the checkpoint.
    Transient(anyhow::Error),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Poison {
                stream_sequence,
                subject,
                cause,
            } => write!(
                f,
                "poison event at stream sequence {stream_sequence} ({subject}): {cause:#}"
            ),
            Self::Transient(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for BatchError {}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        Self::Transient(e.into())
    }
}

/// Whether an error comes from the infrastructure (retry) rather than from the event (poison):
/// a lost or refused connection, a pool timeout, or a Postgres error of class 08 (connection),
/// 40 (transaction rollback: serialization failure, deadlock), 53 (resources), 55 (lock not
/// available) or 57 (operator intervention: shutdown, restart).
pub fn is_transient(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|c| {
                ["08", "40", "53", "55", "57"]
                    .iter()
                    .any(|p| c.starts_with(p))
            }),
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Protocol(_),
            ) => true,
            _ => false,
        })
}

/// Applies `batch` inside `tx` into `schema` and moves `name`'s checkpoint there from
/// `position` to the batch's last stream sequence with a compare-and-set. Messages whose stream
/// sequence is in `skips` are not applied (an operator's recorded decision).
///
/// # Errors
/// [`BatchError::Poison`] naming the message that fails to apply (the transaction is then
/// unusable: roll it back); [`BatchError::Transient`] otherwise.
pub async fn apply_in_tx(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    schema: &str,
    position: u64,
    batch: &[LogMessage],
    skips: &std::collections::BTreeSet<u64>,
) -> Result<u64, BatchError> {
    let name = projection.name();
    let s = schema_ident(schema).map_err(BatchError::Transient)?;
    sqlx::query(&format!("SET LOCAL search_path TO {s}, public"))
        .execute(&mut *tx)
        .await?;
    let skipped = batch.iter().any(|m| skips.contains(&m.stream_sequence));
    let kept: std::borrow::Cow<'_, [LogMessage]> = if skipped {
        for m in batch.iter().filter(|m| skips.contains(&m.stream_sequence)) {
            tracing::warn!(
                projection = name,
                stream_sequence = m.stream_sequence,
                "skipping the message by the operator's recorded decision"
            );
        }
        batch
            .iter()
            .filter(|m| !skips.contains(&m.stream_sequence))
            .cloned()
            .collect::<Vec<_>>()
            .into()
    } else {
        batch.into()
    };
    if !kept.is_empty() {
        apply_messages(tx, projection, &kept).await?;
    }
    let last = batch.last().map_or(position, |m| m.stream_sequence);
    let moved = sqlx::query(&format!(
        "UPDATE {s}.projection_checkpoints SET position = $2, version = $4, updated_at = now() \
         WHERE name = $1 AND position = $3"
    ))
    .bind(name)
    .bind(last as i64)
    .bind(position as i64)
    .bind(projection.version())
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if moved != 1 {
        return Err(BatchError::Transient(anyhow::anyhow!(
            "projection {name}: checkpoint moved under this worker (another worker is active)"
        )));
    }
    sqlx::query("SET LOCAL search_path TO public")
        .execute(&mut *tx)
        .await?;
    Ok(last)
}

/// Applies `messages` with [`Projection::apply_batch`] behind a savepoint. When the batch fails
/// for a reason other than the infrastructure, it is rolled back to the savepoint and applied
/// again message by message with [`Projection::apply`]: the first message that fails is the
/// poison event, named by its own stream sequence and cause. (If every message then applies,
/// the batched code was at fault: the message-by-message result stands, and a warning is logged.)
async fn apply_messages(
    tx: &mut PgConnection,
    projection: &dyn Projection,
    messages: &[LogMessage],
) -> Result<(), BatchError> {
    let name = projection.name();
    sqlx::query("SAVEPOINT mychat_batch")
        .execute(&mut *tx)
        .await?;
    // Issue 8: each event's correlation id in the projector's log (read from the commit only
    // when debug logs of the projectors are on, or when a message fails).
    if tracing::enabled!(tracing::Level::DEBUG) {
        for message in messages {
            tracing::debug!(
                projection = name,
                stream_sequence = message.stream_sequence,
                subject = %message.subject,
                correlation_id = correlation_of(message).unwrap_or_default(),
                "applying"
            );
        }
    }
    let cause = match projection.apply_batch(&mut *tx, messages).await {
        Ok(()) => return Ok(()),
        Err(cause) if is_transient(&cause) => return Err(BatchError::Transient(cause)),
        Err(cause) => match cause.downcast_ref::<FailedAt>().cloned() {
            // Applied message by message already: the failing message is known.
            Some(at) => {
                return Err(BatchError::Poison {
                    stream_sequence: at.stream_sequence,
                    subject: at.subject,
                    cause,
                })
            }
            None => cause,
        },
    };
    sqlx::query("ROLLBACK TO SAVEPOINT mychat_batch")
        .execute(&mut *tx)
        .await?;
    for message in messages {
        if let Err(cause) = projection.apply(&mut *tx, message).await {
            if is_transient(&cause) {
                return Err(BatchError::Transient(cause));
            }
            tracing::warn!(
                projection = name,
                stream_sequence = message.stream_sequence,
                correlation_id = correlation_of(message).unwrap_or_default(),
                error = format!("{cause:#}"),
                "the message fails to apply"
            );
            return Err(BatchError::Poison {
                stream_sequence: message.stream_sequence,
                subject: message.subject.clone(),
                cause,
            });
        }
    }
    tracing::warn!(
        projection = name,
        first = messages.first().map(|m| m.stream_sequence),
        last = messages.last().map(|m| m.stream_sequence),
        error = format!("{cause:#}"),
        "the batched apply failed but every message applied on its own; kept the \
         message-by-message result"
    );
    Ok(())
}

/// The stream sequences an operator decided to skip for `projection`: the
/// `ProjectionEventSkipped` events on `ev.projection.<name>` ([`crate::control`]).
///
/// # Errors
/// On a NATS error.
pub async fn load_skips(
    js: &jetstream::Context,
    projection: &str,
) -> anyhow::Result<std::collections::BTreeSet<u64>> {
    let mut skips = std::collections::BTreeSet::new();
    for event in crate::control::skip_events(js, projection).await? {
        skips.insert(event.stream_sequence);
    }
    Ok(skips)
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

/// How a projection reads its subjects: `(the consumer's filter, the subjects to keep client
/// side)`. One subject is filtered by the server. Several (the ledger's five aggregate types,
/// the notifications' four) are read unfiltered and kept client side: measured on
/// nats-server 2.15 with one subject per aggregate, an ordered consumer with several
/// wildcard filters delivers ~4k messages/s, a single-filter or unfiltered one > 100k/s.
pub fn read_filter(subjects: Vec<String>) -> (Vec<String>, Option<Vec<String>>) {
    if subjects.len() > 1 {
        (Vec::new(), Some(subjects))
    } else {
        (subjects, None)
    }
}

fn keeps(keep: &Option<Vec<String>>, subject: &str) -> bool {
    keep.as_ref()
        .is_none_or(|k| k.iter().any(|f| subject_matches(f, subject)))
}

/// How long one pull request of a reader ([`spawn_reader`]) waits for messages when fewer than
/// it asked for are stored (at the head of the stream). A reader stops at the head on its own
/// (`pending == 0`), so this only matters for a stream that grows while it is read.
pub const READ_PULL_EXPIRY: Duration = Duration::from_secs(1);

/// The longest pull request of a live projector's ordered consumer (async-nats asks for 30 s).
/// async-nats's ordered stream can stop asking for messages when its count of the messages
/// still owed goes wrong (see [`spawn_reader`]) until its safety timer fires, at the request's
/// expiry + 5 s: a live projector then lags for up to 10 s instead of 35 s. Readers of replays
/// and rebuilds do not use that stream at all; the live loop still does (it waits on the stream
/// with a linger and a shutdown signal), which is left to do.
pub const LIVE_PULL_EXPIRY: Duration = Duration::from_secs(5);

/// How many messages one pull request of a reader ([`spawn_reader`]) asks for.
pub const READ_PULL_BATCH: usize = 2000;

/// Reads `projection`'s messages from `from + 1` in a background task and sends them in batches
/// of at most `batch_size`, until the consumer has nothing pending (the head when it was
/// created) or the next message is past `upto`; then the channel closes. Reading overlaps with
/// applying (the channel holds 4 batches).
///
/// The reader is an *ordered consumer* of its own making: an ephemeral, unacknowledged,
/// in-memory pull consumer read with one explicit pull request of [`READ_PULL_BATCH`] messages
/// at a time; each message's consumer sequence must follow the last one, and on a gap or a
/// failed pull request (the consumer deleted, say) the consumer is re-created after the last
/// stream sequence read, so nothing is skipped or read twice (three re-creations in a row that
/// read nothing fail the reader). Not async-nats's `OrderedConfig` stream: its continuous
/// pulls count the messages still owed by its requests with a saturating counter that, when a
/// request's messages arrive before the request's own bookkeeping (a busy machine), loses
/// decrements; the client then believes messages are owed that the server has finished with,
/// sends no new pull request, and waits until its safety timer (the request's expiry + 5 s)
/// fires. That was the sporadic 10–36 s stall of replays and rebuilds (async-nats 0.51.0,
/// `consumer/pull.rs`, `Stream::poll_next`; a debug log of a stalled 1M replay showed the
/// client had received exactly 1,796 whole batches of 500 when it stopped asking).
pub fn spawn_reader(
    js: jetstream::Context,
    stream: &'static str,
    subjects: Vec<String>,
    from: u64,
    upto: Option<u64>,
    batch_size: usize,
) -> tokio::sync::mpsc::Receiver<anyhow::Result<Vec<LogMessage>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let read = async {
            if upto.is_some_and(|u| u <= from) {
                return Ok(());
            }
            let stream = js.get_stream(stream).await?;
            let (filter_subjects, keep) = read_filter(subjects);
            // The last stream sequence read: a re-created consumer starts after it.
            let mut last = from;
            let mut batch = Vec::with_capacity(batch_size);
            // Consumers re-created in a row (back to 1 when the last one read something).
            let mut retries = 0u32;
            'consumer: loop {
                let consumer = stream
                    .create_consumer(pull::Config {
                        filter_subjects: filter_subjects.clone(),
                        deliver_policy: if last == 0 {
                            DeliverPolicy::All
                        } else {
                            DeliverPolicy::ByStartSequence {
                                start_sequence: last + 1,
                            }
                        },
                        ack_policy: jetstream::consumer::AckPolicy::None,
                        memory_storage: true,
                        num_replicas: 1,
                        // Long enough for a consumer of the reader to wait on a full channel.
                        inactive_threshold: Duration::from_secs(120),
                        ..Default::default()
                    })
                    .await?;
                let name = consumer.cached_info().name.clone();
                let done = consumer.cached_info().num_pending == 0;
                let before = last;
                // The consumer sequence of the last message this consumer delivered.
                let mut delivered = 0u64;
                let outcome = async {
                    if done {
                        return anyhow::Ok(Read::Done);
                    }
                    loop {
                        let pulled = consumer
                            .batch()
                            .max_messages(READ_PULL_BATCH)
                            .expires(READ_PULL_EXPIRY)
                            .messages()
                            .await;
                        let mut messages = match pulled {
                            Ok(messages) => messages,
                            Err(e) => return Ok(Read::Again(format!("pull request: {e}"))),
                        };
                        // Messages are pending, so a request that brings none (its consumer
                        // gone without a word, say) is not waited out again and again.
                        let mut got = 0usize;
                        while let Some(m) = messages.next().await {
                            got += 1;
                            let m = match m {
                                Ok(m) => m,
                                Err(e) => return Ok(Read::Again(format!("pull response: {e}"))),
                            };
                            let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
                            if info.consumer_sequence != delivered + 1 {
                                return Ok(Read::Again(format!(
                                    "consumer sequence {} after {delivered}",
                                    info.consumer_sequence
                                )));
                            }
                            delivered = info.consumer_sequence;
                            let pending = info.pending;
                            let message = log_message(&m, &info);
                            if upto.is_some_and(|u| message.stream_sequence > u) {
                                return Ok(Read::Done);
                            }
                            last = message.stream_sequence;
                            if keeps(&keep, &message.subject) {
                                batch.push(message);
                                if batch.len() >= batch_size
                                    && tx.send(Ok(std::mem::take(&mut batch))).await.is_err()
                                {
                                    return Ok(Read::Done);
                                }
                            }
                            if pending == 0 || upto.is_some_and(|u| last >= u) {
                                return Ok(Read::Done);
                            }
                        }
                        if got == 0 {
                            return Ok(Read::Again("a pull request brought nothing".into()));
                        }
                    }
                }
                .await;
                // Best effort: an ephemeral consumer also goes away on its own once inactive.
                let _ = stream.delete_consumer(&name).await;
                match outcome? {
                    Read::Done => break 'consumer,
                    Read::Again(why) => {
                        retries = if last > before { 1 } else { retries + 1 };
                        anyhow::ensure!(
                            retries <= 3,
                            "reading {}: {why} ({retries} consumers re-created in a row)",
                            stream.cached_info().config.name
                        );
                        tracing::warn!(
                            consumer = name,
                            after_stream_sequence = last,
                            why,
                            "re-creating a reader's consumer"
                        );
                    }
                }
            }
            if !batch.is_empty() {
                let _ = tx.send(Ok(batch)).await;
            }
            anyhow::Ok(())
        };
        if let Err(e) = read.await {
            let _ = tx.send(Err(e)).await;
        }
    });
    rx
}

/// How a reader's consumer ended ([`spawn_reader`]).
enum Read {
    /// At the head, past `upto`, or nobody listens any more.
    Done,
    /// A gap in its consumer sequence or a failed pull request (why): read on from the last
    /// stream sequence with a new consumer.
    Again(String),
}

/// The advisory-lock key of `name` in `schema`: `hashtextextended('mychat.projection:<name>@<schema>', 0)`.
fn lock_key(name: &str, schema: &str) -> String {
    format!("mychat.projection:{name}@{schema}")
}

impl Projector {
    /// Runs until `shutdown` is cancelled.
    ///
    /// Only one worker per projection and schema is active: it holds a Postgres session advisory
    /// lock on a dedicated connection; standbys try to take it every second, so a standby takes
    /// over within about a second of the active worker's death (its connection closes).
    /// Infrastructure failures are retried with backoff from the last checkpoint. A poison
    /// event stops the projection: it is recorded in `projection_status` (sequence and cause)
    /// and the worker waits until an operator skips it (`mychat projections skip`), checking
    /// every 2 s. Nothing is ever skipped silently.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.projection.name();
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        while !shutdown.is_cancelled() {
            let Some(lock) = self.acquire(&shutdown).await else {
                return;
            };
            match self.run_active(lock, &shutdown).await {
                Ok(()) => return,
                Err(BatchError::Poison {
                    stream_sequence,
                    subject,
                    cause,
                }) => {
                    let error = format!("{cause:#}");
                    tracing::error!(
                        projection = name,
                        stream_sequence,
                        subject,
                        error,
                        "poison event: the projection is stopped until the cause is fixed or \
                         an operator skips it (mychat projections skip {name} {stream_sequence} --reason …)"
                    );
                    let _ = self
                        .set_status("stopped", Some(stream_sequence), Some(&error))
                        .await;
                    // Wait for a skip decision (or a fix: retry every 30 s).
                    let js = jetstream::new(self.nats.clone());
                    let mut waited = Duration::ZERO;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                            _ = shutdown.cancelled() => return,
                        }
                        waited += Duration::from_secs(2);
                        if load_skips(&js, name)
                            .await
                            .is_ok_and(|s| s.contains(&stream_sequence))
                            || waited >= Duration::from_secs(30)
                        {
                            break;
                        }
                    }
                }
                Err(BatchError::Transient(e)) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::error!(
                        projection = name,
                        error = format!("{e:#}"),
                        ?delay,
                        "projector failed; retrying from its checkpoint"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Takes the projection's advisory lock (waiting as a standby), or `None` on shutdown.
    async fn acquire(&self, shutdown: &CancellationToken) -> Option<PgConnection> {
        let key = lock_key(self.projection.name(), &self.settings.schema);
        let mut announced = false;
        loop {
            let attempt = async {
                let mut conn = self.pool.acquire().await?.detach();
                let got: bool =
                    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                        .bind(&key)
                        .fetch_one(&mut conn)
                        .await?;
                anyhow::Ok(got.then_some(conn))
            };
            match attempt.await {
                Ok(Some(conn)) => {
                    tracing::info!(projection = self.projection.name(), "active worker");
                    return Some(conn);
                }
                Ok(None) if !announced => {
                    announced = true;
                    tracing::info!(
                        projection = self.projection.name(),
                        "standby: another worker is active"
                    );
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    projection = self.projection.name(),
                    error = format!("{e:#}"),
                    "cannot take the projection lock"
                ),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return None,
            }
        }
    }

    async fn set_status(
        &self,
        state: &str,
        poison_seq: Option<u64>,
        error: Option<&str>,
    ) -> anyhow::Result<()> {
        if self.settings.schema != LIVE_SCHEMA {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO projection_status (name, state, poison_seq, error, worker, updated_at) \
             VALUES ($1, $2, $3, $4, $5, now()) ON CONFLICT (name) DO UPDATE SET state = $2, \
             poison_seq = $3, error = $4, worker = $5, updated_at = now()",
        )
        .bind(self.projection.name())
        .bind(state)
        .bind(poison_seq.map(|s| s as i64))
        .bind(error)
        .bind(format!("pid {}", std::process::id()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn run_active(
        &self,
        mut lock: PgConnection,
        shutdown: &CancellationToken,
    ) -> Result<(), BatchError> {
        let name = self.projection.name();
        let schema = self.settings.schema.clone();
        let js = jetstream::new(self.nats.clone());
        // A changed version in the code: rebuild blue/green before going live.
        if schema == LIVE_SCHEMA && !self.projection.tables().is_empty() {
            let stored: Option<(i64, i32)> = sqlx::query_as(
                "SELECT position, version FROM projection_checkpoints WHERE name = $1",
            )
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
            if let Some((position, version)) = stored {
                if position > 0 && version != self.projection.version() {
                    tracing::info!(
                        projection = name,
                        from_version = version,
                        to_version = self.projection.version(),
                        "projection version changed: rebuilding blue/green"
                    );
                    crate::rebuild::rebuild(
                        &self.pool,
                        &self.nats,
                        self.projection.clone(),
                        &crate::rebuild::LogProgress,
                    )
                    .await
                    .map_err(BatchError::Transient)?;
                }
            }
        }
        let mut position = checkpoint_in(&self.pool, &schema, name)
            .await
            .map_err(BatchError::Transient)?;
        let skips = load_skips(&js, name).await.map_err(BatchError::Transient)?;
        let stream = js
            .get_stream(self.projection.stream())
            .await
            .map_err(|e| BatchError::Transient(e.into()))?;
        let deliver_policy = if position == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            }
        };
        let (filter_subjects, keep) = read_filter(self.projection.subjects());
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subjects,
                deliver_policy,
                max_expires: LIVE_PULL_EXPIRY,
                ..Default::default()
            })
            .await
            .map_err(|e| BatchError::Transient(e.into()))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| BatchError::Transient(e.into()))?;
        let _ = self.set_status("running", None, None).await;
        tracing::info!(projection = name, position, schema, "projector started");
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        loop {
            let first = tokio::select! {
                m = messages.next() => m,
                _ = heartbeat.tick() => {
                    // Still the active worker? (The lock dies with its connection.)
                    sqlx::query("SELECT 1").execute(&mut lock).await?;
                    continue;
                }
                _ = shutdown.cancelled() => return Ok(()),
            };
            let Some(first) = first else {
                return Err(BatchError::Transient(anyhow::anyhow!("consumer ended")));
            };
            let first = first.map_err(|e| BatchError::Transient(anyhow::anyhow!("{e}")))?;
            let first = to_log_message(first).map_err(BatchError::Transient)?;
            if !keeps(&keep, &first.subject) {
                continue;
            }
            let mut batch = vec![first];
            while batch.len() < self.settings.batch_size {
                match tokio::time::timeout(self.settings.linger, messages.next()).await {
                    Ok(Some(m)) => {
                        let m = to_log_message(
                            m.map_err(|e| BatchError::Transient(anyhow::anyhow!("{e}")))?,
                        )
                        .map_err(BatchError::Transient)?;
                        if keeps(&keep, &m.subject) {
                            batch.push(m);
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            position = match self.apply_batch(position, &batch, &skips).await {
                Ok(p) => p,
                Err(BatchError::Poison { .. })
                    if checkpoint_in(&self.pool, &schema, name).await.ok() != Some(position) =>
                {
                    // The checkpoint moved (a rebuild swapped the tables, or another worker):
                    // not this event's fault.
                    return Err(BatchError::Transient(anyhow::anyhow!(
                        "projection {name}: checkpoint moved during a failed batch"
                    )));
                }
                Err(BatchError::Poison {
                    stream_sequence,
                    subject,
                    cause,
                }) => {
                    // Apply what precedes the poison event, so the checkpoint stops right
                    // before it.
                    let before: Vec<LogMessage> = batch
                        .iter()
                        .take_while(|m| m.stream_sequence < stream_sequence)
                        .cloned()
                        .collect();
                    if !before.is_empty() {
                        self.apply_batch(position, &before, &skips).await?;
                    }
                    return Err(BatchError::Poison {
                        stream_sequence,
                        subject,
                        cause,
                    });
                }
                Err(e) => return Err(e),
            };
            let _ = self
                .nats
                .publish(checkpoint_subject(name), position.to_string().into())
                .await;
        }
    }

    #[tracing::instrument(skip_all, fields(projection = self.projection.name(), from = position, count = batch.len()))]
    async fn apply_batch(
        &self,
        position: u64,
        batch: &[LogMessage],
        skips: &std::collections::BTreeSet<u64>,
    ) -> Result<u64, BatchError> {
        let mut tx = self.pool.begin().await?;
        let last = apply_in_tx(
            &mut tx,
            self.projection.as_ref(),
            &self.settings.schema,
            position,
            batch,
            skips,
        )
        .await?;
        tx.commit().await?;
        Ok(last)
    }
}

pub(crate) fn to_log_message(m: jetstream::Message) -> anyhow::Result<LogMessage> {
    let info = m.info().map_err(|e| anyhow::anyhow!("message info: {e}"))?;
    Ok(log_message(&m, &info))
}

/// [`to_log_message`] for a caller that has parsed the message's info already (its reply
/// subject: parsed once per message on the read path).
fn log_message(m: &jetstream::Message, info: &jetstream::message::Info<'_>) -> LogMessage {
    let time =
        DateTime::from_timestamp(info.published.unix_timestamp(), info.published.nanosecond())
            .unwrap_or_default();
    LogMessage::new(
        info.stream_sequence,
        m.subject.to_string(),
        time,
        m.payload.clone(),
    )
}

/// The correlation id of an `EVENTS` commit (`None` for other messages).
pub fn correlation_of(message: &LogMessage) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Only {
        correlation_id: Option<String>,
    }
    serde_json::from_slice::<Only>(&message.payload)
        .ok()
        .and_then(|o| o.correlation_id)
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subject_filters_match_as_nats_does() {
        assert!(subject_matches("ev.order.>", "ev.order.12"));
        assert!(subject_matches("ev.order.>", "ev.order.12.x"));
        assert!(!subject_matches("ev.order.>", "ev.order"));
        assert!(!subject_matches("ev.order.>", "ev.orders.1"));
        assert!(subject_matches("ev.*.1", "ev.order.1"));
        assert!(!subject_matches("ev.*.1", "ev.order.2"));
        assert!(subject_matches("chat.>", "chat.5"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
