//! `mychat bench ws --group-members N --rate R`: fan-out inside one group. Not a test.
//!
//! It starts its own nats-server (`sync_interval: always`, as in production) and PostgreSQL,
//! one gateway node (`mychat serve gateway`), creates one group of `N` members (a `Group`
//! command), opens one socket per member on `/ws/group/{id}`, and has the owner send `R`
//! messages per second for `--duration` seconds. Every other member's socket must receive every
//! message. It reports, per delivery, sender → member latency, per message sender → **every**
//! member (the slowest member's), and deliveries per second; next to the same run's one-to-one
//! figure (a session's two sockets at the same rate) and the raw baselines. The last line is
//! one JSON object with the figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use domain::{ChatSession, Group, GroupCommand, SessionCommand};
use eventstore::envelope::Upcasters;
use eventstore::{Actor, CommandBus, CommandMeta};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::bench_probe::{
    baselines, child_pid, connect_from, cpu_secs, flush_page_cache, load_average, paced,
    percentile, raise_nofile, Gateway,
};
use crate::bench_ws::{client_config, WsArgs, SECRET};

/// The first bench user id (members are `BASE + 1 ..= BASE + N`; the one-to-one pair follows).
const BASE: i64 = 4_000_000;

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Opens socket `i` to `url` from `127.0.0.(1 + i mod sources)` and waits for `ready` (a frame
/// type).
async fn open(i: usize, port: u16, sources: u8, url: String, ready: &str) -> anyhow::Result<Ws> {
    let stream = connect_from(i, sources, port).await?;
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) if t.contains(&format!("\"type\":\"{ready}\"")) => {
                return Ok(ws)
            }
            Some(Ok(Message::Text(t))) if t.contains("\"type\":\"error\"") => {
                anyhow::bail!("socket {i}: {t}")
            }
            Some(Ok(_)) => {}
            _ => anyhow::bail!("socket {i} closed before {ready}"),
        }
    }
}

/// What a receiving socket records: each delivery's latency, and per message (by its send
/// slot) the slowest delivery and how many members got it.
#[derive(Default)]
struct Receipts {
    latencies: Mutex<Vec<u64>>,
    delivered: AtomicU64,
}

/// Reads a socket until it closes, recording `kind` frames whose content is a send time in
/// microseconds since `epoch`.
fn receive(
    mut ws: Ws,
    kind: &'static str,
    epoch: Instant,
    receipts: Arc<Receipts>,
    slowest: Arc<Vec<AtomicU64>>,
) -> tokio::task::JoinHandle<Ws> {
    tokio::spawn(async move {
        let marker = format!("\"type\":\"{kind}\"");
        while let Some(Ok(m)) = ws.next().await {
            let Message::Text(t) = m else { continue };
            if !t.contains(&marker) {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&t) else {
                continue;
            };
            let Some((slot, at)) = v["data"]["content"]
                .as_str()
                .and_then(|c| c.split_once(':'))
                .and_then(|(s, a)| Some((s.parse::<usize>().ok()?, a.parse::<u64>().ok()?)))
            else {
                continue;
            };
            let lat = (epoch.elapsed().as_micros() as u64).saturating_sub(at);
            receipts.latencies.lock().expect("lock").push(lat);
            receipts.delivered.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = slowest.get(slot) {
                s.fetch_max(lat, Ordering::Relaxed);
            }
        }
        ws
    })
}

