//! Point-in-time audit replays: an [`AuditPoint`] (a stream sequence or a time) resolved to a
//! sequence, the replay into an `audit_<stamp>` schema kept with its `audit_meta` row, and
//! reading back up to where an audit schema was built.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;

use crate::runtime::{prepare_schema, schema_ident, table_exists, Projection};

use super::indexes::{build_indexes, defer_secondary_indexes};
use super::replay::{replay_into, replay_shared, Progress};

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
