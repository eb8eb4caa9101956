//! The chat log: records of chat sessions (messages, read receipts, revocations, redactions) in
//! the chat streams, sharded by session.
//!
//! **Layout** ([`ChatLayout`]). Chat is spread over `N` shard streams `CHAT_1` … `CHAT_N`
//! (subjects `chat.<k>.<session_id>`, `k = session_id mod N + 1`): one stream serializes its
//! fsyncs, several streams fsync in parallel. A session always maps to one stream, so its
//! records keep one order and its resume position is that stream's sequence. A deployment that
//! started before sharding keeps its single `CHAT` stream (subjects `chat.<session_id>`, now
//! `chat.*` so that the shards' two-token subjects are not its own) for the sessions it already
//! had: every session up to [`ChatLayout::legacy_upto_session`] stays there, records of later
//! sessions go to the shards. The layout is written once, into the shard streams' metadata, when
//! they are created, and read from there by every process; changing `N` afterwards is refused
//! (the sessions would move).
//!
//! **Positions.** A record's *sequence* (`seq`) is its position in its session's stream
//! (resumes use it): its stream sequence when its shard is written one record per stream
//! message, `stream sequence × 1,024 + its index` in a pack ([`crate::pack`]). A message's
//! *id*, unique across the streams, is `seq × 64 + shard` ([`message_id`]; shard 0 = the legacy
//! `CHAT` stream).
//!
//! **Appends** ([`ChatLog`]) go through the one writer of their stream (a packed shard's
//! [`crate::pack::Packer`], or the stream's [`crate::GroupCommitter`]), each with a dedup id,
//! and are acknowledged with their position only once stored.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::group::{
    CommitError, CommitOutcome, GroupCommitOverrides, GroupCommitSettings, GroupCommitStats,
    GroupCommitter, PendingCommit,
};
use crate::pack::{PackAppend, PackOutcome, PackSettings, PackStats, Packer};

/// The legacy single chat stream (subjects `chat.<session_id>`), kept for the sessions it had.
pub const LEGACY_CHAT_STREAM: &str = "CHAT";
/// Most shard streams (shard numbers 1..=63; 0 is the legacy stream in message ids).
pub const MAX_SHARDS: u16 = 63;

/// Checks a configured number of shard streams (`chat_shards`).
///
/// # Errors
/// When `n` is outside 1..=[`MAX_SHARDS`]; the message names the setting.
pub fn check_shards(n: u16) -> anyhow::Result<u16> {
    anyhow::ensure!(
        (1..=MAX_SHARDS).contains(&n),
        "chat_shards: {n} is not a number of chat shards (1..={MAX_SHARDS}); leave it unset to \
         keep the streams' layout"
    );
    Ok(n)
}
/// Message ids carry the shard in their low 6 bits.
pub const SHARD_SPAN: i64 = 64;
/// Stream metadata keys of the layout.
pub const META_SHARDS: &str = "mychat.chat.shards";
/// See [`META_SHARDS`].
pub const META_LEGACY_UPTO: &str = "mychat.chat.legacy_upto_session";
/// See [`META_SHARDS`].
pub const META_SHARD: &str = "mychat.chat.shard";
/// See [`META_SHARDS`]: `packs` (records written in packs) or `records` (one per stream message;
/// a stream without the key was created before packs).
pub const META_FORMAT: &str = "mychat.chat.format";

/// The name of shard stream `shard` (1-based): `CHAT_<shard>`; 0 is [`LEGACY_CHAT_STREAM`].
pub fn shard_stream(shard: u16) -> &'static str {
    static NAMES: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        (0..=MAX_SHARDS)
            .map(|k| {
                if k == 0 {
                    LEGACY_CHAT_STREAM
                } else {
                    &*Box::leak(format!("CHAT_{k}").into_boxed_str())
                }
            })
            .collect()
    })[usize::from(shard.min(MAX_SHARDS))]
}

