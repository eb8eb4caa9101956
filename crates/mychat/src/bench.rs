//! `mychat bench projections [--events N]`: builds a log of N events (a realistic mix of whole
//! order stories and withdrawals) on a throwaway nats-server and PostgreSQL (testkit: the
//! repository's `nats.conf`, fsync always; Postgres with fsync off), then measures, in the same
//! run:
//!
//! - the raw baselines: an ordered-consumer read of the whole log (messages/s) and a batched
//!   Postgres insert of one row per message (`UNNEST`, 1,000 rows a statement, rows/s);
//! - the blue/green rebuild of each read model (messages applied / s);
//! - an audit replay of every read model over the whole log (seconds);
//! - `finance reconcile` over the whole log (seconds).
//!
//! A message is one commit (one command's events: 1 event, or 2 for `SessionEnded` +
//! `SessionBilled`). The last line is one JSON object with the figures.

use std::time::Instant;

use async_nats::jetstream;
use chrono::Utc;
use domain::{
    split_platform_fee, AccountEvent, CreditReason, EndReason, OrderEvent, PaymentEvent,
    SessionEvent, WalletEvent,
};
use eventstore::{Actor, Commit, RecordedEvent};
use serde::Serialize;
use serde_json::json;

use crate::bench_probe::{flush_page_cache, load_average};

/// `mychat bench …`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The command path: raw JetStream baselines, the event store (group commit) at 1/16/64/256
    /// committers, and `POST /api/order/create` over HTTP.
    Commands(crate::bench_commands::BenchArgs),
    /// The WebSocket gateway under load: sockets, end-to-end latency, memory per socket.
    Ws(crate::bench_ws::WsArgs),
    /// Rebuild, audit replay and reconcile throughput against the raw baselines.
    Projections {
        /// How many events the log holds.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// How many times to run the audit replay (each into its own schema); `replay_s` is the
        /// fastest, `replay_runs_s` lists them all (the machine's noise shows in the spread).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
        replays: u32,
    },
}

fn commit<E: Serialize + cqrs_es::DomainEvent>(
    aggregate_type: &str,
    id: i64,
    first_sequence: usize,
    events: Vec<E>,
) -> (String, Vec<u8>, usize) {
    let n = events.len();
    let command_id = uuid::Uuid::now_v7().to_string();
    let c = Commit {
        aggregate_type: aggregate_type.into(),
        aggregate_id: id.to_string(),
        command_id: command_id.clone(),
        correlation_id: command_id,
        causation_id: None,
        actor: Actor::system(),
        recorded_at: Utc::now(),
        events: events
            .into_iter()
            .enumerate()
            .map(|(i, e)| RecordedEvent {
                sequence: first_sequence + i,
                event_type: e.event_type(),
                event_version: e.event_version(),
                payload: serde_json::to_value(&e).unwrap_or_default(),
            })
            .collect(),
    };
    (
        Commit::subject(aggregate_type, &id.to_string()),
        serde_json::to_vec(&c).unwrap_or_default(),
        n,
    )
}

