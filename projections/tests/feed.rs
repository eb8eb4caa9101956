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

/// Publishes `n` messages to `EVENTS` after the `done` already there, round-robin on three
/// aggregates' subjects; answers each one's (stream sequence, subject).
async fn publish(js: &async_nats::jetstream::Context, done: usize, n: usize) -> Vec<(u64, String)> {
    let mut acks = Vec::with_capacity(n);
    for i in done..done + n {
        let kind = ["order", "wallet", "account"][i % 3];
        let subject = format!("ev.{kind}.{i}");
        acks.push((
            js.publish(subject.clone(), "{}".into()).await.unwrap(),
            subject,
        ));
    }
    let mut published = Vec::with_capacity(n);
    for (ack, subject) in acks {
        published.push((ack.await.unwrap().sequence, subject));
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
    // Small batches: the slow projector's channel fills within a few of its transactions.
    let feeds = LiveFeeds::new(client.clone(), 10);
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
    let mut log = publish(&js, 0, 1_000).await;
    let first = start(Seen {
        name: "orders_seen",
        subjects: &["ev.order.>"],
        pause: Duration::ZERO,
    });
    let slow = start(Seen {
        name: "accounts_seen",
        subjects: &["ev.account.>"],
        pause: Duration::from_millis(1),
    });
    log.extend(publish(&js, log.len(), 2_000).await);
    let from_history = start(Seen {
        name: "wallets_seen",
        subjects: &["ev.wallet.>"],
        pause: Duration::ZERO,
    });
    // More than the feed's history while they follow: a projector starting from the beginning
    // now is behind it.
    log.extend(publish(&js, log.len(), FEED_HISTORY + 1_000).await);
    let behind = start(Seen {
        name: "all_seen",
        subjects: &["ev.order.>", "ev.wallet.>", "ev.account.>"],
        pause: Duration::ZERO,
    });
    log.extend(publish(&js, log.len(), 1_500).await);
    let head = log.last().unwrap().0;

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
        let last = *expected.last().unwrap() as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while checkpoint(pool, name).await.unwrap() < last {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never reached {last} (head {head})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
    // All four follow the feed now: one consumer on the stream (the feed's).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names: Vec<String> = futures::TryStreamExt::try_collect(
            js.get_stream(eventstore::EVENTS_STREAM)
                .await
                .unwrap()
                .consumer_names(),
        )
        .await
        .unwrap();
        if names.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the projectors read through one consumer: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And they go on following it.
    let more = publish(&js, log.len(), 30).await;
    for (name, prefixes) in cases {
        let want = *on(prefixes, &more).last().unwrap() as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while checkpoint(pool, name).await.unwrap() < want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} stopped following"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    shutdown.cancel();
    for worker in [first, slow, from_history, behind] {
        worker.await.unwrap();
    }
}