/// The id of the message at position `seq` of shard `shard` (0 = legacy `CHAT`):
/// `seq × 64 + shard`.
pub fn message_id(shard: u16, seq: u64) -> i64 {
    seq as i64 * SHARD_SPAN + i64::from(shard)
}

/// `(shard, seq)` of a message id ([`message_id`]'s inverse).
pub fn split_message_id(id: i64) -> (u16, u64) {
    (
        (id.rem_euclid(SHARD_SPAN)) as u16,
        id.div_euclid(SHARD_SPAN).max(0) as u64,
    )
}

/// How chat records are spread over streams (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatLayout {
    /// Shard streams `CHAT_1` … `CHAT_<shards>`.
    pub shards: u16,
    /// Sessions up to this id keep their records in the legacy `CHAT` stream (`None`: there is
    /// none).
    pub legacy_upto_session: Option<i64>,
    /// Whether the shard streams' records are written in packs ([`crate::pack`], several records
    /// per stream message, subject [`pack_subject`]) rather than one per stream message. The
    /// legacy `CHAT` stream always has one record per message.
    pub packed: bool,
}

impl Default for ChatLayout {
    fn default() -> Self {
        Self {
            shards: DEFAULT_SHARDS,
            legacy_upto_session: None,
            packed: DEFAULT_PACKED,
        }
    }
}

/// Whether a new deployment's chat shards are written in packs (see [`ChatLayout::packed`]):
/// yes. One record per stream message is one fsync per record, and a shard's records queue
/// behind each other's fsyncs; a pack carries every record that arrived while the last one was
/// written. Measured end to end on the project's 2-core machine ([`DEFAULT_SHARDS`]).
pub const DEFAULT_PACKED: bool = true;

/// The subject of shard `shard`'s packs: `chat.<shard>.packs`.
pub fn pack_subject(shard: u16) -> String {
    format!("chat.{shard}.packs")
}

/// Shard streams of a new deployment (one whose chat streams do not exist yet and whose
/// `chat_shards` is unset): 4, written in packs. Measured end to end on the project's 2-core
/// machine (nats-server 2.15.1, `sync_interval: always`, `mychat bench ws --sockets 10000 --rate
/// 5000 --duration 20`, one gateway node, alternated rounds on a busy machine): p99 with packs
/// on 4 shards 8.4–9.1 ms, on 2 shards 6.7–8.5 ms, on 16 shards 11.2–17.2 ms; one record per
/// message on 16 shards 14.6–34.2 ms. At 10,000 msg/s 4 shards beat 2 (p99 29–32 against 39–57
/// ms). Every shard is one more reader on each gateway node and for the chat projections.
/// docs/benchmarks.md, the gateway.
pub const DEFAULT_SHARDS: u16 = 4;

/// From this many shard streams on, the chat committers send plain publishes by default
/// ([`commit_settings`]).
pub const PLAIN_PUBLISH_SHARDS: u16 = 16;

