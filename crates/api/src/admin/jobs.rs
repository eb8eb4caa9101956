//! Jobs the admin API runs outside the request: a finance reconciliation
//! ([`projections::reconcile::reconcile`]) and an audit replay
//! ([`projections::rebuild::audit_replay`]), the same functions `mychat finance reconcile` and
//! `mychat audit replay` call.
//!
//! A job is a row of `admin_jobs` (it survives a restart): submitted `queued`, claimed by one
//! admin process (`running`, with that process's id and a heartbeat every
//! [`HEARTBEAT`]), then `done` with its report or `failed` with the error. At most
//! [`JobSettings::concurrency`] jobs run at once **across every admin node**: a claim holds a
//! PostgreSQL advisory lock while it counts the running jobs and takes the oldest queued one. A
//! running job whose heartbeat is older than [`JobSettings::stale_after_seconds`] was cut off (its process
//! died): any node marks it `failed`; the client submits it again. Each node looks for work when
//! a job is submitted through it and every second otherwise.
//!
//! Replay schemas (`audit_…`) of jobs finished longer than [`JobSettings::replay_retention_seconds`] ago
//! are dropped (`dropped_at` is set; the job's record stays).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use projections::rebuild::{AuditPoint, Progress};
use projections::reconcile::{FoldProgress, ReconcileOptions};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::Notify;

/// How often a running job's process records that it is alive (and its progress).
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// The advisory lock key held while a job is claimed.
const CLAIM_LOCK: i64 = 0x6d79_6368_6a6f_6273; // "mychjobs"

/// How jobs run (`[jobs]` in `mychat.toml`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct JobSettings {
    /// Jobs running at once across every admin node (at least 1; default 1).
    pub concurrency: usize,
    /// How long a finished replay's schema is kept, in seconds (default 7 days).
    pub replay_retention_seconds: u64,
    /// A running job without a heartbeat for this many seconds was cut off (default 15).
    pub stale_after_seconds: u64,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            concurrency: 1,
            replay_retention_seconds: 7 * 24 * 3600,
            stale_after_seconds: 15,
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// A finance reconciliation (`params`: [`ReconcileParams`]).
    Reconcile,
    /// An audit replay (`params`: [`ReplayParams`]).
    Replay,
}

impl JobKind {
    /// Its `admin_jobs.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reconcile => "reconcile",
            Self::Replay => "replay",
        }
    }
}

/// A reconciliation's period, as submitted (each an RFC 3339 time or a stream sequence).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcileParams {
    /// The period's start (exclusive); none: the beginning of the log.
    pub from: Option<String>,
    /// The period's end (inclusive); none: the head when the job runs.
    pub to: Option<String>,
}

/// A replay's moment and projections, as submitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReplayParams {
    /// An RFC 3339 time or a stream sequence.
    pub at: String,
    /// Read models to replay; empty: every one.
    #[serde(default)]
    pub projections: Vec<String>,
}

/// One job's record.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    /// `queued`, `running`, `done` or `failed`.
    pub state: String,
    pub params: serde_json::Value,
    pub done: i64,
    pub total: i64,
    pub result: Option<serde_json::Value>,
    pub error: String,
    pub created_by: i64,
    pub api_key_id: Option<i64>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub dropped_at: Option<chrono::DateTime<chrono::Utc>>,
}

struct Inner {
    db: PgPool,
    nats: async_nats::Client,
    layout: eventstore::ChatLayout,
    settings: JobSettings,
    wake: Notify,
    /// This process's id in `admin_jobs.runner`.
    runner: String,
}

/// The admin process's job runner (see the module docs). Cheap to clone; its loop stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

impl Jobs {
    /// A runner on `db` and `nats` (needs a tokio runtime; returns at once).
    pub fn start(
        db: PgPool,
        nats: async_nats::Client,
        layout: eventstore::ChatLayout,
        settings: JobSettings,
    ) -> Self {
        let this = Self {
            inner: Arc::new(Inner {
                db,
                nats,
                layout,
                settings,
                wake: Notify::new(),
                runner: uuid::Uuid::new_v4().to_string(),
            }),
        };
        tokio::spawn(run_loop(Arc::downgrade(&this.inner)));
        this
    }

    /// The read models known to this process (what a replay may name).
    pub fn read_models(&self) -> Vec<Arc<dyn projections::Projection>> {
        projections::read_models_for(&self.inner.layout)
    }

