//! Checkpoints: where each projection is in its stream (a row of `projection_checkpoints`, in
//! the live schema or another), the core-NATS subject a projector announces it on, and how often
//! a projector that only skips ignored messages moves it.

use std::time::Duration;

use sqlx::PgPool;

use super::apply::BatchError;
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

/// The compare-and-set that moves `projection`'s checkpoint in `schema` from `from` to `to`
/// (stream sequences), as a statement for a simple query (which takes no parameters, so the
/// values are inlined: checked identifiers and numbers). It updates one row when the checkpoint
/// is still at `from`, none when another worker moved it ([`moved_under_worker`]).
///
/// # Errors
/// [`BatchError::Transient`] for a schema or projection name that is not an identifier.
pub(crate) fn checkpoint_cas(
    schema: &str,
    projection: &dyn super::projection::Projection,
    from: u64,
    to: u64,
) -> Result<String, BatchError> {
    let s = schema_ident(schema).map_err(BatchError::Transient)?;
    let name = projection.name();
    schema_ident(name).map_err(BatchError::Transient)?;
    Ok(format!(
        "UPDATE {s}.projection_checkpoints SET position = {to}, version = {version}, \
         updated_at = now() WHERE name = '{name}' AND position = {from}",
        version = projection.version()
    ))
}

/// The error of a [`checkpoint_cas`] that updated `rows` rows: `None` for one (it moved).
pub(crate) fn moved_under_worker(name: &str, rows: u64) -> Option<BatchError> {
    (rows != 1).then(|| {
        BatchError::Transient(anyhow::anyhow!(
            "projection {name}: checkpoint moved under this worker (another worker is active)"
        ))
    })
}
