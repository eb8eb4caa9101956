//! Probes the chat log's write strategies against real nats-servers with the project's
//! `nats.conf` (fsync always): for each number of chat shards (a fresh server each) and each
//! committer setting, appends messages of 5,000 sessions at a fixed rate through a
//! [`eventstore::ChatLog`] and reports the append latency (send → stored) and the committers'
//! counters. Beside them, the raw floor of the same server: plain publishes spread over the same
//! shard streams, each awaited in its own task; and the floor of another log format, several
//! records per stream message (one publish in flight per stream, then two; records that arrive
//! meanwhile wait and go out together in the next), with how many records a message carried;
//! and the same through the chat log's [`eventstore::pack::Packer`] (fenced, deduplicated).
//! `cargo run --release -p eventstore --example chat_commit_probe -- [RATE] [SECONDS] [SHARDS,…]
//! [ROUNDS,…]` (ROUNDS: the settings' numbers in the order printed, 0 = plain publishes, each
//! run as often as named, so that two settings can be alternated; default: each once)
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::chat::ChatMessage;
use eventstore::{ChatLog, GroupCommitSettings, StreamSettings};

fn percentiles(mut l: Vec<u64>) -> (usize, f64, f64) {
    l.sort_unstable();
    if l.is_empty() {
        return (0, 0.0, 0.0);
    }
    let p = |q: f64| l[((l.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (l.len(), p(0.5), p(0.99))
}

/// Runs `make(i)` futures at `rate` per second for `seconds`, each timed.
async fn at_rate<F, Fut>(rate: u64, seconds: u64, make: F) -> Vec<u64>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let lat = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            sent += 1;
            let (f, lat) = (make(sent), lat.clone());
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                if f.await {
                    lat.lock().unwrap().push(t.elapsed().as_micros() as u64);
                }
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let taken = std::mem::take(&mut *lat.lock().unwrap());
    taken
}

/// One record waiting for its stream message, and where to say whether it was stored.
type Packed = (Vec<u8>, tokio::sync::oneshot::Sender<bool>);

/// The floor of another log format, several records per stream message (not the chat log's):
/// per shard stream, records queue while `in_flight` publishes are outstanding and go out
/// together, concatenated, as one fsynced message of at most 1,000 records, on one subject per
/// shard (`chat.<k>.packed`; the raw publishes beside it use the sessions' subjects). Counts the
/// stream messages sent and the records they carried.
#[derive(Clone)]
struct Packer {
    layout: eventstore::ChatLayout,
    queues: Arc<Vec<tokio::sync::mpsc::UnboundedSender<Packed>>>,
    messages: Arc<AtomicU64>,
    records: Arc<AtomicU64>,
}

impl Packer {
    fn start(
        js: &async_nats::jetstream::Context,
        layout: eventstore::ChatLayout,
        in_flight: usize,
    ) -> Self {
        let (messages, records) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut queues = vec![];
        // Indexed by shard number (1-based; 0, the legacy stream, is not in a fresh layout).
        for shard in 0..=layout.shards {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Packed>();
            queues.push(tx);
            let (js, messages, records) = (js.clone(), messages.clone(), records.clone());
            let subject = format!("chat.{shard}.packed");
            let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
            tokio::spawn(async move {
                while let Ok(permit) = permits.clone().acquire_owned().await {
                    let Some((mut body, reply)) = rx.recv().await else {
                        break;
                    };
                    let mut replies = vec![reply];
                    while replies.len() < 1000 {
                        let Ok((more, reply)) = rx.try_recv() else {
                            break;
                        };
                        body.extend_from_slice(&more);
                        replies.push(reply);
                    }
                    messages.fetch_add(1, Ordering::Relaxed);
                    records.fetch_add(replies.len() as u64, Ordering::Relaxed);
                    let (js, subject) = (js.clone(), subject.clone());
                    tokio::spawn(async move {
                        let stored = match js.publish(subject, body.into()).await {
                            Ok(ack) => ack.await.is_ok(),
                            Err(_) => false,
                        };
                        drop(permit);
                        for reply in replies {
                            let _ = reply.send(stored);
                        }
                    });
                }
            });
        }
        Self {
            layout,
            queues: Arc::new(queues),
            messages,
            records,
        }
    }

    /// Appends a 200-byte record of `session`; true once its stream message is stored.
    async fn append(&self, session: i64) -> bool {
        let shard = self.layout.place(session).shard;
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.queues[usize::from(shard)]
            .send((vec![b'x'; 200], tx))
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let shard_counts: Vec<u16> = args
        .next()
        .map(|a| a.split(',').filter_map(|s| s.parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2, 4, 8]);
    let picked: Option<Vec<usize>> = args
        .next()
        .map(|a| a.split(',').filter_map(|s| s.parse().ok()).collect());
    println!(
        "load average {}; {rate} msg/s for {seconds} s",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for shards in shard_counts {
        let server = testkit::nats::NatsServer::start()?;
        let client = server.connect().await?;
        let js = async_nats::jetstream::new(client.clone());
        let layout = eventstore::ensure_streams(
            &js,
            &StreamSettings {
                chat_shards: Some(shards),
                ..Default::default()
            },
        )
        .await?;
        // The floor: plain publishes to the shard streams, each awaited in its own task.
        let raw = {
            let js = js.clone();
            at_rate(rate, seconds, move |i| {
                let js = js.clone();
                async move {
                    let subject = layout.place((i % 5000) as i64).subject;
                    match js.publish(subject, vec![b'x'; 200].into()).await {
                        Ok(ack) => ack.await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await
        };
        let (n, p50, p99) = percentiles(raw);
        println!("{shards} shards, raw publishes:           {n:>6} acked, p50 {p50:8.2} ms p99 {p99:8.2} ms");
        for in_flight in [1usize, 2] {
            let packer = Packer::start(&js, layout, in_flight);
            let lat = {
                let packer = packer.clone();
                at_rate(rate, seconds, move |i| {
                    let packer = packer.clone();
                    async move { packer.append((i % 5000) as i64).await }
                })
                .await
            };
            let (n, p50, p99) = percentiles(lat);
            let (msgs, recs) = (
                packer.messages.load(Ordering::Relaxed),
                packer.records.load(Ordering::Relaxed),
            );
            println!(
                "{shards} shards, packed, {in_flight} in flight:    {n:>6} acked, p50 {p50:8.2} ms \
                 p99 {p99:8.2} ms; {msgs} stream messages (mean {:.2} records)",
                recs as f64 / msgs.max(1) as f64
            );
        }
        // The chat log's packs as written: one `eventstore::pack::Packer` per shard stream
        // (fenced on the stream's last sequence, every record's dedup id checked).
        {
            let packers: Arc<Vec<eventstore::pack::Packer>> = Arc::new(
                (1..=layout.shards)
                    .map(|k| {
                        eventstore::pack::Packer::start(
                            js.clone(),
                            eventstore::chat::shard_stream(k),
                            format!("chat.{k}.packs"),
                            eventstore::pack::PackSettings::default(),
                        )
                    })
                    .collect(),
            );
            // Each packer has read its stream's window once its first record is stored.
            for (k, packer) in packers.iter().enumerate() {
                packer
                    .append(eventstore::pack::PackAppend {
                        subject: format!("chat.{}.0", k + 1),
                        kind: "warm-up".into(),
                        dedup_id: format!("warm-up:{k}"),
                        body: "0".into(),
                    })
                    .await?;
            }
            let lat = {
                let packers = packers.clone();
                at_rate(rate, seconds, move |i| {
                    let packers = packers.clone();
                    async move {
                        let session = (i % 5000) as i64;
                        let shard = layout.place(session).shard;
                        let body = format!("\"{}\"", "x".repeat(200));
                        packers[usize::from(shard) - 1]
                            .append(eventstore::pack::PackAppend {
                                subject: layout.place(session).subject,
                                kind: "message".into(),
                                dedup_id: format!("{session}:1:{i}"),
                                body: body.into(),
                            })
                            .await
                            .is_ok()
                    }
                })
                .await
            };
            let (n, p50, p99) = percentiles(lat);
            let (packs, records) = packers
                .iter()
                .map(|p| p.stats().snapshot())
                .fold((0, 0), |(a, b), s| (a + s.0, b + s.1));
            println!(
                "{shards} shards, packer (fenced, dedup): {n:>6} acked, p50 {p50:8.2} ms \
                 p99 {p99:8.2} ms; {packs} packs (mean {:.2} records)",
                records as f64 / packs.max(1) as f64
            );
        }
        let settings = [
            (
                "plain publishes",
                GroupCommitSettings {
                    min_batch: usize::MAX,
                    max_in_flight: 10_000,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 2, 1 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    min_batch: 2,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 2, 2 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    min_batch: 2,
                    max_in_flight: 2,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 8, 1 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 8, 2 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    max_in_flight: 2,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 16, 16 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    min_batch: 16,
                    max_in_flight: 16,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 16, 64 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    min_batch: 16,
                    max_in_flight: 64,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 4, 4 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    min_batch: 4,
                    max_in_flight: 4,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "batches ≥ 64, 64 in flight",
                GroupCommitSettings {
                    max_batch: 1000,
                    min_batch: 64,
                    max_in_flight: 64,
                    linger: Duration::ZERO,
                    ..Default::default()
                },
            ),
        ];
        let rounds = picked
            .clone()
            .unwrap_or_else(|| (0..settings.len()).collect());
        for (round, &k) in rounds.iter().enumerate() {
            let Some((name, settings)) = settings.get(k).cloned() else {
                continue;
            };
            let log = ChatLog::new(js.clone(), layout, settings.into());
            let lat = {
                let log = log.clone();
                at_rate(rate, seconds, move |i| {
                    let log = log.clone();
                    async move {
                        let m = ChatMessage {
                            session_id: (i % 5000) as i64,
                            sender_id: 1,
                            sender_type: "user".into(),
                            content_type: "text".into(),
                            content: "x".repeat(40),
                            file_url: String::new(),
                            client_msg_id: format!("r{round}-{i}"),
                            sent_at: chrono::Utc::now(),
                        };
                        log.append_message(&m).await.is_ok()
                    }
                })
                .await
            };
            let (n, p50, p99) = percentiles(lat);
            let (mut singles, mut batches, mut batched) = (0, 0, 0);
            for (_, s) in log.stats() {
                let (a, b, c, _, _) = s.snapshot();
                singles += a;
                batches += b;
                batched += c;
            }
            println!(
                "{shards} shards, {name:<24} {n:>6} acked, p50 {p50:8.2} ms p99 {p99:8.2} ms; \
                 {batches} batches (mean {:.0}), {singles} singles",
                batched as f64 / batches.max(1) as f64
            );
        }
    }
    Ok(())
}