/// The commits of order story `id` (11 events in 10 messages), plus a withdrawal every 10th
/// story (3 events).
fn story(
    id: i64,
    account_seq: &mut std::collections::HashMap<i64, usize>,
    wallets: &mut std::collections::HashMap<i64, (usize, i64)>,
) -> Vec<(String, Vec<u8>, usize)> {
    let t = Utc::now();
    let user = 1 + id % 997;
    let counselor = 1 + id % 13;
    let minutes = 10 + id % 50;
    let price = 100 + id % 400;
    let prepaid = minutes * price;
    let used = 1 + id % minutes;
    let amount = used * price;
    let (platform_fee, counselor_fee) = split_platform_fee(amount);
    let method = ["sandbox", "wechat", "alipay"][(id % 3) as usize].to_string();
    let mut out = vec![
        commit(
            "order",
            id,
            1,
            vec![OrderEvent::OrderPlaced {
                order_no: format!("ORD{id}"),
                user_id: user,
                counselor_id: counselor,
                duration_minutes: minutes,
                price_per_minute: price,
                amount: prepaid,
                schedule_time: None,
                notes: String::new(),
                placed_at: t,
            }],
        ),
        commit(
            "payment",
            id,
            1,
            vec![PaymentEvent::PaymentCreated {
                payment_no: format!("PAY{id}"),
                order_id: id,
                user_id: user,
                amount: prepaid,
                method: method.clone(),
                trade_type: "NATIVE".into(),
                created_at: t,
            }],
        ),
        commit(
            "payment",
            id,
            2,
            vec![PaymentEvent::PaymentCaptured {
                order_id: id,
                user_id: user,
                method,
                provider_txn_id: format!("TXN{id}"),
                amount: prepaid,
                captured_at: t,
            }],
        ),
        commit(
            "order",
            id,
            2,
            vec![OrderEvent::OrderPaid {
                payment_id: id,
                amount: prepaid,
                paid_at: t,
            }],
        ),
        commit(
            "session",
            id,
            1,
            vec![SessionEvent::SessionStarted {
                order_id: id,
                user_id: user,
                counselor_id: counselor,
                counselor_user_id: 1000 + counselor,
                price_per_minute: price,
                prepaid_minutes: minutes,
                prepaid_amount: prepaid,
                started_at: t,
            }],
        ),
        commit(
            "order",
            id,
            3,
            vec![OrderEvent::OrderServiceStarted {
                session_id: id,
                started_at: t,
            }],
        ),
        commit(
            "session",
            id,
            2,
            vec![
                SessionEvent::SessionEnded {
                    ended_by: user,
                    reason: EndReason::Participant,
                    ended_at: t,
                    duration_seconds: used * 60,
                },
                SessionEvent::SessionBilled {
                    order_id: id,
                    user_id: user,
                    counselor_id: counselor,
                    duration_seconds: used * 60,
                    billed_minutes: used,
                    price_per_minute: price,
                    amount,
                    platform_fee,
                    counselor_fee,
                    prepaid_amount: prepaid,
                    refund: prepaid - amount,
                    billed_at: t,
                },
            ],
        ),
    ];
    let a = account_seq.entry(counselor).or_insert(0);
    *a += 1;
    out.push(commit(
        "account",
        counselor,
        *a,
        vec![AccountEvent::EarningsCredited {
            counselor_id: counselor,
            session_id: id,
            order_id: id,
            amount: counselor_fee,
            at: t,
        }],
    ));
    if prepaid > amount {
        let w = wallets.entry(user).or_insert((0, 0));
        w.0 += 1;
        w.1 += prepaid - amount;
        out.push(commit(
            "wallet",
            user,
            w.0,
            vec![WalletEvent::WalletCredited {
                user_id: user,
                amount: prepaid - amount,
                reason: CreditReason::SessionRefund {
                    session_id: id,
                    order_id: id,
                },
                balance_after: w.1,
                at: t,
            }],
        ));
    }
    out.push(commit(
        "order",
        id,
        4,
        vec![OrderEvent::OrderCompleted {
            session_id: id,
            completed_at: t,
        }],
    ));
    if id % 10 == 0 && counselor_fee > 1 {
        let w = counselor_fee / 2;
        let a = account_seq.entry(counselor).or_insert(0);
        out.push(commit(
            "account",
            counselor,
            *a + 1,
            vec![AccountEvent::WithdrawalRequested {
                counselor_id: counselor,
                withdrawal_id: id,
                amount: w,
                bank_name: "B".into(),
                bank_account: "1".into(),
                account_name: "C".into(),
                at: t,
            }],
        ));
        out.push(commit(
            "account",
            counselor,
            *a + 2,
            vec![AccountEvent::WithdrawalApproved {
                withdrawal_id: id,
                amount: w,
                admin_id: 1,
                at: t,
            }],
        ));
        out.push(commit(
            "account",
            counselor,
            *a + 3,
            vec![AccountEvent::WithdrawalTransferred {
                withdrawal_id: id,
                amount: w,
                admin_id: 1,
                at: t,
            }],
        ));
        *a += 3;
    }
    out
}

/// Publishes `batch` (drained) to JetStream as one atomic batch (`Nats-Batch-Id`,
/// `Nats-Batch-Sequence`, `Nats-Batch-Commit` on the last message) and checks the ack.
///
/// # Errors
/// When JetStream refuses the batch or does not answer.
async fn publish_atomic(
    nats: &async_nats::Client,
    batch_id: &str,
    batch: &mut Vec<(String, Vec<u8>)>,
) -> anyhow::Result<()> {
    use async_nats::header::{NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
    let n = batch.len();
    for (i, (subject, payload)) in batch.drain(..).enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(NATS_BATCH_ID, batch_id);
        headers.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
        if i + 1 < n {
            nats.publish_with_headers(subject, headers, payload.into())
                .await?;
        } else {
            headers.insert(NATS_BATCH_COMMIT, "1");
            let reply = tokio::time::timeout(
                std::time::Duration::from_secs(30),
                nats.request_with_headers(subject, headers, payload.into()),
            )
            .await??;
            let ack: serde_json::Value = serde_json::from_slice(&reply.payload)?;
            anyhow::ensure!(
                ack.get("error").is_none() && ack["count"].as_u64() == Some(n as u64),
                "atomic batch {batch_id} of {n} messages refused: {ack}"
            );
        }
    }
    Ok(())
}

