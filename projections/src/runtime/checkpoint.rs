//! Checkpoints: where each projection is in its stream (a row of `projection_checkpoints`, in
//! the live schema or another), the core-NATS subject a projector announces it on, and how often
//! a projector that only skips ignored messages moves it.

use std::time::Duration;

use sqlx::PgPool;

use super::schema::{schema_ident, LIVE_SCHEMA};

/// The core-NATS subject on which a projector announces its checkpoint after each batch
/// (`mychat.checkpoint.<projection>`, payload: the stream sequence as decimal text).
pub fn checkpoint_subject(name: &str) -> String {
    format!("mychat.checkpoint.{name}")
}

/// How often, at most, a live projector stores its checkpoint for messages it ignores (each
/// such store is a statement: one per ignored batch would cost what the ignoring saves). A
/// killed projector reads those messages again; nothing else depends on the stored position
/// (the announcements carry the read one; `finance reconcile` waits only for the event types a
/// projection does not ignore).
pub const IGNORED_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

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
