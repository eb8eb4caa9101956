//! The hardened runtime: one active worker with takeover, poison events stop the projection
//! until an operator's skip is in the log, Postgres restarts, and a version change rebuilds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use projections::runtime::checkpoint;
use projections::{LogMessage, Projection};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn place(env: &Env, id: i64) {
    env.bus
        .execute::<domain::Order>(
            &id.to_string(),
            domain::OrderCommand::Place {
                order_no: format!("ORD{id}"),
                user_id: 7,
                counselor_id: 3,
                duration_minutes: 10,
                price_per_minute: 500,
                schedule_time: None,
                notes: String::new(),
                placed_at: base(),
            },
            &eventstore::CommandMeta::new(eventstore::Actor::user(7)),
        )
        .await
        .unwrap();
}

/// Records the orders it sees, and fails on one stream sequence.
struct Picky {
    poison: u64,
}

#[async_trait]
impl Projection for Picky {
    fn name(&self) -> &'static str {
        "picky"
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.order.>".into()]
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        anyhow::ensure!(
            message.stream_sequence != self.poison,
            "cannot make sense of this order"
        );
        sqlx::query("INSERT INTO picked (seq) VALUES ($1)")
            .bind(message.stream_sequence as i64)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// An environment with [`Picky`]'s `picked` table and `orders` orders placed (ids 1..=orders).
async fn picked_after_orders(orders: i64) -> Env {
    let env = env().await;
    sqlx::query("CREATE TABLE picked (seq BIGINT PRIMARY KEY)")
        .execute(&env.pool)
        .await
        .unwrap();
    for id in 1..=orders {
        place(&env, id).await;
    }
    env
}

#[tokio::test]
async fn a_poison_event_stops_the_projection_until_an_operator_skips_it() {
    let env = picked_after_orders(10).await;
    let shutdown = CancellationToken::new();
    start(&env, Arc::new(Picky { poison: 4 }), &shutdown);
    wait_for("the projection to stop", || async {
        let row: Option<(String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT state, poison_seq, error FROM projection_status WHERE name = 'picky'",
        )
        .fetch_optional(&env.pool)
        .await
        .unwrap();
        matches!(row, Some((s, Some(4), Some(e))) if s == "stopped" && e.contains("cannot make sense"))
    })
    .await;
    // Stopped at the message before it; nothing after it was applied.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(checkpoint(&env.pool, "picky").await.unwrap(), 3);
    let picked: i64 = sqlx::query_scalar("SELECT count(*) FROM picked")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(picked, 3);
    let statuses = projections::status::status(
        &env.pool,
        &env.client,
        &[Arc::new(Picky { poison: 4 }) as Arc<dyn Projection>],
    )
    .await
    .unwrap();
    assert_eq!(statuses[0].lag_events, 7);
    assert!(projections::status::prometheus(&statuses)
        .contains("mychat_projection_stopped{projection=\"picky\"} 1"));

    // The operator's decision goes into the log; the worker resumes past it.
    let meta = eventstore::CommandMeta::new(eventstore::Actor::system());
    assert!(
        projections::control::skip(&env.bus, "picky", 4, " ", &meta)
            .await
            .is_err(),
        "a reason is required"
    );
    let at = projections::control::skip(&env.bus, "picky", 4, "corrupt test order", &meta)
        .await
        .unwrap();
    assert!(at.is_some());
    let js = async_nats::jetstream::new(env.client.clone());
    let skips = projections::control::skip_events(&js, "picky")
        .await
        .unwrap();
    assert_eq!(skips.len(), 1);
    assert_eq!(skips[0].reason, "corrupt test order");
    wait_for("the projection to pass the skipped message", || async {
        checkpoint(&env.pool, "picky").await.unwrap() == 10
    })
    .await;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM picked ORDER BY seq")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 5, 6, 7, 8, 9, 10]);
    let state: String =
        sqlx::query_scalar("SELECT state FROM projection_status WHERE name = 'picky'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(state, "running");
    shutdown.cancel();
}

/// Two workers on one projection, both at the same checkpoint: the checkpoint's
/// compare-and-set opens each batch's transaction and takes the row's lock before any read-model
/// write, so the second waits for the first, then finds the checkpoint moved and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_at_a_moved_checkpoint_applies_nothing() {
    let env = picked_after_orders(3).await;
    let picky = Picky { poison: 0 };
    assert_eq!(checkpoint(&env.pool, "picky").await.unwrap(), 0);
    let js = async_nats::jetstream::new(env.client.clone());
    let mut reader =
        projections::runtime::spawn_reader(js, "EVENTS", picky.subjects(), 0, None, 10);
    let batch = reader.recv().await.unwrap().unwrap();
    assert_eq!(batch.len(), 3);
    let none = std::collections::BTreeSet::new();

    let mut first = env.pool.begin().await.unwrap();
    let at = projections::runtime::apply_in_tx(&mut first, &picky, "public", 0, &batch[..2], &none)
        .await
        .unwrap();
    assert_eq!(at, 2);
    // The second worker's batch waits on the checkpoint row while the first is open.
    let second = tokio::spawn({
        let (pool, batch) = (env.pool.clone(), batch.clone());
        async move {
            let mut tx = pool.begin().await.unwrap();
            let picky = Picky { poison: 0 };
            let none = std::collections::BTreeSet::new();
            projections::runtime::apply_in_tx(&mut tx, &picky, "public", 0, &batch, &none)
                .await
                .map(|_| ())
        }
    });
    wait_for(
        "the second worker to wait on the checkpoint row",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%projection_checkpoints%')",
            )
            .fetch_one(&env.pool)
            .await
            .unwrap()
        },
    )
    .await;
    assert!(
        !second.is_finished(),
        "the second worker waits for the first"
    );
    first.commit().await.unwrap();
    let refused = second.await.unwrap().unwrap_err();
    assert!(
        matches!(&refused, projections::runtime::BatchError::Transient(e) if e.to_string().contains("checkpoint moved")),
        "{refused}"
    );
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM picked ORDER BY seq")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2]);
    assert_eq!(checkpoint(&env.pool, "picky").await.unwrap(), 2);
}

