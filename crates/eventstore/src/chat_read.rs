//! Reading chat records by position, whichever way their shard is written: one record per
//! stream message (position = stream sequence; the legacy `CHAT` stream, and shards written so)
//! or in packs ([`crate::pack`]: position = `stream sequence × 1,024 + index`). A packed shard
//! that was switched from one record per message keeps those records at their old positions,
//! all below its packs' ([`crate::StreamSettings::chat_packs`]).

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use bytes::Bytes;

use crate::chat::{pack_subject, ChatLayout};
use crate::pack::{self, PACK_SPAN};
use crate::reader::{LogReader, ReadOptions, ReadUntil};

/// Most records of a packed shard [`records_after`] reads for one call (~0.5 s of reading on the
/// project's machine): a resume from further back answers "not all of them" instead.
pub const MAX_SCAN: usize = 100_000;

/// One chat record read by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its position in its stream.
    pub position: u64,
    /// Its subject (`chat.<k>.<session>`, `group.<k>.<group>`, `chat.<session>`).
    pub subject: String,
    /// The record's JSON.
    pub body: Bytes,
}

/// The record at `position` of shard `shard` (0: the legacy `CHAT`), if there is one.
///
/// # Errors
/// When the stream cannot be read (a position with nothing at it is `Ok(None)`).
pub async fn record_at(
    js: &jetstream::Context,
    layout: &ChatLayout,
    shard: u16,
    position: u64,
) -> anyhow::Result<Option<StoredRecord>> {
    let stream = js
        .get_stream_no_info(crate::chat::shard_stream(shard))
        .await?;
    let get = |seq: u64| {
        let stream = &stream;
        async move {
            // Stream sequences start at 1 (JetStream answers a direct get of 0 with an error).
            if seq == 0 {
                return Ok(None);
            }
            match stream.direct_get(seq).await {
                Ok(m) => Ok(Some(m)),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow::Error::from(e)),
            }
        }
    };
    if layout.packs(shard) {
        let (seq, index) = pack::split_position(position);
        if let Some(m) = get(seq).await? {
            if pack::is_pack(Some(&m.headers)) {
                let mut records = pack::decode(seq, &m.payload)?;
                return Ok((index < records.len()).then(|| {
                    let r = records.swap_remove(index);
                    StoredRecord {
                        position,
                        subject: r.subject,
                        body: r.body,
                    }
                }));
            }
        }
        // Not a pack's position: a record from before the shard was packed, if anything.
    }
    Ok(match get(position).await? {
        Some(m) if !pack::is_pack(Some(&m.headers)) => Some(StoredRecord {
            position,
            subject: m.subject.to_string(),
            body: m.payload,
        }),
        _ => None,
    })
}

/// The records on `subject` in shard `shard` after position `after`, oldest first, at most
/// `max`; and whether they are all of them (the stream still held everything after `after` and
/// nothing was left over `max`).
///
/// One record per stream message: direct gets on the subject. Packs: the shard read from the
/// pack at `after` on (its records after `after`, then every later pack's on `subject`), which
/// costs the shard's traffic since then; a resume is expected to be recent, and one that would
/// read more than [`MAX_SCAN`] records is answered as incomplete (the client reloads from REST).
///
/// # Errors
/// When the stream cannot be read.
pub async fn records_after(
    js: &jetstream::Context,
    layout: &ChatLayout,
    shard: u16,
    subject: &str,
    after: u64,
    max: usize,
) -> anyhow::Result<(Vec<StoredRecord>, bool)> {
    let name = crate::chat::shard_stream(shard);
    let mut stream = js.get_stream(name).await?;
    let first = stream.info().await?.state.first_sequence;
    let packed = layout.packs(shard);
    // The stream still holds everything after `after`: in a packed shard the pack at `after`
    // too (its later records), or, for a position from before the shard was packed, what
    // follows it.
    let after_seq = if packed { after / PACK_SPAN } else { after };
    let mut complete = if packed {
        after_seq.max(1) >= first || after.saturating_add(1) >= first
    } else {
        after.saturating_add(1) >= first
    };
    let mut out = Vec::new();
    // One record per message (every record of an unpacked shard; a packed shard's from before
    // it was packed).
    let mut next = after.saturating_add(1);
    loop {
        let m = match stream
            .direct_get_next_for_subject(subject, Some(next))
            .await
        {
            Ok(m) => m,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(e.into()),
        };
        if out.len() >= max {
            return Ok((out, false));
        }
        next = m.sequence + 1;
        out.push(StoredRecord {
            position: m.sequence,
            subject: subject.to_string(),
            body: m.payload,
        });
    }
    if !packed {
        return Ok((out, complete));
    }
    let mut reader = LogReader::spawn(
        js.clone(),
        ReadOptions::new(name, after_seq.saturating_sub(1), ReadUntil::Head)
            .subjects(vec![subject.to_string(), pack_subject(shard)]),
    );
    let mut scanned = 0usize;
    'read: while let Some(batch) = reader.next().await {
        for e in batch? {
            scanned += 1;
            if scanned > MAX_SCAN {
                // Too far back to read from the log for one request: the client reloads from
                // the read models (REST).
                complete = false;
                break 'read;
            }
            if !pack::is_pack(e.headers.as_ref()) || e.position <= after {
                continue;
            }
            if out.len() >= max {
                complete = false;
                break 'read;
            }
            out.push(StoredRecord {
                position: e.position,
                subject: e.subject,
                body: e.payload,
            });
        }
    }
    Ok((out, complete))
}
