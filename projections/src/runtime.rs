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

/// One message read from a stream.
#[derive(Debug, Clone)]
pub struct LogMessage {
    /// The stream sequence.
    pub stream_sequence: u64,
    pub subject: String,
    /// When JetStream stored it.
    pub time: DateTime<Utc>,
    pub payload: Bytes,
}

impl LogMessage {
    /// The message as a commit's events (for `EVENTS`), upcast.
    ///
    /// # Errors
    /// When the body is not a commit.
    pub fn events(&self, upcasters: &Upcasters) -> anyhow::Result<Vec<StoredEvent>> {
        let commit = Commit::decode(&self.payload).with_context(|| {
            format!(
                "decoding the commit at stream sequence {}",
                self.stream_sequence
            )
        })?;
        Ok(commit
            .into_stored(self.stream_sequence)
            .into_iter()
            .map(|e| upcasters.upcast(e))
            .collect())
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
    /// Applies one message inside the batch's transaction. An error aborts the whole batch (and
    /// its checkpoint); the projection stops at that message until the cause is fixed.
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()>;
}

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// Most messages applied in one transaction.
    pub batch_size: usize,
    /// How long a batch waits for one more message before it is applied.
    pub linger: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            linger: Duration::from_millis(2),
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

/// The checkpoint of `name` (0 when it has never run), creating its row.
///
/// # Errors
/// On a database error.
pub async fn checkpoint(pool: &PgPool, name: &str) -> anyhow::Result<u64> {
    sqlx::query("INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    let position: i64 =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
    Ok(position as u64)
}

impl Projector {
    /// Runs until `shutdown` is cancelled. Failures (NATS or Postgres unavailable, a message
    /// that fails to apply) are logged with the stream sequence and retried with backoff from
    /// the last checkpoint; nothing is ever skipped.
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.projection.name();
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        while !shutdown.is_cancelled() {
            match self.run_once(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
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

    async fn run_once(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let name = self.projection.name();
        let mut position = checkpoint(&self.pool, name).await?;
        let js = jetstream::new(self.nats.clone());
        let stream = js.get_stream(self.projection.stream()).await?;
        let deliver_policy = if position == 0 {
            DeliverPolicy::All
        } else {
            DeliverPolicy::ByStartSequence {
                start_sequence: position + 1,
            }
        };
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subjects: self.projection.subjects(),
                deliver_policy,
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        tracing::info!(projection = name, position, "projector started");
        loop {
            let first = tokio::select! {
                m = messages.next() => m,
                _ = shutdown.cancelled() => return Ok(()),
            };
            let Some(first) = first else {
                anyhow::bail!("consumer ended")
            };
            let mut batch = vec![to_log_message(first?)?];
            while batch.len() < self.settings.batch_size {
                match tokio::time::timeout(self.settings.linger, messages.next()).await {
                    Ok(Some(m)) => batch.push(to_log_message(m?)?),
                    Ok(None) | Err(_) => break,
                }
            }
            position = self.apply_batch(position, &batch).await?;
            let _ = self
                .nats
                .publish(checkpoint_subject(name), position.to_string().into())
                .await;
        }
    }

    #[tracing::instrument(skip_all, fields(projection = self.projection.name(), from = position, count = batch.len()))]
    async fn apply_batch(&self, position: u64, batch: &[LogMessage]) -> anyhow::Result<u64> {
        let name = self.projection.name();
        let mut tx = self.pool.begin().await?;
        for message in batch {
            self.projection
                .apply(&mut tx, message)
                .await
                .with_context(|| {
                    format!(
                        "projection {name}: the message at stream sequence {} ({}) failed to apply",
                        message.stream_sequence, message.subject
                    )
                })?;
        }
        let last = batch.last().map_or(position, |m| m.stream_sequence);
        let moved = sqlx::query(
            "UPDATE projection_checkpoints SET position = $2, updated_at = now() \
             WHERE name = $1 AND position = $3",
        )
        .bind(name)
        .bind(last as i64)
        .bind(position as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            tx.rollback().await?;
            anyhow::bail!(
                "projection {name}: checkpoint moved under this worker (another worker is active)"
            );
        }
        tx.commit().await?;
        Ok(last)
    }
}

fn to_log_message(m: jetstream::Message) -> anyhow::Result<LogMessage> {
    let info = m.info().map_err(|e| anyhow::anyhow!("message info: {e}"))?;
    let stream_sequence = info.stream_sequence;
    let time =
        DateTime::from_timestamp(info.published.unix_timestamp(), info.published.nanosecond())
            .unwrap_or_default();
    Ok(LogMessage {
        stream_sequence,
        subject: m.subject.to_string(),
        time,
        payload: m.payload.clone(),
    })
}
