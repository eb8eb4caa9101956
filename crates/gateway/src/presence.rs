//! Presence across nodes: the `presence` KV bucket (memory storage, one key per node).
//!
//! Each node writes `node.<node_id>` = [`NodePresence`] (JSON: the users with a socket on the
//! node, the sessions' bound users, the last local activity per session, and the time `at_ms`
//! it was written) whenever its sockets change (debounced 50 ms) and every third of the presence
//! timeout as a heartbeat; on a clean shutdown it deletes the key. Every node watches the whole
//! bucket (one watcher per node). An entry whose `at_ms + timeout_ms` has passed belongs to a
//! node that stopped heartbeating (crashed or cut off): its users count as offline. The bucket's
//! `max_age` (twice the timeout) removes such keys eventually.
//!
//! Other services (the admin API) read presence the same way: list the bucket's keys, read each
//! `node.*` value, drop the stale ones, union `users`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::Hub;

/// The KV bucket holding one presence entry per gateway node.
pub const BUCKET: &str = "presence";

/// One node's presence entry (the value of `node.<node_id>` in [`BUCKET`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodePresence {
    pub node_id: String,
    /// When the node wrote this entry, unix milliseconds (the node's clock).
    pub at_ms: i64,
    /// The node's presence timeout, milliseconds: the entry is stale after `at_ms + timeout_ms`.
    pub timeout_ms: i64,
    /// Users (users-table ids) with at least one socket on the node.
    pub users: Vec<i64>,
    /// Session id → users with a socket bound to it on the node.
    pub rooms: BTreeMap<i64, Vec<i64>>,
    /// Session id → last app-level activity (`ping`, join) seen on the node, unix seconds.
    pub activity: BTreeMap<i64, i64>,
}

impl NodePresence {
    /// True while the node's heartbeat is fresh at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.at_ms + self.timeout_ms > now_ms
    }
}

/// The key of a node's entry.
pub fn key(node_id: &str) -> String {
    format!("node.{node_id}")
}

/// Creates (or opens) the presence bucket, with `replicas` replicas (1 on a single server, 3 on a
/// cluster).
///
/// # Errors
/// When JetStream refuses the bucket.
pub async fn bucket(
    js: &jetstream::Context,
    timeout: Duration,
    replicas: usize,
) -> anyhow::Result<kv::Store> {
    if let Ok(store) = js.get_key_value(BUCKET).await {
        return Ok(store);
    }
    Ok(js
        .create_key_value(kv::Config {
            bucket: BUCKET.to_string(),
            description: "gateway presence: one entry per node".into(),
            history: 1,
            max_age: timeout * 2,
            storage: jetstream::stream::StorageType::Memory,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await?)
}

/// Runs the node's presence: the watcher of the other nodes' entries and the writer of its own,
/// until `shutdown` (then the node's key is deleted: its users go offline at once).
pub async fn run(hub: Arc<Hub>, kv: kv::Store, shutdown: CancellationToken) {
    let own = key(hub.node_id());
    let watcher = {
        let (hub, kv, shutdown, own) = (hub.clone(), kv.clone(), shutdown.clone(), own.clone());
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                match kv.watch_all().await {
                    Ok(mut watch) => loop {
                        tokio::select! {
                            entry = watch.next() => match entry {
                                Some(Ok(entry)) if entry.key != own => {
                                    let node = entry.key.trim_start_matches("node.").to_string();
                                    match entry.operation {
                                        kv::Operation::Put => match serde_json::from_slice::<NodePresence>(&entry.value) {
                                            Ok(p) => hub.presence_remote(node, Some(p)),
                                            Err(e) => tracing::warn!(error = %e, key = entry.key, "bad presence entry"),
                                        },
                                        _ => hub.presence_remote(node, None),
                                    }
                                }
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::warn!(error = %e, "presence watch failed");
                                    break;
                                }
                                None => break,
                            },
                            _ = shutdown.cancelled() => return,
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "presence watch"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        })
    };
    let heartbeat = (hub.config().presence_timeout / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(heartbeat);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = hub.presence_changed() => {
                // Debounce: a burst of connects becomes one write.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            _ = shutdown.cancelled() => break,
        }
        let entry = hub.local_presence();
        match serde_json::to_vec(&entry) {
            Ok(body) => {
                if let Err(e) = kv.put(&own, body.into()).await {
                    tracing::warn!(error = %e, "writing presence");
                }
            }
            Err(e) => tracing::error!(error = %e, "encoding presence"),
        }
    }
    if let Err(e) = kv.delete(&own).await {
        tracing::warn!(error = %e, "deleting presence on shutdown");
    }
    watcher.abort();
}
