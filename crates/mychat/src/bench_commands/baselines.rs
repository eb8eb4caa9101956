//! The baselines `mychat bench commands` prints its figures against: raw JetStream publishes
//! and atomic batches on streams of their own (one or several), and the store's group committer
//! alone, on one stream or sharded by aggregate over two; and the floors of the HTTP stage: an
//! HTTP server that answers at once, and one that answers once one durable append is stored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use eventstore::{
    CommitOutcome, GroupCommitSettings, GroupCommitter, PendingCommit, StreamSettings, WriteCycle,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde_json::Value;

use super::{drive_http, figures, Figures, Served, BODY_BYTES};

/// The most streams a raw baseline spreads its batches over.
const RAW_STREAMS: usize = 4;

/// The subject root of raw stream `k` (`raw` is `RAWBENCH`, `raw1`… `RAWBENCH1`…).
fn raw_root(k: usize) -> String {
    if k == 0 {
        "raw".into()
    } else {
        format!("raw{k}")
    }
}

/// `RAWBENCH` and `RAWBENCH1`… `RAWBENCH3`: file streams like `EVENTS`, atomic publish allowed.
pub(super) async fn raw_stream(js: &jetstream::Context) -> anyhow::Result<()> {
    for k in 0..RAW_STREAMS {
        let name = if k == 0 {
            "RAWBENCH".to_string()
        } else {
            format!("RAWBENCH{k}")
        };
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{}.>", raw_root(k))],
            storage: stream::StorageType::File,
            allow_atomic_publish: true,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the {name} stream"))?;
    }
    Ok(())
}

/// Publishes `messages` (subject, headers; at least one) with `body` as atomic batch `batch_id`
/// (the batch headers added here, the last message committing it) and returns its ack.
///
/// # Errors
/// When a publish fails, the ack is not JSON, or the batch was refused.
async fn send_atomic_batch(
    client: &async_nats::Client,
    messages: impl ExactSizeIterator<Item = (String, HeaderMap)>,
    body: &bytes::Bytes,
    batch_id: &str,
) -> anyhow::Result<Value> {
    let size = messages.len();
    for (i, (subject, mut h)) in messages.enumerate() {
        h.insert(NATS_BATCH_ID, batch_id);
        h.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        if i + 1 < size {
            client
                .publish_with_headers(subject, h, body.clone())
                .await?;
        } else {
            h.insert(NATS_BATCH_COMMIT, "1");
            let reply = client
                .request_with_headers(subject, h, body.clone())
                .await?;
            let ack: Value = serde_json::from_slice(&reply.payload)?;
            anyhow::ensure!(ack.get("error").is_none(), "batch failed: {ack}");
            return Ok(ack);
        }
    }
    anyhow::bail!("an atomic batch needs at least one message")
}

