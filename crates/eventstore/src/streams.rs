//! Stream setup: `EVENTS` (the event log) and the chat streams (the shards `CHAT_1` …
//! `CHAT_N`, and the legacy `CHAT` of a deployment that had it; [`crate::chat`]).

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};

/// The event log: subjects `ev.<aggregate_type>.<aggregate_id>`.
pub const EVENTS_STREAM: &str = "EVENTS";

/// How the streams are created. Defaults: one replica, a 10-minute duplicate window for command
/// ids (`Nats-Msg-Id`), chat messages kept for 365 days, the chat layout the streams record (a new
/// deployment: [`crate::chat::DEFAULT_SHARDS`] shards).
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Replicas of each stream (1 in dev, 3 in a cluster).
    pub replicas: usize,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a repeated commit.
    pub duplicate_window: Duration,
    /// Age after which chat records leave the chat streams (`0` = forever).
    pub chat_max_age: Duration,
    /// Chat shard streams (1..=63). `None`: an existing deployment keeps the number its streams
    /// were created with, a new one gets [`crate::chat::DEFAULT_SHARDS`]. `Some(n)`: a new
    /// deployment gets `n`; an existing one with another number is refused (resharding is not
    /// supported).
    pub chat_shards: Option<u16>,
    /// Whether the chat shards' records are written in packs ([`crate::chat::ChatLayout::packed`]).
    /// `None`: an existing deployment keeps its recorded format, a new one gets
    /// [`crate::chat::DEFAULT_PACKED`]. `Some(true)` on a deployment that writes one record per
    /// message switches it to packs (positions stay increasing: every pack's follow the records
    /// before it; stop the chat writers first, so that no record is written after a pack);
    /// `Some(false)` on a packed deployment is refused (positions would go back).
    pub chat_packs: Option<bool>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(600),
            chat_max_age: Duration::from_secs(365 * 24 * 3600),
            chat_shards: None,
            chat_packs: None,
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

/// The configuration of chat stream `shard` of `layout` (0: the legacy `CHAT`, whose subjects
/// become `chat.*`): file storage, retention by age, no deletes and no purges, direct get (resumes
/// read a session's records with it), atomic batches allowed (the committer's batches), the
/// layout in the metadata.
pub fn chat_config(
    settings: &StreamSettings,
    layout: &crate::chat::ChatLayout,
    shard: u16,
) -> stream::Config {
    stream::Config {
        name: crate::chat::shard_stream(shard).to_string(),
        // A shard also carries its groups' records (`group.<shard>.*`, [`crate::group_chat`]).
        subjects: if shard == 0 {
            vec!["chat.*".to_string()]
        } else {
            vec![format!("chat.{shard}.*"), format!("group.{shard}.*")]
        },
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: settings.duplicate_window,
        max_age: settings.chat_max_age,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        metadata: if shard == 0 {
            Default::default()
        } else {
            layout.metadata(shard)
        },
        ..Default::default()
    }
}

async fn create_or_update(js: &jetstream::Context, config: stream::Config) -> anyhow::Result<()> {
    let name = config.name.clone();
    match js.get_stream(&name).await {
        Ok(_) => {
            js.update_stream(config)
                .await
                .with_context(|| format!("updating stream {name}"))?;
        }
        Err(_) => {
            if let Err(e) = js.create_stream(config.clone()).await {
                // Another process created it meanwhile: update it to this configuration.
                js.update_stream(config)
                    .await
                    .with_context(|| format!("creating stream {name}: {e}"))?;
            }
        }
    }
    Ok(())
}

/// The highest session id with records in the legacy `CHAT` stream (`None`: it has none).
async fn legacy_upto_session(stream: &stream::Stream) -> anyhow::Result<Option<i64>> {
    use futures::TryStreamExt as _;
    let mut subjects = stream.info_with_subjects("chat.>").await?;
    let mut upto: Option<i64> = None;
    while let Some((subject, _)) = subjects.try_next().await? {
        if let Some(id) = crate::chat::ChatLayout::session_of(&subject) {
            upto = Some(upto.map_or(id, |u| u.max(id)));
        }
    }
    Ok(upto)
}

/// Creates the streams, or updates them to the configuration above, and returns the chat
/// layout. Idempotent.
///
/// The chat layout is decided once: when the shard streams do not exist yet, they are created
/// with `settings.chat_shards` shards (unset: [`crate::chat::DEFAULT_SHARDS`]), and a legacy
/// `CHAT` stream (from before sharding) keeps the sessions it has records of (its subjects are
/// narrowed to `chat.*`); afterwards the layout is read from the shards' metadata, and a
/// `settings.chat_shards` set to another number is refused.
///
/// # Errors
/// When JetStream is not enabled, a stream's configuration cannot be applied, the configured
/// number of shards is outside 1..=[`crate::chat::MAX_SHARDS`], or it differs from the existing
/// layout's.
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> anyhow::Result<crate::chat::ChatLayout> {
    if let Some(n) = settings.chat_shards {
        crate::chat::check_shards(n)?;
    }
    create_or_update(js, events_config(settings)).await?;
    let layout = match crate::chat::ChatLayout::load(js).await? {
        Some(layout) => {
            if let Some(n) = settings.chat_shards {
                anyhow::ensure!(
                    layout.shards == n,
                    "the chat streams have {} shards, the configuration asks for {n}: \
                     resharding existing chat streams is not supported (set chat_shards to {}, \
                     or leave it unset to keep the recorded layout)",
                    layout.shards,
                    layout.shards
                );
            }
            match settings.chat_packs {
                Some(false) if layout.packed => anyhow::bail!(
                    "the chat shards are written in packs, the configuration asks for one record \
                     per message: going back is not supported (positions would decrease; leave \
                     chat_packs unset to keep the recorded format)"
                ),
                Some(true) if !layout.packed => {
                    tracing::info!(shards = layout.shards, "chat: the shards switch to packs");
                    crate::chat::ChatLayout {
                        packed: true,
                        ..layout
                    }
                }
                _ => layout,
            }
        }
        None => {
            let mut layout = crate::chat::ChatLayout::new(
                settings.chat_shards.unwrap_or(crate::chat::DEFAULT_SHARDS),
            );
            layout.packed = settings.chat_packs.unwrap_or(crate::chat::DEFAULT_PACKED);
            if let Ok(legacy) = js.get_stream(crate::chat::LEGACY_CHAT_STREAM).await {
                // Narrow the legacy stream's subjects first: the shards' may not overlap them.
                create_or_update(js, chat_config(settings, &layout, 0)).await?;
                layout.legacy_upto_session = legacy_upto_session(&legacy).await?;
                tracing::info!(
                    legacy_upto_session = ?layout.legacy_upto_session,
                    shards = layout.shards,
                    "chat: sharding; the legacy CHAT stream keeps the sessions it has"
                );
            }
            layout
        }
    };
    for (shard, _) in layout.streams() {
        create_or_update(js, chat_config(settings, &layout, shard)).await?;
    }
    Ok(layout)
}
