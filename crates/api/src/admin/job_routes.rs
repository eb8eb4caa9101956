//! Reconciliations (`finance:reconcile`) and audit replays (`audit:replay`) over the admin API, as
//! jobs ([`crate::admin::jobs`]): a POST queues one and answers 202 with its id; a GET answers
//! its state, progress and, once done, its report — the report `mychat finance reconcile --json`
//! prints, or the replay's schema, whose diff against the live read models (or another replay)
//! is read page by page.
//!
//! Refusals: a body or query of the wrong shape → 400; a point that is neither an RFC 3339 time
//! nor a stream sequence, `from` after `to`, a sequence past the head, an unknown projection, an
//! `against` that is neither `live` nor a finished replay's id → 422 naming the field; an unknown
//! job → 404; a diff of a replay not finished (or dropped) → 409. Nothing is queued on a refusal.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use projections::rebuild::AuditPoint;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use web::envelope::{reply, Envelope};
use web::error::Problem;
use web::extract::{Json, Path, Query};

use crate::admin::common::Caller;
use crate::admin::jobs::{pick, JobKind, JobRow, Jobs, ReconcileParams, ReplayParams};
use crate::{empty_as_none, paging, ApiError, ApiResult, AppState};

/// A point in the log: an `EVENTS` stream sequence (`120`) or an RFC 3339 time with its offset
/// (`2026-11-01T00:00:00+08:00`). The document states its form; the handler parses it (a day
/// that does not exist, 2026-02-30, is still a 422 naming the field).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(value_type = String, example = "2026-11-01T00:00:00+08:00", pattern = "^([0-9]{1,18}|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9]))$")]
#[serde(transparent)]
pub struct Point(pub String);

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for a free slot.
    Queued,
    /// Running on one admin node.
    Running,
    /// Finished; its report is in `report`.
    Done,
    /// Failed (or cut off by a crash); `error` says why. Submit it again.
    Failed,
}

impl JobState {
    fn of(s: &str) -> Self {
        match s {
            "running" => Self::Running,
            "done" => Self::Done,
            "failed" => Self::Failed,
            _ => Self::Queued,
        }
    }
}

/// How far a job is.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobProgress {
    /// Done so far: stream sequences folded (reconciliation), messages applied (replay).
    pub done: i64,
    /// Of this many.
    pub total: i64,
}

/// A queued job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobAccepted {
    /// The job's id: `GET …/{id}` follows it.
    pub id: i64,
    /// Always `queued`.
    pub state: JobState,
}

fn accepted(id: i64) -> Response {
    (
        StatusCode::ACCEPTED,
        reply(JobAccepted {
            id,
            state: JobState::Queued,
        }),
    )
        .into_response()
}

/// Parses an RFC 3339 time or a stream sequence named `field`. A time must be one JetStream can
/// start a consumer at: nanoseconds since the epoch in an `i64` (years 1678 to 2261).
fn point(field: &str, value: &str) -> Result<AuditPoint, ApiError> {
    let p = value
        .trim()
        .parse()
        .map_err(|_| ApiError::unprocessable(field, "an RFC 3339 time or a stream sequence"))?;
    if let AuditPoint::Time(t) = p {
        if t.timestamp_nanos_opt().is_none() {
            return Err(ApiError::unprocessable(
                field,
                "a time between the years 1678 and 2261",
            ));
        }
    }
    Ok(p)
}

/// A point as a stream sequence of `EVENTS`.
async fn sequence(state: &AppState, p: AuditPoint) -> Result<u64, ApiError> {
    match p {
        AuditPoint::Sequence(s) => Ok(s),
        AuditPoint::Time(t) => {
            projections::rebuild::sequence_at(state.bus.jetstream(), eventstore::EVENTS_STREAM, t)
                .await
                .map_err(ApiError::from)
        }
    }
}

async fn head(state: &AppState) -> Result<u64, ApiError> {
    let mut s = state
        .bus
        .jetstream()
        .get_stream(eventstore::EVENTS_STREAM)
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("EVENTS: {e}")))?;
    Ok(s.info()
        .await
        .map_err(|e| ApiError::internal(anyhow::anyhow!("EVENTS: {e}")))?
        .state
        .last_sequence)
}

async fn job(jobs: &Jobs, kind: JobKind, id: i64) -> Result<JobRow, ApiError> {
    jobs.get(kind, id)
        .await?
        .ok_or_else(|| ApiError::not_found("job"))
}