/// How the committer of each chat stream groups appends by default, for a layout of `shards`
/// shard streams (a deployment's `[gateway_chat_commit]` is laid over it,
/// [`GroupCommitOverrides`]). Measured on the project's 2-core machine (nats-server 2.15.1,
/// `sync_interval: always`; docs/benchmarks.md, the gateway):
///
/// - **[`PLAIN_PUBLISH_SHARDS`] or more: plain publishes**, every record its own publish and
///   fsync, up to 1,024 in flight per stream. With 16 shards an atomic batch's staged file store
///   costs more than the fsyncs it saves, at 5,000 msg/s and at 10,000 (`chat_commit_probe`,
///   p99: plain 2.1–3.2 ms and 6.8 ms; batches from 16 with 16 in flight 4.9–9.4 ms and 126 ms).
/// - **Fewer: atomic batches** of 16 to 1,000 records, 16 in flight per stream (a smaller group
///   goes out as plain publishes). On fewer streams each carries more of the chat and plain
///   publishes queue behind each other's fsyncs: `mychat bench ws` at 5,000 msg/s, p99 with 8
///   shards 9.6–10.2 ms batched against 15.0 ms plain; with 4 shards at 10,000 msg/s plain
///   publishes saturate (925 ms against 46 ms batched).
///
/// Either way: no linger (chat is open loop: messages arrive at their senders' pace, not on
/// acks), and the last 8,192 dedup ids per stream remembered instead of 65,536 (chat records
/// are never checked against a subject's last sequence; a resend older than them goes out on
/// its own and nats-server's duplicate window answers it).
pub fn commit_settings(shards: u16) -> GroupCommitSettings {
    let grouping = if shards >= PLAIN_PUBLISH_SHARDS {
        GroupCommitSettings {
            max_batch: 1,
            max_in_flight: 1024,
            ..Default::default()
        }
    } else {
        GroupCommitSettings {
            max_batch: 1000,
            min_batch: 16,
            max_in_flight: 16,
            ..Default::default()
        }
    };
    GroupCommitSettings {
        linger: Duration::ZERO,
        known_subjects: 8_192,
        ..grouping
    }
}

/// Where one session's records live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatPlace {
    /// The shard number (0 = legacy `CHAT`).
    pub shard: u16,
    /// The stream's name.
    pub stream: &'static str,
    /// The session's subject in it.
    pub subject: String,
}

impl ChatLayout {
    /// A layout of `shards` shard streams (clamped to 1..=[`MAX_SHARDS`]) and no legacy stream.
    pub fn new(shards: u16) -> Self {
        Self {
            shards: shards.clamp(1, MAX_SHARDS),
            legacy_upto_session: None,
            packed: DEFAULT_PACKED,
        }
    }

    /// Whether shard `shard`'s records are written in packs (never the legacy stream's).
    pub fn packs(&self, shard: u16) -> bool {
        self.packed && shard != 0
    }

    /// Where session `session_id`'s records live.
    pub fn place(&self, session_id: i64) -> ChatPlace {
        if self
            .legacy_upto_session
            .is_some_and(|upto| session_id <= upto)
        {
            return ChatPlace {
                shard: 0,
                stream: LEGACY_CHAT_STREAM,
                subject: format!("chat.{session_id}"),
            };
        }
        let shard = (session_id.rem_euclid(i64::from(self.shards)) + 1) as u16;
        ChatPlace {
            shard,
            stream: shard_stream(shard),
            subject: format!("chat.{shard}.{session_id}"),
        }
    }

    /// Every chat stream of the layout, as `(shard, stream)`: the legacy one first (if any).
    pub fn streams(&self) -> Vec<(u16, &'static str)> {
        let legacy = self.legacy_upto_session.map(|_| (0, LEGACY_CHAT_STREAM));
        legacy
            .into_iter()
            .chain((1..=self.shards).map(|k| (k, shard_stream(k))))
            .collect()
    }

    /// The shard of a stream of this layout, by name.
    pub fn shard_of(&self, stream: &str) -> Option<u16> {
        self.streams()
            .into_iter()
            .find(|(_, s)| *s == stream)
            .map(|(k, _)| k)
    }

    /// The session a record's subject names (`chat.<session>` or `chat.<shard>.<session>`).
    pub fn session_of(subject: &str) -> Option<i64> {
        subject.rsplit('.').next()?.parse().ok()
    }

    /// The layout recorded in the shard streams' metadata (`CHAT_1`'s), if they exist.
    ///
    /// # Errors
    /// When JetStream cannot be asked, or the metadata is not a layout.
    pub async fn load(js: &jetstream::Context) -> anyhow::Result<Option<Self>> {
        let mut stream = match js.get_stream(shard_stream(1)).await {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        };
        let info = stream.info().await?;
        Self::from_metadata(&info.config.metadata).map(Some)
    }

