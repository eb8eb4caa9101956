//! `mychat bench commands`: the command path's throughput and latency against a real nats-server
//! started with the project's `nats.conf` (`sync_interval: always`), next to the raw JetStream
//! baselines measured in the same run. Prints one line per stage and, last, one JSON
//! object with the figures.
//!
//! The ratios' denominator, raw sequential publish-and-await (`raw_seq`), moves with the disk's
//! fsync within minutes (677/s and 2,233/s two minutes apart on the project's machine), so it is
//! sampled four times through the run: at the start, after the store stages, and just before
//! and just after the HTTP `order/create` stages. The ratios use the median of the samples, and
//! the two headline ratios are also given against the samples taken beside their own stage.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_nats::jetstream;
use eventstore::envelope::Upcasters;
use eventstore::{ensure_streams, Actor, BusSettings, CommandBus, CommandMeta, StreamSettings};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::bench_probe::{flush_page_cache, load_average};
use crate::server::{self, Part};
use crate::settings::Settings;

/// `mychat bench commands` options.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds per stage.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Skip the HTTP stage (it starts PostgreSQL and the whole API in-process).
    #[arg(long)]
    pub skip_http: bool,
    /// Concurrent HTTP clients (keep-alive connections).
    #[arg(long, default_value_t = 64)]
    pub http_clients: usize,
}

/// Latency figures of one stage.
#[derive(Debug, Clone, Copy, Default)]
struct Figures {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn figures(count: u64, elapsed: Duration, mut micros: Vec<u64>, errors: u64) -> Figures {
    micros.sort_unstable();
    Figures {
        per_second: count as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&micros, 0.50),
        p99_ms: percentile(&micros, 0.99),
        errors,
    }
}

/// Lets the stage's closed-loop `tasks` run for `d`, then raises `stop` and gathers the
/// latencies (µs) they recorded.
async fn stop_after(
    d: Duration,
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Vec<u64>>>,
) -> Vec<u64> {
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all
}

/// The body of every raw and store message, bytes.
const BODY_BYTES: usize = 200;

mod baselines;
mod postgres_es;
mod raw_seq;
mod store;
use baselines::{
    checked_floor_beside, http_floors, raw_batches, raw_checked_batches, raw_pipelined, raw_stream,
    sharded_committers,
};
use raw_seq::{mean, ratio, RawSeqSamples};
use store::{header_bytes, print_cycle, store_message, store_stage};

/// `committers` tasks placing new orders (`Order::Place` on a fresh aggregate each time, with
/// [`CommandBus::execute_new`]: no load, a commit expecting an empty subject), the command
/// `POST /api/order/create` runs.
async fn place_stage(bus: &CommandBus, committers: usize, d: Duration) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(1_000_000_000));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..committers {
        let (bus, stop, next) = (bus.clone(), stop.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let command = domain::OrderCommand::Place {
                    order_no: format!("BENCH{id}"),
                    user_id: 1,
                    counselor_id: 1,
                    duration_minutes: 30,
                    price_per_minute: 500,
                    schedule_time: None,
                    notes: String::new(),
                    placed_at: chrono::Utc::now(),
                };
                let t = Instant::now();
                match bus
                    .execute_new::<domain::Order>(
                        &id.to_string(),
                        command,
                        &CommandMeta::new(Actor::user(1)),
                    )
                    .await
                {
                    Ok(_) => micros.push(t.elapsed().as_micros() as u64),
                    Err(_) => errors += 1,
                }
            }
            (micros, errors)
        }));
    }
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (m, e) = t.await.unwrap_or_default();
        all.extend(m);
        errors += e;
    }
    let n = all.len() as u64;
    figures(n, start.elapsed(), all, errors)
}

/// The Postgres statement `POST /api/order/create` runs before its command (the counselor's
/// price and status; the order id comes from a block of ids, one query per 64 orders), from
/// `clients` tasks.
async fn pg_stage(pool: &sqlx::PgPool, clients: usize, d: Duration) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (pool, stop) = (pool.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let a =
                    sqlx::query("SELECT price_fen, status, user_id FROM counselors WHERE id = $1")
                        .bind(1i64)
                        .fetch_optional(&pool)
                        .await;
                if a.is_ok() {
                    micros.push(t.elapsed().as_micros() as u64);
                } else {
                    // A failing pool answers at once: count it and let the others run.
                    errors += 1;
                    tokio::task::yield_now().await;
                }
            }
            (micros, errors)
        }));
    }
    tokio::time::sleep(d).await;
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (m, e) = t.await.unwrap_or_default();
        all.extend(m);
        errors += e;
    }
    let n = all.len() as u64;
    figures(n, start.elapsed(), all, errors)
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: Value,
) -> anyhow::Result<Value> {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    anyhow::ensure!(
        status.is_success() && (v["code"] == 0 || v["code"] == 200),
        "{url}: {status} {v}"
    );
    Ok(v["data"].clone())
}

