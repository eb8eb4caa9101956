//! Blue/green rebuilds and point-in-time audit replays.
//!
//! Both run a projection's own `apply` from the start of the log into another Postgres schema
//! that holds the same tables (`LIKE public.<table> INCLUDING ALL`, see
//! [`crate::runtime::prepare_schema`]) and its own `projection_checkpoints`; each batch's
//! transaction sets `search_path` to that schema, so the read-model SQL is the live code, word
//! for word.
//!
//! - **Rebuild** (`shadow_<name>`): replays to the head while the live tables keep serving, then
//!   in one transaction locks the live tables and checkpoint row, applies what arrived
//!   meanwhile, drops the live tables, moves the shadow tables into `public` and sets the live
//!   checkpoint (and version) to the shadow's. A live worker blocked on the lock finds its
//!   checkpoint moved and resumes from the new one.
//! - **Audit replay** (`audit_<stamp>`): replays up to a stream sequence (or the last message at
//!   or before a time) and keeps the schema, with an `audit_meta` row saying up to where.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use sqlx::PgPool;

use crate::runtime::{
    apply_in_tx, checkpoint_in, load_skips, prepare_schema, schema_ident, spawn_reader,
    table_exists, Projection, LIVE_SCHEMA,
};

/// Most messages a rebuild or an audit replay applies in one transaction (each projection's
/// [`Projection::apply_batch`] turns a batch into a few multi-row statements, so larger batches
/// mean fewer round trips; the live projectors use smaller ones for latency).
pub const REPLAY_BATCH: usize = 2000;

/// Progress of a replay, for a terminal bar or log lines.
pub trait Progress: Send + Sync {
    /// Replaying `projection`: about `total` messages to apply.
    fn start(&self, projection: &str, total: u64);
    /// `applied` messages so far, the last at `stream_sequence`.
    fn advance(&self, projection: &str, applied: u64, stream_sequence: u64);
    /// Done: `applied` messages in `seconds`.
    fn finish(&self, projection: &str, applied: u64, seconds: f64);
}

/// Progress as log lines (at most one every 2 s per projection).
pub struct LogProgress;

static LAST_LOG: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);

impl Progress for LogProgress {
    fn start(&self, projection: &str, total: u64) {
        tracing::info!(projection, total, "replay started");
    }
    fn advance(&self, projection: &str, applied: u64, stream_sequence: u64) {
        let mut last = LAST_LOG.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed().as_secs() >= 2) {
            *last = Some(Instant::now());
            tracing::info!(projection, applied, stream_sequence, "replay progress");
        }
    }
    fn finish(&self, projection: &str, applied: u64, seconds: f64) {
        tracing::info!(
            projection,
            applied,
            seconds,
            events_per_second = applied as f64 / seconds.max(1e-9),
            "replay finished"
        );
    }
}

/// How many messages of `projection` follow `from` (up to the head), and how long the oldest
/// of them has waited (now − its JetStream time, in seconds; 0 when none). This is a
/// projection's lag when `from` is its checkpoint.
///
/// # Errors
/// On a NATS error.
pub async fn lag(
    js: &jetstream::Context,
    projection: &dyn Projection,
    from: u64,
) -> anyhow::Result<(u64, f64)> {
    let stream = js.get_stream(projection.stream()).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subjects: projection.subjects(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from + 1,
            },
            ..Default::default()
        })
        .await?;
    let pending = consumer.cached_info().num_pending;
    if pending == 0 {
        return Ok((0, 0.0));
    }
    let mut messages = consumer.messages().await?;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
        .await
        .context("reading the oldest unapplied message")?
        .context("consumer ended")??;
    let info = first.info().map_err(|e| anyhow::anyhow!("{e}"))?;
    let published = info.published.unix_timestamp_nanos() as f64 / 1e9;
    let now = Utc::now().timestamp_nanos_opt().unwrap_or_default() as f64 / 1e9;
    Ok((pending, (now - published).max(0.0)))
}