/// `mychat bench ws --group-members N`.
pub async fn run(args: &WsArgs) -> anyhow::Result<()> {
    let members = args.group_members.max(2);
    let nofile = raise_nofile();
    anyhow::ensure!(
        (members as u64 + 300) < nofile,
        "--group-members {members} needs more open files than the limit ({nofile})"
    );
    let rate = args.rate.max(1);
    println!(
        "bench ws (group): {members} members, {rate} msg/s, {} s; load average {}",
        args.duration,
        load_average()
    );
    let nats_dir = tempfile::Builder::new()
        .prefix("mychat-bench-nats")
        .tempdir()?;
    std::fs::write(
        nats_dir.path().join("nats.conf"),
        include_str!("../../../nats.conf"),
    )?;
    let options = testkit::NatsOptions {
        port: 0,
        store_dir: nats_dir.path().join("jetstream"),
        config: nats_dir.path().join("nats.conf"),
        log_file: Some(nats_dir.path().join("nats.log")),
    };
    let nats =
        tokio::task::spawn_blocking(move || testkit::NatsServer::start_with(options)).await??;
    let pg = tokio::task::spawn_blocking(testkit::Postgres::start).await??;
    let db = sqlx::PgPool::connect(&pg.url()).await?;
    projections::MIGRATOR.run(&db).await?;
    let client = nats.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    eventstore::ensure_streams(
        &js,
        &eventstore::StreamSettings {
            chat_shards: Some(args.shards),
            ..Default::default()
        },
    )
    .await?;
    let bus = CommandBus::new(js, Upcasters::default());
    let jwt = api::JwtKeys::new(SECRET.as_bytes(), 3600);
    // Members, and the one-to-one pair after them.
    sqlx::query(
        "INSERT INTO users (id, username, password_hash) \
         SELECT $1 + g, 'bench-' || ($1 + g), '-' FROM generate_series(1, $2) g",
    )
    .bind(BASE)
    .bind(members as i64 + 2)
    .execute(&db)
    .await
    .context("adding the bench's users")?;
    let (core, jsl) = baselines(&client, rate, Duration::from_secs(3), args.shards).await?;

    let group_id = 1;
    let owner = BASE + 1;
    bus.execute::<Group>(
        &group_id.to_string(),
        GroupCommand::Create {
            group_id,
            name: "bench".into(),
            notice: String::new(),
            avatar: String::new(),
            owner_id: owner,
            member_ids: (2..=members as i64).map(|i| BASE + i).collect(),
            member_cap: members.max(domain::group::DEFAULT_MEMBER_CAP),
            at: chrono::Utc::now(),
        },
        &CommandMeta::new(Actor::system()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("creating the group: {e}"))?;
    let (pair_user, pair_counselor) = (BASE + members as i64 + 1, BASE + members as i64 + 2);
    let session_id = 1;
    bus.execute::<ChatSession>(
        &session_id.to_string(),
        SessionCommand::Start {
            order_id: session_id,
            user_id: pair_user,
            counselor_id: 1,
            counselor_user_id: pair_counselor,
            price_per_minute: 100,
            prepaid_minutes: 600,
            started_at: chrono::Utc::now(),
        },
        &CommandMeta::new(Actor::system()),
    )
    .await
    .map_err(|e| anyhow::anyhow!("starting the session: {e}"))?;

    let dir = tempfile::Builder::new().prefix("mychat-bench").tempdir()?;
    let port = testkit::free_port();
    let log = std::fs::File::create(dir.path().join("gateway.log"))?;
    let gateway = Gateway {
        child: std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "gateway", "--addr", &format!("127.0.0.1:{port}")])
            .env("MYCHAT_NATS_URL", nats.url())
            .env("MYCHAT_DATABASE_URL", pg.url())
            .env("MYCHAT_JWT_SECRET", SECRET)
            .env("MYCHAT_SANDBOX_SECRET", "bench")
            .env("MYCHAT_DATA_DIR", dir.path().join("data"))
            .env("MYCHAT_LOG_FORMAT", "json")
            .env("MYCHAT_GATEWAY_FRAMES_PER_SECOND", "100000")
            .env("MYCHAT_CHAT_SHARDS", args.shards.to_string())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the gateway")?,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        anyhow::ensure!(Instant::now() < deadline, "gateway did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let epoch = Instant::now();
    let slots = (rate * (args.duration + 1)) as usize + 1;

    // One-to-one first: the session's two sockets, the user sending at the same rate.
    let pair = Arc::new(Receipts::default());
    let pair_slowest: Arc<Vec<AtomicU64>> =
        Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
    let url = |user: i64, path: String| -> anyhow::Result<String> {
        Ok(format!(
            "ws://127.0.0.1:{port}{path}?token={}",
            jwt.issue(user, "bench", "user")?
        ))
    };
    let mut sender = open(
        0,
        port,
        args.sources,
        url(pair_user, format!("/ws/chat/{session_id}"))?,
        "join_success",
    )
    .await?;
    let counselor = open(
        1,
        port,
        args.sources,
        url(pair_counselor, format!("/ws/chat/{session_id}"))?,
        "join_success",
    )
    .await?;
    let reader = receive(
        counselor,
        "message",
        epoch,
        pair.clone(),
        pair_slowest.clone(),
    );
    flush_page_cache("sending").await;
    let pair_sent = send_paced(&mut sender, rate, args.duration, epoch).await?;
    wait_for(&pair.delivered, pair_sent).await;
    reader.abort();
    drop(sender);

    // The group: the owner's socket sends (its own messages are acked, not echoed); every other
    // member's socket receives.
    let opened = Instant::now();
    let sockets: Vec<Ws> = futures::stream::iter(2..=members as i64)
        .map(|m| {
            let u = url(BASE + m, format!("/ws/group/{group_id}"));
            async move { open(m as usize, port, args.sources, u?, "group_joined").await }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut owner_ws = open(
        0,
        port,
        args.sources,
        url(owner, format!("/ws/group/{group_id}"))?,
        "group_joined",
    )
    .await?;
    println!(
        "{members} member sockets joined in {:.1} s",
        opened.elapsed().as_secs_f64()
    );
    let group = Arc::new(Receipts::default());
    let slowest: Arc<Vec<AtomicU64>> = Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|ws| receive(ws, "group_message", epoch, group.clone(), slowest.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let nats_pid = child_pid("nats-server");
    let cpu0 = (
        cpu_secs(std::process::id()),
        cpu_secs(gateway.child.id()),
        nats_pid.map_or(0.0, cpu_secs),
    );
    let sending = Instant::now();
    let sent = send_paced(&mut owner_ws, rate, args.duration, epoch).await?;
    // Every member but the owner gets every message.
    let expected = sent * (members as u64 - 1);
    wait_for(&group.delivered, expected).await;
    let wall = sending.elapsed().as_secs_f64();
    let cores = |now: f64, then: f64| (now - then) / wall.max(0.001);
    let cpu = (
        cores(cpu_secs(std::process::id()), cpu0.0),
        cores(cpu_secs(gateway.child.id()), cpu0.1),
        cores(nats_pid.map_or(0.0, cpu_secs), cpu0.2),
    );
    for r in readers {
        r.abort();
    }
    let got = group.delivered.load(Ordering::Relaxed);
    let mut lat = std::mem::take(&mut *group.latencies.lock().expect("lock"));
    lat.sort_unstable();
    let mut every: Vec<u64> = slowest[..sent as usize]
        .iter()
        .map(|s| s.load(Ordering::Relaxed))
        .filter(|v| *v > 0)
        .collect();
    every.sort_unstable();
    let mut one = std::mem::take(&mut *pair.latencies.lock().expect("lock"));
    one.sort_unstable();
    let per_second = got as f64 / wall.max(0.001);
    println!(
        "group fan-out: sent {sent}, delivered {got} of {expected}; sender → member p50 {:.3} ms, p99 {:.3} ms; sender → every member p50 {:.3} ms, p99 {:.3} ms; {per_second:.0} deliveries/s",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&every, 0.5),
        percentile(&every, 0.99),
    );
    println!(
        "one-to-one (same run, {rate} msg/s): delivered {} of {pair_sent}; p50 {:.3} ms, p99 {:.3} ms",
        pair.delivered.load(Ordering::Relaxed),
        percentile(&one, 0.5),
        percentile(&one, 0.99),
    );
    println!(
        "baselines (same run, {rate} msg/s): core NATS p99 {:.3} ms; JetStream ({} streams) p99 {:.3} ms; CPU while sending (cores): bench {:.2}, gateway {:.2}, nats-server {:.2}",
        percentile(&core, 0.99),
        args.shards,
        percentile(&jsl, 0.99),
        cpu.0,
        cpu.1,
        cpu.2
    );
    let round = |x: f64| {
        if x.is_nan() {
            Value::Null
        } else {
            json!((x * 1000.0).round() / 1000.0)
        }
    };
    println!(
        "{}",
        json!({
            "bench": "ws_group",
            "members": members,
            "rate": rate,
            "duration_s": args.duration,
            "sent": sent,
            "delivered": got,
            "expected": expected,
            "member_p50_ms": round(percentile(&lat, 0.5)),
            "member_p99_ms": round(percentile(&lat, 0.99)),
            "every_member_p50_ms": round(percentile(&every, 0.5)),
            "every_member_p99_ms": round(percentile(&every, 0.99)),
            "deliveries_per_s": per_second.round(),
            "one_to_one_p50_ms": round(percentile(&one, 0.5)),
            "one_to_one_p99_ms": round(percentile(&one, 0.99)),
            "baseline_p99_ms": round(percentile(&core, 0.99)),
            "js_baseline_p99_ms": round(percentile(&jsl, 0.99)),
            "cpu_cores": {"bench": round(cpu.0), "gateway": round(cpu.1), "nats": round(cpu.2)},
            "shards": args.shards,
        })
    );
    drop(owner_ws);
    drop(gateway);
    Ok(())
}

/// Sends `rate` messages per second for `duration` seconds on `ws` (content `slot:micros`),
/// draining what the socket receives meanwhile (acks); returns how many were sent.
async fn send_paced(ws: &mut Ws, rate: u64, duration: u64, epoch: Instant) -> anyhow::Result<u64> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let sent = {
        let pace = paced(rate, Duration::from_secs(duration), |i| {
            let at = epoch.elapsed().as_micros() as u64;
            let frame = json!({"type":"message","payload":{"content": format!("{i}:{at}"), "client_msg_id": format!("g{i}")}});
            tx.send(frame.to_string()).is_ok()
        });
        let mut pace = std::pin::pin!(pace);
        loop {
            tokio::select! {
                n = &mut pace => break n,
                Some(text) = rx.recv() => ws.send(Message::Text(text.into())).await?,
                _ = ws.next() => {}
            }
        }
    };
    while let Ok(text) = rx.try_recv() {
        ws.send(Message::Text(text.into())).await?;
    }
    Ok(sent)
}

/// Waits until `counter` reaches `target`, or 15 s.
async fn wait_for(counter: &AtomicU64, target: u64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while counter.load(Ordering::Relaxed) < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
