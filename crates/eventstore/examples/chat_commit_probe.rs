//! Probes the chat group committer's settings against a real nats-server with the project's
//! `nats.conf` (fsync always): appends at a fixed rate through a `ChatCommitter`, reporting the
//! append latency (send → stored) and the mean write round trip for each setting (issue 5).
//! `cargo run --release -p eventstore --example chat_commit_probe -- [RATE] [SECONDS]`
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::chat::{ChatCommitter, ChatMessage};
use eventstore::GroupCommitSettings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5000);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let server = testkit::nats::NatsServer::start()?;
    let client = server.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    eventstore::ensure_streams(&js, &Default::default()).await?;
    println!(
        "load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    for (round, (max_batch, min_batch, in_flight)) in [
        (1000, 8, 2),
        (1000, 8, 3),
        (1000, 8, 4),
        (1000, 2, 2),
        (1000, 16, 2),
        (256, 8, 2),
    ]
    .into_iter()
    .enumerate()
    {
        let committer = ChatCommitter::start(
            client.clone(),
            GroupCommitSettings {
                max_batch,
                min_batch,
                max_in_flight: in_flight,
                ..Default::default()
            },
        );
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
                let (c, lat) = (committer.clone(), lat.clone());
                let tag = format!("r{round}-{sent}");
                tasks.push(tokio::spawn(async move {
                    let m = ChatMessage {
                        session_id: (sent % 5000) as i64,
                        sender_id: 1,
                        sender_type: "user".into(),
                        content_type: "text".into(),
                        content: "x".repeat(40),
                        file_url: String::new(),
                        client_msg_id: tag,
                        sent_at: chrono::Utc::now(),
                    };
                    let t = Instant::now();
                    if c.append_message(&m).await.is_ok() {
                        lat.lock().unwrap().push(t.elapsed().as_micros() as u64);
                    }
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
        let mut l = std::mem::take(&mut *lat.lock().unwrap());
        l.sort_unstable();
        let p = |q: f64| l[((l.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        let (singles, batches, batched, _, _) = committer.stats().snapshot();
        println!(
            "max_batch {max_batch:>3} min_batch {min_batch} in_flight {in_flight:>2}: {} appends, p50 {:8.2} ms p99 {:8.2} ms; {batches} batches (mean {:.0}), {singles} singles, mean write {:.2} ms",
            l.len(),
            p(0.5),
            p(0.99),
            batched as f64 / batches.max(1) as f64,
            committer.stats().mean_write_ms()
        );
    }
    Ok(())
}