/// Replays `projection` into `schema` from its checkpoint there up to `upto` (or the head).
/// Returns the number of messages applied.
///
/// # Errors
/// A poison event (naming its stream sequence and cause), or an infrastructure failure.
pub async fn replay_into(
    pool: &PgPool,
    nats: &async_nats::Client,
    projection: &dyn Projection,
    schema: &str,
    upto: Option<u64>,
    progress: &dyn Progress,
) -> anyhow::Result<u64> {
    let name = projection.name();
    let js = jetstream::new(nats.clone());
    let started = Instant::now();
    let mut position = checkpoint_in(pool, schema, name).await?;
    let skips = load_skips(&js, name).await?;
    let (total, _) = lag(&js, projection, position).await?;
    progress.start(name, total);
    let mut reader = spawn_reader(
        js,
        projection.stream(),
        projection.subjects(),
        position,
        upto,
        REPLAY_BATCH,
    );
    let mut applied = 0u64;
    while let Some(batch) = reader.recv().await {
        let batch = batch?;
        let mut tx = pool.begin().await?;
        position = apply_in_tx(&mut tx, projection, schema, position, &batch, &skips)
            .await
            .map_err(|e| anyhow::anyhow!("projection {name} into {schema}: {e}"))?;
        tx.commit().await?;
        applied += batch.len() as u64;
        progress.advance(name, applied, position);
    }
    progress.finish(name, applied, started.elapsed().as_secs_f64());
    Ok(applied)
}

/// Replays `projections` (all on `EVENTS`) into `schema` up to `upto` from **one** reader of
/// the stream: each batch read is handed to every projection, which keeps its own subjects past
/// its own checkpoint and applies them in its own transactions, concurrently with the others.
/// The log is delivered once instead of once per projection. Returns the messages applied per
/// projection.
///
/// # Errors
/// A poison event (naming the projection, its stream sequence and cause), or a failure.
pub async fn replay_shared(
    pool: &PgPool,
    nats: &async_nats::Client,
    projections: &[Arc<dyn Projection>],
    schema: &str,
    upto: u64,
    progress: &dyn Progress,
) -> anyhow::Result<Vec<(String, u64)>> {
    if projections.is_empty() {
        return Ok(Vec::new());
    }
    let js = jetstream::new(nats.clone());
    let mut lanes = Vec::new();
    let mut senders = Vec::new();
    for p in projections {
        let position = checkpoint_in(pool, schema, p.name()).await?;
        let skips = load_skips(&js, p.name()).await?;
        let (total, _) = lag(&js, p.as_ref(), position).await?;
        progress.start(p.name(), total.min(upto.saturating_sub(position)));
        let (tx, rx) = tokio::sync::mpsc::channel::<Arc<Vec<crate::runtime::LogMessage>>>(4);
        senders.push(tx);
        lanes.push((p.clone(), position, skips, rx));
    }
    let from = lanes.iter().map(|l| l.1).min().unwrap_or(0);
    let mut reader = spawn_reader(
        js,
        eventstore::EVENTS_STREAM,
        Vec::new(),
        from,
        Some(upto),
        2 * REPLAY_BATCH,
    );
    // Every stage is its own task, so the reader, the decoder and the lanes run on all cores at
    // once (a lane waiting on PostgreSQL no longer holds the others up). Dropping `tasks` (on
    // the first error) aborts the rest.
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        while let Some(batch) = reader.recv().await {
            let batch = batch?;
            // Decode each commit once, here, before any lane needs it: the lanes then spend
            // their time building rows and waiting on SQL while the next batch is decoded.
            let batch = tokio::task::spawn_blocking(move || {
                for m in &batch {
                    // A commit that does not decode is reported by the lane that needs it.
                    let _ = m.events();
                }
                batch
            })
            .await?;
            let batch = Arc::new(batch);
            for tx in &senders {
                // A closed lane failed: its error is reported by the join below.
                let _ = tx.send(batch.clone()).await;
            }
        }
        anyhow::Ok(None)
    });
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel::<LaneReport>();
    for (lane, (p, mut position, skips, mut rx)) in lanes.into_iter().enumerate() {
        let pool = pool.clone();
        let schema = schema.to_string();
        let report = report.clone();
        tasks.spawn(async move {
            let name = p.name();
            let started = Instant::now();
            let subjects = p.subjects();
            let mut applied = 0u64;
            while let Some(batch) = rx.recv().await {
                let mine: Vec<crate::runtime::LogMessage> = batch
                    .iter()
                    .filter(|m| {
                        m.stream_sequence > position
                            && subjects
                                .iter()
                                .any(|f| crate::runtime::subject_matches(f, &m.subject))
                    })
                    // Clones share the decoded events.
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let mut tx = pool.begin().await?;
                position = apply_in_tx(&mut tx, p.as_ref(), &schema, position, &mine, &skips)
                    .await
                    .map_err(|e| anyhow::anyhow!("projection {name} into {schema}: {e}"))?;
                tx.commit().await?;
                applied += mine.len() as u64;
                let _ = report.send(LaneReport::Advance(name, applied, position));
            }
            let _ = report.send(LaneReport::Finish(
                name,
                applied,
                started.elapsed().as_secs_f64(),
            ));
            anyhow::Ok(Some((lane, name.to_string(), applied)))
        });
    }
    drop(report);
    let show = async {
        while let Some(r) = reports.recv().await {
            match r {
                LaneReport::Advance(name, applied, position) => {
                    progress.advance(name, applied, position)
                }
                LaneReport::Finish(name, applied, seconds) => {
                    progress.finish(name, applied, seconds)
                }
            }
        }
        anyhow::Ok(())
    };
    let join = async {
        let mut applied = vec![None; projections.len()];
        while let Some(done) = tasks.join_next().await {
            if let Some((lane, name, n)) = done?? {
                applied[lane] = Some((name, n));
            }
        }
        anyhow::Ok(applied.into_iter().flatten().collect())
    };
    let ((), applied) = futures::future::try_join(show, join).await?;
    Ok(applied)
}

