//! Reading a projection's stream: the log's gap-checking reader from a checkpoint, its batches
//! turned into [`LogMessage`]s.

use async_nats::jetstream::{self};
use eventstore::{ReadOptions, ReadUntil};

use super::projection::LogMessage;

/// A reader of a projection's messages ([`spawn_reader`]): [`eventstore::LogReader`]'s batches
/// as [`LogMessage`]s.
pub struct ProjectionReader {
    inner: eventstore::LogReader,
}

impl ProjectionReader {
    /// The next batch (never empty) in stream order; `None` at the reader's end. Cancel-safe.
    ///
    /// # Errors
    /// When the stream cannot be read ([`eventstore::reader::ReadError`]).
    pub async fn recv(&mut self) -> Option<anyhow::Result<Vec<LogMessage>>> {
        self.inner.next().await.map(|b| Ok(log_messages(b?)))
    }

    /// A batch already read, if there is one (never waits).
    pub fn try_recv(&mut self) -> Option<anyhow::Result<Vec<LogMessage>>> {
        self.inner.try_next().map(|b| Ok(log_messages(b?)))
    }

    /// Whether no batch is waiting to be taken.
    pub fn is_idle(&self) -> bool {
        self.inner.is_idle()
    }
}

/// The log's entries as [`LogMessage`]s, with their commits' event types from the
/// `Mychat-Event-Types` header.
pub(crate) fn log_messages(entries: Vec<eventstore::LogEntry>) -> Vec<LogMessage> {
    entries
        .into_iter()
        .map(|e| {
            let types = e
                .headers
                .as_ref()
                .and_then(|h| h.get(eventstore::envelope::HDR_EVENT_TYPES))
                .map(|v| v.as_str().to_string());
            LogMessage::new(e.stream_sequence, e.subject, e.published, e.payload)
                .at_position(e.position)
                .with_event_types(types.as_deref())
        })
        .collect()
}

/// How long a projection's reader that ends (a catch-up, a rebuild, a replay, a reconciliation)
/// outlives a nats-server that does not answer before it fails: long enough for a restart or a
/// leader election, short enough that a stream that is really gone is reported.
pub const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads `subjects` of `stream` from `from + 1` in a background task, in batches of at most
/// `batch_size`, until the head as it is when the reader starts, or until the next message is
/// past `upto`; then [`ProjectionReader::recv`] answers `None`. Reading overlaps with applying
/// (the reader keeps up to 4 batches ahead). The reader is [`eventstore::LogReader`]: explicit
/// pull requests on a consumer of its own, consumer sequences checked, the consumer re-created
/// after the last stream sequence read on a gap or a failed request, with a backoff, for up to
/// [`READ_PATIENCE`] without anything read.
pub fn spawn_reader(
    js: jetstream::Context,
    stream: &'static str,
    subjects: Vec<String>,
    from: u64,
    upto: Option<u64>,
    batch_size: usize,
) -> ProjectionReader {
    let until = match upto {
        Some(u) => ReadUntil::Sequence(u),
        None => ReadUntil::Head,
    };
    ProjectionReader {
        inner: eventstore::LogReader::spawn(
            js,
            ReadOptions::new(stream, from, until)
                .subjects(subjects)
                .batch_size(batch_size)
                .patience(READ_PATIENCE),
        ),
    }
}

/// A reader that follows `subjects` of `stream` from `from + 1` forever: the live projectors'.
/// At the head a message is handed over as soon as it is read.
pub fn follow(
    js: jetstream::Context,
    stream: &'static str,
    subjects: Vec<String>,
    from: u64,
    batch_size: usize,
) -> ProjectionReader {
    ProjectionReader {
        inner: eventstore::LogReader::spawn(
            js,
            ReadOptions::new(stream, from, ReadUntil::Follow)
                .subjects(subjects)
                .batch_size(batch_size),
        ),
    }
}
