//! mychat's event store: a [`cqrs_es::EventStore`] on NATS JetStream, and everything that reads
//! the log.
//!
//! - [`streams`]: the `EVENTS` stream and the chat streams (subjects, retention, `deny_delete`,
//!   `deny_purge`, direct get, duplicate window).
//! - [`chat`]: the chat log: records, the layout of the chat shards, [`ChatLog`] (appends).
//! - [`chat_read`]: chat records by position, whichever way their shard is written.
//! - [`pack`]: packs, several records in one stream message, and their writer ([`pack::Packer`]).
//! - [`group_chat`]: group conversations' records in the chat shards (their own subject per group).
//! - [`reader`]: [`LogReader`], the one reader of a stream for replays and live paths.
//! - [`envelope`]: the stored form of a commit. One command's events are one JetStream message on
//!   `ev.<aggregate_type>.<aggregate_id>`, so they are atomic by construction; each event carries
//!   the envelope of DESIGN.md §3 (aggregate type / id / sequence, event type / version, command,
//!   correlation and causation ids, actor, UTC time).
//! - [`store`]: [`JetStreamEventStore`], the cqrs-es store. A commit is conditional on the
//!   subject's last stream sequence (`Nats-Expected-Last-Subject-Sequence`) and deduplicated by the
//!   command id (`Nats-Msg-Id`); aggregates load with direct gets, never with a consumer.
//! - [`bus`]: [`CommandBus`], which runs a command (load → handle → commit) and reports the commit's
//!   stream sequence, retrying on a conflict; it keeps recently used aggregates in an LRU cache.
//! - [`group`]: [`GroupCommitter`], the one write path of a stream: concurrent appends written as
//!   one atomic batch (one fsync) or as plain publishes, each with its own outcome.

pub mod bus;
pub mod chat;
pub mod chat_read;
pub mod envelope;
pub mod group;
pub mod group_chat;
pub mod pack;
pub mod reader;
pub mod store;
pub mod streams;

pub use bus::{BusSettings, CommandBus, CommandError, CommandMeta, Committed};
pub use chat::{ChatLayout, ChatLog};
pub use envelope::{Actor, Commit, RecordedEvent, StoredEvent};
pub use group::{
    CommitOutcome, GroupCommitOverrides, GroupCommitSettings, GroupCommitter, PendingCommit,
    WriteCycle,
};
pub use reader::{LogEntry, LogReader, ReadOptions, ReadUntil};
pub use store::{JetStreamAggregateContext, JetStreamEventStore};
pub use streams::{ensure_streams, StreamSettings, EVENTS_STREAM};

/// Metric: counter of commands run by [`CommandBus::execute`], labelled `aggregate`
/// (the aggregate type) and `outcome` (`ok`, `duplicate`, `rejected`, `conflict`, `error`).
pub const METRIC_COMMANDS_TOTAL: &str = "mychat_commands_total";
/// Metric: histogram of JetStream publish latency in seconds (publish → ack) of every commit
/// written to `EVENTS` and every chat record appended to a chat stream, labelled `stream`
/// (`EVENTS`, `CHAT_1`, …) and `outcome` (`acked`, `error`, `timeout`).
pub const METRIC_PUBLISH_SECONDS: &str = "mychat_jetstream_publish_seconds";
