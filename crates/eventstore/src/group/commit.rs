//! What a committer is given and what it answers: a [`PendingCommit`], its [`CommitOutcome`]
//! or [`CommitError`], the [`GroupCommitSettings`] that shape the grouping (and the
//! [`GroupCommitOverrides`] a deployment lays over a default), and the [`GroupCommitStats`]
//! counters of what the committer did.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use serde::Deserialize;

/// How commits are grouped. Defaults: batches of 8 to 256 commits, 1 write in flight, a linger
/// of 1 ms, a queue of 65 536 commits, the last sequence of 65 536 subjects remembered.
///
/// One write in flight, measured (`mychat bench commands`, 2-core machine, nats-server 2.15.1,
/// `sync_interval: always`): nats-server stages each atomic batch of an R1 file stream in a
/// file store of its own (created, fsynced and deleted per batch), serially in the stream's loop,
/// so a second batch in flight only waits there, and splits the queue into smaller batches that
/// each pay that fixed cost: HTTP `order/create` at 64 clients 4.0–4.4k/s with 1 in flight,
/// 3.0–3.7k/s with 2, 4.0k/s with 4; the store at 64 committers 10.4k/s with 1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct GroupCommitSettings {
    /// Most commits in one atomic batch (nats-server allows up to 1000 messages).
    pub max_batch: usize,
    /// Fewest commits worth an atomic batch: a smaller group goes out as concurrent plain
    /// publishes (measured on the project's machine: an atomic batch costs a fixed ~10-20 ms
    /// round trip on nats-server 2.15.1 under load, a plain publish ~0.5-0.7 ms).
    pub min_batch: usize,
    /// Most writes (batches or single publishes) awaiting their ack at once.
    pub max_in_flight: usize,
    /// How long a busy committer (writes in flight, or its last write an atomic batch) with a
    /// free slot waits, when an atomic batch settles, for the appends that batch answered to
    /// come back before it sends the next write: until the queue holds what it held plus those
    /// answered (at most `max_batch`), or this long, or until nothing arrived for a quarter of
    /// this (an open loop, whose answered do not come back at once). 0 never waits; an idle
    /// committer never waits. Under closed-loop clients (each sends its next command when its
    /// last is acknowledged) this turns alternating half batches into one batch a round, each
    /// atomic batch paying its fixed cost once (`mychat bench commands`, 64 committers: 12.2k/s
    /// with 0, 16.4k/s with 1 ms). A linger that waits in vain (it ends with the queue under
    /// half of what it waited for) is not tried for the next 16 writes that would linger:
    /// clients that come back later than the linger (HTTP clients, answered once the read model
    /// shows their write) would only be held by it.
    #[serde(with = "micros")]
    pub linger: Duration,
    /// Commits that may wait for the committer before `commit` itself waits (back-pressure).
    pub queue: usize,
    /// Subjects whose last stored sequence the committer remembers (LRU), and dedup ids it
    /// stored lately (LRU, as many): each entry ~100 bytes of the process's memory.
    pub known_subjects: usize,
    /// How long a write may wait for its ack.
    #[serde(with = "micros")]
    pub ack_timeout: Duration,
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_micros() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}

impl Default for GroupCommitSettings {
    fn default() -> Self {
        Self {
            max_batch: 256,
            min_batch: 8,
            max_in_flight: 1,
            linger: Duration::from_millis(1),
            queue: 65_536,
            known_subjects: 65_536,
            ack_timeout: Duration::from_secs(10),
        }
    }
}

/// The fields of [`GroupCommitSettings`] a deployment set, each unset (`None`) or set: laid
/// over a default chosen elsewhere ([`GroupCommitOverrides::over`]), so that an unset field
/// keeps following that default (the chat committers' default follows the chat layout,
/// [`crate::chat::commit_settings`]). The same field names as [`GroupCommitSettings`] in TOML
/// and the environment (`linger` and `ack_timeout` in microseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(default)]
pub struct GroupCommitOverrides {
    /// [`GroupCommitSettings::max_batch`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_batch: Option<usize>,
    /// [`GroupCommitSettings::min_batch`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_batch: Option<usize>,
    /// [`GroupCommitSettings::max_in_flight`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
    /// [`GroupCommitSettings::linger`] (microseconds).
    #[serde(with = "micros_opt", skip_serializing_if = "Option::is_none")]
    pub linger: Option<Duration>,
    /// [`GroupCommitSettings::queue`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
    /// [`GroupCommitSettings::known_subjects`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub known_subjects: Option<usize>,
    /// [`GroupCommitSettings::ack_timeout`] (microseconds).
    #[serde(with = "micros_opt", skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<Duration>,
}