/// What a replay lane tells the task that shows [`Progress`].
enum LaneReport {
    Advance(&'static str, u64, u64),
    Finish(&'static str, u64, f64),
}

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub projection: String,
    /// The projections rebuilt together (the projection and its siblings).
    pub members: Vec<String>,
    pub version: i32,
    /// Messages applied to the shadow tables (including the catch-up).
    pub events: u64,
    pub seconds: f64,
    /// The live checkpoint after the swap (a stream sequence).
    pub position: u64,
}

/// Rebuilds `projection` blue/green: into `shadow_<name>` from the start of the log while the
/// live tables keep serving, then swaps in one transaction (module docs). A projection with
/// [siblings](Projection::siblings) (the chat messages, one projection per chat stream) is
/// rebuilt with them: every member replays into the one shadow schema, and the swap catches each
/// up and moves every member's checkpoint. One rebuild of a set of tables at a time (a Postgres
/// advisory lock).
///
/// # Errors
/// A projection without tables (the process manager), a poison event, or a failure; the live
/// tables are untouched unless the swap committed.
pub async fn rebuild(
    pool: &PgPool,
    nats: &async_nats::Client,
    projection: Arc<dyn Projection>,
    progress: &dyn Progress,
) -> anyhow::Result<RebuildReport> {
    let members = {
        let siblings = projection.siblings();
        if siblings.is_empty() {
            vec![projection.clone()]
        } else {
            siblings
        }
    };
    let name = projection.name();
    let mut tables: Vec<&'static str> = members.iter().flat_map(|p| p.tables()).collect();
    tables.sort_unstable();
    tables.dedup();
    anyhow::ensure!(
        !tables.is_empty(),
        "projection {name} writes no tables: it cannot be rebuilt"
    );
    // One rebuild of these tables at a time, whichever member asked.
    let mut lock = pool.acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("mychat.rebuild:{}", tables.join(",")))
        .execute(&mut lock)
        .await?;
    let started = Instant::now();
    let shadow = format!("shadow_{}", members[0].name());
    let s = schema_ident(&shadow)?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
        .execute(pool)
        .await?;
    // Logged: the shadow tables become the live ones.
    prepare_schema(pool, &shadow, &members, false).await?;
    // As in an audit replay, the shadow's secondary indexes are built once the bulk of the log
    // is in (the catch-up in the swap below then maintains them row by row, as live does).
    let deferred = defer_secondary_indexes(pool, &shadow, &members).await?;
    let mut events = 0;
    for member in &members {
        events += replay_into(pool, nats, member.as_ref(), &shadow, None, progress).await?;
        checkpoint_in(pool, LIVE_SCHEMA, member.name()).await?;
    }
    build_indexes(pool, &deferred).await?;

