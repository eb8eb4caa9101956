//! The [`Projector`]: one worker per projection and schema, holding the projection's advisory
//! lock, following its stream from the checkpoint, applying batches, recording its status, and
//! moving its checkpoint past ignored messages.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self};
use backon::BackoffBuilder;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::apply::{apply_opening, load_skips, BatchError};
use super::checkpoint::{
    checkpoint_cas, checkpoint_in, checkpoint_subject, moved_under_worker, IGNORED_CHECKPOINT_EVERY,
};
use super::feed::LiveSource;
use super::projection::{LogMessage, Projection};
use super::schema::LIVE_SCHEMA;

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
    /// The read-your-writes registry of this process, when the API runs in it: each checkpoint
    /// of the live read models is handed to it directly as well as announced on NATS, so that
    /// a waiter in this process is woken without the announcement's trip through nats-server
    /// (the NATS announcement still reaches every other process, and this one's again: an
    /// advance is idempotent). Only a projector writing the live schema advances it.
    pub watch: Option<crate::watch::CheckpointWatch>,
    /// The live feeds of this process ([`super::feed`]): a projector writing the live schema reads
    /// its stream through the stream's shared reader once it has caught up with it, instead of
    /// with a consumer of its own. `None`: it always reads with its own.
    pub feeds: Option<super::feed::LiveFeeds>,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            synchronous_commit: false,
            schema: LIVE_SCHEMA.to_string(),
            watch: None,
            feeds: None,
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
        let feed = match &self.settings.feeds {
            Some(feeds) if schema == LIVE_SCHEMA => Some(feeds.feed(self.projection.stream())),
            _ => None,
        };
        let mut reader = LiveSource::new(
            js.clone(),
            self.projection.stream(),
            self.projection.subjects(),
            position,
            self.settings.batch_size,
            feed,
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
                    b = reader.recv(read_to) => b.map_err(BatchError::Transient)?,
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
                self.announce(read_to).await;
                // The checkpoint follows in one statement, at most once a second (and on the
                // heartbeat, and on shutdown).
                if carried.is_none() && persisted.elapsed() >= IGNORED_CHECKPOINT_EVERY {
                    position = self.move_checkpoint(position, read_to).await?;
                    persisted = tokio::time::Instant::now();
                }
                continue;
            }
            position = match self.apply_batch(&mut lock, position, &batch, &skips).await {
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
                        self.apply_batch(&mut lock, position, &before, &skips)
                            .await?;
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
            self.announce(position).await;
        }
    }

    /// Tells read-your-writes waiters that the read model reflects everything up to stream
    /// sequence `position`: this process's registry directly (live schema only, see
    /// [`ProjectorSettings::watch`]), every process's on core NATS
    /// ([`checkpoint_subject`]; at most once, a lost announcement is made up by the waiters'
    /// table reads).
    async fn announce(&self, position: u64) {
        let name = self.projection.name();
        if let Some(watch) = &self.settings.watch {
            if self.settings.schema == LIVE_SCHEMA {
                watch.advance(name, position);
            }
        }
        let _ = self
            .nats
            .publish(checkpoint_subject(name), position.to_string().into())
            .await;
    }

    /// Stores the checkpoint `to` (from `position`, compare-and-set) for messages the projection
    /// ignored: nothing else changes. One round trip: a simple query whose statements run as one
    /// implicit transaction, with `synchronous_commit` off as the batches' (a lost update is
    /// only a few ignored messages read again).
    async fn move_checkpoint(&self, position: u64, to: u64) -> Result<u64, BatchError> {
        let cas = checkpoint_cas(
            &self.settings.schema,
            self.projection.as_ref(),
            position,
            to,
        )?;
        let sql = format!("SET LOCAL synchronous_commit TO off; {cas}");
        let moved = sqlx::Executor::execute(&self.pool, sql.as_str())
            .await?
            .rows_affected();
        if let Some(e) = moved_under_worker(self.projection.name(), moved) {
            return Err(e);
        }
        Ok(to)
    }

    /// Applies `batch` in one transaction on `lock`, the connection that holds the projection's
    /// advisory lock, in three round trips: the opening (`BEGIN`, `synchronous_commit` off unless
    /// configured on, the checkpoint's compare-and-set; [`apply_opening`]), the projection's
    /// statements, `COMMIT`. Writing on the lock's own session means no pool checkout per batch,
    /// and a worker whose session (and so its lock) is gone cannot write at all. A batch that
    /// fails is rolled back on the spot, so the connection is idle again for the heartbeat and
    /// the next batch; if this future is dropped instead, so is `run_active` with the
    /// connection, which ends the transaction.
    #[tracing::instrument(skip_all, fields(projection = self.projection.name(), from = position, count = batch.len()))]
    async fn apply_batch(
        &self,
        lock: &mut PgConnection,
        position: u64,
        batch: &[LogMessage],
        skips: &std::collections::BTreeSet<u64>,
    ) -> Result<u64, BatchError> {
        let opening = if self.settings.synchronous_commit {
            "BEGIN; "
        } else {
            "BEGIN; SET LOCAL synchronous_commit TO off; "
        };
        let applied = apply_opening(
            &mut *lock,
            opening,
            self.projection.as_ref(),
            &self.settings.schema,
            position,
            batch,
            skips,
        )
        .await;
        match applied {
            Ok(last) => {
                sqlx::Executor::execute(&mut *lock, "COMMIT").await?;
                Ok(last)
            }
            Err(e) => match sqlx::Executor::execute(&mut *lock, "ROLLBACK").await {
                Ok(_) => Err(e),
                // The connection cannot be trusted to be idle: end this worker's turn (the
                // connection is dropped with it, and the transaction with the connection).
                Err(rollback) => Err(BatchError::Transient(anyhow::anyhow!(
                    "rolling back a failed batch ({e}): {rollback}"
                ))),
            },
        }
    }
}
