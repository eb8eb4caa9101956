//! The event store's stage of the command benchmark: closed-loop committers crediting counselor
//! accounts through the [`CommandBus`], the committer's write cycle over a stage ([`print_cycle`]),
//! and the shape of the message the store commits for that command ([`store_message`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::{AccountCommand, CounselorAccount};
use eventstore::{Actor, CommandBus, CommandMeta, WriteCycle};

use super::{figures, stop_after, Figures};

/// Prints a committer's write cycle over one stage (the difference of two
/// [`eventstore::GroupCommitStats::cycle`] readings): the mean round trip of a write and the mean
/// turnaround (from the last write in flight settling to the next write's send).
pub(super) fn print_cycle(cycle: &WriteCycle) {
    println!(
        "{:<34} write {:>5.2} ms + turnaround {:>5.2} ms",
        "  its commit cycle:",
        cycle.mean_write_ms(),
        cycle.mean_turnaround_ms()
    );
}

fn credit(account: i64, session: i64) -> AccountCommand {
    AccountCommand::CreditEarnings {
        counselor_id: account,
        session_id: session,
        order_id: session,
        amount: 700,
        at: chrono::Utc::now(),
    }
}

/// The headers and body the store commits for one [`credit`] (the store stage's command) on a
/// new account, as [`eventstore::store::pending_commit`] builds them.
pub(super) fn store_message() -> anyhow::Result<(async_nats::HeaderMap, bytes::Bytes)> {
    use cqrs_es::Aggregate as _;
    let account = 1_000_001i64;
    let mut aggregate = CounselorAccount::default();
    let events = futures::executor::block_on(async {
        let sink = cqrs_es::event_sink::EventSink::default();
        aggregate.handle(credit(account, 1), &(), &sink).await?;
        anyhow::Ok(sink.collect().await)
    })?;
    let meta = CommandMeta::new(Actor::system());
    let commit =
        eventstore::store::new_commit::<CounselorAccount>(&events, &account.to_string(), 0, &meta)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let pending = eventstore::store::pending_commit::<domain::AccountError>(&commit, 0)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((pending.headers, pending.body))
}

/// The size of `headers` as sent (`Name: value\r\n` per value), bytes.
pub(super) fn header_bytes(headers: &async_nats::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, values)| {
            let name: &str = name.as_ref();
            values
                .iter()
                .map(|v| name.len() + v.as_str().len() + 4)
                .sum::<usize>()
        })
        .sum()
}

/// `committers` tasks, each crediting its own counselor account (a distinct aggregate); with
/// `contention` (0..1) of the commands going to one of 4 shared accounts instead. With
/// `rate_per_second`, commands are issued open-loop at that total rate.
pub(super) async fn store_stage(
    bus: &CommandBus,
    run: u64,
    committers: usize,
    contention: f64,
    rate_per_second: Option<f64>,
    d: Duration,
) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..committers {
        let bus = bus.clone();
        let stop = stop.clone();
        let count = count.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            let mut i = 0i64;
            let mut interval = rate_per_second.map(|r| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(committers as f64 / r));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                t
            });
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = &mut interval {
                    t.tick().await;
                }
                i += 1;
                // A cheap deterministic spread: every 10th step of a per-task counter is shared.
                let shared = contention > 0.0
                    && ((i as u64 * 7919 + c as u64 * 104_729) % 1000)
                        < (contention * 1000.0) as u64;
                let account = if shared {
                    format!("{run}00{}", i % 4)
                } else {
                    format!("{run}{c:04}")
                };
                let session = (c as i64) * 10_000_000 + i;
                let t = Instant::now();
                match bus
                    .execute::<CounselorAccount>(
                        &account,
                        credit(account.parse().unwrap_or(0), session),
                        &CommandMeta::new(Actor::system()),
                    )
                    .await
                {
                    Ok(_) => {
                        micros.push(t.elapsed().as_micros() as u64);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            micros
        }));
    }
    let all = stop_after(d, &stop, tasks).await;
    let elapsed = start.elapsed();
    figures(
        count.load(Ordering::Relaxed),
        elapsed,
        all,
        errors.load(Ordering::Relaxed),
    )
}