/// `POST /api/order/create` from `clients` keep-alive connections for `d`, as user `demo`
/// booking `counselor1`.
async fn http_stage(api: &str, clients: usize, d: Duration) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let login = post(
        &http,
        &format!("{api}/api/login"),
        None,
        json!({ "username": "demo", "password": "demo123" }),
    )
    .await?;
    let token = login["token"].as_str().context("token")?.to_string();
    let clogin = post(
        &http,
        &format!("{api}/api/login"),
        None,
        json!({ "username": "counselor1", "password": "counselor123" }),
    )
    .await?;
    let counselor_id = clogin["user"]["counselor_id"]
        .as_i64()
        .context("counselor1 has no counselor profile")?;
    let schedule = (chrono::Utc::now() + chrono::Duration::hours(1))
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).expect("+08:00"))
        .format("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let body = json!({ "counselor_id": counselor_id, "duration": 30, "schedule_time": schedule, "notes": "bench" });
    drive_http(
        &format!("{api}/api/order/create"),
        Some(&token),
        &body,
        clients,
        d,
    )
    .await
}

/// The figures of the stage run at `clients` clients (zeros when it did not run).
fn figures_at(stages: &[(usize, Figures)], clients: usize) -> Figures {
    stages
        .iter()
        .find(|(c, _)| *c == clients)
        .map(|(_, f)| *f)
        .unwrap_or_default()
}

/// An axum app served in this process on a free loopback port, for a stage whose server is part
/// of the bench (the HTTP floors, the other data path). Stopped (gracefully) by [`Served::stop`].
struct Served {
    /// Where it listens.
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    /// Binds 127.0.0.1 on a free port as the services bind ([`server::bind_http`]) and serves
    /// `app` there.
    async fn start(app: axum::Router) -> anyhow::Result<Self> {
        use axum::serve::Listener as _;
        let listener = server::bind_http(([127, 0, 0, 1], 0).into()).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await
            }
        });
        Ok(Self {
            addr,
            shutdown,
            task,
        })
    }

    /// Stops serving and waits for the server to end.
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// `clients` closed-loop keep-alive connections, each posting `body` to `url` (with `token` as
/// a bearer token) again as soon as its last request is answered, for `d`. A request counts
/// when it is answered 2xx with the envelope's success code (`"code":200` or `"code":0`).
///
/// The client does as little as a load tool does: the body is serialized once and the answer
/// is checked on its bytes, not parsed (parsing every answer into a JSON tree cost the server
/// about a fifth of its throughput at 64 clients, on the same two cores). And it runs as a load
/// tool's process would, beside the server rather than inside it: on a thread of its own with a
/// single-threaded runtime (as `wrk -t1`), so its tasks are not scheduled on the server's
/// workers and do not wake them.
async fn drive_http(
    url: &str,
    token: Option<&str>,
    body: &Value,
    clients: usize,
    d: Duration,
) -> anyhow::Result<Figures> {
    let (url, token, body) = (url.to_string(), token.map(str::to_string), body.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-http-clients".into())
        .spawn(move || {
            let figures = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| {
                    rt.block_on(drive_http_here(&url, token.as_deref(), &body, clients, d))
                });
            let _ = tx.send(figures);
        })?;
    rx.await.context("the HTTP clients' thread ended")?
}