#[tokio::test]
async fn one_worker_is_active_and_a_standby_takes_over_when_it_dies() {
    let env = env().await;
    for id in 1..=20 {
        place(&env, id).await;
    }
    let stop_a = CancellationToken::new();
    let stop_b = CancellationToken::new();
    let a = start(&env, Arc::new(projections::read_models::Orders), &stop_a);
    wait_for("worker A to catch up", || async {
        checkpoint(&env.pool, "orders").await.unwrap() == 20
    })
    .await;
    let b = start(&env, Arc::new(projections::read_models::Orders), &stop_b);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let holders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(holders, 1, "exactly one active worker");
    // The active worker dies (its task and its lock connection are dropped).
    a.abort();
    let _ = a.await;
    for id in 21..=40 {
        place(&env, id).await;
    }
    wait_for("the standby to take over", || async {
        checkpoint(&env.pool, "orders").await.unwrap() == 40
    })
    .await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(count, 40);
    stop_a.cancel();
    stop_b.cancel();
    b.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_while_projecting_ends_equal_to_a_fresh_replay() {
    let mut env = env().await;
    let shutdown = CancellationToken::new();
    start_projectors(&env, &shutdown);
    for id in 1..=4 {
        order_story(&env.bus, id, 100 + id % 2, 1 + id % 2, 10, 1 + id).await;
    }
    let bus = env.bus.clone();
    let writer = tokio::spawn(async move {
        for id in 5..=8 {
            order_story(&bus, id, 100 + id % 2, 1 + id % 2, 10, 1 + id).await;
        }
    });
    tokio::task::block_in_place(|| env.pg.restart().unwrap());
    writer.await.unwrap();
    reconcile_until_ok(&env, "public").await;
    wait_caught_up(&env).await;
    let diffs = fresh_replay_diff(&env).await;
    assert!(diffs.is_empty(), "{diffs:#?}");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 2")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(orders, 8);
    shutdown.cancel();
}

/// Projector transactions commit with `synchronous_commit = off`: a PostgreSQL crash loses the
/// last ones (their WAL was still in shared memory), and with them their checkpoint, so the
/// projectors read those events again and apply them once. The test PostgreSQL runs with
/// `synchronous_commit = off` for every transaction, so the crash below (SIGKILL to the
/// postmaster and every backend, mid-load) does lose acknowledged transactions; afterwards the
/// read models equal a fresh replay of the log and reconcile to the fen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_under_load_ends_equal_to_a_fresh_replay() {
    let mut env = env().await;
    let shutdown = CancellationToken::new();
    start_projectors(&env, &shutdown);
    for id in 1..=4 {
        order_story(&env.bus, id, 100 + id % 2, 1 + id % 2, 10, 1 + id).await;
    }
    let bus = env.bus.clone();
    let writer = tokio::spawn(async move {
        for id in 5..=24 {
            order_story(&bus, id, 100 + id % 3, 1 + id % 2, 10, 1 + id % 7).await;
        }
    });
    // Mid-load: the projectors are applying the writer's commits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let checkpoints = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT name, position FROM projection_checkpoints ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap_or_default()
    };
    let before = checkpoints(env.pool.clone()).await;
    tokio::task::block_in_place(|| env.pg.crash_and_restart().unwrap());
    // What the crash took back (committed with synchronous_commit off, not yet in the WAL on
    // disk): printed, not asserted, as it depends on the WAL writer's timing.
    let after = checkpoints(env.pool.clone()).await;
    let lost: Vec<_> = before
        .iter()
        .filter_map(|(n, b)| {
            let a = after.iter().find(|(m, _)| m == n).map_or(0, |(_, a)| *a);
            (a < *b).then(|| format!("{n}: {b} → {a}"))
        })
        .collect();
    eprintln!("checkpoints taken back by the crash: {lost:?}");
    writer.await.unwrap();
    reconcile_until_ok(&env, "public").await;
    wait_caught_up(&env).await;
    let diffs = fresh_replay_diff(&env).await;
    assert!(diffs.is_empty(), "{diffs:#?}");
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE status = 2")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(orders, 24);
    shutdown.cancel();
}

