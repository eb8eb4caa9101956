//! What one atomic batch costs on nats-server 2.15.1 with the project's `nats.conf` (fsync
//! always), by batch size, one batch at a time on a quiet server: on an R1 file stream (`CHAT`,
//! where the server stages each batch in a file store of its own) and on an R1 memory stream
//! (staged in memory), next to a plain publish; then the throughput of pipelined plain publishes
//! on `CHAT` by acks in flight and connections (where the chat append's time goes;
//! figures in docs/benchmarks.md).
//! `cargo run --release -p eventstore --example batch_cost_probe -- [ROUNDS]`
use std::time::{Duration, Instant};

use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
use async_nats::jetstream::stream::{Config, StorageType};
use async_nats::HeaderMap;

async fn batch(client: &async_nats::Client, subject: &str, id: &str, n: usize) -> Duration {
    let started = Instant::now();
    for i in 1..=n {
        let mut headers = HeaderMap::new();
        if n > 1 {
            headers.insert(NATS_BATCH_ID, id);
            headers.insert(NATS_BATCH_SEQUENCE, i.to_string().as_str());
        }
        let body = bytes::Bytes::from(vec![b'x'; 200]);
        if i < n {
            client
                .publish_with_headers(subject.to_string(), headers, body)
                .await
                .expect("publish");
        } else {
            if n > 1 {
                headers.insert(NATS_BATCH_COMMIT, "1");
            }
            let reply = client
                .request_with_headers(subject.to_string(), headers, body)
                .await
                .expect("ack");
            assert!(
                !String::from_utf8_lossy(&reply.payload).contains("error"),
                "{}",
                String::from_utf8_lossy(&reply.payload)
            );
        }
    }
    started.elapsed()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let server = testkit::nats::NatsServer::start()?;
    let client = server.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    eventstore::ensure_streams(&js, &Default::default()).await?;
    js.create_stream(Config {
        name: "PROBE_MEM".into(),
        subjects: vec!["probe.mem.>".into()],
        storage: StorageType::Memory,
        allow_atomic_publish: true,
        ..Default::default()
    })
    .await?;
    println!(
        "load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut k = 0;
    for (label, subject) in [("file (CHAT)", "chat.1"), ("memory", "probe.mem.1")] {
        for n in [1usize, 2, 10, 50, 200] {
            let mut times = Vec::new();
            for _ in 0..rounds {
                k += 1;
                times.push(batch(&client, subject, &format!("p{k}"), n).await);
            }
            times.sort_unstable();
            let mean = times.iter().sum::<Duration>() / times.len() as u32;
            println!(
                "{label:12} batch of {n:4}: mean {:7.3} ms, p50 {:7.3} ms, p99 {:7.3} ms",
                mean.as_secs_f64() * 1e3,
                times[times.len() / 2].as_secs_f64() * 1e3,
                times[times.len() * 99 / 100].as_secs_f64() * 1e3
            );
        }
    }
    // Pipelined plain publishes on CHAT: `window` acks awaited at once, over `conns` connections.
    for conns in [1usize, 2, 4] {
        let mut clients = Vec::new();
        for _ in 0..conns {
            clients.push(server.connect().await?);
        }
        for window in [16usize, 64, 256] {
            let total = 6000usize;
            let started = Instant::now();
            let mut lat = Vec::with_capacity(total);
            let mut pending = futures::stream::FuturesUnordered::new();
            use futures::StreamExt as _;
            for i in 0..total {
                if pending.len() >= window {
                    lat.push(pending.next().await.expect("pending"));
                }
                let c = clients[i % conns].clone();
                let subject = format!("chat.{}", i % conns);
                pending.push(async move {
                    let t = Instant::now();
                    let reply = c
                        .request(subject, bytes::Bytes::from(vec![b'x'; 200]))
                        .await
                        .expect("ack");
                    assert!(!String::from_utf8_lossy(&reply.payload).contains("error"));
                    t.elapsed()
                });
            }
            while let Some(d) = pending.next().await {
                lat.push(d);
            }
            lat.sort_unstable();
            println!(
                "plain publishes, {conns} connection(s), {window:3} in flight: {:6.0} msg/s, p50 {:6.3} ms, p99 {:6.3} ms",
                total as f64 / started.elapsed().as_secs_f64(),
                lat[lat.len() / 2].as_secs_f64() * 1e3,
                lat[lat.len() * 99 / 100].as_secs_f64() * 1e3
            );
        }
    }
    Ok(())
}