/// [`drive_http`] on the current runtime.
async fn drive_http_here(
    url: &str,
    token: Option<&str>,
    body: &Value,
    clients: usize,
    d: Duration,
) -> anyhow::Result<Figures> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .timeout(Duration::from_secs(30))
        .build()?;
    let body = bytes::Bytes::from(serde_json::to_vec(body)?);
    // Built once; cloning a header value is a reference count, not a copy.
    let auth = token
        .map(|t| reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")))
        .transpose()?;
    let send = {
        let (http, url) = (http.clone(), url.to_string());
        move |auth: Option<reqwest::header::HeaderValue>, body: bytes::Bytes| {
            let mut req = http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            if let Some(auth) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, auth);
            }
            async move {
                let resp = req.send().await?;
                let status = resp.status();
                let answer = resp.bytes().await?;
                anyhow::ensure!(
                    status.is_success()
                        && (answer.starts_with(b"{\"code\":200,")
                            || answer.starts_with(b"{\"code\":0,")),
                    "{status} {}",
                    String::from_utf8_lossy(&answer)
                );
                Ok::<_, anyhow::Error>(())
            }
        }
    };
    // Warm a connection.
    send(auth.clone(), body.clone())
        .await
        .with_context(|| format!("POST {url}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (send, auth, body, stop, errors) = (
            send.clone(),
            auth.clone(),
            body.clone(),
            stop.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match send(auth.clone(), body.clone()).await {
                    Ok(()) => micros.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("first HTTP error: {e:#}");
                        }
                    }
                }
            }
            micros
        }));
    }
    let all = stop_after(d, &stop, tasks).await;
    let n = all.len() as u64;
    Ok(figures(
        n,
        start.elapsed(),
        all,
        errors.load(Ordering::Relaxed),
    ))
}

fn line(name: &str, f: &Figures, raw_seq: f64) {
    println!(
        "{name:<34} {:>9.0}/s  ({:>5.1}× raw_seq)  p50 {:>7.2} ms  p99 {:>7.2} ms  errors {}",
        f.per_second,
        f.per_second / raw_seq,
        f.p50_ms,
        f.p99_ms,
        f.errors
    );
}