    /// Queues a job; answers its id.
    ///
    /// # Errors
    /// On a database error.
    pub async fn submit(
        &self,
        kind: JobKind,
        params: serde_json::Value,
        created_by: i64,
        api_key_id: Option<i64>,
    ) -> Result<i64, sqlx::Error> {
        let id = sqlx::query_scalar(
            "INSERT INTO admin_jobs (kind, params, created_by, api_key_id) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(kind.as_str())
        .bind(params)
        .bind(created_by)
        .bind(api_key_id)
        .fetch_one(&self.inner.db)
        .await?;
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Job `id` of `kind`, if there is one.
    ///
    /// # Errors
    /// On a database error.
    pub async fn get(&self, kind: JobKind, id: i64) -> Result<Option<JobRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT id, kind, state, params, done, total, result, error, created_by, api_key_id, \
             created_at, started_at, finished_at, dropped_at FROM admin_jobs WHERE id = $1 AND kind = $2",
        )
        .bind(id)
        .bind(kind.as_str())
        .fetch_optional(&self.inner.db)
        .await
    }
}

async fn run_loop(inner: Weak<Inner>) {
    loop {
        let Some(this) = inner.upgrade() else { return };
        if let Err(e) = sweep(&this).await {
            tracing::warn!(error = format!("{e:#}"), "sweeping jobs");
        }
        loop {
            match claim(&this).await {
                Ok(Some(job)) => {
                    tokio::spawn(run_job(this.clone(), job));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "claiming a job");
                    break;
                }
            }
        }
        let wake = async { this.wake.notified().await };
        let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
    }
}

/// Fails cut-off jobs and drops replay schemas past their retention.
async fn sweep(inner: &Inner) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE admin_jobs SET state = 'failed', finished_at = now(), \
         error = 'cut off: the process running it stopped; submit it again' \
         WHERE state = 'running' AND heartbeat_at < now() - make_interval(secs => $1)",
    )
    .bind(inner.settings.stale_after_seconds as f64)
    .execute(&inner.db)
    .await?;
    let old: Vec<(i64, Option<String>)> = sqlx::query_as(
        "SELECT id, result->>'schema' FROM admin_jobs WHERE kind = 'replay' AND state = 'done' \
         AND dropped_at IS NULL AND finished_at < now() - make_interval(secs => $1)",
    )
    .bind(inner.settings.replay_retention_seconds as f64)
    .fetch_all(&inner.db)
    .await?;
    for (id, schema) in old {
        if let Some(schema) = schema.filter(|s| s.starts_with("audit_")) {
            let s = projections::runtime::schema_ident(&schema)?;
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
                .execute(&inner.db)
                .await?;
        }
        sqlx::query("UPDATE admin_jobs SET dropped_at = now() WHERE id = $1")
            .bind(id)
            .execute(&inner.db)
            .await?;
    }
    Ok(())
}

/// Takes the oldest queued job if fewer than `concurrency` run (see the module docs).
async fn claim(inner: &Inner) -> anyhow::Result<Option<(i64, String, serde_json::Value)>> {
    let mut tx = inner.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CLAIM_LOCK)
        .execute(&mut *tx)
        .await?;
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM admin_jobs WHERE state = 'running'")
            .fetch_one(&mut *tx)
            .await?;
    if running >= inner.settings.concurrency.max(1) as i64 {
        return Ok(None);
    }
    let job: Option<(i64, String, serde_json::Value)> = sqlx::query_as(
        "UPDATE admin_jobs SET state = 'running', runner = $1, started_at = now(), \
         heartbeat_at = now() WHERE id = (SELECT id FROM admin_jobs WHERE state = 'queued' \
         ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id, kind, params",
    )
    .bind(&inner.runner)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(job)
}

/// A replay's progress: messages applied of the total, summed over its projections.
#[derive(Default)]
struct ReplayProgress {
    per: Mutex<HashMap<String, (u64, u64)>>,
}

impl ReplayProgress {
    fn sums(&self) -> (u64, u64) {
        let per = self.per.lock().unwrap_or_else(|p| p.into_inner());
        per.values()
            .fold((0, 0), |(d, t), (a, b)| (d + a, t + b.max(a)))
    }
}

impl Progress for ReplayProgress {
    fn start(&self, projection: &str, total: u64) {
        let mut per = self.per.lock().unwrap_or_else(|p| p.into_inner());
        per.insert(projection.to_string(), (0, total));
    }
    fn advance(&self, projection: &str, applied: u64, _stream_sequence: u64) {
        let mut per = self.per.lock().unwrap_or_else(|p| p.into_inner());
        per.entry(projection.to_string()).or_default().0 = applied;
    }
    fn finish(&self, projection: &str, applied: u64, _seconds: f64) {
        let mut per = self.per.lock().unwrap_or_else(|p| p.into_inner());
        let e = per.entry(projection.to_string()).or_default();
        *e = (applied, applied.max(e.1));
    }
}

