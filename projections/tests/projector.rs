//! The projector runtime against real nats-server and Postgres.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::{Order, OrderCommand};
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, Actor, CommandBus, CommandMeta, StreamSettings};
use projections::runtime::checkpoint;
use projections::{LogMessage, Projection, Projector, ProjectorSettings, MIGRATOR};
use sqlx::PgConnection;
use testkit::{NatsServer, Postgres};
use tokio_util::sync::CancellationToken;

mod common;

/// Records every message it applies (slowly, so a batch is in flight when the worker dies).
struct Recorder;

#[async_trait]
impl Projection for Recorder {
    fn name(&self) -> &'static str {
        "recorder"
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.order.>".into()]
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO recorded (seq) VALUES ($1)")
            .bind(message.stream_sequence as i64)
            .execute(&mut *tx)
            .await?;
        tokio::time::sleep(Duration::from_millis(3)).await;
        Ok(())
    }
}

async fn place(bus: &CommandBus, id: i64) {
    let cmd = OrderCommand::Place {
        order_no: format!("ORD{id}"),
        user_id: 7,
        counselor_id: 3,
        duration_minutes: 10,
        price_per_minute: 500,
        schedule_time: None,
        notes: String::new(),
        placed_at: chrono::Utc::now(),
    };
    bus.execute::<Order>(&id.to_string(), cmd, &CommandMeta::new(Actor::user(7)))
        .await
        .unwrap();
}

async fn wait_for_checkpoint(pool: &sqlx::PgPool, name: &str, target: u64) {
    for _ in 0..600 {
        if checkpoint(pool, name).await.unwrap() >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {target}");
}

#[tokio::test]
async fn a_worker_killed_mid_batch_applies_no_event_twice() {
    let nats = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    sqlx::query("CREATE TABLE recorded (seq BIGINT NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let client = nats.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let bus = CommandBus::new(js, Upcasters::default());
    for id in 1..=300 {
        place(&bus, id).await;
    }

    let projector = Projector {
        pool: pool.clone(),
        nats: client.clone(),
        projection: Arc::new(Recorder),
        settings: ProjectorSettings {
            batch_size: 50,
            synchronous_commit: false,
            ..Default::default()
        },
    };
    // Kill the worker three times while batches are in flight.
    for _ in 0..3 {
        let worker = tokio::spawn(projector.clone().run(CancellationToken::new()));
        tokio::time::sleep(Duration::from_millis(230)).await;
        worker.abort();
        let _ = worker.await;
    }
    let before_finish = checkpoint(&pool, "recorder").await.unwrap();
    assert!(
        before_finish < 300,
        "the kills must land mid-log (checkpoint {before_finish})"
    );

    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(projector.clone().run(shutdown.clone()));
    wait_for_checkpoint(&pool, "recorder", 300).await;
    shutdown.cancel();
    worker.await.unwrap();

    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT seq) FROM recorded")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (rows, distinct),
        (300, 300),
        "every event applied exactly once"
    );
}

/// Records the order cancellations it applies and ignores placements. It reads two subjects, so
/// its consumer is unfiltered and its reader keeps its subjects client side.
struct Cancellations;

