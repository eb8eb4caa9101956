//! Packs: several log records in one stream message, written by one [`Packer`] per stream and
//! process, deduplicated exactly by the writers themselves.
//!
//! **Why.** nats-server stores a stream's messages one at a time and, under `sync_interval:
//! always`, fsyncs each one (atomic batches too, after staging them): one record per stream
//! message is one fsync per record, and a burst of records on one stream queues behind its own
//! fsyncs. A pack carries every record that arrived while the stream's previous pack was being
//! written, so a stream pays one fsync per round trip instead of one per record. Measured on the
//! project's 2-core machine (`chat_commit_probe`, docs/benchmarks.md, the gateway): at 10,000
//! records/s, p99 1.9 ms on 2 streams packed against 9.8 ms for plain publishes on 16.
//!
//! **The format.** A pack is one stream message whose body is a JSON array of entries, in the
//! order they were appended:
//!
//! ```json
//! [{"subject":"chat.3.42","kind":"message","dedup_id":"42:7:c-1","record":{…}}, …]
//! ```
//!
//! `subject` is the record's own subject (a session's or a group's; what a reader filters on),
//! `kind` its kind (what the one-record layout puts in `Mychat-Record`), `dedup_id` its dedup id
//! (what it puts in `Nats-Msg-Id`) and `record` the record's JSON as its writer encoded it. The
//! stream message's headers: [`HDR_PACK`] (the number of entries, for tools),
//! [`HDR_PACK_ID`] (the writer's id for this pack) and `Nats-Expected-Last-Sequence`.
//!
//! **Positions.** A record's position is `stream sequence × 1,024 + its index in the pack`
//! ([`position`], [`split_position`]): positions increase in log order, a stream's first
//! record is at 1,024 or later, and 0 means "before everything" (a resume from the start). A
//! pack holds at most [`PACK_SPAN`] entries.
//!
//! **Exact dedup by the writers** ([`Packer`]). A pack has one `Nats-Msg-Id` at most, so
//! JetStream's duplicate window cannot see its records. Instead every pack is published with
//! `Nats-Expected-Last-Sequence` = the last stream sequence its writer has read or written: the
//! server stores it only if nothing else was written to the stream since. A writer therefore
//! always knows every record stored before its pack, and answers a record whose dedup id it
//! knows (stored within [`PackSettings::dedup_window`]) as a duplicate with the first copy's
//! position, without writing it: the same rule, and the same window, as JetStream's
//! `Nats-Msg-Id`, across processes and restarts. A writer that finds the stream moved (another
//! process wrote; error 10071) reads what it missed and tries again; one that lost an ack reads
//! the stream before its next pack and so learns whether its pack was stored (its
//! [`HDR_PACK_ID`]). Readers need no dedup rule of their own: each dedup id is in the stream once
//! per window.

mod packer;

pub use packer::{PackOutcome, PackSettings, PackStats, Packer};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::group::CommitError;
use crate::reader::LogEntry;

/// Entries a pack holds at most, and the span of one stream sequence in positions.
pub const PACK_SPAN: u64 = 1024;

/// The header with the number of entries in a pack.
pub const HDR_PACK: &str = "Mychat-Pack";

/// The header naming a pack by its writer (`<writer uuid>-<counter>`): a writer whose ack was
/// lost finds out from it whether its pack was stored.
pub const HDR_PACK_ID: &str = "Mychat-Pack-Id";

/// The position of entry `index` of the pack at stream sequence `seq`:
/// `seq × 1,024 + index`.
pub fn position(seq: u64, index: usize) -> u64 {
    seq * PACK_SPAN + index as u64
}

/// `(stream sequence, index)` of a position ([`position`]'s inverse).
pub fn split_position(position: u64) -> (u64, usize) {
    (position / PACK_SPAN, (position % PACK_SPAN) as usize)
}

/// One record to append: its own subject, kind, dedup id and encoded body (JSON).
#[derive(Debug, Clone)]
pub struct PackAppend {
    /// The record's subject (`chat.<k>.<session_id>`, `group.<k>.<group_id>`).
    pub subject: String,
    /// The record's kind (`message`, `message_read`, …).
    pub kind: String,
    /// Its dedup id: a repeat within the window is answered with the first copy's position.
    pub dedup_id: String,
    /// The record, JSON-encoded (one JSON value).
    pub body: Bytes,
}

/// One record read out of a pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedRecord {
    /// Its position ([`position`]).
    pub position: u64,
    /// Its own subject.
    pub subject: String,
    /// Its kind.
    pub kind: String,
    /// Its dedup id.
    pub dedup_id: String,
    /// The record's JSON (a slice of the stream message's payload).
    pub body: Bytes,
}

/// An entry as stored (see the module documentation).
#[derive(Serialize, Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    subject: &'a str,
    #[serde(borrow)]
    kind: &'a str,
    #[serde(borrow)]
    dedup_id: &'a str,
    #[serde(borrow)]
    record: &'a RawValue,
}

/// The body of a pack of `appends` (at most [`PACK_SPAN`]).
///
/// # Errors
/// When an append's body is not one JSON value, or there are too many appends.
pub fn encode(appends: &[&PackAppend]) -> Result<Vec<u8>, CommitError> {
    if appends.len() as u64 > PACK_SPAN {
        return Err(CommitError(format!(
            "a pack holds at most {PACK_SPAN} records, not {}",
            appends.len()
        )));
    }
    let mut entries = Vec::with_capacity(appends.len());
    for a in appends {
        let json = std::str::from_utf8(&a.body)
            .map_err(|e| CommitError(format!("record {}: not UTF-8: {e}", a.dedup_id)))?;
        let record: &RawValue = serde_json::from_str(json)
            .map_err(|e| CommitError(format!("record {}: not JSON: {e}", a.dedup_id)))?;
        entries.push(Entry {
            subject: &a.subject,
            kind: &a.kind,
            dedup_id: &a.dedup_id,
            record,
        });
    }
    serde_json::to_vec(&entries).map_err(|e| CommitError(format!("encoding a pack: {e}")))
}

