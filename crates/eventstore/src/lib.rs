//! mychat's event store: a [`cqrs_es::EventStore`] on NATS JetStream, and everything that reads
//! the log.
//!
//! - [`streams`]: the `EVENTS` and `CHAT` streams (subjects, retention, `deny_delete`,
//!   `deny_purge`, direct get, duplicate window).
//! - [`envelope`]: the stored form of a commit. One command's events are one JetStream message on
//!   `ev.<aggregate_type>.<aggregate_id>`, so they are atomic by construction; each event carries
//!   the envelope of DESIGN.md §3 (aggregate type / id / sequence, event type / version, command,
//!   correlation and causation ids, actor, UTC time).
//! - [`store`]: [`JetStreamEventStore`], the cqrs-es store. A commit is conditional on the
//!   subject's last stream sequence (`Nats-Expected-Last-Subject-Sequence`) and deduplicated by the
//!   command id (`Nats-Msg-Id`); aggregates load with direct gets, never with a consumer.
//! - [`bus`]: [`CommandBus`], which runs a command (load → handle → commit) and reports the commit's
//!   stream sequence, retrying on a conflict; it keeps recently used aggregates in an LRU cache.
//! - [`group`]: [`GroupCommitter`], group commit: concurrent commits written as one atomic batch
//!   (one fsync), each with its own outcome (issue 7).

pub mod bus;
pub mod chat;
pub mod envelope;
pub mod group;
pub mod reader;
pub mod store;
pub mod streams;

pub use bus::{BusSettings, CommandBus, CommandError, CommandMeta, Committed};
pub use envelope::{Actor, Commit, RecordedEvent, StoredEvent};
pub use group::{CommitOutcome, GroupCommitSettings, GroupCommitter, PendingCommit};
pub use reader::{LogEntry, LogReader, ReadOptions, ReadUntil};
pub use store::{JetStreamAggregateContext, JetStreamEventStore};
pub use streams::{ensure_streams, StreamSettings, CHAT_STREAM, EVENTS_STREAM};

/// Metric (issue 8): counter of commands run by [`CommandBus::execute`], labelled `aggregate`
/// (the aggregate type) and `outcome` (`ok`, `duplicate`, `rejected`, `conflict`, `error`).
pub const METRIC_COMMANDS_TOTAL: &str = "mychat_commands_total";
/// Metric (issue 8): histogram of JetStream publish latency in seconds (publish → ack) of every
/// commit written to `EVENTS` and every chat message appended to `CHAT`, labelled `stream`
/// (`EVENTS`, `CHAT`) and `outcome` (`acked`, `error`, `timeout`).
pub const METRIC_PUBLISH_SECONDS: &str = "mychat_jetstream_publish_seconds";
