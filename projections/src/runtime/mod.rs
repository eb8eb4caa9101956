//! The projector runtime: one worker per projection, reading a stream from the projection's
//! checkpoint with an ordered consumer and applying batches transactionally.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use async_nats::jetstream::{self};
use async_trait::async_trait;
use backon::BackoffBuilder;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use eventstore::envelope::{StoredEvent, Upcasters};
use eventstore::{Commit, ReadOptions, ReadUntil};
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
    /// The commit's event types, comma-separated, as its `Mychat-Event-Types` header carries them
    /// (`None` when the message has no such header).
    pub event_types: Option<Arc<str>>,
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
            event_types: None,
            decoded: Arc::default(),
        }
    }

    /// The same message with its commit's event types (the `Mychat-Event-Types` header:
    /// comma-separated).
    pub fn with_event_types(mut self, event_types: Option<&str>) -> Self {
        self.event_types = event_types.map(Arc::from);
        self
    }

    /// Whether `projection` does nothing for this message: every event type in its
    /// `Mychat-Event-Types` header is one the projection [ignores](Projection::ignores). A
    /// message without the header is never skipped.
    pub fn ignored_by(&self, projection: &dyn Projection) -> bool {
        let ignored = projection.ignores();
        if ignored.is_empty() {
            return false;
        }
        match self.event_types.as_deref() {
            Some(types) if !types.is_empty() => types.split(',').all(|t| ignored.contains(&t)),
            _ => false,
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
    /// Event types on its subjects that it is known to do nothing for. A commit made only of
    /// such events is not applied: the live projector opens no transaction for it (its
    /// checkpoint moves past it with the next batch, or within a second), and replays leave it
    /// out. Unknown types are never ignored, so a projection that refuses what it does not know
    /// (the ledger) still sees every new event type. The names are the stored `event_type`s
    /// (upcasters must not rename a type that a projection ignores).
    fn ignores(&self) -> &'static [&'static str] {
        &[]
    }
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
    /// Projections that write the same tables as this one (itself included) and are therefore
    /// rebuilt together, into one shadow schema swapped in at once (the chat messages: one
    /// projection per chat stream, one table). Empty (the default): it alone.
    fn siblings(&self) -> Vec<Arc<dyn Projection>> {
        Vec::new()
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
    /// Whether a batch's transaction waits for PostgreSQL's WAL flush before it commits
    /// (`synchronous_commit`). Off by default: the log is the record and the checkpoint moves
    /// in the same transaction as the rows, so a transaction lost to a PostgreSQL crash loses
    /// its checkpoint too and is simply read and applied again (see `docs/architecture.md`,
    /// "Projections"). An acknowledged command is durable in JetStream either way.
    pub synchronous_commit: bool,
    /// The Postgres schema the projection writes into (`public` for the live read models).
    /// Each batch's transaction runs with `SET LOCAL search_path TO <schema>, public`.
    pub schema: String,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            synchronous_commit: false,
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

/// How often, at most, a live projector stores its checkpoint for messages it ignores (each
/// such store is a statement: one per ignored batch would cost what the ignoring saves). A
/// killed projector reads those messages again; nothing else depends on the stored position
/// (the announcements carry the read one; `finance reconcile` waits only for the event types a
/// projection does not ignore).
pub const IGNORED_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

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
/// sequence is in `skips` are not applied (an operator's recorded decision), nor are the ones the projection
/// [ignores](Projection::ignores). The transaction's
/// `search_path` stays `<schema>, public` until it ends (`SET LOCAL`): statements the caller adds
/// to it name their schema.
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
    // One round trip for both (a simple query may hold several statements).
    let prepare = format!("SET LOCAL search_path TO {s}, public; SAVEPOINT mychat_batch");
    sqlx::Executor::execute(&mut *tx, prepare.as_str()).await?;
    let dropped = |m: &LogMessage| skips.contains(&m.stream_sequence) || m.ignored_by(projection);
    let kept: std::borrow::Cow<'_, [LogMessage]> = if batch.iter().any(dropped) {
        for m in batch.iter().filter(|m| skips.contains(&m.stream_sequence)) {
            tracing::warn!(
                projection = name,
                stream_sequence = m.stream_sequence,
                "skipping the message by the operator's recorded decision"
            );
        }
        batch
            .iter()
            .filter(|m| !dropped(m))
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
    Ok(last)
}

/// Applies `messages` with [`Projection::apply_batch`] behind the savepoint `mychat_batch` (set by
/// [`apply_in_tx`]). When the batch fails
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
    // Each event's correlation id in the projector's log (read from the commit only
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

pub use eventstore::reader::subject_matches;

/// A reader of a projection's messages ([`spawn_reader`]): [`eventstore::LogReader`]'s batches
/// as [`LogMessage`]s.
pub struct ProjectionReader {
    inner: eventstore::LogReader,
}

impl ProjectionReader {
    /// The next batch (never empty) in stream order; `None` at the reader's end. Cancel-safe.
    ///
    /// # Errors
    /// When the stream cannot be read ([`eventstore::reader::ReadError`]).
    pub async fn recv(&mut self) -> Option<anyhow::Result<Vec<LogMessage>>> {
        self.inner.next().await.map(convert)
    }

    /// A batch already read, if there is one (never waits).
    pub fn try_recv(&mut self) -> Option<anyhow::Result<Vec<LogMessage>>> {
        self.inner.try_next().map(convert)
    }

    /// Whether no batch is waiting to be taken.
    pub fn is_idle(&self) -> bool {
        self.inner.is_idle()
    }
}

fn convert(
    batch: Result<Vec<eventstore::LogEntry>, eventstore::reader::ReadError>,
) -> anyhow::Result<Vec<LogMessage>> {
    Ok(batch?
        .into_iter()
        .map(|e| {
            let types = e
                .headers
                .as_ref()
                .and_then(|h| h.get(eventstore::envelope::HDR_EVENT_TYPES))
                .map(|v| v.as_str().to_string());
            LogMessage::new(e.stream_sequence, e.subject, e.published, e.payload)
                .with_event_types(types.as_deref())
        })
        .collect())
}

/// Reads `subjects` of `stream` from `from + 1` in a background task, in batches of at most
/// `batch_size`, until the head as it is when the reader starts, or until the next message is
/// past `upto`; then [`ProjectionReader::recv`] answers `None`. Reading overlaps with applying
/// (the reader keeps up to 4 batches ahead). The reader is [`eventstore::LogReader`]: explicit
/// pull requests on a consumer of its own, consumer sequences checked, the consumer re-created
/// after the last stream sequence read on a gap or a failed request.
pub fn spawn_reader(
    js: jetstream::Context,
    stream: &'static str,
    subjects: Vec<String>,
    from: u64,
    upto: Option<u64>,
    batch_size: usize,
) -> ProjectionReader {
    let until = match upto {
        Some(u) => ReadUntil::Sequence(u),
        None => ReadUntil::Head,
    };
    ProjectionReader {
        inner: eventstore::LogReader::spawn(
            js,
            ReadOptions::new(stream, from, until)
                .subjects(subjects)
                .batch_size(batch_size),
        ),
    }
}

/// A reader that follows `subjects` of `stream` from `from + 1` forever: the live projectors'.
/// At the head a message is handed over as soon as it is read.
pub fn follow(
    js: jetstream::Context,
    stream: &'static str,
    subjects: Vec<String>,
    from: u64,
    batch_size: usize,
) -> ProjectionReader {
    ProjectionReader {
        inner: eventstore::LogReader::spawn(
            js,
            ReadOptions::new(stream, from, ReadUntil::Follow)
                .subjects(subjects)
                .batch_size(batch_size),
        ),
    }
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
        let mut reader = follow(
            js.clone(),
            self.projection.stream(),
            self.projection.subjects(),
            position,
            self.settings.batch_size,
        );
        let _ = self.set_status("running", None, None).await;
        tracing::info!(projection = name, position, schema, "projector started");
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        // A batch read but not applied yet (it would have made the transaction too big).
        let mut carried: Option<Vec<LogMessage>> = None;
        // Everything up to here is reflected in the read model: past `position` (the stored
        // checkpoint) only by messages the projection ignores, whose checkpoint is stored lazily.
        let mut read_to = position;
        // When the checkpoint was last stored for ignored messages.
        let mut persisted = tokio::time::Instant::now();
        loop {
            let mut batch = match carried.take() {
                Some(batch) => batch,
                None => tokio::select! {
                    b = reader.recv() => match b {
                        Some(b) => b.map_err(BatchError::Transient)?,
                        None => return Err(BatchError::Transient(anyhow::anyhow!("reader ended"))),
                    },
                    _ = heartbeat.tick() => {
                        // Still the active worker? (The lock dies with its connection.)
                        sqlx::query("SELECT 1").execute(&mut lock).await?;
                        if read_to > position {
                            position = self.move_checkpoint(position, read_to).await?;
                            persisted = tokio::time::Instant::now();
                        }
                        continue;
                    }
                    _ = shutdown.cancelled() => {
                        // Best effort: ignored messages need not be read again.
                        if read_to > position {
                            let _ = self.move_checkpoint(position, read_to).await;
                        }
                        return Ok(());
                    }
                },
            };
            // No linger: apply what has been read by now. What arrives meanwhile is read while
            // this batch is applied, and makes the next batch.
            while batch.len() < self.settings.batch_size {
                match reader.try_recv() {
                    Some(more) => {
                        let more = more.map_err(BatchError::Transient)?;
                        if batch.len() + more.len() > self.settings.batch_size {
                            carried = Some(more);
                            break;
                        }
                        batch.extend(more);
                    }
                    None => break,
                }
            }
            let last = batch.last().map_or(read_to, |m| m.stream_sequence);
            if batch.iter().all(|m| {
                m.ignored_by(self.projection.as_ref()) && !skips.contains(&m.stream_sequence)
            }) {
                // Nothing to write: no batch transaction. The read model already shows `last`.
                read_to = last;
                let _ = self
                    .nats
                    .publish(checkpoint_subject(name), read_to.to_string().into())
                    .await;
                // The checkpoint follows in one statement, at most once a second (and on the
                // heartbeat, and on shutdown).
                if carried.is_none() && persisted.elapsed() >= IGNORED_CHECKPOINT_EVERY {
                    position = self.move_checkpoint(position, read_to).await?;
                    persisted = tokio::time::Instant::now();
                }
                continue;
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
            read_to = position;
            let _ = self
                .nats
                .publish(checkpoint_subject(name), position.to_string().into())
                .await;
        }
    }

    /// Stores the checkpoint `to` (from `position`, compare-and-set) for messages the projection
    /// ignored: nothing else changes. One round trip: a simple query whose statements run as one
    /// implicit transaction, with `synchronous_commit` off as the batches' (a lost update is
    /// only a few ignored messages read again).
    async fn move_checkpoint(&self, position: u64, to: u64) -> Result<u64, BatchError> {
        let s = schema_ident(&self.settings.schema).map_err(BatchError::Transient)?;
        let name = self.projection.name();
        // Inlined (a simple query takes no parameters): a checked identifier and numbers.
        schema_ident(name).map_err(BatchError::Transient)?;
        let sql = format!(
            "SET LOCAL synchronous_commit TO off; \
             UPDATE {s}.projection_checkpoints SET position = {to}, version = {version}, \
             updated_at = now() WHERE name = '{name}' AND position = {position}",
            version = self.projection.version()
        );
        let moved = sqlx::Executor::execute(&self.pool, sql.as_str())
            .await?
            .rows_affected();
        if moved != 1 {
            return Err(BatchError::Transient(anyhow::anyhow!(
                "projection {name}: checkpoint moved under this worker (another worker is active)"
            )));
        }
        Ok(to)
    }

    #[tracing::instrument(skip_all, fields(projection = self.projection.name(), from = position, count = batch.len()))]
    async fn apply_batch(
        &self,
        position: u64,
        batch: &[LogMessage],
        skips: &std::collections::BTreeSet<u64>,
    ) -> Result<u64, BatchError> {
        let mut tx = if self.settings.synchronous_commit {
            self.pool.begin().await?
        } else {
            // One round trip for both (a simple query may hold several statements).
            self.pool
                .begin_with("BEGIN; SET LOCAL synchronous_commit TO off")
                .await?
        };
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
