//! The schemas a projection writes to: the live one (`public`), quoting a schema's name, and
//! preparing another schema (shadow or audit) with the same tables and its own checkpoints.

use std::sync::Arc;

use sqlx::PgPool;

use super::projection::Projection;

/// The schema of the live read models.
pub const LIVE_SCHEMA: &str = "public";

/// Whether `schema.table` exists.
///
/// # Errors
/// On a database error.
pub(crate) async fn table_exists(pool: &PgPool, schema: &str, table: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = $2)",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await?)
}

/// `schema` quoted as an identifier, after checking it is a plain lower-case name
/// (`[a-z_][a-z0-9_]*`, at most 63 bytes).
///
/// # Errors
/// Any other name (schemas come from the command line).
pub fn schema_ident(schema: &str) -> anyhow::Result<String> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    anyhow::ensure!(
        ok,
        "{schema:?} is not a valid schema name ([a-z_][a-z0-9_]*)"
    );
    Ok(format!("\"{schema}\""))
}

/// Creates `schema` with a `projection_checkpoints` table and every table of `projections`, each
/// `LIKE public.<table> INCLUDING ALL` (same columns, defaults, constraints and indexes; the
/// indexes keep the live names, so a swapped-in table is indistinguishable from a migrated one).
/// `unlogged` creates them `UNLOGGED` (no WAL; a crash of PostgreSQL empties them): for audit
/// schemas, which can be replayed again; never for tables that become live.
///
/// # Errors
/// On a database error or an invalid schema name.
pub async fn prepare_schema(
    pool: &PgPool,
    schema: &str,
    projections: &[Arc<dyn Projection>],
    unlogged: bool,
) -> anyhow::Result<()> {
    let s = schema_ident(schema)?;
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {s}"))
        .execute(&mut *tx)
        .await?;
    let mut tables = vec!["projection_checkpoints"];
    for p in projections {
        tables.extend(p.tables());
    }
    for table in tables {
        sqlx::query(&format!(
            "CREATE {}TABLE IF NOT EXISTS {s}.{table} (LIKE public.{table} INCLUDING ALL)",
            if unlogged { "UNLOGGED " } else { "" }
        ))
        .execute(&mut *tx)
        .await?;
        // Give the copied indexes the live names (LIKE names them after their columns).
        let live: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = $1",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?;
        let copied: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $2 AND tablename = $1",
        )
        .bind(table)
        .bind(schema)
        .fetch_all(&mut *tx)
        .await?;
        let shape = |name: &str, def: &str, sch: &str| {
            def.replacen(&format!(" {name} ON {sch}.{table} "), " ON ", 1)
        };
        for (name, def) in &live {
            let want = shape(name, def, "public");
            if let Some((copied_name, _)) = copied
                .iter()
                .find(|(n, d)| n != name && shape(n, d, schema) == want)
            {
                sqlx::query(&format!(
                    "ALTER INDEX {s}.\"{copied_name}\" RENAME TO \"{name}\""
                ))
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}
