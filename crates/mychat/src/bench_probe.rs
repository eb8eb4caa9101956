//! What the benchmarks share: the machine's state at the start (load average, the page cache's
//! dirty pages written back), and for the gateway's: the process probes (resident memory, CPU
//! time, children), percentiles, a paced sender, the client sockets, the child processes they
//! start, and the raw baselines (core NATS publish → subscriber, JetStream publish → reader over
//! the chat shards' count of streams, and a JetStream publish → ack under the benchmark's own
//! load) measured in the same run as the figure they sit next to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

/// The load average (`/proc/loadavg`'s first three fields; `?` when unreadable).
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Writes the page cache's dirty pages back (`sync(2)`, on tokio's blocking pool) before a
/// measurement, and says on stdout how many there were (`Dirty:` of `/proc/meminfo`) and how long
/// the write-back took (`before` names the measurement that follows).
///
/// A build or a copy that just finished leaves its output dirty in memory, and the kernel writes
/// it back only once it is 30 s old (`vm.dirty_expire_centisecs`), in the middle of the run that
/// started next, where it queues in front of every fsync of nats-server and PostgreSQL. Measured
/// on the 2-core machine: 220 MiB dirty after a release build of mychat; the seven runs of `bench
/// ws` started within a minute of a build had an end-to-end p99 of 43–113 ms, the 31 others
/// 8–17 ms but one (42 ms).
pub(crate) async fn flush_page_cache(before: &str) {
    let dirty_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Dirty:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    let started = Instant::now();
    let _ = tokio::task::spawn_blocking(nix::unistd::sync).await;
    println!(
        "page cache: {:.1} MiB dirty written back (sync) in {:.2} s before {before}",
        dirty_kib as f64 / 1024.0,
        started.elapsed().as_secs_f64()
    );
}

/// A benchmark client's connection to the loopback `port`, from source address
/// `127.0.0.(1 + i % sources)` (one address has only ~28k ephemeral ports), sending its writes
/// at once (`TCP_NODELAY`, as the services' sockets do).
///
/// # Errors
/// When the socket cannot be bound or connected.
pub(crate) async fn connect_from(
    i: usize,
    sources: u8,
    port: u16,
) -> std::io::Result<tokio::net::TcpStream> {
    let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(sources.max(1))) as u8);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    socket.set_nodelay(true)?;
    socket.connect(([127, 0, 0, 1], port).into()).await
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(s, _)| s)
        }
        Err(_) => 0,
    }
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, fields 14 and 15 of proc(5); clock ticks of 1/100 s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// The pid of this process's child named `comm`, if any.
pub(crate) fn child_pid(comm: &str) -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (head, rest) = stat.rsplit_once(')')?;
        let name = head.split_once('(')?.1;
        let ppid = rest.split_whitespace().nth(1)?;
        (name == comm && ppid == me).then_some(pid)
    })
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

pub(crate) struct Gateway {
    pub(crate) child: std::process::Child,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends at `rate` per second for `duration`, calling `send(i)`; returns how many were sent.
pub(crate) async fn paced(rate: u64, duration: Duration, mut send: impl FnMut(u64) -> bool) -> u64 {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while start.elapsed() < duration {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while sent < due {
            if send(sent) {
                sent += 1;
            } else {
                break;
            }
        }
    }
    sent
}

/// Raw baselines at `rate` for `duration`: core NATS publish → subscriber, and JetStream
/// publish → reader over `shards` streams (as the chat shards). Latencies in microseconds,
/// sorted.
pub(crate) async fn baselines(
    client: &async_nats::Client,
    rate: u64,
    duration: Duration,
    shards: u16,
) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    let epoch = Instant::now();
    // Core NATS.
    let mut sub = client.subscribe("bench.core").await?;
    let core = Arc::new(Mutex::new(Vec::new()));
    let sink = core.clone();
    let reader = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let t: u64 = std::str::from_utf8(&m.payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let now = epoch.elapsed().as_micros() as u64;
            sink.lock().expect("lock").push(now.saturating_sub(t));
        }
    });
    let c = client.clone();
    paced(rate, duration, |_| {
        let c = c.clone();
        let t = epoch.elapsed().as_micros() as u64;
        tokio::spawn(async move { c.publish("bench.core", t.to_string().into()).await });
        true
    })
    .await;
    client.flush().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();

    // JetStream, sharded as chat is: `shards` file streams (fsync per nats.conf), each message
    // published to stream `i mod shards` and awaited in its own task, read back by one reader
    // per stream (the log's gap-checking reader, as the gateway's fan-out reads).
    let js = async_nats::jetstream::new(client.clone());
    let jsl = Arc::new(Mutex::new(Vec::new()));
    let mut readers = Vec::new();
    for k in 0..shards.max(1) {
        let name = format!("BENCH_{k}");
        file_stream(&js, &name, &format!("bench.js.{k}")).await?;
        let mut reader = eventstore::LogReader::spawn(
            js.clone(),
            eventstore::ReadOptions::new(name, 0, eventstore::ReadUntil::Follow),
        );
        let sink = jsl.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(batch)) = reader.next().await {
                let now = epoch.elapsed().as_micros() as u64;
                let mut sink = sink.lock().expect("lock");
                for m in batch {
                    let t: u64 = std::str::from_utf8(&m.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    sink.push(now.saturating_sub(t));
                }
            }
        }));
    }
    let js2 = js.clone();
    let k = u64::from(shards.max(1));
    paced(rate, duration, |i| {
        let js = js2.clone();
        let t = epoch.elapsed().as_micros() as u64;
        tokio::spawn(async move {
            if let Ok(ack) = js
                .publish(format!("bench.js.{}", i % k), t.to_string().into())
                .await
            {
                let _ = ack.await;
            }
        });
        true
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for reader in readers {
        reader.abort();
    }
    let mut core = std::mem::take(&mut *core.lock().expect("lock"));
    let mut jsl = std::mem::take(&mut *jsl.lock().expect("lock"));
    core.sort_unstable();
    jsl.sort_unstable();
    Ok((core, jsl))
}

/// Creates (or finds) the file stream `name` on `subject`, with the server's defaults (fsynced as
/// its configuration says): the raw baselines' streams.
async fn file_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
    subject: &str,
) -> anyhow::Result<()> {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![subject.to_string()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(())
}

/// The disk under a benchmark: a thread appends 100 bytes to a file of its own in `dir` and
/// fsyncs it every `every`, as nats-server does with each message under `sync_interval: always`,
/// so that a run's slow deliveries can be laid beside the disk's slow fsyncs (a stall of the
/// disk delays every stream's fsyncs at once, and no design above it can hide that).
pub(crate) struct DiskProbe {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, u64)>>,
}