    /// The layout in a shard stream's metadata.
    ///
    /// # Errors
    /// When a key is missing or not a number.
    pub fn from_metadata(
        metadata: &std::collections::HashMap<String, String>,
    ) -> anyhow::Result<Self> {
        let shards: u16 = metadata
            .get(META_SHARDS)
            .ok_or_else(|| anyhow::anyhow!("chat shard stream without {META_SHARDS}"))?
            .parse()?;
        let legacy_upto_session = match metadata.get(META_LEGACY_UPTO) {
            Some(v) => Some(v.parse()?),
            None => None,
        };
        let packed = match metadata.get(META_FORMAT).map(String::as_str) {
            None | Some("records") => false,
            Some("packs") => true,
            Some(other) => anyhow::bail!("chat shard stream with {META_FORMAT} {other:?}"),
        };
        Ok(Self {
            shards,
            legacy_upto_session,
            packed,
        })
    }

    /// The metadata of shard stream `shard` of this layout.
    pub fn metadata(&self, shard: u16) -> std::collections::HashMap<String, String> {
        let mut m = std::collections::HashMap::new();
        m.insert(META_SHARDS.to_string(), self.shards.to_string());
        m.insert(META_SHARD.to_string(), shard.to_string());
        if let Some(upto) = self.legacy_upto_session {
            m.insert(META_LEGACY_UPTO.to_string(), upto.to_string());
        }
        let format = if self.packed { "packs" } else { "records" };
        m.insert(META_FORMAT.to_string(), format.to_string());
        m
    }
}

/// The subject of a session's chat records under the default layout (tests and tools that have
/// no layout at hand; services use [`ChatLayout::place`]).
pub fn chat_subject(session_id: i64) -> String {
    ChatLayout::default().place(session_id).subject
}

/// One record in a chat stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChatRecord {
    /// A message sent by a participant.
    Message(ChatMessage),
    /// An administrator redacted messages of a session: read models blank their text;
    /// the messages, the redaction and who did it stay in the log.
    Redaction(Redaction),
    /// The recipient read a message. Stored once per message and reader.
    MessageRead(ReadReceipt),
    /// The sender revoked (withdrew) one of their messages. Stored once per message.
    MessageRevoked(Revocation),
}

impl ChatRecord {
    /// The record's kind as in its `Mychat-Record` header: `message`, `redaction`,
    /// `message_read`, `message_revoked`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Message(_) => "message",
            Self::MessageRead(_) => "message_read",
            Self::MessageRevoked(_) => "message_revoked",
            Self::Redaction(_) => "redaction",
        }
    }

    /// The session the record belongs to.
    pub fn session_id(&self) -> i64 {
        match self {
            Self::Message(m) => m.session_id,
            Self::MessageRead(r) => r.session_id,
            Self::MessageRevoked(r) => r.session_id,
            Self::Redaction(r) => r.session_id,
        }
    }
}

/// A read receipt: `read_by` has read message `message_seq` (the message's position in
/// the session's chat stream) of session `session_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReceipt {
    pub session_id: i64,
    /// The read message's position in the session's chat stream.
    pub message_seq: u64,
    /// The reader's users-table id (never the message's sender).
    pub read_by: i64,
    pub read_at: DateTime<Utc>,
}

/// A revocation: the sender withdrew message `message_seq` of session `session_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revocation {
    pub session_id: i64,
    /// The revoked message's position in the session's chat stream.
    pub message_seq: u64,
    /// The message's sender (only the sender may revoke).
    pub revoked_by: i64,
    pub revoked_at: DateTime<Utc>,
}

/// Messages redacted by an administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redaction {
    pub session_id: i64,
    /// The redacted messages' positions in the session's chat stream; empty = every
    /// message of the session up to this record.
    pub message_ids: Vec<i64>,
    /// The administrator (administrators-table id).
    pub admin_id: i64,
    pub reason: String,
    pub redacted_at: DateTime<Utc>,
}

