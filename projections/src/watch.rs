//! Read-your-writes: wait until a projection has applied a given stream sequence.
//!
//! Projectors announce each checkpoint on core NATS ([`crate::runtime::checkpoint_subject`]); a
//! [`CheckpointWatch`] follows those announcements (and falls back to reading the checkpoint
//! table), so an API handler can answer a command only once the read model that the client will
//! read next shows it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::watch;

/// Follows projector checkpoints. Cheap to clone.
#[derive(Clone)]
pub struct CheckpointWatch {
    pool: PgPool,
    positions: watch::Receiver<Arc<HashMap<String, u64>>>,
}

impl CheckpointWatch {
    /// Subscribes to `mychat.checkpoint.>` on `nats`.
    ///
    /// # Errors
    /// When the subscription fails.
    pub async fn start(nats: async_nats::Client, pool: PgPool) -> anyhow::Result<Self> {
        let mut sub = nats.subscribe("mychat.checkpoint.>").await?;
        let (tx, rx) = watch::channel(Arc::new(HashMap::new()));
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(name) = msg.subject.as_str().strip_prefix("mychat.checkpoint.") else {
                    continue;
                };
                let Ok(pos) = std::str::from_utf8(&msg.payload)
                    .unwrap_or("")
                    .parse::<u64>()
                else {
                    continue;
                };
                tx.send_modify(|m| {
                    let entry = Arc::make_mut(m).entry(name.to_string()).or_insert(0);
                    *entry = (*entry).max(pos);
                });
            }
        });
        Ok(Self {
            pool,
            positions: rx,
        })
    }

    async fn stored(&self, name: &str) -> u64 {
        sqlx::query_scalar::<_, i64>("SELECT position FROM projection_checkpoints WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .ok()
            .flatten()
            .unwrap_or(0) as u64
    }

    /// Waits until projection `name` has applied stream sequence `seq`, up to `timeout`. Returns
    /// whether it got there (a lagging projection is not an error: the write is durable anyway).
    pub async fn wait_for(&self, name: &str, seq: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.positions.clone();
        loop {
            let announced = rx.borrow_and_update().get(name).copied().unwrap_or(0);
            if announced >= seq || self.stored(name).await >= seq {
                return true;
            }
            let poll = tokio::time::Instant::now() + Duration::from_millis(100);
            tokio::select! {
                _ = rx.changed() => {}
                _ = tokio::time::sleep_until(poll.min(deadline)) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
        }
    }
}
