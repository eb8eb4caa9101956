//! What every read model's batch application shares: decoding a message's (or a batch's) events
//! as the projection's event type, splitting a batch into rounds in which each key appears at most
//! once (so one multi-row statement per round applies the events in order), and the event's
//! aggregate id.

use anyhow::Context as _;
use eventstore::envelope::StoredEvent;

use crate::runtime::{EventRef, LogMessage};

/// Decodes each event of an `EVENTS` message as `E`. An event no upcaster turns into an `E` (an
/// unknown type or version) is an error that names it: the projection stops there.
fn decode_events<E: serde::de::DeserializeOwned>(
    message: &LogMessage,
) -> anyhow::Result<Vec<(EventRef, E)>> {
    message
        .event_refs()?
        .map(|stored| {
            let event: E = crate::runtime::decode(&stored).with_context(|| {
                format!(
                    "unknown event {} v{} on {}",
                    stored.event_type, stored.event_version, message.subject
                )
            })?;
            Ok((stored, event))
        })
        .collect()
}

/// Decodes every event of a batch's messages as `E`, in stream order ([`decode_events`]).
pub(super) fn decode_batch<E: serde::de::DeserializeOwned>(
    messages: &[LogMessage],
) -> anyhow::Result<Vec<(EventRef, E)>> {
    let mut all = Vec::new();
    for message in messages {
        all.extend(decode_events::<E>(message)?);
    }
    Ok(all)
}

/// Each item's *round*: 0 for the first item with its key, 1 for the second, and so on. Items
/// of one round touch distinct rows, so a round can be applied as multi-row statements in any
/// order, and rounds applied one after another give the result of applying the items one by
/// one in stream order (every row sees its own events in order).
pub fn rounds<K: Eq + std::hash::Hash + Clone>(keys: &[K]) -> Vec<usize> {
    let mut seen: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
    keys.iter()
        .map(|k| {
            let n = seen.entry(k.clone()).or_insert(0);
            *n += 1;
            *n - 1
        })
        .collect()
}

/// The rows' keys of `events` and their rounds ([`rounds`]), and the number of rounds.
pub(super) fn keyed_rounds<E>(
    events: &[(EventRef, E)],
    key: impl Fn(&StoredEvent, &E) -> anyhow::Result<i64>,
) -> anyhow::Result<(Vec<i64>, Vec<usize>, usize)> {
    let keys = events
        .iter()
        .map(|(s, e)| key(s, e))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let round = rounds(&keys);
    let n = round.iter().max().map_or(0, |m| m + 1);
    Ok((keys, round, n))
}

pub(super) type Time = chrono::DateTime<chrono::Utc>;

pub(super) fn id(stored: &StoredEvent) -> anyhow::Result<i64> {
    stored
        .aggregate_id_i64()
        .with_context(|| format!("aggregate id {} is not a number", stored.aggregate_id))
}