/// Records when each projection's lane of an audit replay finished, to show the critical path.
#[derive(Default)]
struct LaneTimes(std::sync::Mutex<Vec<(String, f64)>>);

impl LaneTimes {
    /// `name seconds, …`, slowest first; and forgets them for the next run.
    fn take(&self) -> String {
        let mut lanes = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        lanes.sort_by(|a, b| b.1.total_cmp(&a.1));
        lanes
            .iter()
            .map(|(name, s)| format!("{name} {s:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl projections::rebuild::Progress for LaneTimes {
    fn start(&self, _: &str, _: u64) {}
    fn advance(&self, _: &str, _: u64, _: u64) {}
    fn finish(&self, projection: &str, _: u64, seconds: f64) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((projection.to_string(), seconds));
    }
}

/// Runs the benchmark and prints its figures; the last line is JSON.
///
/// # Errors
/// When the servers cannot start or a step fails.
pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    let (target, replays) = match cmd {
        BenchCommand::Ws(args) => return crate::bench_ws::ws(args).await,
        BenchCommand::Commands(args) => return crate::bench_commands::commands(args).await,
        BenchCommand::Projections { events, replays } => (events, replays),
    };
    let nats_server = tokio::task::spawn_blocking(testkit::NatsServer::start).await??;
    let pg = tokio::task::spawn_blocking(testkit::Postgres::start).await??;
    let nats = nats_server.connect().await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(&pg.url())
        .await?;
    projections::MIGRATOR.run(&pool).await?;
    let js = jetstream::new(nats.clone());
    eventstore::ensure_streams(&js, &eventstore::StreamSettings::default()).await?;

    flush_page_cache("writing the log").await;
    let load_start = load_average();
    eprintln!(
        "bench projections: {target} events; {} cpus, load average {load_start}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The log, written as atomic batches of up to 1,000 messages (ADR-50, one fsync a batch;
    // the group committer does the same for live commands), one batch at a time so the
    // stories stay in order.
    let started = Instant::now();
    let (mut events, mut messages, mut id) = (0u64, 0u64, 0i64);
    let (mut accounts, mut wallets) = (Default::default(), Default::default());
    let mut pending: Vec<(String, Vec<u8>)> = Vec::with_capacity(1100);
    let mut batches = 0u64;
    while events < target {
        id += 1;
        for (subject, payload, n) in story(id, &mut accounts, &mut wallets) {
            pending.push((subject, payload));
            events += n as u64;
            messages += 1;
        }
        if pending.len() >= 990 || events >= target {
            batches += 1;
            publish_atomic(&nats, &format!("bench{batches}"), &mut pending).await?;
        }
    }
    let build_s = started.elapsed().as_secs_f64();
    eprintln!(
        "log: {events} events in {messages} messages ({id} order stories) written in {build_s:.1}s \
         ({batches} atomic batches)"
    );

    // Baseline 1: an ordered-consumer read of the whole log, with the reader the projections
    // read with (`runtime::spawn_reader`: explicit pull requests, consumer sequences checked),
    // and nothing else: no decoding, no SQL.
    let started = Instant::now();
    let mut reader = projections::runtime::spawn_reader(
        js.clone(),
        eventstore::EVENTS_STREAM,
        Vec::new(),
        0,
        None,
        projections::rebuild::REPLAY_BATCH,
    );
    let mut payloads: Vec<(i64, String, Vec<u8>)> = Vec::with_capacity(messages as usize);
    while let Some(batch) = reader.recv().await {
        for m in batch? {
            payloads.push((
                m.stream_sequence as i64,
                m.subject.clone(),
                m.payload.to_vec(),
            ));
        }
    }
    anyhow::ensure!(
        payloads.len() as u64 == messages,
        "the raw read got {} messages of {messages}",
        payloads.len()
    );
    let read_s = started.elapsed().as_secs_f64();
    let raw_read_eps = messages as f64 / read_s;
    eprintln!(
        "raw ordered-consumer read: {messages} messages in {read_s:.2}s = {raw_read_eps:.0}/s"
    );

    // Baseline 2: a batched Postgres insert of one row per message.
    sqlx::query("CREATE TABLE bench_raw (seq BIGINT PRIMARY KEY, subject TEXT NOT NULL, body JSONB NOT NULL)")
        .execute(&pool)
        .await?;
    let started = Instant::now();
    for chunk in payloads.chunks(1000) {
        let seqs: Vec<i64> = chunk.iter().map(|r| r.0).collect();
        let subjects: Vec<&str> = chunk.iter().map(|r| r.1.as_str()).collect();
        let bodies: Vec<String> = chunk
            .iter()
            .map(|r| String::from_utf8_lossy(&r.2).into_owned())
            .collect();
        sqlx::query("INSERT INTO bench_raw SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[]::jsonb[])")
            .bind(&seqs)
            .bind(&subjects)
            .bind(&bodies)
            .execute(&pool)
            .await?;
    }
    let insert_s = started.elapsed().as_secs_f64();
    let raw_insert_rps = messages as f64 / insert_s;
    eprintln!("raw batched insert: {messages} rows in {insert_s:.2}s = {raw_insert_rps:.0}/s");
    drop(payloads);

    // Rebuild each read model (blue/green).
    let mut by_projection = serde_json::Map::new();
    let mut lowest = f64::MAX;
    for p in projections::read_models() {
        let r = projections::rebuild::rebuild(&pool, &nats, p, &projections::rebuild::LogProgress)
            .await?;
        let eps = r.events as f64 / r.seconds;
        eprintln!(
            "rebuild {:<20} {:>9} messages in {:>7.2}s = {:>8.0}/s",
            r.projection, r.events, r.seconds, eps
        );
        if r.events > 0 {
            // (chat_messages reads the CHAT stream, which this log leaves empty.)
            lowest = lowest.min(eps);
            by_projection.insert(r.projection, json!(eps.round()));
        }
    }

    // Audit replay of everything, and reconcile.
    let head = js
        .get_stream(eventstore::EVENTS_STREAM)
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    let mut replay_runs = Vec::new();
    let lanes = LaneTimes::default();
    for run in 1..=replays {
        let report = projections::rebuild::audit_replay(
            &pool,
            &nats,
            &projections::read_models(),
            projections::rebuild::AuditPoint::Sequence(head),
            &lanes,
        )
        .await?;
        eprintln!(
            "audit replay of every read model (run {run} of {replays}): {:.2}s (lanes: {})",
            report.seconds,
            lanes.take()
        );
        replay_runs.push((report.seconds * 100.0).round() / 100.0);
    }
    let replay_s = replay_runs.iter().copied().fold(f64::MAX, f64::min);
    let started = Instant::now();
    let reconciled = projections::reconcile::reconcile(
        &pool,
        &nats,
        &projections::reconcile::ReconcileOptions::default(),
    )
    .await?;
    let reconcile_s = started.elapsed().as_secs_f64();
    eprintln!(
        "finance reconcile: {:.2}s ({} events folded, {})",
        reconcile_s,
        reconciled.events_folded,
        if reconciled.ok() {
            "reconciled"
        } else {
            "DIFFERENCES"
        }
    );
    anyhow::ensure!(
        reconciled.ok(),
        "the benchmark log does not reconcile:\n{}",
        projections::reconcile::render(&reconciled)
    );
    let lower = raw_read_eps.min(raw_insert_rps);
    let load_end = load_average();
    eprintln!(
        "lowest rebuild {lowest:.0}/s = {:.0}% of the lower raw baseline ({lower:.0}/s); \
         load average at the end {load_end}",
        100.0 * lowest / lower
    );
    println!(
        "{}",
        json!({
            "bench": "projections",
            "events": events,
            "messages": messages,
            "rebuild_eps": lowest.round(),
            "rebuild_eps_by_projection": by_projection,
            "raw_read_eps": raw_read_eps.round(),
            "raw_insert_rps": raw_insert_rps.round(),
            "replay_s": replay_s,
            "replay_runs_s": replay_runs,
            "reconcile_s": (reconcile_s * 100.0).round() / 100.0,
            "write_s": (build_s * 100.0).round() / 100.0,
            "load_avg_start": load_start,
            "load_avg_end": load_end,
        })
    );
    drop(pool);
    drop(nats_server);
    drop(pg);
    Ok(())
}