    let js = jetstream::new(nats.clone());
    let mut skips = Vec::new();
    for member in &members {
        skips.push(load_skips(&js, member.name()).await?);
    }
    let names: Vec<&str> = members.iter().map(|m| m.name()).collect();
    let mut attempt = 0;
    let positions = loop {
        attempt += 1;
        let swap = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL lock_timeout = '10s'")
                .execute(&mut *tx)
                .await?;
            let live: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
            sqlx::query(&format!(
                "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                live.join(", ")
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "SELECT position FROM public.projection_checkpoints WHERE name = ANY($1) FOR UPDATE",
            )
            .bind(&names)
            .execute(&mut *tx)
            .await?;
            // Catch up with what arrived during the replay, inside the swap.
            let mut positions = Vec::new();
            let mut caught_up = 0u64;
            for (member, skips) in members.iter().zip(&skips) {
                let member_name = member.name();
                let mut position = checkpoint_in(pool, &shadow, member_name).await?;
                let mut reader = spawn_reader(
                    js.clone(),
                    member.stream(),
                    member.subjects(),
                    position,
                    None,
                    REPLAY_BATCH,
                );
                while let Some(batch) = reader.recv().await {
                    let batch = batch?;
                    position =
                        apply_in_tx(&mut tx, member.as_ref(), &shadow, position, &batch, skips)
                            .await
                            .map_err(|e| {
                                anyhow::anyhow!("projection {member_name} into {shadow}: {e}")
                            })?;
                    caught_up += batch.len() as u64;
                }
                positions.push(position);
            }
            for table in &tables {
                sqlx::query(&format!("DROP TABLE public.{table}"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("ALTER TABLE {s}.{table} SET SCHEMA public"))
                    .execute(&mut *tx)
                    .await?;
            }
            for (member, position) in members.iter().zip(&positions) {
                sqlx::query(
                    "UPDATE public.projection_checkpoints SET position = $2, version = $3, updated_at = now() \
                     WHERE name = $1",
                )
                .bind(member.name())
                .bind(*position as i64)
                .bind(member.version())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            anyhow::Ok((positions, caught_up))
        };
        match swap.await {
            Ok((positions, caught_up)) => {
                events += caught_up;
                break positions;
            }
            Err(e) if attempt < 5 && crate::runtime::is_transient(&e) => {
                tracing::warn!(
                    projection = name,
                    error = format!("{e:#}"),
                    attempt,
                    "swap failed; retrying"
                );
            }
            Err(e) => return Err(e.context(format!("swapping {shadow} into public"))),
        }
    };
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
        .execute(pool)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let position = members
        .iter()
        .zip(&positions)
        .find(|(m, _)| m.name() == name)
        .map_or(0, |(_, p)| *p);
    tracing::info!(
        projection = name,
        members = ?names,
        events,
        seconds,
        position,
        "rebuilt and swapped in"
    );
    Ok(RebuildReport {
        projection: name.to_string(),
        members: names.iter().map(|n| n.to_string()).collect(),
        version: projection.version(),
        events,
        seconds,
        position,
    })
}

/// The moment an audit replay reconstructs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditPoint {
    /// Everything stored at or before this time.
    Time(DateTime<Utc>),
    /// Everything up to this `EVENTS` stream sequence (inclusive).
    Sequence(u64),
}

impl std::str::FromStr for AuditPoint {
    type Err = anyhow::Error;
    /// An RFC 3339 time or a stream sequence.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        if let Ok(seq) = s.parse::<u64>() {
            return Ok(Self::Sequence(seq));
        }
        let t = DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("{s:?} is neither a stream sequence nor an RFC 3339 time"))?;
        Ok(Self::Time(t.with_timezone(&Utc)))
    }
}

/// The last sequence of `stream` stored at or before `at` (0 when none).
///
/// # Errors
/// On a NATS error.
pub async fn sequence_at(
    js: &jetstream::Context,
    stream: &str,
    at: DateTime<Utc>,
) -> anyhow::Result<u64> {
    let mut s = js.get_stream(stream).await?;
    let last = s.info().await?.state.last_sequence;
    let nanos = at.timestamp_nanos_opt().context("time out of range")? as i128 + 1;
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)?;
    let consumer = s
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartTime { start_time },
            ..Default::default()
        })
        .await?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(last);
    }
    let mut messages = consumer.messages().await?;
    let first = tokio::time::timeout(std::time::Duration::from_secs(5), messages.next())
        .await
        .context("reading the first message after the time")?
        .context("consumer ended")??;
    let seq = first
        .info()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .stream_sequence;
    Ok(seq.saturating_sub(1))
}

