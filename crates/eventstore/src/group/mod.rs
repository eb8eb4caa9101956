//! [`GroupCommitter`]: the one write path of a stream. Commands' commits on `EVENTS` and every
//! chat record on the chat shards go through a committer of their stream (one task per stream
//! and process); each append carries a dedup id (`Nats-Msg-Id`) and, for an aggregate's commit,
//! the subject's expected last sequence.
//!
//! With `sync_interval: always` every JetStream write is fsynced before its ack, so one publish
//! per append is bounded by the disk (DESIGN §3: ~2.2k/s sequential, ~4.4k/s pipelined on the
//! project's machines), while an *atomic batch* (ADR-50, stream `allow_atomic_publish`) is stored
//! with one fsync for all its messages. What a committer does with what it is given, per
//! [`GroupCommitSettings`] (the stream's strategy: batches, plain publishes, or both):
//!
//! - **No added latency when alone.** When nothing is in flight an append goes out at once, as a
//!   plain publish (a batch of one costs an extra round trip on the server). Groups smaller than
//!   [`GroupCommitSettings::min_batch`] also go out as concurrent plain publishes (a
//!   `min_batch` above `max_batch` never batches).
//! - **Gathering.** While up to [`GroupCommitSettings::max_in_flight`] writes are in flight, new
//!   appends queue; each free slot takes everything queued (up to
//!   [`GroupCommitSettings::max_batch`] messages) as one atomic batch. When a batch settles, a
//!   busy committer waits up to [`GroupCommitSettings::linger`] for the appends it answered to
//!   come back (closed-loop clients send their next command on the ack), so that their next
//!   round is one batch rather than two halves. Each message keeps its own `Nats-Msg-Id` and,
//!   when it has one, `Nats-Expected-Last-Subject-Sequence`.
//! - **Never two appends that could fail each other in flight at once:** at most one append per
//!   dedup id, and one per subject among those with an expected sequence; a later one waits for
//!   the earlier to settle. The committer also remembers the last stream sequence it stored per
//!   subject (bounded LRU), so a commit whose expected sequence is already known to be stale is
//!   answered without a round trip, and the dedup ids it stored lately: a resend of one goes out
//!   as a plain publish, where JetStream answers the duplicate itself (in an atomic batch it would
//!   make the whole batch fail).
//! - **A failed check fails nobody else.** nats-server 2.15 rejects the *whole* batch when one
//!   message's check fails and reports it on the commit message's reply without saying which
//!   message (observed: `err_code` 10071 "wrong last sequence: N", 10164 for a stale subject
//!   repeated inside the batch, 10201 "atomic publish batch contains duplicate message id" when a
//!   `Nats-Msg-Id` is already stored). On a sequence error the committer reads each subject's last
//!   sequence with a direct get, answers the stale commits, and sends the others again; on a
//!   duplicate-id error (or when it cannot tell) it sends the batch's appends one by one as plain
//!   publishes, where JetStream answers each individually.
//! - **Outcomes.** Each append gets [`CommitOutcome::Stored`] (its own stream sequence: an atomic
//!   batch is stored at consecutive sequences ending at the ack's `seq`),
//!   [`CommitOutcome::Duplicate`] (the dedup id is already in the stream, at that sequence) or
//!   [`CommitOutcome::Conflict`] (the subject moved, and not because of this command).

mod commit;
mod committer;
pub(crate) mod wire;
mod write;

pub use commit::{
    CommitError, CommitOutcome, GroupCommitOverrides, GroupCommitSettings, GroupCommitStats,
    PendingCommit, WriteCycle,
};
pub use committer::GroupCommitter;
pub use wire::{
    write_single, ERR_BATCH_DUPLICATE_MSG_ID, ERR_BATCH_WRONG_LAST_SEQUENCE,
    ERR_WRONG_LAST_SEQUENCE,
};
