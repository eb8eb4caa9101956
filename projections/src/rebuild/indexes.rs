//! Deferred secondary indexes: before a replay into a fresh schema the secondary indexes of the
//! projections' tables are dropped (one sort per index at the end costs less than maintaining it
//! on every row written) and afterwards they are built again, two at a time. Rebuilds and audit
//! replays both use it.

use std::sync::Arc;

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt};
use sqlx::PgPool;

use crate::runtime::{schema_ident, Projection};

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
pub(super) async fn defer_secondary_indexes(
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
pub(super) async fn build_indexes(pool: &PgPool, definitions: &[String]) -> anyhow::Result<()> {
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
