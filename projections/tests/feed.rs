//! Live projectors sharing their process's feed of a stream, against real nats-server and
//! PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use projections::runtime::{checkpoint, feed::FEED_HISTORY};
use projections::{LiveFeeds, LogMessage, Projection, Projector, ProjectorSettings};
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

mod common;

async fn wait_for_checkpoint(pool: &sqlx::PgPool, name: &str, target: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while checkpoint(pool, name).await.unwrap() < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {target}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records the stream sequence of every message it applies, in the order applied; `pause` per
/// message makes it slow.
struct Seen {
    name: &'static str,
    subjects: &'static [&'static str],
    pause: Duration,
}

#[async_trait]
impl Projection for Seen {
    fn name(&self) -> &'static str {
        self.name
    }
    fn subjects(&self) -> Vec<String> {
        self.subjects.iter().map(|s| s.to_string()).collect()
    }
    async fn apply(&self, tx: &mut PgConnection, message: &LogMessage) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO seen (projection, seq) VALUES ($1, $2)")
            .bind(self.name)
            .bind(message.stream_sequence as i64)
            .execute(&mut *tx)
            .await?;
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        Ok(())
    }
}

/// Publishes `n` messages to `EVENTS` after the `done` already there, round-robin on the
/// subjects of the aggregate types `kinds`; answers each one's (stream sequence, subject).
async fn publish(
    js: &async_nats::jetstream::Context,
    done: usize,
    n: usize,
    kinds: &[&str],
) -> Vec<(u64, String)> {
    let mut published = Vec::with_capacity(n);
    let mut acks = Vec::new();
    for i in done..done + n {
        let kind = kinds[i % kinds.len()];
        let subject = format!("ev.{kind}.{i}");
        let ack = js.publish(subject.clone(), "{}".into()).await.unwrap();
        acks.push((ack, subject));
        // Acks awaited in windows: the client holds back publishes beyond its acks in flight.
        if acks.len() == 500 || i + 1 == done + n {
            for (ack, subject) in acks.drain(..) {
                published.push((ack.await.unwrap().sequence, subject));
            }
        }
    }
    published
}

/// Projectors that share a feed each apply every message on their subjects exactly once and in
/// stream order, however they came to it: each starts behind the feed (which starts at the head)
/// and catches up by itself first, one while the log grows by more than the feed's history, and
/// a slow one is dropped for falling behind, catches up and joins again (from the feed's history
/// or by itself). In the end they all read through one consumer, and go on following it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_sharing_a_feed_apply_their_subjects_once_in_order_however_they_join() {
    let env = common::env().await;
    let (pool, client) = (&env.pool, &env.client);
    let js = async_nats::jetstream::new(client.clone());
    sqlx::query("CREATE TABLE seen (id BIGSERIAL, projection TEXT NOT NULL, seq BIGINT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    // Small batches, and a subscriber dropped past 200 messages waiting: the slow projector
    // falls that far behind within its first transactions of the burst below.
    let feeds = LiveFeeds::new(client.clone(), 5).with_max_waiting(200);
    let shutdown = CancellationToken::new();
    let start = |projection: Seen| {
        let projector = Projector {
            pool: pool.clone(),
            nats: client.clone(),
            projection: Arc::new(projection),
            settings: ProjectorSettings {
                batch_size: 50,
                feeds: Some(feeds.clone()),
                ..Default::default()
            },
        };
        tokio::spawn(projector.run(shutdown.clone()))
    };
    const ALL: &[&str] = &["order", "wallet", "account"];
    let mut log = publish(&js, 0, 300, ALL).await;
    let first = start(Seen {
        name: "orders_seen",
        subjects: &["ev.order.>"],
        pause: Duration::ZERO,
    });
    let slow = start(Seen {
        name: "accounts_seen",
        subjects: &["ev.account.>"],
        pause: Duration::from_millis(3),
    });
    // Once the slow one has caught up (and joined the feed), a burst on its subject: far more
    // messages than it may have waiting arrive while it applies its first transactions.
    let last_account = log
        .iter()
        .rev()
        .find(|(_, s)| s.starts_with("ev.account."))
        .unwrap()
        .0;
    wait_for_checkpoint(pool, "accounts_seen", last_account).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    log.extend(publish(&js, log.len(), 1_000, &["account"]).await);
    let from_history = start(Seen {
        name: "wallets_seen",
        subjects: &["ev.wallet.>"],
        pause: Duration::ZERO,
    });
    // More than the feed's history while they follow: a projector starting from the beginning
    // now is behind it.
    log.extend(publish(&js, log.len(), FEED_HISTORY + 500, &["order", "wallet"]).await);
    let behind = start(Seen {
        name: "all_seen",
        subjects: &["ev.order.>", "ev.wallet.>", "ev.account.>"],
        pause: Duration::ZERO,
    });
    log.extend(publish(&js, log.len(), 600, ALL).await);

    // Each projection's subjects, as prefixes.
    let cases: [(&str, &[&str]); 4] = [
        ("orders_seen", &["ev.order."]),
        ("accounts_seen", &["ev.account."]),
        ("wallets_seen", &["ev.wallet."]),
        ("all_seen", &["ev."]),
    ];
    let on = |prefixes: &[&str], messages: &[(u64, String)]| -> Vec<i64> {
        messages
            .iter()
            .filter(|(_, s)| prefixes.iter().any(|p| s.starts_with(p)))
            .map(|(seq, _)| *seq as i64)
            .collect()
    };
    for (name, prefixes) in cases {
        let expected = on(prefixes, &log);
        wait_for_checkpoint(pool, name, *expected.last().unwrap() as u64).await;
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM seen WHERE projection = $1 ORDER BY id")
                .bind(name)
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(
            applied.len(),
            expected.len(),
            "{name}: every message on its subjects applied once"
        );
        assert_eq!(applied, expected, "{name}: in stream order");
    }
    let feed = feeds.feed(eventstore::EVENTS_STREAM);
    assert!(
        feed.dropped() >= 1,
        "the slow projector fell behind and was dropped"
    );
    // All four follow the feed now: one consumer on the stream is being read (the feed's; the
    // consumers of readers that were stopped, not ended, wait for the server to remove them,
    // with no pull request).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let infos: Vec<async_nats::jetstream::consumer::Info> = futures::TryStreamExt::try_collect(
            js.get_stream(eventstore::EVENTS_STREAM)
                .await
                .unwrap()
                .consumers(),
        )
        .await
        .unwrap();
        let reading: Vec<&str> = infos
            .iter()
            .filter(|i| i.num_waiting > 0)
            .map(|i| i.name.as_str())
            .collect();
        if reading.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projectors read through one consumer: {reading:?} of {} are read",
            infos.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And they go on following it.
    let more = publish(&js, log.len(), 30, ALL).await;
    for (name, prefixes) in cases {
        wait_for_checkpoint(pool, name, *on(prefixes, &more).last().unwrap() as u64).await;
    }
    shutdown.cancel();
    for worker in [first, slow, from_history, behind] {
        worker.await.unwrap();
    }
}