impl GroupCommitOverrides {
    /// `base` with the fields set here replaced.
    pub fn over(&self, base: GroupCommitSettings) -> GroupCommitSettings {
        GroupCommitSettings {
            max_batch: self.max_batch.unwrap_or(base.max_batch),
            min_batch: self.min_batch.unwrap_or(base.min_batch),
            max_in_flight: self.max_in_flight.unwrap_or(base.max_in_flight),
            linger: self.linger.unwrap_or(base.linger),
            queue: self.queue.unwrap_or(base.queue),
            known_subjects: self.known_subjects.unwrap_or(base.known_subjects),
            ack_timeout: self.ack_timeout.unwrap_or(base.ack_timeout),
        }
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Every field set: these settings whatever the default.
impl From<GroupCommitSettings> for GroupCommitOverrides {
    fn from(s: GroupCommitSettings) -> Self {
        Self {
            max_batch: Some(s.max_batch),
            min_batch: Some(s.min_batch),
            max_in_flight: Some(s.max_in_flight),
            linger: Some(s.linger),
            queue: Some(s.queue),
            known_subjects: Some(s.known_subjects),
            ack_timeout: Some(s.ack_timeout),
        }
    }
}

mod micros_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_micros() as u64),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_micros))
    }
}

/// One append, ready to publish: a command's commit, or a chat record.
#[derive(Debug, Clone)]
pub struct PendingCommit {
    /// `ev.<aggregate_type>.<aggregate_id>`, `chat.<shard>.<session_id>`.
    pub subject: String,
    /// The message's headers, `Nats-Msg-Id` included, without the batch headers and without
    /// `Nats-Expected-Last-Subject-Sequence` (the committer adds them).
    pub headers: HeaderMap,
    /// The encoded [`crate::Commit`] or chat record.
    pub body: Bytes,
    /// The dedup id (the command id; already in `headers` as `Nats-Msg-Id`).
    pub command_id: String,
    /// For an aggregate's commit: the stream sequence of the subject's last message when the
    /// aggregate was loaded (0 = the subject must be empty). `None`: no check (chat records).
    pub expected_last_sequence: Option<u64>,
}

/// What happened to one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored, durable, at this stream sequence.
    Stored {
        /// The commit's stream sequence.
        sequence: u64,
    },
    /// This command id was already stored, at this stream sequence; nothing new was written.
    Duplicate {
        /// The stream sequence of the first commit with this command id.
        sequence: u64,
    },
    /// The subject moved past the expected sequence (not by this command): nothing was written.
    Conflict,
}

/// The committer could not tell what happened (JetStream unreachable, timeout): the commit may or
/// may not be stored; retrying with the same command id is safe.
#[derive(Debug, Clone, thiserror::Error)]
#[error("commit: {0}")]
pub struct CommitError(pub String);

/// Counters of what the committer did (for benchmarks and logs).
#[derive(Debug, Default)]
pub struct GroupCommitStats {
    /// Plain publishes (a lone commit, or a fallback).
    pub single_writes: AtomicU64,
    /// Atomic batches sent.
    pub batches: AtomicU64,
    /// Commits sent inside atomic batches.
    pub batched_commits: AtomicU64,
    /// Batches rejected by a failed check (their other commits were sent again).
    pub failed_batches: AtomicU64,
    /// Commits answered as stale from the committer's own knowledge, without a round trip.
    pub known_stale: AtomicU64,
    /// Writes (an atomic batch, or one plain publish) that completed.
    pub writes: AtomicU64,
    /// Their summed round trips (send → ack), microseconds.
    pub write_micros: AtomicU64,
    /// Writes sent after the committer had none in flight whose first append came within the
    /// linger (at least 1 ms) of the last write settling: each ends one turnaround. (A write
    /// whose appends came later ends an idle stretch, not counted.)
    pub turnarounds: AtomicU64,
    /// Their summed turnarounds, microseconds: from the moment the committer's last write in
    /// flight settled (its appends answered) to the next write's send. Under closed-loop clients
    /// this is the time the clients take to come back with their next appends, plus the linger.
    pub turnaround_micros: AtomicU64,
}

