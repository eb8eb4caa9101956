//! The blue/green rebuild: replay into a `shadow_<name>` schema while the live tables serve,
//! then swap the shadow tables into `public` in one transaction with the checkpoint.

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream;
use serde::Serialize;
use sqlx::PgPool;

use crate::runtime::{
    apply_in_tx, checkpoint_in, load_skips, prepare_schema, schema_ident, spawn_reader, Projection,
    LIVE_SCHEMA,
};

use super::indexes::{build_indexes, defer_secondary_indexes};
use super::replay::{replay_into, Progress, REPLAY_BATCH};

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct RebuildReport {
    pub projection: String,
    /// The projections rebuilt together (the projection and its siblings).
    pub members: Vec<String>,
    pub version: i32,
    /// Messages applied to the shadow tables (including the catch-up).
    pub events: u64,
    pub seconds: f64,
    /// The live checkpoint after the swap (a stream sequence).
    pub position: u64,
}

/// Rebuilds `projection` blue/green: into `shadow_<name>` from the start of the log while the
/// live tables keep serving, then swaps in one transaction (module docs). A projection with
/// [siblings](Projection::siblings) (the chat messages, one projection per chat stream) is
/// rebuilt with them: every member replays into the one shadow schema, and the swap catches each
/// up and moves every member's checkpoint. One rebuild of a set of tables at a time (a Postgres
/// advisory lock).
///
/// # Errors
/// A projection without tables (the process manager), a poison event, or a failure; the live
/// tables are untouched unless the swap committed.
pub async fn rebuild(
    pool: &PgPool,
    nats: &async_nats::Client,
    projection: Arc<dyn Projection>,
    progress: &dyn Progress,
) -> anyhow::Result<RebuildReport> {
    let members = {
        let siblings = projection.siblings();
        if siblings.is_empty() {
            vec![projection.clone()]
        } else {
            siblings
        }
    };
    let name = projection.name();
    let mut tables: Vec<&'static str> = members.iter().flat_map(|p| p.tables()).collect();
    tables.sort_unstable();
    tables.dedup();
    anyhow::ensure!(
        !tables.is_empty(),
        "projection {name} writes no tables: it cannot be rebuilt"
    );
    // One rebuild of these tables at a time, whichever member asked.
    let mut lock = pool.acquire().await?.detach();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("mychat.rebuild:{}", tables.join(",")))
        .execute(&mut lock)
        .await?;
    let started = Instant::now();
    let shadow = format!("shadow_{}", members[0].name());
    let s = schema_ident(&shadow)?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
        .execute(pool)
        .await?;
    // Logged: the shadow tables become the live ones.
    prepare_schema(pool, &shadow, &members, false).await?;
    // As in an audit replay, the shadow's secondary indexes are built once the bulk of the log
    // is in (the catch-up in the swap below then maintains them row by row, as live does).
    let deferred = defer_secondary_indexes(pool, &shadow, &members).await?;
    let mut events = 0;
    for member in &members {
        events += replay_into(pool, nats, member.as_ref(), &shadow, None, progress).await?;
        checkpoint_in(pool, LIVE_SCHEMA, member.name()).await?;
    }
    build_indexes(pool, &deferred).await?;

    let js = jetstream::new(nats.clone());
    let mut skips = Vec::new();
    for member in &members {
        skips.push(load_skips(&js, member.name()).await?);
    }
    let names: Vec<&str> = members.iter().map(|m| m.name()).collect();
    let mut attempt = 0;
    let positions = loop {
        attempt += 1;
        let swap = async {
            let mut tx = pool.begin().await?;
            sqlx::query("SET LOCAL lock_timeout = '10s'")
                .execute(&mut *tx)
                .await?;
            // The checkpoint rows first, then the tables: the order a live batch takes them in
            // (its compare-and-set opens the batch, its writes follow), so the two never wait
            // on each other in a cycle.
            sqlx::query(
                "SELECT position FROM public.projection_checkpoints WHERE name = ANY($1) FOR UPDATE",
            )
            .bind(&names)
            .execute(&mut *tx)
            .await?;
            let live: Vec<String> = tables.iter().map(|t| format!("public.{t}")).collect();
            sqlx::query(&format!(
                "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
                live.join(", ")
            ))
            .execute(&mut *tx)
            .await?;
            // Catch up with what arrived during the replay, inside the swap.
            let mut positions = Vec::new();
            let mut caught_up = 0u64;
            for (member, skips) in members.iter().zip(&skips) {
                let member_name = member.name();
                let mut position = checkpoint_in(pool, &shadow, member_name).await?;
                let mut reader = spawn_reader(
                    js.clone(),
                    member.stream(),
                    member.subjects(),
                    position,
                    None,
                    REPLAY_BATCH,
                );
                while let Some(batch) = reader.recv().await {
                    let batch = batch?;
                    position =
                        apply_in_tx(&mut tx, member.as_ref(), &shadow, position, &batch, skips)
                            .await
                            .map_err(|e| {
                                anyhow::anyhow!("projection {member_name} into {shadow}: {e}")
                            })?;
                    caught_up += batch.len() as u64;
                }
                positions.push(position);
            }
            for table in &tables {
                sqlx::query(&format!("DROP TABLE public.{table}"))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!("ALTER TABLE {s}.{table} SET SCHEMA public"))
                    .execute(&mut *tx)
                    .await?;
            }
            for (member, position) in members.iter().zip(&positions) {
                sqlx::query(
                    "UPDATE public.projection_checkpoints SET position = $2, version = $3, updated_at = now() \
                     WHERE name = $1",
                )
                .bind(member.name())
                .bind(*position as i64)
                .bind(member.version())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            anyhow::Ok((positions, caught_up))
        };
        match swap.await {
            Ok((positions, caught_up)) => {
                events += caught_up;
                break positions;
            }
            Err(e) if attempt < 5 && crate::runtime::is_transient(&e) => {
                tracing::warn!(
                    projection = name,
                    error = format!("{e:#}"),
                    attempt,
                    "swap failed; retrying"
                );
            }
            Err(e) => return Err(e.context(format!("swapping {shadow} into public"))),
        }
    };
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
        .execute(pool)
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let position = members
        .iter()
        .zip(&positions)
        .find(|(m, _)| m.name() == name)
        .map_or(0, |(_, p)| *p);
    tracing::info!(
        projection = name,
        members = ?names,
        events,
        seconds,
        position,
        "rebuilt and swapped in"
    );
    Ok(RebuildReport {
        projection: name.to_string(),
        members: names.iter().map(|n| n.to_string()).collect(),
        version: projection.version(),
        events,
        seconds,
        position,
    })
}