/// A chat message as stored (contract b.2 ChatMessage, without the read-model fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub session_id: i64,
    /// The sender's users-table id.
    pub sender_id: i64,
    /// `user` or `counselor`.
    pub sender_type: String,
    /// `text`, `image` or `file`.
    pub content_type: String,
    pub content: String,
    pub file_url: String,
    /// The client's message id (`Nats-Msg-Id`): a resend with the same id is stored once.
    pub client_msg_id: String,
    pub sent_at: DateTime<Utc>,
}

impl ChatMessage {
    /// The record of a message `session_id` accepted from `sender_id`
    /// ([`domain::ChatSession::accept_message`]), sent at `sent_at`. A message without a client
    /// id gets a random one (a UUID), so that it is stored once too.
    pub fn accepted(
        session_id: i64,
        sender_id: i64,
        message: domain::AcceptedMessage,
        sent_at: DateTime<Utc>,
    ) -> Self {
        Self {
            session_id,
            sender_id,
            sender_type: message.sender_type.into(),
            content_type: message.content_type.into(),
            content: message.content,
            file_url: message.file_url,
            client_msg_id: message
                .client_msg_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            sent_at,
        }
    }
}

/// Why a chat record was not stored.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// The stream's committer got no answer (timeout, connection, the shard unavailable): the
    /// record may be stored; a retry with the same dedup id is safe.
    #[error("appending to {stream}: {source}")]
    Commit {
        /// The session's stream.
        stream: &'static str,
        source: CommitError,
    },
}

/// Where an appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record's position in its session's stream (the resume position): its stream
    /// sequence, or in a packed shard `stream sequence × 1,024 + its index in the pack`.
    pub seq: u64,
    /// The stream sequence of the stream message holding it (what projection checkpoints and
    /// read-your-writes waits count).
    pub stream_sequence: u64,
    /// The record's id across the chat streams ([`message_id`]).
    pub id: i64,
    /// True when the dedup id was already stored (a resend): `seq` is the first copy's.
    pub duplicate: bool,
}

/// The `Nats-Msg-Id` of a message: the client's message id scoped to the session and the sender
/// (JetStream deduplicates across the whole stream, and clients pick their ids independently).
pub fn message_dedup_id(message: &ChatMessage) -> String {
    format!(
        "{}:{}:{}",
        message.session_id, message.sender_id, message.client_msg_id
    )
}

/// The `Nats-Msg-Id` of a read receipt: one per message and reader.
pub fn read_dedup_id(r: &ReadReceipt) -> String {
    format!("read:{}:{}:{}", r.session_id, r.message_seq, r.read_by)
}

/// The `Nats-Msg-Id` of a revocation: one per message.
pub fn revoke_dedup_id(r: &Revocation) -> String {
    format!("revoke:{}:{}", r.session_id, r.message_seq)
}

/// The chat log of a process: the layout and one committer per chat stream (started on first
/// use). Cheap to clone.
#[derive(Clone)]
pub struct ChatLog {
    inner: Arc<ChatLogInner>,
}

struct ChatLogInner {
    js: jetstream::Context,
    layout: ChatLayout,
    settings: GroupCommitSettings,
    /// Per shard (0 = legacy), its committer once started (a shard written one record per
    /// stream message).
    committers: Vec<std::sync::OnceLock<GroupCommitter>>,
    /// Per shard, its packer once started (a packed shard, [`ChatLayout::packed`]).
    packers: Vec<tokio::sync::OnceCell<Packer>>,
}

impl std::fmt::Debug for ChatLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatLog")
            .field("layout", &self.inner.layout)
            .finish_non_exhaustive()
    }
}

impl ChatLog {
    /// The chat log of `layout` on `js`; its committers group appends as `overrides` laid over
    /// the layout's default say ([`commit_settings`]).
    pub fn new(
        js: jetstream::Context,
        layout: ChatLayout,
        overrides: GroupCommitOverrides,
    ) -> Self {
        Self {
            inner: Arc::new(ChatLogInner {
                js,
                layout,
                settings: overrides.over(commit_settings(layout.shards)),
                committers: (0..=layout.shards)
                    .map(|_| std::sync::OnceLock::new())
                    .collect(),
                packers: (0..=layout.shards)
                    .map(|_| tokio::sync::OnceCell::new())
                    .collect(),
            }),
        }
    }