/// A job's progress as `(done, total)`.
enum Tracker {
    Fold(Arc<FoldProgress>),
    Replay(Arc<ReplayProgress>),
}

impl Tracker {
    fn now(&self) -> (u64, u64) {
        match self {
            Self::Fold(p) => (
                p.done.load(Ordering::Relaxed),
                p.total.load(Ordering::Relaxed),
            ),
            Self::Replay(p) => p.sums(),
        }
    }
}

/// Picks read models by name (every one when `names` is empty).
///
/// # Errors
/// The first unknown name.
pub fn pick(
    all: Vec<Arc<dyn projections::Projection>>,
    names: &[String],
) -> Result<Vec<Arc<dyn projections::Projection>>, String> {
    if names.is_empty() {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter()
                .find(|p| p.name() == n)
                .cloned()
                .ok_or_else(|| n.clone())
        })
        .collect()
}

async fn execute(
    inner: &Inner,
    kind: &str,
    params: serde_json::Value,
    tracker: &Tracker,
) -> anyhow::Result<serde_json::Value> {
    match (kind, tracker) {
        ("reconcile", Tracker::Fold(progress)) => {
            let p: ReconcileParams = serde_json::from_value(params)?;
            let options = ReconcileOptions {
                from: p.from.as_deref().map(str::parse).transpose()?,
                to: p.to.as_deref().map(str::parse).transpose()?,
                progress: Some(progress.clone()),
                ..Default::default()
            };
            let report =
                projections::reconcile::reconcile(&inner.db, &inner.nats, &options).await?;
            let mut value = serde_json::to_value(&report)?;
            value["ok"] = serde_json::Value::Bool(report.ok());
            Ok(value)
        }
        ("replay", Tracker::Replay(progress)) => {
            let p: ReplayParams = serde_json::from_value(params)?;
            let at: AuditPoint = p.at.parse()?;
            let targets = pick(projections::read_models_for(&inner.layout), &p.projections)
                .map_err(|n| anyhow::anyhow!("unknown projection {n:?}"))?;
            let report = projections::rebuild::audit_replay(
                &inner.db,
                &inner.nats,
                &targets,
                at,
                progress.as_ref(),
            )
            .await?;
            Ok(serde_json::to_value(&report)?)
        }
        _ => anyhow::bail!("unknown job kind {kind:?}"),
    }
}

async fn run_job(inner: Arc<Inner>, (id, kind, params): (i64, String, serde_json::Value)) {
    let tracker = Arc::new(if kind == "replay" {
        Tracker::Replay(Arc::default())
    } else {
        Tracker::Fold(Arc::default())
    });
    let work = tokio::spawn({
        let (inner, tracker) = (inner.clone(), tracker.clone());
        async move { execute(&inner, &kind, params, &tracker).await }
    });
    tokio::pin!(work);
    let mut beat = tokio::time::interval(HEARTBEAT);
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = beat.tick() => {
                let (done, total) = tracker.now();
                let _ = sqlx::query(
                    "UPDATE admin_jobs SET heartbeat_at = now(), done = $2, total = $3 \
                     WHERE id = $1 AND state = 'running'",
                )
                .bind(id)
                .bind(done as i64)
                .bind(total as i64)
                .execute(&inner.db)
                .await;
            }
        }
    };
    let (done, total) = tracker.now();
    let (state, result, error) = match outcome {
        Ok(Ok(report)) => ("done", Some(report), String::new()),
        Ok(Err(e)) => ("failed", None, format!("{e:#}")),
        Err(e) => ("failed", None, format!("the job stopped: {e}")),
    };
    let total = total.max(done);
    let done = if state == "done" { total } else { done };
    if let Err(e) = sqlx::query(
        "UPDATE admin_jobs SET state = $2, result = $3, error = $4, done = $5, total = $6, \
         finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(result)
    .bind(&error)
    .bind(done as i64)
    .bind(total as i64)
    .execute(&inner.db)
    .await
    {
        tracing::error!(error = %e, id, "recording a finished job");
    }
    if state == "failed" {
        tracing::warn!(id, error, "job failed");
    }
    inner.wake.notify_one();
}
