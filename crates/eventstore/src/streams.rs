//! Stream setup: `EVENTS` (the event log) and `CHAT` (chat messages).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

/// The event log: subjects `ev.<aggregate_type>.<aggregate_id>`.
pub const EVENTS_STREAM: &str = "EVENTS";
/// Chat messages: subjects `chat.<session_id>`.
pub const CHAT_STREAM: &str = "CHAT";

/// How the streams are created. Defaults: one replica, a 10-minute duplicate window for command
/// ids (`Nats-Msg-Id`), chat messages kept for 365 days.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Replicas of each stream (1 in dev, 3 in a cluster).
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a repeated commit.
    pub duplicate_window: Duration,
    /// Age after which chat messages leave `CHAT` (`0` = forever).
    pub chat_max_age: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(600),
            chat_max_age: Duration::from_secs(365 * 24 * 3600),
        }
    }
}

/// The `EVENTS` stream's configuration: file storage, no age limit, no deletes and no purges (the
/// log is the audit record), direct get for loading aggregates, atomic batches allowed.
pub fn events_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.to_string(),
        subjects: vec!["ev.>".to_string()],
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// The `CHAT` stream's configuration: file storage, retention by age, atomic batches allowed
/// (the gateway's group commit of chat records, issue 5: [`crate::chat::ChatCommitter`]).
pub fn chat_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: CHAT_STREAM.to_string(),
        subjects: vec!["chat.>".to_string()],
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        max_age: settings.chat_max_age,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// Creates the streams, or updates them to the configuration above. Idempotent.
///
/// # Errors
/// When JetStream is not enabled or a stream's configuration cannot be applied.
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<()> {
    for config in [events_config(settings), chat_config(settings)] {
        let name = config.name.clone();
        match js.get_stream(&name).await {
            Ok(_) => {
                js.update_stream(config)
                    .await
                    .with_context(|| format!("updating stream {name}"))?;
            }
            Err(_) => {
                js.create_stream(config)
                    .await
                    .with_context(|| format!("creating stream {name}"))?;
            }
        }
    }
    Ok(())
}
