//! The order expiry sweep (contract b.4 `expire`, section f.9): every few minutes, orders still
//! awaiting payment some time after they were placed are cancelled by the system, with a
//! notification to the user (the `OrderCancelled` event's, from the notifications projection).
//! MyChat's scheduler ran every 5 minutes and expired orders unpaid for 30 minutes, writing
//! status 2; the intended status, written here, is 3 (cancelled).
//!
//! The sweep reads the candidates from the `orders` read model and sends each an
//! `Order::Expire` command (command id `expire:<order_id>`). The aggregate is the judge: an order
//! paid (or cancelled) since the read model saw it refuses the command, so a payment that lands
//! first always wins, and two projector processes sweeping at once expire each order once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{Order, OrderCommand, OrderError};
use eventstore::{Actor, CommandBus, CommandError, CommandMeta};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// When and what the sweep expires.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpirySettings {
    /// Seconds between sweeps (MyChat: 300).
    pub every_seconds: u64,
    /// An order still awaiting payment this many seconds after it was placed expires
    /// (MyChat: 1,800).
    pub unpaid_seconds: u64,
    /// Most orders expired by one sweep (the rest wait for the next).
    pub batch: i64,
}

impl Default for ExpirySettings {
    fn default() -> Self {
        Self {
            every_seconds: 300,
            unpaid_seconds: 1800,
            batch: 500,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExpiryReport {
    /// Orders cancelled by this sweep.
    pub expired: u64,
    /// Candidates the aggregate refused (paid or cancelled since the read model saw them).
    pub skipped: u64,
}

/// One sweep at `now`: expires the orders of the read model still awaiting payment (status 0)
/// that were placed more than `settings.unpaid_seconds` before `now`, oldest first, at most
/// `settings.batch` of them.
///
/// # Errors
/// A database error, or a command that failed for a reason other than the order's state (the
/// sweep stops there; the next one retries).
pub async fn expire_unpaid(
    pool: &PgPool,
    bus: &CommandBus,
    settings: &ExpirySettings,
    now: DateTime<Utc>,
) -> anyhow::Result<ExpiryReport> {
    let cutoff = now - chrono::Duration::seconds(settings.unpaid_seconds as i64);
    let candidates: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM orders WHERE status = 0 AND created_at < $1 ORDER BY created_at, id LIMIT $2",
    )
    .bind(cutoff)
    .bind(settings.batch.max(1))
    .fetch_all(pool)
    .await?;
    let mut report = ExpiryReport::default();
    let reason = format!(
        "expired: not paid within {} minutes",
        settings.unpaid_seconds / 60
    );
    for id in candidates {
        let meta = CommandMeta {
            command_id: format!("expire:{id}"),
            ..CommandMeta::new(Actor::system())
        };
        let command = OrderCommand::Expire {
            reason: reason.clone(),
            expired_at: now,
        };
        match bus.execute::<Order>(&id.to_string(), command, &meta).await {
            Ok(_) => {
                report.expired += 1;
                tracing::info!(order_id = id, "order expired unpaid");
            }
            Err(CommandError::Rejected(OrderError::NotCancellable(_) | OrderError::NotFound)) => {
                report.skipped += 1
            }
            Err(e) => return Err(anyhow::anyhow!("expiring order {id}: {e}")),
        }
    }
    Ok(report)
}

/// Sweeps every `settings.every_seconds` until `shutdown` (the first sweep right away). A failed
/// sweep is logged and retried at the next tick.
pub async fn run(
    pool: PgPool,
    bus: CommandBus,
    settings: ExpirySettings,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(settings.every_seconds.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match expire_unpaid(&pool, &bus, &settings, Utc::now()).await {
            Ok(r) if r.expired + r.skipped > 0 => {
                tracing::info!(
                    expired = r.expired,
                    skipped = r.skipped,
                    "order expiry sweep"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "order expiry sweep failed"),
        }
    }
}