#[tokio::test]
async fn a_changed_projection_version_rebuilds_on_start() {
    let env = env().await;
    for id in 1..=15 {
        place(&env, id).await;
    }
    let shutdown = CancellationToken::new();
    let worker = start(&env, Arc::new(projections::read_models::Orders), &shutdown);
    wait_for("orders to catch up", || async {
        checkpoint(&env.pool, "orders").await.unwrap() == 15
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap();
    // Rows built by an "older version" (stored version 0), one of them wrong.
    sqlx::query("UPDATE projection_checkpoints SET version = 0 WHERE name = 'orders'")
        .execute(&env.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE orders SET notes = 'old code' WHERE id = 3")
        .execute(&env.pool)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    start(&env, Arc::new(projections::read_models::Orders), &shutdown);
    wait_for("the rebuild to swap in", || async {
        let v: i32 =
            sqlx::query_scalar("SELECT version FROM projection_checkpoints WHERE name = 'orders'")
                .fetch_one(&env.pool)
                .await
                .unwrap();
        v == 1
    })
    .await;
    let notes: String = sqlx::query_scalar("SELECT notes FROM orders WHERE id = 3")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(notes, "");
    place(&env, 16).await;
    wait_for("the live worker to continue", || async {
        checkpoint(&env.pool, "orders").await.unwrap() == 16
    })
    .await;
    shutdown.cancel();
}

/// Applies a batch as one multi-row insert into a table that refuses one stream sequence (a
/// `CHECK` constraint): the batch fails without saying which message is at fault.
struct PickyBatch;

#[async_trait]
impl Projection for PickyBatch {
    fn name(&self) -> &'static str {
        "picky_batch"
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.order.>".into()]
    }
    async fn apply_batch(
        &self,
        tx: &mut PgConnection,
        messages: &[LogMessage],
    ) -> anyhow::Result<()> {
        let seqs: Vec<i64> = messages.iter().map(|m| m.stream_sequence as i64).collect();
        sqlx::query("INSERT INTO picked_batch (seq) SELECT * FROM unnest($1::bigint[])")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO picked_batch (seq) VALUES ($1)")
            .bind(message.stream_sequence as i64)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_poison_event_inside_a_batched_apply_is_pinpointed_by_its_sequence() {
    let env = env().await;
    sqlx::query("CREATE TABLE picked_batch (seq BIGINT PRIMARY KEY CHECK (seq <> 6))")
        .execute(&env.pool)
        .await
        .unwrap();
    for id in 1..=10 {
        place(&env, id).await;
    }
    let shutdown = CancellationToken::new();
    start(&env, Arc::new(PickyBatch), &shutdown);
    wait_for("the projection to stop", || async {
        let row: Option<(String, Option<i64>, Option<String>)> = sqlx::query_as(
            "SELECT state, poison_seq, error FROM projection_status WHERE name = 'picky_batch'",
        )
        .fetch_optional(&env.pool)
        .await
        .unwrap();
        matches!(row, Some((s, Some(6), Some(e))) if s == "stopped" && e.contains("picked_batch_seq_check"))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The messages before it are applied (the failed batch was rolled back and re-applied one
    // by one), nothing after it.
    assert_eq!(checkpoint(&env.pool, "picky_batch").await.unwrap(), 5);
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM picked_batch ORDER BY seq")
        .fetch_all(&env.pool)
        .await
        .unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    shutdown.cancel();
}

/// A replay's reader survives its consumer vanishing mid-read: it re-creates the consumer after
/// the last stream sequence it read and delivers every message once, in order.
#[tokio::test]
async fn a_reader_whose_consumer_is_deleted_reads_on_without_gaps_or_repeats() {
    use futures::TryStreamExt;
    let env = env().await;
    let js = async_nats::jetstream::new(env.client.clone());
    // More than two pull requests' worth.
    let n = eventstore::reader::PULL_BATCH as u64 * 2 + 500;
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(
            js.publish(format!("ev.test.{}", i % 7), "{}".into())
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let mut reader = projections::runtime::spawn_reader(
        js.clone(),
        eventstore::EVENTS_STREAM,
        Vec::new(),
        0,
        None,
        10,
    );
    let first = reader.recv().await.unwrap().unwrap();
    // The reader now waits on its full channel: delete its consumer under it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stream = js.get_stream(eventstore::EVENTS_STREAM).await.unwrap();
    let names: Vec<String> = stream.consumer_names().try_collect().await.unwrap();
    assert_eq!(names.len(), 1, "{names:?}");
    stream.delete_consumer(&names[0]).await.unwrap();
    let mut sequences: Vec<u64> = first.iter().map(|m| m.stream_sequence).collect();
    while let Some(batch) = reader.recv().await {
        sequences.extend(batch.unwrap().iter().map(|m| m.stream_sequence));
    }
    assert_eq!(sequences, (1..=n).collect::<Vec<_>>());
}

/// A projection's lag counts its own subjects after the checkpoint and dates the oldest of
/// them, and reading it leaves no consumer on the stream: the service registry reads every read
/// model's lag every 2 s, so a consumer left behind per reading (each kept up to date by the
/// server on every append until it expired) would pile up under load.
#[tokio::test]
async fn reading_a_projections_lag_leaves_no_consumer_behind() {
    let env = picked_after_orders(5).await;
    let js = async_nats::jetstream::new(env.client.clone());
    // Not on the projection's subjects: not counted.
    js.publish("ev.account.9", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let picky = Picky { poison: 0 };
    // `get_stream` answers with the stream's info, consumer count included.
    let consumers = || async {
        let stream = js.get_stream(eventstore::EVENTS_STREAM).await.unwrap();
        stream.cached_info().state.consumer_count
    };

    let (events, seconds) = projections::rebuild::lag(&js, &picky, 0).await.unwrap();
    assert_eq!(events, 5);
    assert!(
        seconds >= 0.02,
        "the oldest unapplied order waited {seconds} s"
    );
    assert_eq!(consumers().await, 0);

    let (events, _) = projections::rebuild::lag(&js, &picky, 3).await.unwrap();
    assert_eq!(events, 2);
    assert_eq!(consumers().await, 0);

    // Past the last order, only the account's message follows: no lag.
    let (events, seconds) = projections::rebuild::lag(&js, &picky, 5).await.unwrap();
    assert_eq!((events, seconds), (0, 0.0));
    assert_eq!(consumers().await, 0);
}