// ---- reconciliations -------------------------------------------------------------------------

/// `POST /api/admin/finance/reconciliations`: the period to reconcile.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    /// The period's start, exclusive: an RFC 3339 time or an `EVENTS` stream sequence; absent:
    /// the beginning of the log.
    #[serde(default)]
    pub from: Option<Point>,
    /// The period's end, inclusive (same forms, not before `from`); absent: the head when the job
    /// runs.
    #[serde(default)]
    pub to: Option<Point>,
}

/// Queue a reconciliation
///
/// Folds the event log on its own (not the read models) into balances over the period and
/// compares them with the ledger and every money column of the read models, outside the
/// request. Follow it with `GET /api/admin/finance/reconciliations/{id}`.
#[utoipa::path(post, path = "/api/admin/finance/reconciliations", tag = "finance",
    request_body = ReconcileRequest,
    responses(
        (status = 202, description = "queued", body = Envelope<JobAccepted>),
        (status = 422, description = "a point that is not a time or sequence, or `from` after `to`", body = Problem, content_type = "application/problem+json")))]
pub async fn create_reconciliation(
    State(state): State<AppState>,
    State(jobs): State<Jobs>,
    caller: Caller,
    Json(req): Json<ReconcileRequest>,
) -> ApiResult<Response> {
    let from = req.from.as_ref().map(|v| point("from", &v.0)).transpose()?;
    let to = req.to.as_ref().map(|v| point("to", &v.0)).transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        let after = match (f, t) {
            (AuditPoint::Time(a), AuditPoint::Time(b)) => a > b,
            (AuditPoint::Sequence(a), AuditPoint::Sequence(b)) => a > b,
            (f, t) => sequence(&state, f).await? > sequence(&state, t).await?,
        };
        if after {
            return Err(ApiError::unprocessable("from", "must not be after `to`"));
        }
    }
    let params = serde_json::to_value(ReconcileParams {
        from: req.from.map(|s| s.0.trim().to_string()),
        to: req.to.map(|s| s.0.trim().to_string()),
    })
    .map_err(anyhow::Error::from)?;
    let key = caller.api_key.as_ref().map(|k| k.id);
    let id = jobs
        .submit(JobKind::Reconcile, params, caller.admin_id, key)
        .await?;
    Ok(accepted(id))
}

/// The report of a reconciliation (what `mychat finance reconcile --json` prints, with `ok`).
/// Amounts in fen.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReconcileReport {
    /// No difference and nothing unmatched.
    pub ok: bool,
    /// The schema checked (`public`).
    pub schema: String,
    /// The period as stream sequences: (`from_sequence`, `to_sequence`].
    pub from_sequence: u64,
    /// See `from_sequence`.
    pub to_sequence: u64,
    /// The time of the period's first event.
    pub from_time: Option<DateTime<Utc>>,
    /// The time of the period's last event.
    pub to_time: Option<DateTime<Utc>>,
    /// Events folded.
    pub events_folded: u64,
    /// Balances by account at the period's start, fen.
    pub opening: BTreeMap<String, i64>,
    /// Balances by account at the period's end, fen.
    pub closing: BTreeMap<String, i64>,
    /// Totals by category within the period, fen.
    pub totals: BTreeMap<String, i64>,
    /// Matched items by kind.
    pub matched: BTreeMap<String, u64>,
    /// Items without their counterpart.
    pub unmatched: Vec<String>,
    /// Differences between the fold and the ledger / read models, and broken rules.
    pub differences: Vec<String>,
    /// Checks that could not run.
    pub notes: Vec<String>,
}

/// A reconciliation job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReconciliationJob {
    /// The job's id.
    pub id: i64,
    /// Its state.
    pub state: JobState,
    /// Stream sequences folded of the period's end.
    pub progress: JobProgress,
    /// The period asked for.
    pub from: Option<String>,
    /// See `from`.
    pub to: Option<String>,
    /// Why it failed; null unless failed.
    pub error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it started; null while queued.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; null until then.
    pub finished_at: Option<DateTime<Utc>>,
    /// The report, once done.
    pub report: Option<ReconcileReport>,
}

/// `GET …/reconciliations/{id}`: the answer's format.
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// The job in MyChat's envelope (default).
    #[default]
    Json,
    /// The finished report's differences and unmatched items as CSV (`kind,text`).
    Csv,
}