/// Runs the benchmark and prints its figures; the last line is JSON.
///
/// # Errors
/// When a server cannot be started or a baseline fails.
pub async fn commands(args: BenchArgs) -> anyhow::Result<()> {
    let d = Duration::from_secs_f64(args.seconds);
    let nats = testkit::NatsServer::start().context("starting nats-server")?;
    println!(
        "mychat bench commands: nats-server with nats.conf (sync_interval: always), {} s per stage, \
         {} cpus, load average {}",
        args.seconds,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );

    flush_page_cache("the first stage").await;
    // 1. Raw baselines, on their own stream, with their own connection.
    let raw_client = nats.connect().await?;
    let raw_js = jetstream::new(raw_client.clone());
    raw_stream(&raw_js).await?;
    let mut raw_seqs = RawSeqSamples::default();
    // The stages' lines are printed against this first sample; the summary at the end uses all.
    let raw_seq = raw_seqs.sample(&raw_js, "at the start", d).await?;
    let raw_pipe = raw_pipelined(&raw_js, d).await?;
    println!("raw pipelined (256 in flight)      {raw_pipe:>9.0}/s");
    let raw_batch = raw_batches(&raw_client, 100, (1, 1), d).await?;
    // The ceiling of 64 closed-loop committers: batches of 64 (what they can fill), one or two
    // in flight.
    let raw_b64_1 = raw_batches(&raw_client, 64, (1, 1), d).await?;
    let raw_b64_2 = raw_batches(&raw_client, 64, (2, 1), d).await?;
    // The same batches with the checks a commit carries (a dedup id, an expected last subject
    // sequence), bare and shaped as the store's commits: the floor of the store's write.
    let raw_checked = raw_checked_batches(&raw_client, None, d).await?;
    println!(
        "raw atomic batches of 64, checked  {raw_checked:>9.0} msg/s  ({:.2} ms per batch)",
        64_000.0 / raw_checked
    );
    let template = store_message()?;
    let raw_shaped = raw_checked_batches(&raw_client, Some(&template), d).await?;
    println!(
        "raw atomic batches of 64, checked, shaped as the store's ({} B headers, {} B body) \
         {raw_shaped:>9.0} msg/s  ({:.2} ms per batch)",
        header_bytes(&template.0),
        template.1.len(),
        64_000.0 / raw_shaped
    );
    // Per-stream parallelism: the same loops, each on a stream of its own (a command store
    // sharded by aggregate would commit this way).
    let raw_b64_2s = raw_batches(&raw_client, 64, (2, 2), d).await?;
    let raw_b64_4s = raw_batches(&raw_client, 64, (4, 4), d).await?;
    // What 64 closed-loop committers can fill when their aggregates are split over 2 or 4
    // streams: batches of 32 on 2 streams, of 16 on 4, all in flight at once.
    let raw_b32_2s = raw_batches(&raw_client, 32, (2, 2), d).await?;
    let raw_b16_4s = raw_batches(&raw_client, 16, (4, 4), d).await?;

    // 2. The event store.
    let client = nats.connect().await?;
    let js = jetstream::new(client);
    ensure_streams(&js, &StreamSettings::default()).await?;
    // The bus settings come from the configuration (`[bus]`, `[bus.group_commit]` in mychat.toml).
    let bus_settings: BusSettings = Settings::load()?.bus;
    println!("bus settings: {}", serde_json::to_string(&bus_settings)?);
    let bus = CommandBus::with_settings(js.clone(), Upcasters::default(), bus_settings);
    let committer = bus.committer().await?;
    let cycle_reading = || {
        committer
            .as_ref()
            .map(|c| c.stats().cycle())
            .unwrap_or_default()
    };
    let mut store_64 = Figures::default();
    let mut store_cycle_64 = eventstore::WriteCycle::default();
    let mut shaped_beside = 0.0;
    for (run, committers) in [(1u64, 1usize), (2, 16), (3, 64), (4, 256)] {
        let stage = async {
            let before = cycle_reading();
            let f = store_stage(&bus, run, committers, 0.0, None, d).await;
            line(&format!("store, {committers} committers"), &f, raw_seq);
            let cycle = cycle_reading() - before;
            print_cycle(&cycle);
            anyhow::Ok((f, cycle))
        };
        if committers == 64 {
            // The stage against its floor sampled beside it.
            ((store_64, store_cycle_64), shaped_beside) = checked_floor_beside(
                &raw_client,
                Some(&template),
                d,
                "the store",
                stage,
                |(f, _)| f.per_second,
            )
            .await?;
        } else {
            stage.await?;
        }
    }
    let contended = store_stage(&bus, 5, 64, 0.10, None, d).await;
    line("store, 64 committers, 10% contended", &contended, raw_seq);
    let half = store_stage(&bus, 6, 64, 0.0, Some(store_64.per_second / 2.0), d).await;
    line("store, 64 committers at half max", &half, raw_seq);
    let raw_after_store = raw_seqs
        .sample(&raw_js, "after the store stages", d)
        .await?;
    if let Some(c) = bus.committer().await? {
        let (single, batches, batched, failed, stale) = c.stats().snapshot();
        println!(
            "group commit: {single} single writes, {batches} batches carrying {batched} commits \
             (mean {:.1}), {failed} batches failed a check, {stale} stale commits caught early",
            batched as f64 / batches.max(1) as f64
        );
    }
    let cache = bus.cache_stats();
    println!(
        "aggregate cache: {} hits, {} misses, {} stale",
        cache.hits.load(Ordering::Relaxed),
        cache.misses.load(Ordering::Relaxed),
        cache.stale.load(Ordering::Relaxed)
    );
    // The write path alone, as built (one stream) and sharded by aggregate over two streams.
    let group = bus.settings().group_commit.clone().unwrap_or_default();
    let group = &group;
    let ((sharded_1, committer_cycle_64), checked_beside) = checked_floor_beside(
        &raw_client,
        None,
        d,
        "the committer",
        async {
            let (f, cycle) = sharded_committers(&raw_client, group, (64, 1), d).await?;
            line("group committer, 64 committers, 1 stream", &f, raw_seq);
            print_cycle(&cycle);
            anyhow::Ok((f, cycle))
        },
        |(f, _)| f.per_second,
    )
    .await?;
    let (sharded_2, cycle_2) = sharded_committers(&raw_client, group, (64, 2), d).await?;
    line(
        "group committer, 64 committers, 2 streams",
        &sharded_2,
        raw_seq,
    );
    print_cycle(&cycle_2);

    // 3. HTTP: the whole service (user API, projectors, process manager) in this process, on a
    // nats-server and a PostgreSQL of its own. A fresh log: the store stages above left about a
    // hundred thousand account commits, which every projector reading accounts would otherwise
    // still be applying while the HTTP stage runs.
    let mut http: Vec<(usize, Figures)> = Vec::new();
    let mut floors = (Figures::default(), Figures::default());
    let mut pg_es: Vec<(usize, Figures)> = Vec::new();
    // The mean of the samples taken just before and just after the HTTP order/create stages.
    let mut http_beside = 0.0;
    if !args.skip_http {
        // The floors under it: what HTTP alone, and HTTP answering after one durable append,
        // give at the same client count with the same client.
        let top = args.http_clients.max(1);
        floors = http_floors(&raw_client, group, top, d).await?;
        line(
            &format!("HTTP floor: answer at once, {top} clients"),
            &floors.0,
            raw_seq,
        );
        line(
            &format!("HTTP floor: answer after one append, {top} clients"),
            &floors.1,
            raw_seq,
        );
        // The other data path at the same client counts: cqrs-es + postgres-es, the view
        // updated before `execute` returns, on a durable PostgreSQL of its own.
        let mut pg_levels = vec![1, top];
        pg_levels.dedup();
        pg_es = postgres_es::postgres_es_stage(&pg_levels, d).await?;
        for (clients, f) in &pg_es {
            line(
                &format!("other design: cqrs-es + postgres-es order/create, {clients} clients"),
                f,
                raw_seq,
            );
        }
        let nats = testkit::NatsServer::start().context("starting nats-server")?;
        let pg = testkit::Postgres::start().context("starting PostgreSQL")?;
        pg.ensure_database("mychat").await?;
        let data = tempfile::Builder::new().prefix("mychat-bench").tempdir()?;
        let free = || -> anyhow::Result<std::net::SocketAddr> {
            Ok(format!("127.0.0.1:{}", testkit::free_port()).parse()?)
        };
        let settings = Settings {
            bus: bus.settings().clone(),
            nats_url: Some(nats.url()),
            database_url: Some(pg.url_for("mychat")),
            data_dir: data.path().to_path_buf(),
            user_addr: free()?,
            admin_addr: free()?,
            ws_addr: free()?,
            metrics_addr: free()?,
            ..Settings::default()
        };
        let infra = server::connect(&settings, &nats.url(), &pg.url_for("mychat")).await?;
        let stage_bus = infra.bus.clone();
        projections::MIGRATOR.run(&infra.pool).await?;
        api::seed::seed_demo(&infra.pool).await?;
        let shutdown = CancellationToken::new();
        let api_url = format!("http://{}", settings.user_addr);
        let runner = {
            let settings = settings.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                server::run_parts(&settings, infra, Part::All, None, shutdown).await
            })
        };
        let probe = reqwest::Client::new();
        let ready = Instant::now();
        while probe.get(format!("{api_url}/health")).send().await.is_err() {
            anyhow::ensure!(
                ready.elapsed() < Duration::from_secs(30),
                "the API did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let top = args.http_clients.max(1);
        let mut levels = vec![1, (top / 8).max(1), top];
        levels.dedup();
        // These lines against the sample taken just before them.
        let raw_before = raw_seqs.sample(&raw_js, "before order/create", d).await?;
        for clients in levels {
            let f = http_stage(&api_url, clients, d).await?;
            line(
                &format!("HTTP order/create, {clients} clients"),
                &f,
                raw_before,
            );
            http.push((clients, f));
        }
        let raw_after = raw_seqs.sample(&raw_js, "after order/create", d).await?;
        http_beside = mean(&[raw_before, raw_after]);
        shutdown.cancel();
        let _ = runner.await;
        // Where an order/create spends its time, stage by stage (after the API stopped, so that
        // the projectors do not pick up these orders).
        let place = place_stage(&stage_bus, top, d).await;
        line(
            &format!("  stage: Order::Place, {top} committers"),
            &place,
            raw_seq,
        );
        // A pool of its own: the API's pool is closed with the API.
        let stage_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(top.min(32) as u32)
            .connect(&pg.url_for("mychat"))
            .await?;
        let pg_figures = pg_stage(&stage_pool, top, d).await;
        stage_pool.close().await;
        line(
            &format!("  stage: its SQL read, {top} clients"),
            &pg_figures,
            raw_seq,
        );
    }
    let top = args.http_clients.max(1);
    let one = figures_at(&http, 1);
    let eight = figures_at(&http, (top / 8).max(1));
    let many = figures_at(&http, top);
    let (pg_one, pg_many) = (figures_at(&pg_es, 1), figures_at(&pg_es, top));
    let raw_median = raw_seqs.median();
    let store_beside = mean(&[raw_seq, raw_after_store]);
    println!(
        "raw_seq over the run: median {raw_median:.0}/s of {} samples; store, 64 committers \
         {:.2}× the median, {:.2}× the samples beside it; order/create, {top} clients {:.2}× the \
         median, {:.2}× the samples beside it",
        raw_seqs.len(),
        ratio(store_64.per_second, raw_median),
        ratio(store_64.per_second, store_beside),
        ratio(many.per_second, raw_median),
        ratio(many.per_second, http_beside),
    );
    println!(
        "the store's floor: raw checked batches of 64 shaped as its commits {shaped_beside:.0} \
         msg/s beside its stage = {:.2}× the raw_seq median; the store, 64 committers, is {:.0} % \
         of it (cycle: write {:.2} ms + turnaround {:.2} ms; the committer alone: {:.2} + {:.2} ms)",
        ratio(shaped_beside, raw_median),
        100.0 * ratio(store_64.per_second, shaped_beside),
        store_cycle_64.mean_write_ms(),
        store_cycle_64.mean_turnaround_ms(),
        committer_cycle_64.mean_write_ms(),
        committer_cycle_64.mean_turnaround_ms(),
    );
    // Two objects merged: one `json!` of every key is past the macro's recursion limit.
    let mut summary = json!({
            "bench": "commands",
            "raw_seq_ps": raw_median.round(),
            "raw_seq_samples_ps": raw_seqs.to_json(),
            "raw_pipelined_ps": raw_pipe.round(),
            "raw_batch100_ps": raw_batch.round(),
            "raw_batch64_ps_1": raw_b64_1.round(),
            "raw_batch64_ps_2": raw_b64_2.round(),
            "raw_batch64_ps_2_streams": raw_b64_2s.round(),
            "raw_batch64_ps_4_streams": raw_b64_4s.round(),
            "raw_batch32_ps_2_streams": raw_b32_2s.round(),
            "raw_batch16_ps_4_streams": raw_b16_4s.round(),
            "raw_checked64_ps": raw_checked.round(),
            "raw_shaped64_ps": raw_shaped.round(),
            "raw_shaped64_over_raw_seq": ratio(raw_shaped, raw_median),
            "store_ps_64_over_raw_shaped": ratio(store_64.per_second, raw_shaped),
            "raw_shaped64_beside_ps": shaped_beside.round(),
            "store_ps_64_over_raw_shaped_beside": ratio(store_64.per_second, shaped_beside),
            "raw_checked64_beside_ps": checked_beside.round(),
            "committer_ps_64_over_raw_checked_beside": ratio(sharded_1.per_second, checked_beside),
    });
    let rest = json!({
            "store_ps_64": store_64.per_second.round(),
            "store_p99_ms_64": store_64.p99_ms,
            "store_p50_ms_64": store_64.p50_ms,
            "store_write_ms_64": store_cycle_64.mean_write_ms(),
            "store_turnaround_ms_64": store_cycle_64.mean_turnaround_ms(),
            "committer_write_ms_64": committer_cycle_64.mean_write_ms(),
            "committer_turnaround_ms_64": committer_cycle_64.mean_turnaround_ms(),
            "store_ps_64_contended": contended.per_second.round(),
            "store_p99_ms_64_half_load": half.p99_ms,
            "store_ps_64_over_raw_seq": ratio(store_64.per_second, raw_median),
            "store_ps_64_over_raw_seq_beside": ratio(store_64.per_second, store_beside),
            "committer_ps_64_1_stream": sharded_1.per_second.round(),
            "committer_ps_64_2_streams": sharded_2.per_second.round(),
            "http_p50_ms_1": one.p50_ms,
            "http_p99_ms_1": one.p99_ms,
            "http_ps_1": one.per_second.round(),
            "http_p50_ms_8": eight.p50_ms,
            "http_p99_ms_8": eight.p99_ms,
            "http_ps_8": eight.per_second.round(),
            "http_p50_ms_64": many.p50_ms,
            "http_p99_ms_64": many.p99_ms,
            "http_ps_64": many.per_second.round(),
            "http_ps_64_over_raw_seq": ratio(many.per_second, raw_median),
            "http_ps_64_over_raw_seq_beside": ratio(many.per_second, http_beside),
            "http_floor_answer_ps_64": floors.0.per_second.round(),
            "http_floor_commit_ps_64": floors.1.per_second.round(),
            "http_floor_commit_p50_ms_64": floors.1.p50_ms,
            "pg_es_p50_ms_1": pg_one.p50_ms,
            "pg_es_ps_1": pg_one.per_second.round(),
            "pg_es_p50_ms_64": pg_many.p50_ms,
            "pg_es_ps_64": pg_many.per_second.round(),
            "load_average": load_average(),
    });
    if let (Some(all), Value::Object(rest)) = (summary.as_object_mut(), rest) {
        all.extend(rest);
    }
    println!("{summary}");
    Ok(())
}