/// Sequential publish-and-await: messages/s.
pub(super) async fn raw_sequential(js: &jetstream::Context, d: Duration) -> anyhow::Result<f64> {
    let body = bytes::Bytes::from(vec![b'x'; BODY_BYTES]);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < d {
        js.publish(format!("raw.seq.{}", n % 64), body.clone())
            .await?
            .await?;
        n += 1;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Pipelined publishes, up to 256 acks outstanding: messages/s.
pub(super) async fn raw_pipelined(js: &jetstream::Context, d: Duration) -> anyhow::Result<f64> {
    let body = bytes::Bytes::from(vec![b'x'; BODY_BYTES]);
    let start = Instant::now();
    let mut n = 0u64;
    let mut acks = FuturesUnordered::new();
    while start.elapsed() < d {
        while acks.len() < 256 {
            let ack = js
                .publish(format!("raw.pipe.{}", n % 64), body.clone())
                .await?;
            acks.push(async move { ack.await });
            n += 1;
        }
        acks.next().await.context("an ack")??;
    }
    while let Some(ack) = acks.next().await {
        ack?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Atomic batches of `size` messages, `loops` loops each sending one batch after the other
/// (so at most `loops` batches in flight), loop `l` to stream `l % streams` (1 to
/// [`RAW_STREAMS`]): messages/s, also printed as the benchmark's line (with the mean time a loop
/// takes per batch). Plain messages (no dedup id, no expected sequence): the server's batch path
/// alone.
pub(super) async fn raw_batches(
    client: &async_nats::Client,
    size: u64,
    (loops, streams): (usize, usize),
    d: Duration,
) -> anyhow::Result<f64> {
    let body = bytes::Bytes::from(vec![b'x'; BODY_BYTES]);
    let start = Instant::now();
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let tasks: Vec<_> = (0..loops.max(1))
        .map(|l| {
            let (client, body, prefix) = (client.clone(), body.clone(), prefix.clone());
            let root = raw_root(l % streams.clamp(1, RAW_STREAMS));
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut batch = 0u64;
                while start.elapsed() < d {
                    batch += 1;
                    let id = format!("bench-{prefix}-{l}-{batch}");
                    let messages = (1..size as usize + 1)
                        .map(|i| (format!("{root}.batch.{}", i % 64), HeaderMap::new()));
                    send_atomic_batch(&client, messages, &body, &id).await?;
                    n += size;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut n = 0;
    for t in tasks {
        n += t.await??;
    }
    let per_second = n as f64 / start.elapsed().as_secs_f64();
    let label = format!(
        "raw atomic batches of {size}, {loops} loop{}{}",
        if loops == 1 { "" } else { "s" },
        if streams > 1 {
            format!(" on {streams} streams")
        } else {
            String::new()
        }
    );
    println!(
        "{label:<34} {per_second:>9.0} msg/s  ({:.2} ms per batch)",
        loops as f64 * size as f64 * 1000.0 / per_second.max(f64::MIN_POSITIVE)
    );
    Ok(per_second)
}

/// Atomic batches of 64 messages on one loop, each message carrying what a command's commit
/// carries for JetStream to check: a fresh dedup id (`Nats-Msg-Id`) and the expected last
/// sequence of its subject (64 subjects, one per position in the batch, their last sequences
/// taken from the previous batch's ack). With `template` (headers, body) every message is shaped
/// as that message (the store's commit of a command); without, a bare 200-byte body. The
/// server's batch path with the checks a commit needs, with no committer or command bus around
/// it: messages/s.
pub(super) async fn raw_checked_batches(
    client: &async_nats::Client,
    template: Option<&(HeaderMap, bytes::Bytes)>,
    d: Duration,
) -> anyhow::Result<f64> {
    const SIZE: u64 = 64;
    let (base_headers, body) = match template {
        Some((h, b)) => (h.clone(), b.clone()),
        None => (HeaderMap::new(), bytes::Bytes::from(vec![b'x'; BODY_BYTES])),
    };
    let prefix = uuid::Uuid::now_v7().simple().to_string();
    let root = raw_root(0);
    let mut last = [0u64; SIZE as usize];
    let start = Instant::now();
    let mut n = 0u64;
    let mut batch = 0u64;
    while start.elapsed() < d {
        batch += 1;
        let id = format!("checked-{prefix}-{batch}");
        let messages = last.iter().enumerate().map(|(k, last)| {
            let mut h = base_headers.clone();
            h.insert(
                async_nats::header::NATS_MESSAGE_ID,
                uuid::Uuid::now_v7().to_string().as_str(),
            );
            h.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                last.to_string().as_str(),
            );
            (format!("{root}.checked.{prefix}.{k}"), h)
        });
        let ack = send_atomic_batch(client, messages, &body, &id).await?;
        let seq = ack.get("seq").and_then(Value::as_u64).context("ack seq")?;
        for (k, l) in last.iter_mut().enumerate() {
            *l = seq + 1 - SIZE + k as u64;
        }
        n += SIZE;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs `stage` between two samples of [`raw_checked_batches`] (shaped as `template`; the
/// disk's speed moves within minutes, so a floor is taken beside the stage it is compared with),
/// prints the samples and `what`'s throughput (`per_second` of the stage's output) as a share of
/// their mean, and returns the stage's output and that mean, msg/s.
///
/// # Errors
/// When a sample or the stage fails.
pub(super) async fn checked_floor_beside<T>(
    client: &async_nats::Client,
    template: Option<&(HeaderMap, bytes::Bytes)>,
    d: Duration,
    what: &str,
    stage: impl std::future::Future<Output = anyhow::Result<T>>,
    per_second: impl Fn(&T) -> f64,
) -> anyhow::Result<(T, f64)> {
    let before = raw_checked_batches(client, template, d).await?;
    let out = stage.await?;
    let after = raw_checked_batches(client, template, d).await?;
    let floor = (before + after) / 2.0;
    println!(
        "  raw checked batches of 64 shaped as its messages, before and after: {before:.0} and \
         {after:.0} msg/s; {what} is {:.0} % of their mean",
        100.0 * per_second(&out) / floor.max(f64::MIN_POSITIVE)
    );
    Ok((out, floor))
}

/// A stream configured as `EVENTS` is (direct get, dedup window, atomic batches), under its own
/// `name` and subjects `<root>.>`, and a [`GroupCommitter`] on it with `settings`.
async fn events_like(
    client: &async_nats::Client,
    name: &str,
    root: &str,
    settings: &GroupCommitSettings,
) -> anyhow::Result<GroupCommitter> {
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: name.to_string(),
        subjects: vec![format!("{root}.>")],
        ..eventstore::streams::events_config(&StreamSettings::default())
    })
    .await
    .with_context(|| format!("creating {name}"))?;
    let stream = js.get_stream_no_info(name).await?;
    Ok(GroupCommitter::start(
        client.clone(),
        stream,
        name,
        settings.clone(),
    ))
}

/// The group committer alone, 64 closed-loop committers each appending to its own subject with
/// the expected-last-subject-sequence check (what a command's commit is), their aggregates placed
/// on `streams` streams (`SHARDBENCH<k>`, subjects `sb<k>.>`) by aggregate, one
/// [`GroupCommitter`] per stream with the bus's settings: commits/s. With `streams` 1 it is the
/// store's write path as built; with 2 it is that of a command store sharded by aggregate.
/// Returns the figures and the committers' mean write cycle.
pub(super) async fn sharded_committers(
    client: &async_nats::Client,
    settings: &GroupCommitSettings,
    (committers, streams): (usize, usize),
    d: Duration,
) -> anyhow::Result<(Figures, WriteCycle)> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let mut lanes = Vec::new();
    for k in 0..streams.max(1) {
        let root = format!("sb{k}{tag}");
        let committer =
            events_like(client, &format!("SHARDBENCH{k}_{tag}"), &root, settings).await?;
        lanes.push((root, committer));
    }
    let lanes = Arc::new(lanes);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let body = bytes::Bytes::from(vec![b'x'; BODY_BYTES]);
    let start = Instant::now();
    let tasks: Vec<_> = (0..committers)
        .map(|c| {
            let (lanes, stop, errors, body) =
                (lanes.clone(), stop.clone(), errors.clone(), body.clone());
            tokio::spawn(async move {
                let (root, committer) = &lanes[c % lanes.len()];
                let subject = format!("{root}.agg.{c}");
                let mut last = 0u64;
                let mut micros = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let command_id = uuid::Uuid::now_v7().to_string();
                    let mut headers = HeaderMap::new();
                    headers.insert("Nats-Msg-Id", command_id.as_str());
                    let t = Instant::now();
                    match committer
                        .commit(PendingCommit {
                            subject: subject.clone(),
                            headers,
                            body: body.clone(),
                            command_id,
                            expected_last_sequence: Some(last),
                        })
                        .await
                    {
                        Ok(CommitOutcome::Stored { sequence }) => {
                            last = sequence;
                            micros.push(t.elapsed().as_micros() as u64);
                        }
                        other => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("first refused commit on {subject}: {other:?}");
                            }
                        }
                    }
                }
                micros
            })
        })
        .collect();
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await?);
    }
    let n = all.len() as u64;
    let elapsed = start.elapsed();
    // Every lane's counters summed: the committers started with this stage.
    let cycle = lanes
        .iter()
        .fold(WriteCycle::default(), |sum, (_, c)| sum + c.stats().cycle());
    Ok((
        figures(n, elapsed, all, errors.load(Ordering::Relaxed)),
        cycle,
    ))
}

/// The floors of the HTTP stage, in this process, with the HTTP stage's own client and
/// connections: an axum server on loopback whose `POST /answer` answers the envelope at once
/// (HTTP alone: server and client), and whose `POST /commit` answers once the request's body is
/// stored as a new aggregate's first commit (expected last subject sequence 0, a dedup id) on a
/// stream configured as `EVENTS` is, through a [`GroupCommitter`] with the bus's `settings` (the
/// least any design that answers after a durable append can do: no token, no aggregate, no read
/// model). Returns (answer, commit) at `clients` connections.
pub(super) async fn http_floors(
    client: &async_nats::Client,
    settings: &GroupCommitSettings,
    clients: usize,
    d: Duration,
) -> anyhow::Result<(Figures, Figures)> {
    use axum::routing::post;

    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let committer = events_like(
        client,
        &format!("HTTPBENCH_{tag}"),
        &format!("hb{tag}"),
        settings,
    )
    .await?;
    let next = Arc::new(AtomicU64::new(0));
    const ANSWER: &str = r#"{"code":200,"msg":"success","data":null}"#;
    let commit = move |body: bytes::Bytes| {
        let (committer, next, tag) = (committer.clone(), next.clone(), tag.clone());
        async move {
            let command_id = uuid::Uuid::now_v7().to_string();
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", command_id.as_str());
            let n = next.fetch_add(1, Ordering::Relaxed);
            match committer
                .commit(PendingCommit {
                    subject: format!("hb{tag}.agg.{n}"),
                    headers,
                    body,
                    command_id,
                    expected_last_sequence: Some(0),
                })
                .await
            {
                Ok(CommitOutcome::Stored { .. }) => (axum::http::StatusCode::OK, ANSWER),
                _ => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}"),
            }
        }
    };
    let app = axum::Router::new()
        .route("/answer", post(|| async { ANSWER }))
        .route("/commit", post(commit));
    let server = Served::start(app).await?;
    let addr = server.addr;
    let body = serde_json::json!({ "counselor_id": 1, "duration": 30, "notes": "bench" });
    let answer = drive_http(&format!("http://{addr}/answer"), None, &body, clients, d).await;
    let commit = drive_http(&format!("http://{addr}/commit"), None, &body, clients, d).await;
    server.stop().await;
    Ok((answer?, commit?))
}
