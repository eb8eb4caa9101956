//! Read-your-writes: wait until a projection has applied a given stream sequence.
//!
//! Projectors announce each checkpoint on core NATS ([`crate::runtime::checkpoint_subject`]); one
//! [`CheckpointWatch`] per process follows those announcements (and is handed its own process's
//! live checkpoints directly, [`crate::ProjectorSettings::watch`], without the trip through
//! nats-server) and keeps, per projection, the highest position announced. A waiter sleeps until
//! an announcement reaches its sequence: it is woken by the announcement itself, and a wake-up
//! costs a comparison, not a query.
//!
//! The table `projection_checkpoints` is read only (a) the first time a projection is asked
//! about, to learn where it already is, and (b) when a waiter has waited [`REFRESH_AFTER`] without
//! an announcement reaching it (core NATS delivers at most once: an announcement lost to a
//! reconnect must not cost a waiter its whole timeout). Both reads are shared by every waiter of
//! the process: at most one query per projection per [`REFRESH_AFTER`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::watch;

/// How long a waiter waits for an announcement before the watch reads the checkpoint table.
pub const REFRESH_AFTER: Duration = Duration::from_millis(250);

/// One projection's known position.
struct Known {
    /// The highest position announced or read (stream sequence).
    position: watch::Sender<u64>,
    /// When the table was last read for it (`None`: never).
    refreshed: Mutex<Option<tokio::time::Instant>>,
}

/// Follows projector checkpoints: the process's one registry of read-your-writes waiters.
/// Cheap to clone.
#[derive(Clone)]
pub struct CheckpointWatch {
    pool: PgPool,
    known: Arc<Mutex<HashMap<String, Arc<Known>>>>,
}

impl std::fmt::Debug for CheckpointWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointWatch").finish_non_exhaustive()
    }
}

impl CheckpointWatch {
    /// Subscribes to `mychat.checkpoint.>` on `nats`.
    ///
    /// # Errors
    /// When the subscription fails.
    pub async fn start(nats: async_nats::Client, pool: PgPool) -> anyhow::Result<Self> {
        let mut sub = nats.subscribe("mychat.checkpoint.>").await?;
        let this = Self {
            pool,
            known: Arc::default(),
        };
        let watch = this.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(name) = msg.subject.as_str().strip_prefix("mychat.checkpoint.") else {
                    continue;
                };
                let Ok(position) = std::str::from_utf8(&msg.payload)
                    .unwrap_or("")
                    .parse::<u64>()
                else {
                    continue;
                };
                watch.advance(name, position);
            }
        });
        Ok(this)
    }

    fn entry(&self, name: &str) -> Arc<Known> {
        self.known
            .lock()
            .expect("checkpoint watch lock")
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Known {
                    position: watch::Sender::new(0),
                    refreshed: Mutex::new(None),
                })
            })
            .clone()
    }

    /// Records that projection `name` has applied everything up to `position`, waking the
    /// waiters it satisfies. Positions only move forward.
    pub fn advance(&self, name: &str, position: u64) {
        self.entry(name).position.send_if_modified(|p| {
            if position > *p {
                *p = position;
                true
            } else {
                false
            }
        });
    }

    /// Reads `name`'s checkpoint from the table, unless another waiter did so less than
    /// [`REFRESH_AFTER`] ago (the `force` of a first sight skips that check).
    async fn refresh(&self, name: &str, known: &Known, force: bool) {
        {
            let mut refreshed = known.refreshed.lock().expect("checkpoint watch lock");
            let now = tokio::time::Instant::now();
            if !force && refreshed.is_some_and(|at| now.duration_since(at) < REFRESH_AFTER) {
                return;
            }
            *refreshed = Some(now);
        }
        let stored = sqlx::query_scalar::<_, i64>(
            "SELECT position FROM projection_checkpoints WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await;
        if let Ok(Some(position)) = stored {
            self.advance(name, position as u64);
        }
    }

    /// Waits until projection `name` has applied stream sequence `seq`, up to `timeout`. Returns
    /// whether it got there (a lagging projection is not an error: the write is durable anyway).
    pub async fn wait_for(&self, name: &str, seq: u64, timeout: Duration) -> bool {
        let known = self.entry(name);
        let mut rx = known.position.subscribe();
        if *rx.borrow_and_update() >= seq {
            return true;
        }
        let first_sight = known
            .refreshed
            .lock()
            .expect("checkpoint watch lock")
            .is_none();
        if first_sight {
            self.refresh(name, &known, true).await;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if *rx.borrow_and_update() >= seq {
                return true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return false;
            }
            let wake = (now + REFRESH_AFTER).min(deadline);
            match tokio::time::timeout_at(wake, rx.changed()).await {
                Ok(Ok(())) => {}
                // The sender lives in the registry as long as the watch does.
                Ok(Err(_)) => return false,
                // No announcement reached us for a while: look at the table (shared).
                Err(_) => self.refresh(name, &known, false).await,
            }
        }
    }
}