/// A reading of a committer's write-cycle counters ([`GroupCommitStats::cycle`]); the difference
/// of two readings is the cycle of the stretch between them, their sum that of two committers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteCycle {
    /// Writes completed.
    pub writes: u64,
    /// Their summed round trips (send → ack), microseconds.
    pub write_micros: u64,
    /// Turnarounds counted ([`GroupCommitStats::turnarounds`]).
    pub turnarounds: u64,
    /// Their summed durations, microseconds.
    pub turnaround_micros: u64,
}

impl WriteCycle {
    /// The mean round trip of a write, milliseconds (0 without writes).
    pub fn mean_write_ms(&self) -> f64 {
        self.write_micros as f64 / self.writes.max(1) as f64 / 1000.0
    }

    /// The mean turnaround, milliseconds (0 without turnarounds).
    pub fn mean_turnaround_ms(&self) -> f64 {
        self.turnaround_micros as f64 / self.turnarounds.max(1) as f64 / 1000.0
    }
}

impl std::ops::Sub for WriteCycle {
    type Output = WriteCycle;
    fn sub(self, earlier: WriteCycle) -> WriteCycle {
        WriteCycle {
            writes: self.writes.saturating_sub(earlier.writes),
            write_micros: self.write_micros.saturating_sub(earlier.write_micros),
            turnarounds: self.turnarounds.saturating_sub(earlier.turnarounds),
            turnaround_micros: self
                .turnaround_micros
                .saturating_sub(earlier.turnaround_micros),
        }
    }
}

impl std::ops::Add for WriteCycle {
    type Output = WriteCycle;
    fn add(self, other: WriteCycle) -> WriteCycle {
        WriteCycle {
            writes: self.writes + other.writes,
            write_micros: self.write_micros + other.write_micros,
            turnarounds: self.turnarounds + other.turnarounds,
            turnaround_micros: self.turnaround_micros + other.turnaround_micros,
        }
    }
}

impl GroupCommitStats {
    /// The mean round trip of a write (a batch or a group of plain publishes) since the
    /// committer started, milliseconds.
    pub fn mean_write_ms(&self) -> f64 {
        self.cycle().mean_write_ms()
    }

    /// The write-cycle counters now (subtract two readings for the cycle of a stretch of time).
    pub fn cycle(&self) -> WriteCycle {
        WriteCycle {
            writes: self.writes.load(Ordering::Relaxed),
            write_micros: self.write_micros.load(Ordering::Relaxed),
            turnarounds: self.turnarounds.load(Ordering::Relaxed),
            turnaround_micros: self.turnaround_micros.load(Ordering::Relaxed),
        }
    }

    /// `(single_writes, batches, batched_commits, failed_batches, known_stale)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.single_writes.load(Ordering::Relaxed),
            self.batches.load(Ordering::Relaxed),
            self.batched_commits.load(Ordering::Relaxed),
            self.failed_batches.load(Ordering::Relaxed),
            self.known_stale.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stretchs_write_cycle_is_the_difference_of_two_readings() {
        let stats = GroupCommitStats::default();
        stats.writes.store(10, Ordering::Relaxed);
        stats.write_micros.store(50_000, Ordering::Relaxed);
        let before = stats.cycle();
        stats.writes.store(14, Ordering::Relaxed);
        stats.write_micros.store(78_000, Ordering::Relaxed);
        stats.turnarounds.store(2, Ordering::Relaxed);
        stats.turnaround_micros.store(3_000, Ordering::Relaxed);
        let stretch = stats.cycle() - before;
        assert_eq!(stretch.writes, 4);
        assert_eq!(stretch.mean_write_ms(), 7.0);
        assert_eq!(stretch.mean_turnaround_ms(), 1.5);
        assert_eq!((stretch + stretch).mean_write_ms(), 7.0);
        assert_eq!(WriteCycle::default().mean_write_ms(), 0.0);
        assert_eq!(stats.mean_write_ms(), 78.0 / 14.0);
    }

    #[test]
    fn overrides_replace_only_the_fields_they_set() {
        let base = GroupCommitSettings::default();
        assert_eq!(GroupCommitOverrides::default().over(base.clone()), base);
        assert!(GroupCommitOverrides::default().is_empty());
        let some = GroupCommitOverrides {
            max_in_flight: Some(4),
            linger: Some(Duration::ZERO),
            ..Default::default()
        };
        let laid = some.over(base.clone());
        assert_eq!((laid.max_in_flight, laid.linger), (4, Duration::ZERO));
        assert_eq!((laid.max_batch, laid.queue), (base.max_batch, base.queue));
        let every = GroupCommitOverrides::from(laid.clone());
        assert_eq!(every.over(GroupCommitSettings::default()), laid);
        assert!(!every.is_empty());
    }
}
