//! `mychat bench ws`: a load benchmark of the WebSocket gateway. Not a test.
//!
//! It starts its own nats-server and PostgreSQL (testkit, free loopback ports) and one gateway
//! node as a child process (`mychat serve gateway`), opens `--sockets` sockets from several
//! `127.0.0.x` source addresses (one address has only ~28k ephemeral ports), pairs them into
//! sessions, sends `--rate` messages per second for `--duration` seconds, and measures the
//! end-to-end latency (sender socket → gateway → its chat shard's stream (fsynced) → the
//! node's consumer → recipient socket), delivered/sent, and the gateway's resident memory per
//! socket. In the same run it measures the raw baselines: core NATS publish → subscriber, and
//! JetStream publish (fsynced) → the log's reader; while sending, the disk's own fsync latency
//! (a probe in nats-server's directory), by second beside the deliveries'; and the raw floor
//! under the load: a bare publish → ack to a stream of its own, sent beside each message to one
//! chat shard (the arrivals that shard's stream meets). `--rate 0` opens idle sockets only
//! (memory per idle socket).
//! The last line printed is one JSON object with the figures. `MYCHAT_BENCH_DEBUG=1` prints
//! every frame the bench sockets receive and the gateway's log (`MYCHAT_BENCH_GATEWAY_LOG` sets
//! its `RUST_LOG`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use domain::{ChatSession, SessionCommand};
use eventstore::envelope::Upcasters;
use eventstore::{Actor, CommandBus, CommandMeta};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::bench_probe::{
    baselines, child_pid, connect_from, cpu_secs, flush_page_cache, load_average, paced,
    percentile, raise_nofile, rss_kib, slow_seconds, tail_buckets, DiskProbe, Gateway,
    PublishProbe, RuntimeLateness, TimerProbe, LATENESS_THRESHOLDS,
};

/// `mychat bench ws` arguments.
#[derive(Debug, clap::Args)]
pub struct WsArgs {
    /// Sockets to open (paired into sessions: one user, one counselor each).
    #[arg(long, default_value_t = 10_000)]
    pub sockets: usize,
    /// Messages per second over all sessions (0: idle sockets only, memory measurement).
    #[arg(long, default_value_t = 5_000)]
    pub rate: u64,
    /// Seconds of sending that are measured.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Seconds of sending at the same rate before the measured ones: their messages must be
    /// delivered too, but their latencies are left out of the percentiles (printed apart, with
    /// the p99 of all). A fresh node's first messages grow its memory (page faults; with
    /// transparent huge pages, which mychat turns off, that stalled it 130–160 ms).
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Loopback source addresses to spread the client sockets over (127.0.0.1 .. 127.0.0.N).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Concurrent connection attempts while opening the sockets.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Run the bench's nats-server without `sync_interval: always` (lazy fsync), to separate the
    /// gateway's own cost from the per-message fsync. Not how mychat runs in production.
    #[arg(long)]
    pub lazy_fsync: bool,
    /// Gateway nodes (child processes `mychat serve gateway`); socket `i` connects to node
    /// `i mod nodes`, so with 2 nodes every message crosses from one node to the other. Memory
    /// per socket is the RSS growth summed over the nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// Chat shard streams (the deployment setting `chat_shards`); the raw JetStream baseline is
    /// spread over as many streams.
    #[arg(long, default_value_t = eventstore::chat::DEFAULT_SHARDS)]
    pub shards: u16,
    /// Write the chat shards one record per stream message (the format before packs; the
    /// deployment setting `chat_packs = false`) instead of the default.
    #[arg(long)]
    pub records: bool,
    /// Internal (the idle run's client child processes): `PORTS:FIRST:COUNT` opens sockets
    /// `FIRST..FIRST+COUNT` to the comma-separated ports, prints `opened`, and holds them until
    /// its stdin closes.
    #[arg(long, hide = true)]
    pub worker: Option<String>,
    /// Measure fan-out inside one group of this many members instead (one socket each on
    /// `/ws/group/{id}`, the owner sending `--rate` msg/s), next to a one-to-one session at the
    /// same rate.
    #[arg(long, default_value_t = 0)]
    pub group_members: usize,
}

