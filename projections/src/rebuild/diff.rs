//! Comparing a replayed schema with another row by row: each table's primary key, its rows in key
//! order, and the [`RowDiff`]s between two schemas.

use std::sync::Arc;

use anyhow::Context as _;
use serde::Serialize;
use sqlx::PgPool;

use crate::runtime::{schema_ident, table_exists, Projection};

use super::audit::audit_upto;

/// One row that differs between two schemas.
#[derive(Debug, Clone, Serialize)]
pub struct RowDiff {
    pub table: String,
    /// The primary key, as `column=value` pairs.
    pub key: String,
    /// The row in the left schema (`None`: missing there).
    pub left: Option<serde_json::Value>,
    /// The row in the right schema (`None`: missing there).
    pub right: Option<serde_json::Value>,
    /// The columns whose values differ (both present).
    pub columns: Vec<String>,
}

impl std::fmt::Display for RowDiff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.left, &self.right) {
            (Some(_), None) => write!(f, "{} [{}]: only on the left", self.table, self.key),
            (None, Some(_)) => write!(f, "{} [{}]: only on the right", self.table, self.key),
            (Some(l), Some(r)) => {
                write!(f, "{} [{}]:", self.table, self.key)?;
                for c in &self.columns {
                    write!(f, " {c}: {} ≠ {};", l[c], r[c])?;
                }
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }
}

async fn primary_key(pool: &PgPool, schema: &str, table: &str) -> anyhow::Result<Vec<String>> {
    let cols: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey) \
         WHERE i.indisprimary AND n.nspname = $1 AND c.relname = $2 ORDER BY a.attnum",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(pool)
    .await?;
    anyhow::ensure!(!cols.is_empty(), "{schema}.{table} has no primary key");
    Ok(cols)
}

pub(super) async fn rows(
    pool: &PgPool,
    schema: &str,
    table: &str,
    key: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, serde_json::Value>> {
    let s = schema_ident(schema)?;
    let all: Vec<(serde_json::Value,)> =
        sqlx::query_as(&format!("SELECT to_jsonb(t) FROM {s}.{table} t"))
            .fetch_all(pool)
            .await?;
    Ok(all
        .into_iter()
        .map(|(row,)| {
            let k = key
                .iter()
                .map(|c| format!("{c}={}", row[c]))
                .collect::<Vec<_>>()
                .join(",");
            (k, row)
        })
        .collect())
}

/// Compares every table of `projections` that exists in `left` with the same table in `right`,
/// row by row (by primary key, every column).
///
/// # Errors
/// A missing table on the right, invalid schema names, an audit schema emptied by a crash
/// ([`audit_upto`]), or a database error.
pub async fn diff(
    pool: &PgPool,
    left: &str,
    right: &str,
    projections: &[Arc<dyn Projection>],
) -> anyhow::Result<Vec<RowDiff>> {
    let mut diffs = Vec::new();
    audit_upto(pool, left).await?;
    audit_upto(pool, right).await?;
    for p in projections {
        for table in p.tables() {
            if !table_exists(pool, left, table).await? {
                continue;
            }
            let key = primary_key(pool, left, table).await?;
            let l = rows(pool, left, table, &key).await?;
            let r = rows(pool, right, table, &key)
                .await
                .with_context(|| format!("reading {right}.{table}"))?;
            for (k, lrow) in &l {
                match r.get(k) {
                    None => diffs.push(RowDiff {
                        table: table.to_string(),
                        key: k.clone(),
                        left: Some(lrow.clone()),
                        right: None,
                        columns: vec![],
                    }),
                    Some(rrow) if rrow != lrow => {
                        let columns = lrow
                            .as_object()
                            .map(|o| {
                                o.keys()
                                    .filter(|c| lrow[c.as_str()] != rrow[c.as_str()])
                                    .cloned()
                                    .collect()
                            })
                            .unwrap_or_default();
                        diffs.push(RowDiff {
                            table: table.to_string(),
                            key: k.clone(),
                            left: Some(lrow.clone()),
                            right: Some(rrow.clone()),
                            columns,
                        });
                    }
                    Some(_) => {}
                }
            }
            for (k, rrow) in &r {
                if !l.contains_key(k) {
                    diffs.push(RowDiff {
                        table: table.to_string(),
                        key: k.clone(),
                        left: None,
                        right: Some(rrow.clone()),
                        columns: vec![],
                    });
                }
            }
        }
    }
    Ok(diffs)
}