/// What an audit replay built.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    pub schema: String,
    /// The last `EVENTS` stream sequence included.
    pub events_upto: u64,
    /// Per chat stream, its last stream sequence included (`(stream, sequence)`).
    pub chat_upto: Vec<(String, u64)>,
    /// The time of the moment (the requested time, or the time of `events_upto`).
    pub at: DateTime<Utc>,
    /// Messages applied per projection.
    pub applied: Vec<(String, u64)>,
    pub seconds: f64,
}

/// Replays `projections` as they stood at `at` into `audit_<stamp>` (re-created), where
/// `<stamp>` is `seq<N>` or the UTC time as `YYYYMMDDtHHMMSSmmmz`.
///
/// # Errors
/// A sequence past the head, a projection without tables, a poison event, or a failure.
pub async fn audit_replay(
    pool: &PgPool,
    nats: &async_nats::Client,
    projections: &[Arc<dyn Projection>],
    at: AuditPoint,
    progress: &dyn Progress,
) -> anyhow::Result<AuditReport> {
    let started = Instant::now();
    let js = jetstream::new(nats.clone());
    let mut events = js.get_stream(eventstore::EVENTS_STREAM).await?;
    let head = events.info().await?.state.last_sequence;
    let (schema, events_upto, time) = match at {
        AuditPoint::Sequence(seq) => {
            anyhow::ensure!(
                seq <= head,
                "stream sequence {seq} is past the head of EVENTS ({head})"
            );
            let time = if seq == 0 {
                DateTime::<Utc>::MIN_UTC
            } else {
                let m = events.direct_get(seq).await?;
                DateTime::from_timestamp(m.time.unix_timestamp(), m.time.nanosecond())
                    .unwrap_or_default()
            };
            (format!("audit_seq{seq}"), seq, time)
        }
        AuditPoint::Time(t) => (
            format!("audit_{}", t.format("%Y%m%dt%H%M%S%3fz")),
            sequence_at(&js, eventstore::EVENTS_STREAM, t).await?,
            t,
        ),
    };
    // Every other stream (the chat streams) up to the same moment.
    let mut chat_upto: Vec<(String, u64)> = Vec::new();
    for p in projections {
        let stream = p.stream();
        if stream != eventstore::EVENTS_STREAM && !chat_upto.iter().any(|(s, _)| s == stream) {
            chat_upto.push((stream.to_string(), sequence_at(&js, stream, time).await?));
        }
    }
    let s = schema_ident(&schema)?;
    for p in projections {
        anyhow::ensure!(
            !p.tables().is_empty(),
            "projection {} writes no tables: it cannot be replayed",
            p.name()
        );
    }
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
        .execute(pool)
        .await?;
    // An audit schema is derived from the log and can be replayed again at any time: its tables
    // are UNLOGGED (no WAL: PostgreSQL does less work per row; a crash of PostgreSQL empties
    // them, and the auditor replays again; `audit_upto` then refuses the schema).
    prepare_schema(pool, &schema, projections, true).await?;
    sqlx::query(&format!(
        "CREATE UNLOGGED TABLE {s}.audit_meta (events_upto BIGINT NOT NULL, chat_upto JSONB NOT NULL, \
         at TIMESTAMPTZ NOT NULL, projections TEXT[] NOT NULL, created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    ))
    .execute(pool)
    .await?;
    let names: Vec<String> = projections.iter().map(|p| p.name().to_string()).collect();
    sqlx::query(&format!(
        "INSERT INTO {s}.audit_meta (events_upto, chat_upto, at, projections) VALUES ($1, $2, $3, $4)"
    ))
    .bind(events_upto as i64)
    .bind(serde_json::to_value(
        chat_upto
            .iter()
            .cloned()
            .collect::<std::collections::BTreeMap<String, u64>>(),
    )?)
    .bind(time)
    .bind(&names)
    .execute(pool)
    .await?;
    // The projections replay concurrently: the `EVENTS` ones from one shared reader, the
    // `CHAT` ones each with its own.
    let (events_ps, chat_ps): (Vec<_>, Vec<_>) = projections
        .iter()
        .cloned()
        .partition(|p| p.stream() == eventstore::EVENTS_STREAM);
    let deferred = defer_secondary_indexes(pool, &schema, &events_ps).await?;
    let schema_ref = &schema;
    let (shared, chat) = futures::future::try_join(
        replay_shared(pool, nats, &events_ps, schema_ref, events_upto, progress),
        futures::future::try_join_all(chat_ps.iter().map(|p| {
            let upto = chat_upto
                .iter()
                .find(|(s, _)| s == p.stream())
                .map_or(0, |(_, u)| *u);
            async move {
                let n =
                    replay_into(pool, nats, p.as_ref(), schema_ref, Some(upto), progress).await?;
                anyhow::Ok((p.name().to_string(), n))
            }
        })),
    )
    .await?;
    build_indexes(pool, &deferred).await?;
    let applied: Vec<(String, u64)> = projections
        .iter()
        .filter_map(|p| {
            shared
                .iter()
                .chain(chat.iter())
                .find(|(n, _)| n == p.name())
                .cloned()
        })
        .collect();
    Ok(AuditReport {
        schema,
        events_upto,
        chat_upto,
        at: time,
        applied,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Whether a replay of `projection` may build its tables' secondary indexes after the bulk of
/// the log instead of row by row: the `EVENTS` projections write by primary key only; the `CHAT`
/// one looks rows up by a secondary index while applying (a redaction updates a session's
/// messages), so its indexes must be there all along.
fn defers_indexes(projection: &dyn Projection) -> bool {
    projection.stream() == eventstore::EVENTS_STREAM
}

/// Drops the secondary indexes (neither primary key nor unique) of `projections`' tables in
/// `schema` and returns their definitions, for [`build_indexes`] once the replay is done: one
/// sort per index at the end costs less than an index insert per row written, and more than an
/// update per row (a read model's row is updated as its aggregate moves on; each non-HOT update
/// inserts into every index). The unique indexes stay: `ON CONFLICT` and the idempotence of
/// re-delivered events need them. Projections for which [`defers_indexes`] does not hold keep
/// their indexes.
async fn defer_secondary_indexes(
    pool: &PgPool,
    schema: &str,
    projections: &[Arc<dyn Projection>],
) -> anyhow::Result<Vec<String>> {
    let s = schema_ident(schema)?;
    let tables: Vec<&str> = projections
        .iter()
        .filter(|p| defers_indexes(p.as_ref()))
        .flat_map(|p| p.tables())
        .collect();
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let indexes: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = $1 AND t.relname = ANY($2) AND NOT i.indisunique AND NOT i.indisprimary",
    )
    .bind(schema)
    .bind(&tables)
    .fetch_all(pool)
    .await?;
    let mut tx = pool.begin().await?;
    for (name, _) in &indexes {
        sqlx::query(&format!("DROP INDEX {s}.\"{name}\""))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(indexes.into_iter().map(|(_, def)| def).collect())
}

/// Runs the `CREATE INDEX` statements `definitions` (from [`defer_secondary_indexes`]), two
/// at a time (PostgreSQL builds each in its own backend).
async fn build_indexes(pool: &PgPool, definitions: &[String]) -> anyhow::Result<()> {
    // Owned arguments: the futures borrow nothing, so callers stay `Send` for any lifetime
    // (a blue/green rebuild runs inside a spawned projector).
    futures::stream::iter(definitions.to_vec())
        .map(|def| build_index(pool.clone(), def))
        .buffer_unordered(2)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Runs one `CREATE INDEX` statement with room to sort a million rows in memory (the default
/// `maintenance_work_mem`, 64 MB, spills to disk).
async fn build_index(pool: PgPool, definition: String) -> anyhow::Result<()> {
    let build = async {
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
            .execute(&mut *tx)
            .await?;
        sqlx::query(&definition).execute(&mut *tx).await?;
        tx.commit().await
    };
    build
        .await
        .with_context(|| format!("building an index after the replay: {definition}"))
}

/// One row that differs between two schemas.
#[derive(Debug, Clone, Serialize)]
pub struct RowDiff {
    pub table: String,
    /// The primary key, as `column=value` pairs.
    pub key: String,
    /// The row in the left schema (`None`: missing there).
    pub left: Option<serde_json::Value>,
    /// The row in the right schema (`None`: missing there).
    pub right: Option<serde_json::Value>,
    /// The columns whose values differ (both present).
    pub columns: Vec<String>,
}

impl std::fmt::Display for RowDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.left, &self.right) {
            (Some(_), None) => write!(f, "{} [{}]: only on the left", self.table, self.key),
            (None, Some(_)) => write!(f, "{} [{}]: only on the right", self.table, self.key),
            (Some(l), Some(r)) => {
                write!(f, "{} [{}]:", self.table, self.key)?;
                for c in &self.columns {
                    write!(f, " {c}: {} ≠ {};", l[c], r[c])?;
                }
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }
}

async fn primary_key(pool: &PgPool, schema: &str, table: &str) -> anyhow::Result<Vec<String>> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
         WHERE i.indisprimary AND n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(!cols.is_empty(), "{schema}.{table} has no primary key");
    Ok(cols)
}

async fn rows(
    pool: &PgPool,
    schema: &str,
    table: &str,
    key: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let s = schema_ident(schema)?;
    let all: Vec<(serde_json::Value,)> =
        sqlx::query_as(&format!("SELECT to_jsonb(t) FROM {s}.{table} t"))
            .fetch_all(pool)
            .await?;
    Ok(all
        .into_iter()
        .map(|(row,)| {
            let k = key
                .iter()
                .map(|c| format!("{c}={}", row[c]))
                .collect::<Vec<_>>()
                .join(",");
            (k, row)
        })
        .collect())
}

/// The events sequence an audit schema was replayed up to (its `audit_meta` row); `None` for a
/// schema that is not an audit replay (no `audit_meta` table: the live one, a shadow).
///
/// # Errors
/// An audit schema whose `audit_meta` is empty: its tables are UNLOGGED, so a PostgreSQL crash
/// empties them, and the error says to replay it again rather than let a diff or a
/// reconciliation read an empty schema as the past.
pub async fn audit_upto(pool: &PgPool, schema: &str) -> anyhow::Result<Option<u64>> {
    if !table_exists(pool, schema, "audit_meta").await? {
        return Ok(None);
    }
    let s = schema_ident(schema)?;
    let upto: Option<i64> = sqlx::query_scalar(&format!("SELECT events_upto FROM {s}.audit_meta"))
        .fetch_optional(pool)
        .await?;
    match upto {
        Some(upto) => Ok(Some(upto as u64)),
        None => anyhow::bail!(
            "audit schema {schema} is empty (its tables are unlogged and PostgreSQL crashed \
             since the replay): run `mychat audit replay` again"
        ),
    }
}

/// Compares every table of `projections` that exists in `left` with the same table in `right`,
/// row by row (by primary key, every column).
///
/// # Errors
/// A missing table on the right, invalid schema names, an audit schema emptied by a crash
/// ([`audit_upto`]), or a database error.
pub async fn diff(
    pool: &PgPool,
    left: &str,
    right: &str,
    projections: &[Arc<dyn Projection>],
) -> anyhow::Result<Vec<RowDiff>> {
    let mut diffs = Vec::new();
    audit_upto(pool, left).await?;
    audit_upto(pool, right).await?;
    for p in projections {
        for table in p.tables() {
            if !table_exists(pool, left, table).await? {
                continue;
            }
            let key = primary_key(pool, left, table).await?;
            let l = rows(pool, left, table, &key).await?;
            let r = rows(pool, right, table, &key)
                .await
                .with_context(|| format!("reading {right}.{table}"))?;
            for (k, lrow) in &l {
                match r.get(k) {
                    None => diffs.push(RowDiff {
                        table: table.to_string(),
                        key: k.clone(),
                        left: Some(lrow.clone()),
                        right: None,
                        columns: vec![],
                    }),
                    Some(rrow) if rrow != lrow => {
                        let columns = lrow
                            .as_object()
                            .map(|o| {
                                o.keys()
                                    .filter(|c| lrow[c.as_str()] != rrow[c.as_str()])
                                    .cloned()
                                    .collect()
                            })
                            .unwrap_or_default();
                        diffs.push(RowDiff {
                            table: table.to_string(),
                            key: k.clone(),
                            left: Some(lrow.clone()),
                            right: Some(rrow.clone()),
                            columns,
                        });
                    }
                    Some(_) => {}
                }
            }
            for (k, rrow) in &r {
                if !l.contains_key(k) {
                    diffs.push(RowDiff {
                        table: table.to_string(),
                        key: k.clone(),
                        left: None,
                        right: Some(rrow.clone()),
                        columns: vec![],
                    });
                }
            }
        }
    }
    Ok(diffs)
}