    /// The chat log of the layout recorded in the streams ([`ChatLayout::load`]).
    ///
    /// # Errors
    /// When the shard streams do not exist ([`crate::ensure_streams`] creates them) or cannot be
    /// read.
    pub async fn open(
        js: jetstream::Context,
        overrides: GroupCommitOverrides,
    ) -> anyhow::Result<Self> {
        let layout = ChatLayout::load(&js)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the chat shard streams do not exist"))?;
        Ok(Self::new(js, layout, overrides))
    }

    /// The layout.
    pub fn layout(&self) -> &ChatLayout {
        &self.inner.layout
    }

    /// How its committers group appends: the layout's default with the deployment's
    /// overrides.
    pub fn commit_settings(&self) -> &GroupCommitSettings {
        &self.inner.settings
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.js
    }

    /// Where session `session_id`'s records live.
    pub fn place(&self, session_id: i64) -> ChatPlace {
        self.inner.layout.place(session_id)
    }

    async fn committer(&self, shard: u16) -> Result<GroupCommitter, CommitError> {
        let slot = &self.inner.committers[usize::from(shard)];
        if let Some(c) = slot.get() {
            return Ok(c.clone());
        }
        let name = shard_stream(shard);
        let stream = self
            .inner
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| CommitError(e.to_string()))?;
        Ok(slot
            .get_or_init(|| {
                GroupCommitter::start(
                    self.inner.js.client(),
                    stream,
                    name,
                    self.inner.settings.clone(),
                )
            })
            .clone())
    }

    /// The packer of packed shard `shard`, started on first use: its dedup window is the
    /// stream's `duplicate_window` (the window JetStream keeps for one-record streams).
    async fn packer(&self, shard: u16) -> Result<Packer, CommitError> {
        self.inner.packers[usize::from(shard)]
            .get_or_try_init(|| async {
                let name = shard_stream(shard);
                let mut stream = self
                    .inner
                    .js
                    .get_stream(name)
                    .await
                    .map_err(|e| CommitError(e.to_string()))?;
                let window = stream
                    .info()
                    .await
                    .map_err(|e| CommitError(e.to_string()))?
                    .config
                    .duplicate_window;
                Ok(Packer::start(
                    self.inner.js.clone(),
                    name,
                    pack_subject(shard),
                    PackSettings {
                        dedup_window: window,
                        ..Default::default()
                    },
                ))
            })
            .await
            .cloned()
    }

    /// Appends a message (dedup id [`message_dedup_id`]) and returns once it is durably stored.
    ///
    /// # Errors
    /// [`AppendError`] when it cannot be encoded or its stream did not answer (it may be stored;
    /// retrying with the same client message id is safe).
    pub async fn append_message(&self, message: &ChatMessage) -> Result<Appended, AppendError> {
        let record = ChatRecord::Message(message.clone());
        self.append(&record, &message_dedup_id(message)).await
    }

    /// Appends any record to its session's stream with `Nats-Msg-Id` = `dedup_id` and returns once
    /// it is durably stored (a repeat of `dedup_id` within the stream's duplicate window: the
    /// first copy's sequence, `duplicate: true`).
    ///
    /// # Errors
    /// As [`ChatLog::append_message`].
    pub async fn append(
        &self,
        record: &ChatRecord,
        dedup_id: &str,
    ) -> Result<Appended, AppendError> {
        let place = self.place(record.session_id());
        self.append_at(place, record.kind(), serde_json::to_vec(record)?, dedup_id)
            .await
    }

    /// Appends a group's record to the group's subject ([`ChatLayout::place_group`]) with its
    /// dedup id ([`crate::group_chat::GroupRecord::dedup_id`]) and returns once it is durably
    /// stored (a repeat: the first copy's sequence, `duplicate: true`).
    ///
    /// # Errors
    /// As [`ChatLog::append_message`].
    pub async fn append_group(
        &self,
        record: &crate::group_chat::GroupRecord,
    ) -> Result<Appended, AppendError> {
        let place = self.inner.layout.place_group(record.group_id());
        self.append_at(
            place,
            record.kind(),
            serde_json::to_vec(record)?,
            &record.dedup_id(),
        )
        .await
    }

    async fn append_at(
        &self,
        place: ChatPlace,
        kind: &'static str,
        body: Vec<u8>,
        dedup_id: &str,
    ) -> Result<Appended, AppendError> {
        let failed = |source| AppendError::Commit {
            stream: place.stream,
            source,
        };
        if self.inner.layout.packs(place.shard) {
            let packer = self.packer(place.shard).await.map_err(failed)?;
            let outcome = packer
                .append(PackAppend {
                    subject: place.subject,
                    kind: kind.to_string(),
                    dedup_id: dedup_id.to_string(),
                    body: body.into(),
                })
                .await
                .map_err(failed)?;
            let position = outcome.position();
            return Ok(Appended {
                seq: position,
                stream_sequence: outcome.stream_sequence(),
                id: message_id(place.shard, position),
                duplicate: matches!(outcome, PackOutcome::Duplicate { .. }),
            });
        }
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, dedup_id);
        headers.insert(HDR_RECORD, kind);
        let committer = self.committer(place.shard).await.map_err(failed)?;
        let outcome = committer
            .commit(PendingCommit {
                subject: place.subject.clone(),
                headers,
                body: body.into(),
                command_id: dedup_id.to_string(),
                expected_last_sequence: None,
            })
            .await
            .map_err(failed)?;
        let (seq, duplicate) = match outcome {
            CommitOutcome::Stored { sequence } => (sequence, false),
            CommitOutcome::Duplicate { sequence } => (sequence, true),
            CommitOutcome::Conflict => {
                return Err(failed(CommitError(
                    "a chat record has no expected sequence to conflict with".into(),
                )))
            }
        };
        Ok(Appended {
            seq,
            stream_sequence: seq,
            id: message_id(place.shard, seq),
            duplicate,
        })
    }

    /// The counters of each started packer, as `(stream, stats)`.
    pub fn pack_stats(&self) -> Vec<(&'static str, Arc<PackStats>)> {
        self.inner
            .packers
            .iter()
            .enumerate()
            .filter_map(|(k, p)| p.get().map(|p| (shard_stream(k as u16), p.stats())))
            .collect()
    }

    /// The counters of each started committer, as `(stream, stats)`.
    pub fn stats(&self) -> Vec<(&'static str, Arc<GroupCommitStats>)> {
        self.inner
            .committers
            .iter()
            .enumerate()
            .filter_map(|(k, c)| c.get().map(|c| (shard_stream(k as u16), c.stats_handle())))
            .collect()
    }
}

/// The header naming a chat record's kind ([`ChatRecord::kind`]).
pub const HDR_RECORD: &str = "Mychat-Record";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committers_default_follows_the_number_of_shards() {
        for shards in [PLAIN_PUBLISH_SHARDS, 32, MAX_SHARDS] {
            let s = commit_settings(shards);
            assert_eq!((s.max_batch, s.max_in_flight), (1, 1024), "{shards} shards");
        }
        for shards in [1, 4, 8, PLAIN_PUBLISH_SHARDS - 1] {
            let s = commit_settings(shards);
            assert_eq!(
                (s.max_batch, s.min_batch, s.max_in_flight),
                (1000, 16, 16),
                "{shards} shards"
            );
        }
        for shards in [1, 16] {
            let s = commit_settings(shards);
            assert_eq!((s.linger, s.known_subjects), (Duration::ZERO, 8_192));
        }
    }
}
