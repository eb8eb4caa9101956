//! Replaying the log into a schema: the batch size, [`Progress`] reporting, a projection's lag
//! behind its stream, and the replay loops (one projection, or several sharing one reader) that
//! apply batches with their checkpoint in the target schema.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream;
use chrono::Utc;
use futures::StreamExt;
use sqlx::PgPool;

use crate::runtime::{apply_in_tx, checkpoint_in, load_skips, spawn_reader, Projection};

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
/// Costs one short-lived consumer: created at `from + 1` on the projection's subjects (its
/// creation answers the pending count), asked for at most one message (the oldest unapplied, for
/// its time), then deleted. Nothing else is delivered, and nothing is left behind for the server
/// to keep up to date while it waits out an inactivity threshold: the service registry refreshes
/// every read model's lag every 2 s, under full load too.
///
/// # Errors
/// On a NATS error.
pub async fn lag(
    js: &jetstream::Context,
    projection: &dyn Projection,
    from: u64,
) -> anyhow::Result<(u64, f64)> {
    let stream = js.get_stream_no_info(projection.stream()).await?;
    // Deleted below; the inactivity threshold only bounds a consumer whose deletion was lost.
    let consumer = stream
        .create_consumer(eventstore::reader::log_consumer(
            projection.subjects(),
            from,
            std::time::Duration::from_secs(5),
        ))
        .await?;
    let pending = consumer.cached_info().num_pending;
    let oldest = async {
        if pending == 0 {
            return anyhow::Ok(0.0);
        }
        let mut messages = consumer
            .fetch()
            .max_messages(1)
            .expires(std::time::Duration::from_secs(5))
            .messages()
            .await?;
        let first = messages
            .next()
            .await
            .context("reading the oldest unapplied message: none came")?
            .map_err(|e| anyhow::anyhow!("reading the oldest unapplied message: {e}"))?;
        let info = first.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let published = info.published.unix_timestamp_nanos() as f64 / 1e9;
        let now = Utc::now().timestamp_nanos_opt().unwrap_or_default() as f64 / 1e9;
        Ok((now - published).max(0.0))
    }
    .await;
    let _ = stream.delete_consumer(&consumer.cached_info().name).await;
    Ok((pending, oldest?))
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