/// The records of the pack at stream sequence `seq` whose body is `payload`, with their
/// positions.
///
/// # Errors
/// When the payload is not a pack (a JSON array of entries) or holds more than [`PACK_SPAN`].
pub fn decode(seq: u64, payload: &Bytes) -> Result<Vec<PackedRecord>, serde_json::Error> {
    let entries: Vec<Entry<'_>> = serde_json::from_slice(payload)?;
    if entries.len() as u64 > PACK_SPAN {
        use serde::de::Error as _;
        return Err(serde_json::Error::custom(format!(
            "a pack of {} records (at most {PACK_SPAN})",
            entries.len()
        )));
    }
    Ok(entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| PackedRecord {
            position: position(seq, i),
            subject: e.subject.to_string(),
            kind: e.kind.to_string(),
            dedup_id: e.dedup_id.to_string(),
            body: payload.slice_ref(e.record.get().as_bytes()),
        })
        .collect())
}

/// The records of a pack read from the log ([`decode`] of its sequence and payload).
///
/// # Errors
/// As [`decode`].
pub fn unpack(entry: &LogEntry) -> Result<Vec<PackedRecord>, serde_json::Error> {
    decode(entry.stream_sequence, &entry.payload)
}

/// Whether a stream message is a pack (it has the [`HDR_PACK`] header).
pub fn is_pack(headers: Option<&async_nats::HeaderMap>) -> bool {
    headers.is_some_and(|h| h.get(HDR_PACK).is_some())
}

/// Pushes the records of the pack at stream sequence `seq` (on `subject`) onto `batch`, those whose subject
/// `keeps` accepts, each as a [`LogEntry`] of its own: the pack's stream sequence, time and
/// headers ([`HDR_PACK`], [`HDR_PACK_ID`]), the record's position, subject and body, and the
/// headers a one-record message would have (`Mychat-Record`: its kind, `Nats-Msg-Id`: its dedup
/// id). A pack that does not decode is
/// pushed as it is (on the pack's subject), at position `seq × 1,024`, so that its reader meets
/// it (and reports it).
pub fn push_records(
    batch: &mut Vec<LogEntry>,
    (seq, subject): (u64, &str),
    published: chrono::DateTime<chrono::Utc>,
    headers: Option<async_nats::HeaderMap>,
    payload: Bytes,
    keeps: &impl Fn(&str) -> bool,
) {
    match decode(seq, &payload) {
        Ok(records) => {
            for r in records.into_iter().filter(|r| keeps(&r.subject)) {
                let mut h = headers.clone().unwrap_or_default();
                h.insert(crate::chat::HDR_RECORD, r.kind.as_str());
                h.insert(async_nats::header::NATS_MESSAGE_ID, r.dedup_id.as_str());
                batch.push(LogEntry {
                    stream_sequence: seq,
                    position: r.position,
                    subject: r.subject,
                    published,
                    headers: Some(h),
                    payload: r.body,
                });
            }
        }
        Err(e) => {
            tracing::warn!(seq, error = %e, "a pack that does not decode");
            batch.push(LogEntry {
                stream_sequence: seq,
                position: position(seq, 0),
                subject: subject.to_string(),
                published,
                headers,
                payload,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(subject: &str, id: &str, body: &str) -> PackAppend {
        PackAppend {
            subject: subject.into(),
            kind: "message".into(),
            dedup_id: id.into(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn a_pack_decodes_to_its_records_in_order_with_their_positions() {
        let a = append(
            "chat.1.16",
            "16:1:a",
            r#"{"content":"hi \"there\"\n","n":1}"#,
        );
        let b = append("group.1.32", "g:32:2:b", r#"[1,2,{"x":null}]"#);
        let body = Bytes::from(encode(&[&a, &b]).unwrap());
        let records = decode(7, &body).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].position, 7 * 1024);
        assert_eq!(records[1].position, 7 * 1024 + 1);
        assert_eq!(
            (records[0].subject.as_str(), records[0].dedup_id.as_str()),
            ("chat.1.16", "16:1:a")
        );
        assert_eq!(records[0].body, a.body);
        assert_eq!(records[1].body, b.body);
        assert_eq!(records[1].kind, "message");
        assert_eq!(split_position(records[1].position), (7, 1));
    }

    #[test]
    fn a_body_that_is_not_json_is_refused_before_anything_is_written() {
        let bad = append("chat.1.16", "x", "not json");
        assert!(encode(&[&bad]).unwrap_err().0.contains("record x"));
        let two = append("chat.1.16", "y", "{} {}");
        assert!(encode(&[&two]).is_err());
    }

    #[test]
    fn what_is_not_a_pack_does_not_decode() {
        assert!(decode(1, &Bytes::from_static(b"{\"kind\":\"message\"}")).is_err());
        assert!(decode(1, &Bytes::from_static(b"[{\"subject\":\"a\"}]")).is_err());
        assert_eq!(decode(1, &Bytes::from_static(b"[]")).unwrap(), vec![]);
    }
}