impl DiskProbe {
    /// Starts probing in `dir`; times are µs since `epoch`.
    ///
    /// # Errors
    /// When the probe's file cannot be created.
    pub(crate) fn start(
        dir: &std::path::Path,
        epoch: Instant,
        every: Duration,
    ) -> anyhow::Result<Self> {
        use std::io::Write as _;
        let mut file = tempfile::tempfile_in(dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut fsyncs = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                let at = epoch.elapsed();
                if file
                    .write_all(&[b'x'; 100])
                    .and_then(|()| file.sync_all())
                    .is_err()
                {
                    break;
                }
                fsyncs.push((
                    at.as_micros() as u64,
                    (epoch.elapsed() - at).as_micros() as u64,
                ));
                std::thread::sleep(every);
            }
            fsyncs
        });
        Ok(Self { stop, thread })
    }

    /// Stops probing and returns each fsync's `(started at, latency)` (µs).
    pub(crate) fn stop(self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// The raw JetStream floor *under the benchmark's load*: while the gateway's traffic runs, the
/// bench publishes to a file stream of its own (`BENCH_LOADED`, fsynced as nats.conf says) at
/// the moments it sends the chat messages of one shard ([`PublishProbe::publish`] beside each
/// of them), and records each publish → ack. A bare publish then meets the same arrivals as that
/// shard's stream (two messages of one stream close together queue behind each other's fsync
/// in nats-server), on the same server at the same moment, so the append a chat message pays can
/// be laid beside it (the quiet floor, [`baselines`], is measured before the sockets open).
pub(crate) struct PublishProbe {
    js: async_nats::jetstream::Context,
    epoch: Instant,
    publishes: tokio_util::task::TaskTracker,
    acks: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl PublishProbe {
    /// Creates the probe's stream; times are µs since `epoch`.
    ///
    /// # Errors
    /// When the stream cannot be created.
    pub(crate) async fn start(
        js: &async_nats::jetstream::Context,
        epoch: Instant,
    ) -> anyhow::Result<Self> {
        file_stream(js, "BENCH_LOADED", "bench.loaded").await?;
        Ok(Self {
            js: js.clone(),
            epoch,
            publishes: tokio_util::task::TaskTracker::new(),
            acks: Arc::default(),
        })
    }

    /// Publishes one message now, timed from this call to its ack.
    pub(crate) fn publish(&self) {
        let (js, epoch, acks) = (self.js.clone(), self.epoch, self.acks.clone());
        let at = epoch.elapsed();
        self.publishes.spawn(async move {
            let acked = async { js.publish("bench.loaded", "x".into()).await?.await };
            if acked.await.is_ok() {
                let took = epoch.elapsed().saturating_sub(at);
                acks.lock()
                    .expect("lock")
                    .push((at.as_micros() as u64, took.as_micros() as u64));
            }
        });
    }

    /// Waits (at most 5 s) for the publishes in flight and returns each acked publish's
    /// `(sent at, publish → ack)` (µs); a publish still unacked then is left to its ack timeout
    /// and not counted.
    pub(crate) async fn stop(self) -> Vec<(u64, u64)> {
        self.publishes.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.publishes.wait()).await;
        std::mem::take(&mut *self.acks.lock().expect("lock"))
    }
}

/// The benchmark's own runtime, probed while it sends: a task sleeping `every` at a time records
/// how late each wake-up is (`web::observe::watch_lateness`, as every service's metric does), so
/// a tail the measuring process makes itself (its clients and timestamps run on this runtime)
/// shows beside the tail it measures.
pub(crate) struct TimerProbe {
    task: tokio::task::JoinHandle<()>,
    wakeups: Arc<Mutex<Vec<(u64, u64)>>>,
}

impl TimerProbe {
    /// Starts probing on the current runtime; times are µs since `epoch`.
    pub(crate) fn start(epoch: Instant, every: Duration) -> Self {
        let wakeups = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let wakeups = wakeups.clone();
            web::observe::watch_lateness(every, move |due, late| {
                let at = due.saturating_duration_since(epoch).as_micros() as u64;
                wakeups
                    .lock()
                    .expect("lock")
                    .push((at, late.as_micros() as u64));
            })
        });
        Self { task, wakeups }
    }

    /// Stops probing and returns each wake-up's `(due at, lateness)` (µs).
    pub(crate) fn stop(self) -> Vec<(u64, u64)> {
        self.task.abort();
        std::mem::take(&mut *self.wakeups.lock().expect("lock"))
    }
}

