//! Projection status and lag, for `mychat projections status` and `/metrics`.

use std::sync::Arc;

use async_nats::jetstream;
use serde::Serialize;
use sqlx::PgPool;

use crate::runtime::{checkpoint, Projection};

/// A `projection_status` row: state, poison sequence, error, worker.
type StatusRow = (String, Option<i64>, Option<String>, Option<String>);

/// A gauge: name, help, and how to read it from a status.
type Metric = (&'static str, &'static str, fn(&ProjectionStatus) -> f64);

/// One projection's state.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// The version in the code.
    pub version: i32,
    /// The version that built the live rows.
    pub stored_version: i32,
    /// The last stream sequence applied.
    pub checkpoint: u64,
    /// Messages of its subjects after the checkpoint (stream head − checkpoint, in events).
    pub lag_events: u64,
    /// How long the oldest unapplied message has waited, in seconds (0 when caught up).
    pub lag_seconds: f64,
    /// `running`, `stopped` (poison event) or `never started`.
    pub state: String,
    /// The poison event's stream sequence, when stopped.
    pub poison_sequence: Option<u64>,
    /// The poison event's cause, when stopped.
    pub error: Option<String>,
    /// Which worker wrote the state last (`pid N`).
    pub worker: Option<String>,
}

/// The status of each of `projections`.
///
/// # Errors
/// On a database or NATS error.
pub async fn status(
    pool: &PgPool,
    nats: &async_nats::Client,
    projections: &[Arc<dyn Projection>],
) -> anyhow::Result<Vec<ProjectionStatus>> {
    let js = jetstream::new(nats.clone());
    let mut out = Vec::new();
    for p in projections {
        let name = p.name();
        let position = checkpoint(pool, name).await?;
        let stored_version: i32 =
            sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = $1")
                .bind(name)
                .fetch_one(pool)
                .await?;
        let row: Option<StatusRow> = sqlx::query_as(
            "SELECT state, poison_seq, error, worker FROM projection_status WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(pool)
        .await?;
        let (lag_events, lag_seconds) = crate::rebuild::lag(&js, p.as_ref(), position).await?;
        let (state, poison, error, worker) =
            row.unwrap_or_else(|| ("never started".into(), None, None, None));
        out.push(ProjectionStatus {
            name: name.to_string(),
            version: p.version(),
            stored_version,
            checkpoint: position,
            lag_events,
            lag_seconds,
            state,
            poison_sequence: poison.map(|s| s as u64),
            error,
            worker,
        });
    }
    Ok(out)
}

/// The statuses in the Prometheus text exposition format (version 0.0.4).
pub fn prometheus(statuses: &[ProjectionStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let metrics: [Metric; 5] = [
        (
            "mychat_projection_checkpoint",
            "Last stream sequence applied.",
            |s| s.checkpoint as f64,
        ),
        (
            "mychat_projection_lag_events",
            "Messages after the checkpoint (stream head minus checkpoint).",
            |s| s.lag_events as f64,
        ),
        (
            "mychat_projection_lag_seconds",
            "Age of the oldest unapplied message, in seconds.",
            |s| s.lag_seconds,
        ),
        (
            "mychat_projection_stopped",
            "1 when the projection is stopped on a poison event.",
            |s| f64::from(u8::from(s.state == "stopped")),
        ),
        (
            "mychat_projection_poison_sequence",
            "Stream sequence of the poison event (0 when none).",
            |s| s.poison_sequence.unwrap_or(0) as f64,
        ),
    ];
    for (name, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in statuses {
            let _ = writeln!(out, "{name}{{projection=\"{}\"}} {}", s.name, value(s));
        }
    }
    out
}