impl std::str::FromStr for ReportFormat {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "csv" => Ok(Self::Csv),
            _ => Err("expected `json` or `csv`"),
        }
    }
}

/// `GET …/reconciliations/{id}` parameters.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// `json` (default, also when sent empty) or `csv`.
    #[serde(default, deserialize_with = "empty_as_none")]
    pub format: Option<ReportFormat>,
}

fn state_and_error(row: &JobRow) -> (JobState, Option<String>) {
    let state = JobState::of(&row.state);
    (
        state,
        (state == JobState::Failed).then(|| row.error.clone()),
    )
}

/// One CSV field (RFC 4180: quoted when it holds a comma, quote or line break).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A reconciliation
///
/// The job's state and progress and, once done, its report. `?format=csv` answers the finished
/// report's differences and unmatched items as CSV (`kind,text`; 409 until it is done).
#[utoipa::path(get, path = "/api/admin/finance/reconciliations/{id}", tag = "finance",
    params(("id" = i64, Path, description = "the job's id"), ReportQuery),
    responses(
        (status = 200, description = "the job (or its differences as CSV)", content(
            (Envelope<ReconciliationJob> = "application/json"),
            (String = "text/csv"))),
        (status = 404, description = "no such reconciliation", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "CSV asked before the job is done", body = Problem, content_type = "application/problem+json")))]
pub async fn get_reconciliation(
    State(jobs): State<Jobs>,
    Path(id): Path<i64>,
    Query(q): Query<ReportQuery>,
) -> ApiResult<Response> {
    let row = job(&jobs, JobKind::Reconcile, id).await?;
    let params: ReconcileParams = serde_json::from_value(row.params.clone()).unwrap_or_default();
    let report: Option<ReconcileReport> = row
        .result
        .clone()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored report: {e}")))?;
    let (state, error) = state_and_error(&row);
    if let Some(ReportFormat::Csv) = q.format {
        let report = report.ok_or_else(|| ApiError::conflict("the reconciliation is not done"))?;
        let mut csv = String::from("kind,text\r\n");
        for (kind, items) in [
            ("difference", &report.differences),
            ("unmatched", &report.unmatched),
        ] {
            for item in items {
                csv.push_str(&format!("{kind},{}\r\n", csv_field(item)));
            }
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response());
    }
    Ok(reply(ReconciliationJob {
        id: row.id,
        state,
        progress: JobProgress {
            done: row.done,
            total: row.total,
        },
        from: params.from,
        to: params.to,
        error,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        report,
    })
    .into_response())
}

// ---- replays ---------------------------------------------------------------------------------

/// `POST /api/admin/audit/replays`: the moment to rebuild the read models as of.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// An RFC 3339 time or an `EVENTS` stream sequence (at most the head).
    pub at: Point,
    /// Read models to replay (`orders`, `payments`, …); absent or empty: every one.
    #[serde(default)]
    pub projections: Vec<String>,
}

/// Queue an audit replay
///
/// Rebuilds the read models as they stood at `at` into a schema of their own (`audit_…`),
/// outside the request. Follow it with `GET /api/admin/audit/replays/{id}`; compare it with
/// `…/{id}/diff`.
#[utoipa::path(post, path = "/api/admin/audit/replays", tag = "audit",
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "queued", body = Envelope<JobAccepted>),
        (status = 422, description = "`at` is not a time or sequence or is past the head, or an unknown projection", body = Problem, content_type = "application/problem+json")))]
pub async fn create_replay(
    State(state): State<AppState>,
    State(jobs): State<Jobs>,
    caller: Caller,
    Json(req): Json<ReplayRequest>,
) -> ApiResult<Response> {
    let at = point("at", &req.at.0)?;
    if let AuditPoint::Sequence(s) = at {
        let head = head(&state).await?;
        if s > head {
            return Err(ApiError::unprocessable(
                "at",
                format!("stream sequence {s} is past the head ({head})"),
            ));
        }
    }
    if let Err(unknown) = pick(jobs.read_models(), &req.projections) {
        return Err(ApiError::unprocessable(
            "projections",
            format!("unknown projection `{unknown}`"),
        ));
    }
    let params = serde_json::to_value(ReplayParams {
        at: req.at.0.trim().to_string(),
        projections: req.projections,
    })
    .map_err(anyhow::Error::from)?;
    let key = caller.api_key.as_ref().map(|k| k.id);
    let id = jobs
        .submit(JobKind::Replay, params, caller.admin_id, key)
        .await?;
    Ok(accepted(id))
}