/// The bench clients' WebSocket buffers: small, so that 10 000+ client sockets fit in memory
/// (tungstenite's default is 128 KiB each).
pub(crate) fn client_config() -> tokio_tungstenite::tungstenite::protocol::WebSocketConfig {
    tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens an idle `/ws` socket for socket number `i` (user `3_000_000 + i`) to `port` from
/// `127.0.0.(1 + i mod sources)`.
async fn open_idle(
    i: usize,
    port: u16,
    sources: u8,
    token: String,
) -> anyhow::Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>> {
    let stream = connect_from(i, sources, port).await?;
    let url = format!("ws://127.0.0.1:{port}/ws?token={token}");
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config())).await?;
    Ok(ws)
}

/// `--worker PORTS:FIRST:COUNT`: a client child process of the idle run.
async fn worker(spec: &str, args: &WsArgs) -> anyhow::Result<()> {
    raise_nofile();
    let mut parts = spec.split(':');
    let (Some(ports), Some(first), Some(count)) = (parts.next(), parts.next(), parts.next()) else {
        anyhow::bail!("--worker PORTS:FIRST:COUNT");
    };
    let ports: Vec<u16> = ports.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let (first, count): (usize, usize) = (first.parse()?, count.parse()?);
    let jwt = api::JwtKeys::new(SECRET.as_bytes(), 3600);
    let sockets = futures::stream::iter(first..first + count)
        .map(|i| {
            let token = jwt.issue(3_000_000 + i as i64, "bench", "user");
            let port = ports[i % ports.len()];
            async move { open_idle(i, port, args.sources, token?).await }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!("opened {}", sockets.len());
    use std::io::Write as _;
    std::io::stdout().flush()?;
    // Hold the sockets until the parent closes our stdin.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    })
    .await?;
    drop(sockets);
    Ok(())
}

pub(crate) const SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";

/// `mychat bench ws`.
pub async fn ws(args: WsArgs) -> anyhow::Result<()> {
    if let Some(spec) = &args.worker {
        return worker(spec, &args).await;
    }
    if args.group_members > 0 {
        return crate::bench_group::run(&args).await;
    }
    let nofile = raise_nofile();
    let max_sockets = nofile.saturating_sub(200) as usize;
    let nodes = args.nodes.max(1);
    // Idle runs open their sockets from client child processes when one process cannot hold
    // them all (or over several nodes); loaded runs open them in this process.
    let use_workers = args.rate == 0 && (args.sockets > max_sockets || nodes > 1);
    if args.sockets.div_ceil(nodes) > max_sockets || (!use_workers && args.sockets > max_sockets) {
        anyhow::bail!(
            "--sockets {} exceeds what the open-files limit allows ({nofile} per process): at \
             most {max_sockets} per gateway node (use --nodes) and, under load, in this process",
            args.sockets
        );
    }
    println!(
        "bench ws: {} sockets, {} msg/s, {} s measured after {} s of warm-up; open-files limit {nofile}; load average {}",
        args.sockets,
        args.rate,
        args.duration,
        args.warmup,
        load_average()
    );

    let nats_dir = tempfile::Builder::new()
        .prefix("mychat-bench-nats")
        .tempdir()?;
    let mut conf = include_str!("../../../nats.conf").to_string();
    if args.lazy_fsync {
        conf = conf
            .lines()
            .filter(|l| !l.trim_start().starts_with("sync_interval"))
            .collect::<Vec<_>>()
            .join("\n");
    }
    std::fs::write(nats_dir.path().join("nats.conf"), conf)?;
    let options = testkit::NatsOptions {
        port: 0,
        store_dir: nats_dir.path().join("jetstream"),
        config: nats_dir.path().join("nats.conf"),
        log_file: Some(nats_dir.path().join("nats.log")),
    };
    let nats =
        tokio::task::spawn_blocking(move || testkit::NatsServer::start_with(options)).await??;
    println!(
        "nats-server fsync: {}; GOMAXPROCS {}",
        if args.lazy_fsync {
            "lazy (--lazy-fsync)"
        } else {
            "sync_interval: always (as in production)"
        },
        testkit::nats::gomaxprocs()
    );
    let pg = tokio::task::spawn_blocking(testkit::Postgres::start).await??;
    let db = sqlx::PgPool::connect(&pg.url()).await?;
    projections::MIGRATOR.run(&db).await?;
    let client = nats.connect().await?;
    let js = async_nats::jetstream::new(client.clone());
    let layout = eventstore::ensure_streams(
        &js,
        &eventstore::StreamSettings {
            chat_shards: Some(args.shards),
            chat_packs: Some(!args.records && eventstore::chat::DEFAULT_PACKED),
            ..Default::default()
        },
    )
    .await?;
    let bus = CommandBus::new(js, Upcasters::default());
    let jwt = api::JwtKeys::new(SECRET.as_bytes(), 3600);
    // The handshake checks that a token's account exists and is enabled: the bench's
    // users (1_000_000 + session, 2_000_000 + session, 3_000_000 + idle socket) are rows too.
    let users = args.sockets as i64;
    sqlx::query(
        "INSERT INTO users (id, username, password_hash) \
         SELECT id, 'bench-' || id, '-' FROM ( \
           SELECT 1000000 + g AS id FROM generate_series(1, $1) g \
           UNION ALL SELECT 2000000 + g FROM generate_series(1, $1) g \
           UNION ALL SELECT 3000000 + g FROM generate_series(0, $1) g) ids",
    )
    .bind(users)
    .execute(&db)
    .await
    .context("adding the bench's users")?;

    // Baselines first, at the same rate, on a disk with nothing else to write back.
    flush_page_cache("the baselines").await;
    let base_rate = if args.rate == 0 { 1000 } else { args.rate };
    let (core, jsl) = baselines(&client, base_rate, Duration::from_secs(3), args.shards).await?;
    println!(
        "baseline core NATS pub→sub: p50 {:.3} ms, p99 {:.3} ms ({} msgs); JetStream pub→reader over {} streams: p50 {:.3} ms, p99 {:.3} ms ({} msgs)",
        percentile(&core, 0.5),
        percentile(&core, 0.99),
        core.len(),
        args.shards,
        percentile(&jsl, 0.5),
        percentile(&jsl, 0.99),
        jsl.len()
    );

    // The gateway nodes, child processes.
    let dir = tempfile::Builder::new().prefix("mychat-bench").tempdir()?;
    let mut gateways = Vec::new();
    let mut ports = Vec::new();
    for n in 0..nodes {
        let port = testkit::free_port();
        let log = std::fs::File::create(dir.path().join(format!("gateway-{n}.log")))?;
        let child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "gateway", "--addr", &format!("127.0.0.1:{port}")])
            .env("MYCHAT_NATS_URL", nats.url())
            .env("MYCHAT_DATABASE_URL", pg.url())
            .env("MYCHAT_JWT_SECRET", SECRET)
            .env("MYCHAT_SANDBOX_SECRET", "bench")
            .env("MYCHAT_DATA_DIR", dir.path().join(format!("data-{n}")))
            .env("MYCHAT_LOG_FORMAT", "json")
            .env("MYCHAT_GATEWAY_FRAMES_PER_SECOND", "100000")
            .env("MYCHAT_CHAT_SHARDS", args.shards.to_string())
            .env(
                "RUST_LOG",
                std::env::var("MYCHAT_BENCH_GATEWAY_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the gateway")?;
        gateways.push(Gateway { child });
        ports.push(port);
    }
    let pids: Vec<u32> = gateways.iter().map(|g| g.child.id()).collect();
    for &port in &ports {
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            anyhow::ensure!(Instant::now() < deadline, "gateway did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_all = || pids.iter().map(|&p| rss_kib(p)).sum::<u64>();
    let cpu_all = || pids.iter().map(|&p| cpu_secs(p)).sum::<f64>();
    let rss_before = rss_all();

    // Sessions: one per pair of sockets.
    let pairs = if args.rate == 0 { 0 } else { args.sockets / 2 };
    let started = Instant::now();
    futures::stream::iter(1..=pairs as i64)
        .map(|sid| {
            let bus = bus.clone();
            async move {
                bus.execute::<ChatSession>(
                    &sid.to_string(),
                    SessionCommand::Start {
                        order_id: sid,
                        user_id: 1_000_000 + sid,
                        counselor_id: sid,
                        counselor_user_id: 2_000_000 + sid,
                        price_per_minute: 100,
                        prepaid_minutes: 600,
                        started_at: chrono::Utc::now(),
                    },
                    &CommandMeta::new(Actor::system()),
                )
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{e}"))
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    if pairs > 0 {
        println!(
            "{pairs} sessions started in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    // Open the sockets.
    let epoch = Instant::now();
    // (sent at, latency) in µs of every delivery.
    let deliveries: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    // Sender side: when message `b{i}` was sent, and how long until its `ack` (stored).
    let slots = (args.rate * (args.warmup + args.duration + 1)) as usize + 1;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..slots).map(|_| AtomicU64::new(0)).collect());
    // (sent at, latency) in µs of every ack.
    let ack_latencies: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let delivered = Arc::new(AtomicU64::new(0));
    let opened = Instant::now();
    let sources = args.sources.max(1);
    let mut workers = Vec::new();
    if use_workers {
        // Client child processes, each under the open-files limit.
        let per = max_sockets.min(args.sockets.div_ceil(args.sockets.div_ceil(max_sockets)));
        let list = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut first = 0;
        while first < args.sockets {
            let count = per.min(args.sockets - first);
            let child = std::process::Command::new(std::env::current_exe()?)
                .args([
                    "bench",
                    "ws",
                    "--worker",
                    &format!("{list}:{first}:{count}"),
                    "--sources",
                    &sources.to_string(),
                    "--connect-concurrency",
                    &args.connect_concurrency.to_string(),
                ])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .context("starting a client process")?;
            workers.push(Gateway { child });
            first += count;
        }
        for w in &mut workers {
            let out = w.child.stdout.take().context("worker stdout")?;
            let line = tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line);
                line
            })
            .await?;
            anyhow::ensure!(
                line.starts_with("opened"),
                "a client process failed to open its sockets"
            );
        }
        println!(
            "{} idle sockets opened by {} client processes over {nodes} gateway nodes",
            args.sockets,
            workers.len()
        );
    }
    let specs: Vec<(usize, i64, Option<i64>)> = (0..args.sockets)
        .filter(|_| !use_workers)
        .map(|i| {
            if pairs == 0 {
                (i, 3_000_000 + i as i64, None)
            } else {
                let sid = (i / 2) as i64 + 1;
                let user = if i % 2 == 0 {
                    1_000_000 + sid
                } else {
                    2_000_000 + sid
                };
                (i, user, Some(sid))
            }
        })
        .filter(|(i, _, _)| pairs == 0 || *i < pairs * 2)
        .collect();
    // Each socket's number, session (none for idle ones) and queue.
    let sockets: Vec<(usize, Option<i64>, mpsc::Sender<String>)> = futures::stream::iter(specs)
        .map(|(i, user, sid)| {
            let token = jwt.issue(user, "bench", "user");
            let port = ports[i % ports.len()];
            let deliveries = deliveries.clone();
            let delivered = delivered.clone();
            let sent_at = sent_at.clone();
            let ack_latencies = ack_latencies.clone();
            async move {
                let token = token?;
                let stream = connect_from(i, sources, port).await?;
                let url = match sid {
                    Some(sid) => format!("ws://127.0.0.1:{port}/ws/chat/{sid}?token={token}"),
                    None => format!("ws://127.0.0.1:{port}/ws?token={token}"),
                };
                let (mut ws, _) =
                    tokio_tungstenite::client_async_with_config(url, stream, Some(client_config()))
                        .await?;
                if sid.is_some() {
                    // Wait for join_success.
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) if t.contains("join_success") => break,
                            Some(Ok(_)) => {}
                            _ => anyhow::bail!("socket {i} closed before join_success"),
                        }
                    }
                }
                let (tx, mut rx) = mpsc::channel::<String>(64);
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            out = rx.recv() => match out {
                                Some(text) => { if ws.send(Message::Text(text.into())).await.is_err() { break; } }
                                None => break,
                            },
                            m = ws.next() => match m {
                                Some(Ok(Message::Text(t))) => {
                                    if let Ok(v) = serde_json::from_str::<Value>(&t) {
                                        if std::env::var_os("MYCHAT_BENCH_DEBUG").is_some() {
                                            eprintln!("socket {i}: {v}");
                                        }
                                        if v["type"] == "ack" {
                                            let slot = v["data"]["client_msg_id"].as_str().and_then(|s| s.strip_prefix('b')).and_then(|s| s.parse::<usize>().ok());
                                            if let Some(at) = slot.and_then(|i| sent_at.get(i)).map(|a| a.load(Ordering::Relaxed)) {
                                                let now = epoch.elapsed().as_micros() as u64;
                                                ack_latencies.lock().expect("lock").push((at, now.saturating_sub(at)));
                                            }
                                        }
                                        if v["type"] == "message" {
                                            if let Some(at) = v["data"]["content"].as_str().and_then(|s| s.parse::<u64>().ok()) {
                                                let now = epoch.elapsed().as_micros() as u64;
                                                deliveries.lock().expect("lock").push((at, now.saturating_sub(at)));
                                                delivered.fetch_add(1, Ordering::Relaxed);
                                            }
                                        }
                                    }
                                }
                                Some(Ok(_)) => {}
                                _ => break,
                            },
                        }
                    }
                });
                Ok::<_, anyhow::Error>((i, sid, tx))
            }
        })
        .buffer_unordered(args.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rss_after = rss_all();
    let per_socket = rss_after.saturating_sub(rss_before) as f64 / args.sockets.max(1) as f64;
    println!(
        "{} sockets open in {open_secs:.1} s; gateway RSS ({nodes} node{}) {rss_before} KiB → {rss_after} KiB: {per_socket:.1} KiB per socket",
        args.sockets,
        if nodes == 1 { "" } else { "s, summed" }
    );

    // Every socket keeps its queue (a closed queue ends its task); the users' sockets send. The
    // loaded floor publishes beside each message sent to the shard of the first session.
    let first_session = sockets.iter().filter_map(|(_, sid, _)| *sid).min();
    let probed_shard = layout.place(first_session.unwrap_or(1)).shard;
    let (senders, on_probed_shard): (Vec<mpsc::Sender<String>>, Vec<bool>) = sockets
        .iter()
        .filter(|(i, _, _)| *i % 2 == 0)
        .map(|(_, sid, tx)| {
            let probed = sid.is_some_and(|sid| layout.place(sid).shard == probed_shard);
            (tx.clone(), probed)
        })
        .unzip();
    let mut sent = 0;
    let mut rejected = 0u64;
    let nats_pid = child_pid("nats-server");
    let cpu_at_start = (
        cpu_secs(std::process::id()),
        cpu_all(),
        nats_pid.map_or(0.0, cpu_secs),
    );
    let nats_rss_before = nats_pid.map_or(0, rss_kib);
    let mut lateness_before = Vec::new();
    for port in &ports {
        lateness_before.push(RuntimeLateness::scrape(*port).await);
    }
    flush_page_cache("sending").await;
    let sending = Instant::now();
    let sending_at_us = epoch.elapsed().as_micros() as u64;
    let disk = DiskProbe::start(nats_dir.path(), epoch, Duration::from_millis(10))?;
    let timer = TimerProbe::start(epoch, Duration::from_millis(10));
    let loaded = match args.rate {
        0 => None,
        _ => Some(PublishProbe::start(bus.jetstream(), epoch).await?),
    };
    if args.rate > 0 && !senders.is_empty() {
        let n = senders.len();
        sent = paced(args.rate, Duration::from_secs(args.warmup + args.duration), |i| {
            let at = epoch.elapsed().as_micros() as u64;
            if let Some(slot) = sent_at.get(i as usize) {
                slot.store(at, Ordering::Relaxed);
            }
            let frame = json!({"type":"message","payload":{"content": at.to_string(), "client_msg_id": format!("b{i}")}}).to_string();
            if senders[(i as usize) % n].try_send(frame).is_err() {
                rejected += 1;
            } else if on_probed_shard[(i as usize) % n] {
                if let Some(probe) = &loaded {
                    probe.publish();
                }
            }
            true
        })
        .await;
        // Stragglers.
        let wait = Instant::now();
        while delivered.load(Ordering::Relaxed) < sent - rejected
            && wait.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let disk = disk.stop();
    let timer = timer.stop();
    let loaded = match loaded {
        Some(probe) => probe.stop().await,
        None => Vec::new(),
    };
    let rss_end = rss_all();
    let nats_rss_after = nats_pid.map_or(0, rss_kib);
    let wall = sending.elapsed().as_secs_f64();
    let cpu = |now: f64, then: f64| (now - then) / wall.max(0.001);
    let cpu_bench = cpu(cpu_secs(std::process::id()), cpu_at_start.0);
    let cpu_gateway = cpu(cpu_all(), cpu_at_start.1);
    let cpu_nats = cpu(nats_pid.map_or(0.0, cpu_secs), cpu_at_start.2);
    // The deliveries' and acks' (sent at, latency) pairs; the percentiles reported are those of
    // the messages sent after the warm-up, and beside them every delivery's.
    let deliveries = std::mem::take(&mut *deliveries.lock().expect("lock"));
    let ack_pairs = std::mem::take(&mut *ack_latencies.lock().expect("lock"));
    let measured_from = sending_at_us + args.warmup * 1_000_000;
    let sorted = |pairs: &[(u64, u64)], from: u64| -> Vec<u64> {
        let mut v: Vec<u64> = pairs
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, l)| *l)
            .collect();
        v.sort_unstable();
        v
    };
    let all = sorted(&deliveries, 0);
    let lat = sorted(&deliveries, measured_from);
    let acks = sorted(&ack_pairs, measured_from);
    let disk_sorted = sorted(&disk, measured_from);
    let loaded_sorted = sorted(&loaded, measured_from);
    // The gateways' runtimes while sending: wake-ups of their 10 ms timer, and how many were late.
    let mut late = RuntimeLateness::default();
    for (port, before) in ports.iter().zip(&lateness_before) {
        let d = RuntimeLateness::scrape(*port).await.since(before);
        late.wakeups += d.wakeups;
        for (k, n) in late.later_than.iter_mut().enumerate() {
            *n += d.later_than[k];
        }
    }
    let mut commit_stats = Vec::new();
    let mut pack_stats = Vec::new();
    for port in &ports {
        let v: Value = match reqwest::get(format!("http://127.0.0.1:{port}/ws/stats")).await {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        commit_stats.push(v["data"]["chat_commit"].clone());
        pack_stats.push(v["data"]["chat_packs"].clone());
    }
    let commit_stats = Value::Array(commit_stats);
    // Per node: packs written and the records they carried, summed over its packers.
    let packing: Vec<Value> = pack_stats
        .iter()
        .map(|node| {
            let sum = |k: &str| -> u64 {
                node.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s[k].as_u64())
                    .sum()
            };
            let (packs, records) = (sum("packs"), sum("records"));
            json!({
                "packs": packs,
                "records": records,
                "records_per_pack": (records as f64 / packs.max(1) as f64 * 100.0).round() / 100.0,
                "fenced": sum("fenced"),
            })
        })
        .collect();
    let got = delivered.load(Ordering::Relaxed);
    let ratio = if sent == 0 {
        1.0
    } else {
        got as f64 / sent as f64
    };
    if args.rate > 0 {
        println!(
            "gateway end to end: sent {sent} (client queue full: {rejected}), delivered {got} ({:.4}); after the warm-up ({} deliveries): p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms; RSS at end {rss_end} KiB",
            ratio,
            lat.len(),
            percentile(&lat, 0.5),
            percentile(&lat, 0.95),
            percentile(&lat, 0.99),
            lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
        println!(
            "gateway end to end, the warm-up's {} s included ({} deliveries): p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
            args.warmup,
            all.len(),
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            all.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
        // Per second of sending (the warm-up's first): deliveries over 10 ms, and the slowest;
        // with MYCHAT_BENCH_PROFILE set, the first 2 s in tenths (where the start-up stall is),
        // deliveries and the senders' acks.
        let seconds = tail_buckets(
            &deliveries,
            sending_at_us,
            1_000_000,
            (args.warmup + args.duration) as usize + 2,
        );
        let line: Vec<String> = seconds
            .iter()
            .enumerate()
            .map(|(k, b)| format!("{k}s:{}/{:.0}", b.over, b.slowest as f64 / 1000.0))
            .collect();
        println!(
            "the tail by second of sending (deliveries over 10 ms / slowest ms): {}",
            line.join(" ")
        );
        println!(
            "the disk, by second of sending (a 100-byte append + fsync every 10 ms in nats-server's \
             directory; fsyncs over 10 ms / slowest ms, seconds without any left out): {}; p99 \
             {:.3} ms, max {:.3} ms",
            slow_seconds(&disk, sending_at_us, seconds.len()),
            percentile(&disk_sorted, 0.99),
            disk_sorted.last().copied().unwrap_or(0) as f64 / 1000.0,
        );
        println!(
            "the bench's own runtime, by second of sending (a timer every 10 ms; wake-ups over 10 ms \
             late / latest ms, seconds without any left out): {}",
            slow_seconds(&timer, sending_at_us, seconds.len()),
        );
        if std::env::var_os("MYCHAT_BENCH_PROFILE").is_some() {
            for (what, pairs) in [("deliveries", &deliveries), ("their acks", &ack_pairs)] {
                let line: Vec<String> = tail_buckets(pairs, sending_at_us, 100_000, 20)
                    .iter()
                    .enumerate()
                    .map(|(k, b)| {
                        let slowest = b.slowest as f64 / 1000.0;
                        format!("{}ms:{}/{}/{slowest:.0}", k * 100, b.count, b.over)
                    })
                    .collect();
                println!(
                    "first 2 s by 100 ms, {what} (count / over 10 ms / slowest ms): {}",
                    line.join(" ")
                );
            }
        }
        println!(
            "nats-server RSS while sending: {nats_rss_before} → {nats_rss_after} KiB ({:.0} bytes a message sent; the chat streams' duplicate windows hold every dedup id for {} s)",
            (nats_rss_after as f64 - nats_rss_before as f64) * 1024.0 / sent.max(1) as f64,
            eventstore::StreamSettings::default().duplicate_window.as_secs(),
        );
        println!(
            "the gateway's runtime while sending (a timer every 10 ms): {} wake-ups; later than {} s: {}",
            late.wakeups,
            LATENESS_THRESHOLDS.join(" / "),
            late.later_than.map(|n| n.to_string()).join(" / "),
        );
        println!(
            "sender → ack (stored in CHAT): {} acks; p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms",
            acks.len(),
            percentile(&acks, 0.5),
            percentile(&acks, 0.95),
            percentile(&acks, 0.99),
        );
        println!(
            "CPU while sending (cores, of {} on the machine): bench clients {cpu_bench:.2}, gateway {cpu_gateway:.2}, nats-server {cpu_nats:.2}; gateway group commit (per node): {}; packs (per node): {}",
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            commit_stats,
            Value::Array(packing.clone())
        );
        println!(
            "baseline (same run, {base_rate} msg/s, before the sockets open): core NATS p99 {:.3} ms, JetStream ({} streams) p99 {:.3} ms",
            percentile(&core, 0.99),
            args.shards,
            percentile(&jsl, 0.99)
        );
        println!(
            "baseline under the load (a stream of its own beside the chat shards, a publish as each message to shard {probed_shard} is sent): JetStream publish → ack p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms ({} acks)",
            percentile(&loaded_sorted, 0.5),
            percentile(&loaded_sorted, 0.95),
            percentile(&loaded_sorted, 0.99),
            loaded_sorted.len(),
        );
    }
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
            "bench": "ws",
            "sockets": args.sockets,
            "rate": args.rate,
            "duration_s": args.duration,
            "sent": sent,
            "delivered": got,
            "p50_ms": round(percentile(&lat, 0.5)),
            "p95_ms": round(percentile(&lat, 0.95)),
            "p99_ms": round(percentile(&lat, 0.99)),
            "warmup_s": args.warmup,
            "p99_ms_with_warmup": round(percentile(&all, 0.99)),
            "baseline_p50_ms": round(percentile(&core, 0.5)),
            "baseline_p99_ms": round(percentile(&core, 0.99)),
            "js_baseline_p50_ms": round(percentile(&jsl, 0.5)),
            "js_baseline_p99_ms": round(percentile(&jsl, 0.99)),
            "js_loaded_p50_ms": round(percentile(&loaded_sorted, 0.5)),
            "js_loaded_p99_ms": round(percentile(&loaded_sorted, 0.99)),
            "shards": args.shards,
            "delivered_ratio": (ratio * 10000.0).round() / 10000.0,
            "rss_kib_per_socket": (per_socket * 10.0).round() / 10.0,
            "ack_p50_ms": round(percentile(&acks, 0.5)),
            "ack_p99_ms": round(percentile(&acks, 0.99)),
            "cpu_cores": {"bench": round(cpu_bench), "gateway": round(cpu_gateway), "nats": round(cpu_nats)},
            "nodes": nodes,
            "chat_commit": commit_stats,
            "packed": !args.records && eventstore::chat::DEFAULT_PACKED,
            "packs": packing,
            "load_average": load_average(),
            "fsync": if args.lazy_fsync { "lazy" } else { "always" },
            "disk_fsync_p99_ms": round(percentile(&disk_sorted, 0.99)),
            "disk_fsync_max_ms": round(disk_sorted.last().copied().unwrap_or(0) as f64 / 1000.0),
            "gateway_wakeups_late_10ms": late.later_than[1],
            "bench_wakeups_late_10ms": timer.iter().filter(|(_, l)| *l > 10_000).count(),
            "nats_rss_growth_kib": nats_rss_after as i64 - nats_rss_before as i64,
        })
    );
    if std::env::var_os("MYCHAT_BENCH_DEBUG").is_some() {
        eprintln!(
            "gateway log:\n{}",
            std::fs::read_to_string(dir.path().join("gateway-0.log")).unwrap_or_default()
        );
    }
    drop(sockets);
    drop(workers);
    drop(gateways);
    Ok(())
}