#[async_trait]
impl Projection for Cancellations {
    fn name(&self) -> &'static str {
        "cancellations"
    }
    fn subjects(&self) -> Vec<String> {
        vec!["ev.order.>".into(), "ev.wallet.>".into()]
    }
    fn ignores(&self) -> &'static [&'static str] {
        &["OrderPlaced"]
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        anyhow::ensure!(
            message.event_types.as_deref() == Some("OrderCancelled"),
            "handed a commit it ignores: {:?} at {}",
            message.event_types,
            message.stream_sequence
        );
        sqlx::query("INSERT INTO cancelled (seq) VALUES ($1)")
            .bind(message.stream_sequence as i64)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// A live projector applies every commit it does not ignore once, in order, never hands an
/// ignored one to the projection, and its checkpoint still reaches a head made of ignored
/// commits: nothing after them would carry it there.
#[tokio::test]
async fn a_live_projector_applies_what_it_does_not_ignore_once_and_passes_the_rest() {
    let env = common::env().await;
    let (pool, client, bus) = (&env.pool, &env.client, &env.bus);
    sqlx::query("CREATE TABLE cancelled (seq BIGINT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    // Some history before the projector starts, the rest while it follows the head.
    let mut cancellations = Vec::new();
    let commit = |id: i64| {
        let bus = bus.clone();
        // A command id of its own.
        let meta = CommandMeta::new(Actor::user(7));
        async move {
            place(&bus, id).await;
            if id % 10 == 0 {
                let cancel = OrderCommand::Cancel {
                    cancelled_by: 7,
                    reason: "changed my mind".into(),
                    cancelled_at: chrono::Utc::now(),
                };
                let committed = bus
                    .execute::<Order>(&id.to_string(), cancel, &meta)
                    .await
                    .unwrap();
                return committed.stream_sequence;
            }
            None
        }
    };
    for id in 1..=50 {
        cancellations.extend(commit(id).await);
    }
    let shutdown = CancellationToken::new();
    let projector = Projector {
        pool: pool.clone(),
        nats: client.clone(),
        projection: Arc::new(Cancellations),
        settings: ProjectorSettings {
            batch_size: 7,
            synchronous_commit: false,
            ..Default::default()
        },
    };
    let worker = tokio::spawn(projector.run(shutdown.clone()));
    for id in 51..=205 {
        cancellations.extend(commit(id).await);
        if id % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The log ends with placements 201..=205, which the projection ignores.
    let head = js_head(client).await;
    assert!(head > *cancellations.last().unwrap());
    wait_for_checkpoint(pool, "cancellations", head).await;
    shutdown.cancel();
    worker.await.unwrap();

    let applied: Vec<i64> = sqlx::query_scalar("SELECT seq FROM cancelled ORDER BY seq")
        .fetch_all(pool)
        .await
        .unwrap();
    let expected: Vec<i64> = cancellations.iter().map(|&s| s as i64).collect();
    assert_eq!(cancellations.len(), 20, "cancellations committed");
    assert_eq!(applied.len(), 20);
    assert_eq!(
        applied, expected,
        "every cancellation applied once, no placement"
    );
    assert_eq!(checkpoint(pool, "cancellations").await.unwrap(), head);
}

/// The last stream sequence of `EVENTS`.
async fn js_head(client: &async_nats::Client) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(eventstore::EVENTS_STREAM).await.unwrap();
    stream.info().await.unwrap().state.last_sequence
}

#[tokio::test]
async fn two_workers_on_one_projection_build_the_same_read_model_as_one() {
    let nats = NatsServer::start().unwrap();
    let pg = Postgres::start().unwrap();
    let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
    MIGRATOR.run(&pool).await.unwrap();
    let client = nats.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    ensure_streams(&js, &StreamSettings::default())
        .await
        .unwrap();
    let bus = CommandBus::new(js, Upcasters::default());
    for id in 1..=100 {
        place(&bus, id).await;
    }
    let shutdown = CancellationToken::new();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let projector = Projector {
            pool: pool.clone(),
            nats: client.clone(),
            projection: Arc::new(projections::read_models::Orders),
            settings: ProjectorSettings {
                batch_size: 7,
                synchronous_commit: false,
                ..Default::default()
            },
        };
        workers.push(tokio::spawn(projector.run(shutdown.clone())));
    }
    wait_for_checkpoint(&pool, "orders", 100).await;
    shutdown.cancel();
    for w in workers {
        w.await.unwrap();
    }
    let (count, amount): (i64, i64) =
        sqlx::query_as("SELECT count(*), sum(amount_fen)::bigint FROM orders")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((count, amount), (100, 100 * 5_000));
}

/// A projector given its process's read-your-writes registry wakes that process's waiters
/// itself: here the registry follows announcements on another nats-server, which never hears
/// them, and reads its checkpoints from another database, where they never move, so only the
/// direct hand-over can wake it.
#[tokio::test]
async fn a_projector_wakes_its_own_processs_waiters_without_nats() {
    // Every part is bound: an unbound one (the nats-server) would be dropped, and stopped, here.
    let common::Env {
        nats: _nats,
        pg,
        pool,
        client,
        bus,
        feeds: _,
    } = common::env().await;
    let elsewhere = NatsServer::start().unwrap();
    pg.ensure_database("elsewhere").await.unwrap();
    let elsewhere_pool = sqlx::PgPool::connect(&pg.url_for("elsewhere"))
        .await
        .unwrap();
    MIGRATOR.run(&elsewhere_pool).await.unwrap();
    let watch =
        projections::CheckpointWatch::start(elsewhere.connect().await.unwrap(), elsewhere_pool)
            .await
            .unwrap();
    let short = Duration::from_millis(300);

    // Without the registry: the order is applied, and the waiter is not told.
    place(&bus, 1).await;
    let run = |watch: Option<projections::CheckpointWatch>, shutdown: CancellationToken| {
        let projector = Projector {
            pool: pool.clone(),
            nats: client.clone(),
            projection: Arc::new(projections::read_models::Orders),
            settings: ProjectorSettings {
                watch,
                ..Default::default()
            },
        };
        tokio::spawn(projector.run(shutdown))
    };
    let shutdown = CancellationToken::new();
    let worker = run(None, shutdown.clone());
    wait_for_checkpoint(&pool, "orders", 1).await;
    assert!(
        !watch.wait_for("orders", 1, short).await,
        "nothing but the projector's own hand-over can reach this registry"
    );
    shutdown.cancel();
    worker.await.unwrap();

    // With it: the next order's checkpoint wakes the waiter.
    let shutdown = CancellationToken::new();
    let worker = run(Some(watch.clone()), shutdown.clone());
    place(&bus, 2).await;
    let mut woken = false;
    for _ in 0..50 {
        if watch.wait_for("orders", 2, short).await {
            woken = true;
            break;
        }
    }
    assert!(
        woken,
        "the projector handed its checkpoint to its process's registry"
    );
    shutdown.cancel();
    worker.await.unwrap();
}