/// A stream and the last sequence a replay included from it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamUpto {
    /// The stream (`CHAT_1`, …).
    pub stream: String,
    /// Its last stream sequence included.
    pub sequence: u64,
}

/// Messages a replay applied to one read model.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Applied {
    /// The read model.
    pub projection: String,
    /// Messages applied.
    pub messages: u64,
}

/// What a replay built (what `mychat audit replay` reports).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayReport {
    /// The schema the read models were rebuilt into.
    pub schema: String,
    /// The last `EVENTS` stream sequence included.
    pub events_upto: u64,
    /// The chat streams' last sequences included.
    pub chat_upto: Vec<StreamUpto>,
    /// The moment rebuilt.
    pub at: DateTime<Utc>,
    /// Messages applied per read model.
    pub applied: Vec<Applied>,
    /// How long it took, seconds.
    pub seconds: f64,
}

#[derive(Deserialize)]
struct StoredReplay {
    schema: String,
    events_upto: u64,
    chat_upto: Vec<(String, u64)>,
    at: DateTime<Utc>,
    applied: Vec<(String, u64)>,
    seconds: f64,
}

impl From<StoredReplay> for ReplayReport {
    fn from(r: StoredReplay) -> Self {
        Self {
            schema: r.schema,
            events_upto: r.events_upto,
            chat_upto: r
                .chat_upto
                .into_iter()
                .map(|(stream, sequence)| StreamUpto { stream, sequence })
                .collect(),
            at: r.at,
            applied: r
                .applied
                .into_iter()
                .map(|(projection, messages)| Applied {
                    projection,
                    messages,
                })
                .collect(),
            seconds: r.seconds,
        }
    }
}

/// An audit replay job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayJob {
    /// The job's id.
    pub id: i64,
    /// Its state.
    pub state: JobState,
    /// Messages applied of the total.
    pub progress: JobProgress,
    /// The moment asked for.
    pub at: String,
    /// The read models asked for (empty: every one).
    pub projections: Vec<String>,
    /// The replay's schema, once done (until dropped by the retention).
    pub schema: Option<String>,
    /// Why it failed; null unless failed.
    pub error: Option<String>,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// When its schema was dropped by the retention; null while it is kept.
    pub dropped_at: Option<DateTime<Utc>>,
    /// What it built, once done.
    pub report: Option<ReplayReport>,
}

fn replay_report(row: &JobRow) -> Result<Option<ReplayReport>, ApiError> {
    row.result
        .clone()
        .map(serde_json::from_value::<StoredReplay>)
        .transpose()
        .map(|r| r.map(ReplayReport::from))
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored replay: {e}")))
}

/// An audit replay
///
/// The job's state and progress and, once done, its schema and report.
#[utoipa::path(get, path = "/api/admin/audit/replays/{id}", tag = "audit",
    params(("id" = i64, Path, description = "the job's id")),
    responses(
        (status = 200, description = "the job", body = Envelope<ReplayJob>),
        (status = 404, description = "no such replay", body = Problem, content_type = "application/problem+json")))]
pub async fn get_replay(
    State(jobs): State<Jobs>,
    Path(id): Path<i64>,
) -> ApiResult<axum::Json<Envelope<ReplayJob>>> {
    let row = job(&jobs, JobKind::Replay, id).await?;
    let params: ReplayParams = serde_json::from_value(row.params.clone()).unwrap_or_default();
    let report = replay_report(&row)?;
    let (state, error) = state_and_error(&row);
    Ok(reply(ReplayJob {
        id: row.id,
        state,
        progress: JobProgress {
            done: row.done,
            total: row.total,
        },
        at: params.at,
        projections: params.projections,
        schema: report.as_ref().map(|r| r.schema.clone()),
        error,
        created_at: row.created_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        dropped_at: row.dropped_at,
        report,
    }))
}