/// Thresholds (seconds) of [`RuntimeLateness`]: buckets of the Prometheus histogram
/// `mychat_runtime_lateness_seconds` (`web::observe`).
pub(crate) const LATENESS_THRESHOLDS: [&str; 4] = ["0.0025", "0.01", "0.025", "0.1"];

/// A process's runtime-lateness probe read from its `/metrics` (`web::observe`: a task waking
/// every 10 ms): how many wake-ups, and how many later than each of [`LATENESS_THRESHOLDS`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RuntimeLateness {
    pub wakeups: u64,
    pub later_than: [u64; 4],
}

impl RuntimeLateness {
    /// Scrapes `http://127.0.0.1:{port}/metrics` (all zero when it cannot).
    pub(crate) async fn scrape(port: u16) -> Self {
        let text = match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => return Self::default(),
        };
        let value = |prefix: &str| -> u64 {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        let wakeups = value("mychat_runtime_lateness_seconds_count");
        let mut later_than = [0; 4];
        for (k, le) in LATENESS_THRESHOLDS.iter().enumerate() {
            let within = value(&format!(
                "mychat_runtime_lateness_seconds_bucket{{le=\"{le}\"}}"
            ));
            later_than[k] = wakeups.saturating_sub(within);
        }
        Self {
            wakeups,
            later_than,
        }
    }

    /// What happened between `before` and `self`.
    pub(crate) fn since(&self, before: &Self) -> Self {
        let mut later_than = [0; 4];
        for (k, n) in later_than.iter_mut().enumerate() {
            *n = self.later_than[k].saturating_sub(before.later_than[k]);
        }
        Self {
            wakeups: self.wakeups.saturating_sub(before.wakeups),
            later_than,
        }
    }
}

/// Latencies of one stretch of a run (µs).
#[derive(Default, Clone, Copy)]
pub(crate) struct TailBucket {
    pub count: u64,
    /// Over 10 ms.
    pub over: u64,
    pub slowest: u64,
}

/// `(sent at, latency)` pairs (µs) in `n` stretches of `width` µs from `from`; later pairs are left
/// out.
pub(crate) fn tail_buckets(
    pairs: &[(u64, u64)],
    from: u64,
    width: u64,
    n: usize,
) -> Vec<TailBucket> {
    let mut buckets = vec![TailBucket::default(); n];
    for &(at, latency) in pairs {
        if let Some(b) = buckets.get_mut((at.saturating_sub(from) / width) as usize) {
            b.count += 1;
            b.over += u64::from(latency > 10_000);
            b.slowest = b.slowest.max(latency);
        }
    }
    buckets
}

/// The seconds from `from` (of `n`) in which some of `pairs` (µs) took over 10 ms, as
/// `<second>s:<how many>/<slowest ms>` joined by spaces; `none` when there are none.
pub(crate) fn slow_seconds(pairs: &[(u64, u64)], from: u64, n: usize) -> String {
    let line: Vec<String> = tail_buckets(pairs, from, 1_000_000, n)
        .iter()
        .enumerate()
        .filter(|(_, b)| b.over > 0)
        .map(|(k, b)| format!("{k}s:{}/{:.0}", b.over, b.slowest as f64 / 1000.0))
        .collect();
    if line.is_empty() {
        "none".to_string()
    } else {
        line.join(" ")
    }
}