/// `GET …/replays/{id}/diff` parameters.
#[web::limits]
#[derive(Debug, Clone, Default, Deserialize, IntoParams, validator::Validate)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// `live` (default: the live read models) or the id of another finished replay.
    #[serde(default, deserialize_with = "empty_as_none")]
    #[param(pattern = "^(live|[0-9]{1,18})$")]
    pub against: Option<String>,
    /// 1-based page (default 1).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100000, message = "must be between 1 and 100000"))]
    pub page: Option<i64>,
    /// Rows per page, 1–100 (default 50).
    #[serde(default, deserialize_with = "empty_as_none")]
    #[validate(range(min = 1, max = 100, message = "must be between 1 and 100"))]
    pub page_size: Option<i64>,
}

/// One row that differs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RowDiff {
    /// The table.
    pub table: String,
    /// The primary key, as `column=value` pairs.
    pub key: String,
    /// The row in the replay (null: missing there).
    #[schema(value_type = Option<Object>)]
    pub left: Option<serde_json::Value>,
    /// The row in what it is compared against (null: missing there).
    #[schema(value_type = Option<Object>)]
    pub right: Option<serde_json::Value>,
    /// The columns whose values differ (both rows present).
    pub columns: Vec<String>,
}

/// One page of a replay's differences.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayDiff {
    /// The replay's schema (left).
    pub schema: String,
    /// What it was compared with (right): `public` (live) or another replay's schema.
    pub against: String,
    /// The page's rows, in table and key order.
    pub list: Vec<RowDiff>,
    /// Rows that differ in all.
    pub total: i64,
}

/// A finished replay's schema and projections.
async fn finished_replay(
    jobs: &Jobs,
    id: i64,
    field: Option<&str>,
) -> ApiResult<(String, ReplayParams)> {
    let row = match (jobs.get(JobKind::Replay, id).await?, field) {
        (Some(row), _) => row,
        (None, Some(f)) => return Err(ApiError::unprocessable(f, format!("no replay {id}"))),
        (None, None) => return Err(ApiError::not_found("job")),
    };
    let refuse = |msg: String| match field {
        Some(f) => ApiError::unprocessable(f, msg),
        None => ApiError::conflict(msg),
    };
    if row.dropped_at.is_some() {
        return Err(refuse(format!(
            "replay {id}'s schema was dropped by the retention"
        )));
    }
    let report = replay_report(&row)?
        .ok_or_else(|| refuse(format!("replay {id} is {}, not done", row.state)))?;
    let params: ReplayParams = serde_json::from_value(row.params).unwrap_or_default();
    Ok((report.schema, params))
}

/// A replay's differences
///
/// Row by row (by primary key, every column) between the replay's schema and the live read
/// models (`against=live`, default) or another finished replay (`against=<id>`), paged.
#[utoipa::path(get, path = "/api/admin/audit/replays/{id}/diff", tag = "audit",
    params(("id" = i64, Path, description = "the job's id"), DiffQuery),
    responses(
        (status = 200, description = "one page of differences", body = Envelope<ReplayDiff>),
        (status = 404, description = "no such replay", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "the replay is not done, or its schema was dropped", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`against` is neither `live` nor a finished replay", body = Problem, content_type = "application/problem+json")))]
pub async fn replay_diff(
    State(state): State<AppState>,
    State(jobs): State<Jobs>,
    Path(id): Path<i64>,
    Query(q): Query<DiffQuery>,
) -> ApiResult<axum::Json<Envelope<ReplayDiff>>> {
    validator::Validate::validate(&q)?;
    let (limit, offset) = paging(q.page, q.page_size, 50)?;
    let against = match q.against.as_deref().map(str::trim) {
        None | Some("live") => projections::runtime::LIVE_SCHEMA.to_string(),
        Some(other) => {
            let other: i64 = other
                .parse()
                .map_err(|_| ApiError::unprocessable("against", "`live` or a replay's id"))?;
            finished_replay(&jobs, other, Some("against")).await?.0
        }
    };
    let (schema, params) = finished_replay(&jobs, id, None).await?;
    let targets = pick(jobs.read_models(), &params.projections)
        .map_err(|n| ApiError::internal(anyhow::anyhow!("unknown projection {n}")))?;
    let diffs = projections::rebuild::diff(&state.db, &schema, &against, &targets).await?;
    let total = diffs.len() as i64;
    let list = diffs
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|d| RowDiff {
            table: d.table,
            key: d.key,
            left: d.left,
            right: d.right,
            columns: d.columns,
        })
        .collect();
    Ok(reply(ReplayDiff {
        schema,
        against,
        list,
        total,
    }))
}
